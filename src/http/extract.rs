//! Extractors. Each rejects with `AppError`, so malformed input still gets the envelope.

use std::fmt;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRef, FromRequest, FromRequestParts, OriginalUri, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use serde::{Deserialize, Deserializer};
use subtle::ConstantTimeEq;

use crate::AppState;
use std::marker::PhantomData;

use crate::auth::Permission;
use crate::auth::gateway::BKAPI_JWT;
use crate::config::Config;
use crate::domain::{ApigwType, InvalidId, ProjectId, UserId};
use crate::error::AppError;

pub const DEVOPS_UID: &str = "x-devops-uid";
pub const DEVOPS_BK_TOKEN: &str = "x-devops-bk-token";

/// `axum::extract::Query` whose failures name the parameter inside the envelope.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(AppError))]
pub struct Query<T>(pub T);

impl From<QueryRejection> for AppError {
    fn from(rejection: QueryRejection) -> Self {
        let message = match refusal_in(&rejection) {
            Some(message) => message,
            None => format!("invalid query parameter: {}", rejection.body_text()),
        };
        AppError::BadRequest(message)
    }
}

/// Why a query value that parsed is still not acceptable: the whole message of the 400, which
/// names the parameter. Query types refuse while they deserialize (`#[serde(try_from)]` or
/// [`checked`]), so the `Query` extractor answers before any permission check does. serde
/// carries only text, so the message travels behind `MARK`, and `From<QueryRejection>` hands
/// it on as it is.
#[derive(Debug)]
pub struct Refusal(pub String);

impl Refusal {
    /// ASCII record separator: not in any message of ours or of serde's.
    const MARK: char = '\u{1e}';
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", Self::MARK, self.0)
    }
}

/// The message of a `Refusal` in a rejection: serde's error reads `<parameter>: <refusal>`. A
/// mark anywhere else (inside an echoed value) is not ours.
fn refusal_in(rejection: &QueryRejection) -> Option<String> {
    let QueryRejection::FailedToDeserializeQueryString(failed) = rejection else {
        return None;
    };
    let detail = std::error::Error::source(failed)?.to_string();
    let (name, message) = detail.split_once(": ")?;
    let message = message.strip_prefix(Refusal::MARK)?;
    name.bytes()
        .all(|b| b.is_ascii_alphanumeric())
        .then(|| message.to_owned())
}

/// For `#[serde(default, deserialize_with = …)]`: an optional parameter that `check` must accept.
pub fn checked<'de, D, T>(
    deserializer: D,
    check: impl FnOnce(String) -> Result<T, Refusal>,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
{
    Option::<String>::deserialize(deserializer)?
        .map(check)
        .transpose()
        .map_err(serde::de::Error::custom)
}

/// `axum::Json` with envelope rejections: 413 for an oversized body, 400 naming the field.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct Json<T>(pub T);

impl From<JsonRejection> for AppError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AppError::PayloadTooLarge
        } else {
            AppError::BadRequest(format!("invalid JSON body: {}", rejection.body_text()))
        }
    }
}

/// `axum::extract::Path` with envelope rejections.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(AppError))]
pub struct Path<T>(pub T);

impl From<PathRejection> for AppError {
    fn from(rejection: PathRejection) -> Self {
        AppError::BadRequest(format!("invalid path parameter: {}", rejection.body_text()))
    }
}

/// The acting user, from `X-DEVOPS-UID` only: the op routes, which the gateway does not front.
pub struct Caller(pub UserId);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        header_user(parts).map(Self)
    }
}

/// The acting user of bk-ci's op routes (`/op/pipeline/callback/…`), from `X-DEVOPS-UID`: a
/// missing or blank header is bk-ci's 400 "invalid userId" there (our own routes answer 401).
pub struct OpUser(pub UserId);

impl<S: Send + Sync> FromRequestParts<S> for OpUser {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        header_user(parts).map(Self).map_err(|e| match e {
            AppError::Unauthorized(why) => AppError::BadRequest(format!("invalid userId: {why}")),
            other => other,
        })
    }
}

/// `/{apigwType}/v4/projects/{projectId}/…` and who is acting: an unknown gateway type is an
/// unknown route; the user is the verified gateway token's, or `X-DEVOPS-UID` (see
/// `GatewayVerifier::caller` for which, per gateway type).
pub struct ProjectScope {
    pub project: ProjectId,
    pub user: UserId,
}

/// The path of the v4 resource (and its documentation).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ProjectScopeParams {
    /// The gateway flavour.
    #[param(value_type = ApigwType)]
    apigw_type: String,
    /// The project's English name.
    #[param(value_type = ProjectId)]
    project_id: String,
}

/// The headers naming the caller of a v4 route (documentation only: `ProjectScope` reads them).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct CallerHeaders {
    /// The acting user, 1 to 64 characters. With gateway trust (`APIGW_PUBLIC_KEY_FILE`), a
    /// verified user in `X-Bkapi-JWT` takes its place on `apigw-user` (and on `apigw` when the
    /// token names one).
    #[param(rename = "X-DEVOPS-UID")]
    x_devops_uid: String,
    /// The JWT the BlueKing API gateway signs (RS256/RS512). Required, and verified, when
    /// `APIGW_PUBLIC_KEY_FILE` is configured; ignored otherwise.
    #[param(rename = "X-Bkapi-JWT", value_type = String, required = false)]
    x_bkapi_jwt: Option<String>,
}

impl FromRequestParts<AppState> for ProjectScope {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Path(params) = Path::<ProjectScopeParams>::from_request_parts(parts, state).await?;
        let apigw: ApigwType = params
            .apigw_type
            .parse()
            .map_err(|_| AppError::RouteNotFound(requested_path(parts)))?;
        let project = parse_project_id(&params.project_id)?;
        let from_token = match &state.gateway {
            Some(gateway) => gateway.caller(
                apigw,
                parts.headers.get(BKAPI_JWT).map(HeaderValue::as_bytes),
            )?,
            None => None,
        };
        let user = match from_token {
            Some(user) => user,
            None => header_user(parts)?,
        };
        Ok(Self { project, user })
    }
}

/// The path as the client sent it, gateway prefix included (a nested route sees it stripped).
fn requested_path(parts: &Parts) -> String {
    parts
        .extensions
        .get::<OriginalUri>()
        .map_or(&parts.uri, |OriginalUri(uri)| uri)
        .path()
        .to_owned()
}

/// A caller holding permission `P` in the v4 scope's project, and the route's input `I` (its
/// query): see [`ProjectAdmin`] and [`ProjectMember`].
///
/// The checks run in the order that decides which error a request gets: first the
/// [`ProjectScope`] (404 for an unknown gateway type, 400 for a bad `projectId`, 401 without a
/// caller), then the input (400 for a bad parameter, whoever asks), and only then the
/// permission (403).
pub struct Permitted<P, I> {
    pub project: ProjectId,
    pub user: UserId,
    pub input: I,
    role: PhantomData<P>,
}

/// A project admin: create, batch create, delete, enable, disable, re-send.
pub type ProjectAdmin<I> = Permitted<Admin, I>;
/// A project member (admins are members too): list, history.
pub type ProjectMember<I> = Permitted<Member, I>;

/// The permission a [`Permitted`] extractor demands.
pub trait Role {
    const PERMISSION: Permission;
}

pub struct Admin;
pub struct Member;

impl Role for Admin {
    const PERMISSION: Permission = Permission::Admin;
}

impl Role for Member {
    const PERMISSION: Permission = Permission::Member;
}

impl<P, I> FromRequestParts<AppState> for Permitted<P, I>
where
    P: Role + Send,
    I: FromRequestParts<AppState, Rejection = AppError> + Send,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let scope = ProjectScope::from_request_parts(parts, state).await?;
        let input = I::from_request_parts(parts, state).await?;
        Self::grant(scope, input, state).await
    }
}

/// The input of a route with a JSON body: `input` from the request's parts (path, query), then
/// `body`. A [`Permitted`] over it reads both before the permission check, like any input.
pub struct WithBody<I, T> {
    pub input: I,
    pub body: T,
}

impl<P, I, T> FromRequest<AppState> for Permitted<P, WithBody<I, T>>
where
    P: Role + Send,
    I: FromRequestParts<AppState, Rejection = AppError> + Send,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = AppError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, AppError> {
        let (mut parts, body) = request.into_parts();
        let scope = ProjectScope::from_request_parts(&mut parts, state).await?;
        let input = I::from_request_parts(&mut parts, state).await?;
        let Json(body) = Json::from_request(Request::from_parts(parts, body), state).await?;
        Self::grant(scope, WithBody { input, body }, state).await
    }
}

impl<P: Role, I> Permitted<P, I> {
    /// The last check: whether the scope's user holds `P` in its project.
    async fn grant(scope: ProjectScope, input: I, state: &AppState) -> Result<Self, AppError> {
        let ProjectScope { project, user } = scope;
        state
            .authority
            .require(P::PERMISSION, &project, &user)
            .await?;
        Ok(Self {
            project,
            user,
            input,
            role: PhantomData,
        })
    }
}

/// The user named by `X-DEVOPS-UID`.
fn header_user(parts: &Parts) -> Result<UserId, AppError> {
    let Some(value) = parts.headers.get(DEVOPS_UID) else {
        return Err(AppError::Unauthorized(
            "header X-DEVOPS-UID is required".to_owned(),
        ));
    };
    let text = value.to_str().map_err(|_| {
        AppError::BadRequest("header X-DEVOPS-UID must be visible ASCII text".to_owned())
    })?;
    match text.trim().parse::<UserId>() {
        Ok(user) => Ok(user),
        Err(InvalidId::Blank) => Err(AppError::Unauthorized(
            "header X-DEVOPS-UID must not be blank".to_owned(),
        )),
        Err(e) => Err(AppError::BadRequest(format!("header X-DEVOPS-UID {e}"))),
    }
}

pub fn parse_project_id(raw: &str) -> Result<ProjectId, AppError> {
    raw.parse()
        .map_err(|e| AppError::BadRequest(format!("path parameter projectId {e}")))
}

/// The header of the service and op routes (documentation only: `ServiceCaller` reads it).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct ServiceTokenHeader {
    /// Equal to the service's SERVICE_TOKEN
    #[param(rename = "X-DEVOPS-BK-TOKEN")]
    x_devops_bk_token: String,
}

/// Proof that the caller presented `X-DEVOPS-BK-TOKEN` equal to `SERVICE_TOKEN`.
pub struct ServiceCaller;

impl<S> FromRequestParts<S> for ServiceCaller
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        check_service_token(
            &state.config,
            parts.headers.get(DEVOPS_BK_TOKEN).map(|v| v.as_bytes()),
        )
        .map(|()| Self)
    }
}

fn check_service_token(config: &Config, presented: Option<&[u8]>) -> Result<(), AppError> {
    let Some(expected) = &config.service_token else {
        return Err(AppError::Unavailable(
            "SERVICE_TOKEN is not configured, so service and op routes are disabled".to_owned(),
        ));
    };
    match presented {
        Some(token) if bool::from(token.ct_eq(expected.expose().as_bytes())) => Ok(()),
        _ => Err(AppError::Unauthorized(
            "header X-DEVOPS-BK-TOKEN is missing or wrong".to_owned(),
        )),
    }
}
