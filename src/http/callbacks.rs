//! The v4 callback resource: `/{apigwType}/v4/projects/{projectId}/callbacks…`.

use axum::extract::State;
use serde::{Deserialize, Serialize};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::domain::{
    Callback, CallbackEvent, CallbackId, EpochMillis, NewCallback, Page, ProjectId, Region, UserId,
};
use crate::error::{AppError, Result};
use crate::http::envelope::{Envelope, ErrorResponse};
use crate::http::extract::{CallerHeaders, ProjectScope, ProjectScopeParams, Query};
use crate::http::paging::PageParams;
use crate::secrets::{SEALED_PREFIX, Sealer, Secret};

const BASE: &str = "/{apigw_type}/v4/projects/{project_id}/callbacks";

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        // bk-ci clients also call the class path with a trailing slash.
        .route(&format!("{BASE}/"), axum::routing::post(create))
        .routes(routes!(create_batch))
        .routes(routes!(list))
        .routes(routes!(remove))
        .routes(routes!(enable))
        .routes(routes!(disable))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub(super) struct CreateParams {
    pub event: CallbackEvent,
    pub region: Region,
    /// An http(s) URL whose host resolves to public addresses only (see the SSRF rule).
    #[param(max_length = 1024)]
    pub url: String,
    /// Sent as `X-DEVOPS-WEBHOOK-TOKEN` and used to sign deliveries; never shown again.
    #[param(max_length = 1024)]
    pub secret_token: Option<String>,
}

/// Longest accepted `secretToken`, in bytes.
const MAX_SECRET_TOKEN_LEN: usize = 1024;

/// `secretToken` as stored: empty means none, it has a length limit, visible ASCII only, and it
/// must not look sealed (stored tokens with that prefix are taken for sealed ones). Sealing
/// happens in the store.
pub(super) fn secret_token(param: Option<String>) -> Result<Option<Secret>> {
    let Some(token) = param.filter(|token| !token.is_empty()) else {
        return Ok(None);
    };
    if token.len() > MAX_SECRET_TOKEN_LEN {
        return Err(AppError::BadRequest(format!(
            "query parameter secretToken must be at most {MAX_SECRET_TOKEN_LEN} bytes"
        )));
    }
    // It travels as a header value and keys the signature: visible ASCII, nothing that could
    // break a header (CR, LF, NUL) or read differently on the receiver's side.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AppError::BadRequest(
            "query parameter secretToken may only contain visible ASCII characters (no spaces or control characters)"
                .to_owned(),
        ));
    }
    if Sealer::is_sealed(&token) {
        return Err(AppError::BadRequest(format!(
            "query parameter secretToken must not start with `{SEALED_PREFIX}`"
        )));
    }
    Ok(Some(Secret::new(token)))
}

/// The seed API: register (or update) one callback. Admin only.
#[utoipa::path(
    post,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks",
    operation_id = "callback_create",
    tag = "callbacks",
    params(ProjectScopeParams, CallerHeaders, CreateParams),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn create(
    State(state): State<AppState>,
    scope: ProjectScope,
    Query(params): Query<CreateParams>,
) -> Result<Envelope<bool>> {
    let secret_token = secret_token(params.secret_token)?;
    state
        .authority
        .require_admin(&scope.project, &scope.user)
        .await?;
    let url = state.vet_callback_url(params.url).await?;
    state
        .callbacks
        .upsert(NewCallback {
            project_id: scope.project,
            url: url.into_string(),
            event: params.event,
            region: params.region,
            secret_token,
            user: scope.user,
        })
        .await?;
    Ok(Envelope::ok(true))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct BatchParams {
    /// Comma-separated event names, e.g. `BUILD_START,BUILD_END`.
    #[param(schema_with = event_list_schema, required = true)]
    event: String,
    region: Region,
    #[param(max_length = 1024)]
    url: String,
    #[param(max_length = 1024)]
    secret_token: Option<String>,
}

/// The schema of `event` in the batch create: event names separated by commas, with spaces
/// and tabs around them (built from the enum, so it cannot drift).
fn event_list_schema() -> utoipa::openapi::schema::Object {
    let names: Vec<&str> = CallbackEvent::ALL.iter().map(|e| e.as_str()).collect();
    let one = format!("[ \t]*({})[ \t]*", names.join("|"));
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(format!("^{one}(,{one})*$")))
        .build()
}

/// bk-ci's `CreateCallBackResult`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct BatchResult {
    success_events: Vec<CallbackEvent>,
    /// Event name → reason. The events are written in one statement, all or none, so a
    /// failure is an error answer instead and this stays empty.
    failure_events: std::collections::BTreeMap<String, String>,
}

/// Registers one URL for several events (`event=BUILD_START,BUILD_END`). Admin only.
#[utoipa::path(
    post,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks/batch",
    operation_id = "callback_batch_create",
    tag = "callbacks",
    params(ProjectScopeParams, CallerHeaders, BatchParams),
    responses((status = 200, description = "Success envelope", body = Envelope<BatchResult>), ErrorResponse)
)]
async fn create_batch(
    State(state): State<AppState>,
    scope: ProjectScope,
    Query(params): Query<BatchParams>,
) -> Result<Envelope<BatchResult>> {
    let events = parse_event_list(&params.event)?;
    let secret_token = secret_token(params.secret_token)?;
    let ProjectScope { project, user } = scope;
    state.authority.require_admin(&project, &user).await?;
    let url = state.vet_callback_url(params.url).await?.into_string();
    let rows: Vec<NewCallback> = events
        .iter()
        .map(|&event| NewCallback {
            project_id: project.clone(),
            url: url.clone(),
            event,
            region: params.region,
            secret_token: secret_token.clone(),
            user: user.clone(),
        })
        .collect();
    state.store.upsert_callbacks(&rows).await?;
    Ok(Envelope::ok(BatchResult {
        success_events: events,
        failure_events: Default::default(),
    }))
}

/// `"BUILD_START, BUILD_END,BUILD_START"` → both events once, in first-seen order; an unknown or
/// empty name refuses the whole list.
fn parse_event_list(raw: &str) -> Result<Vec<CallbackEvent>> {
    let mut events = Vec::new();
    for name in raw.split(',').map(|name| name.trim_matches([' ', '\t'])) {
        if name.is_empty() {
            return Err(AppError::BadRequest(
                "query parameter event must be event names separated by commas, none empty"
                    .to_owned(),
            ));
        }
        let event: CallbackEvent = name
            .parse()
            .map_err(|e| AppError::BadRequest(format!("invalid query parameter: event: {e}")))?;
        if !events.contains(&event) {
            events.push(event);
        }
    }
    Ok(events)
}

/// A callback as the API shows it; the token itself never leaves the service.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct CallbackRecord {
    id: CallbackId,
    project_id: ProjectId,
    call_back_url: String,
    events: CallbackEvent,
    region: Region,
    enable: bool,
    creator: UserId,
    updater: UserId,
    created_time: EpochMillis,
    updated_time: EpochMillis,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_time: Option<EpochMillis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
    has_secret_token: bool,
}

impl From<Callback> for CallbackRecord {
    fn from(c: Callback) -> Self {
        Self {
            id: c.id,
            project_id: c.project_id,
            call_back_url: c.url,
            events: c.event,
            region: c.region,
            enable: c.enabled,
            creator: c.creator,
            updater: c.updater,
            created_time: c.created_at,
            updated_time: c.updated_at,
            failure_time: c.failure_time,
            disabled_reason: c.disabled_reason,
            has_secret_token: c.has_secret_token,
        }
    }
}

/// Every callback of the project, disabled ones included, newest first. Members only.
#[utoipa::path(
    get,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks/callback_list",
    operation_id = "callback_list",
    tag = "callbacks",
    params(ProjectScopeParams, CallerHeaders, PageParams),
    responses((status = 200, description = "Success envelope", body = Envelope<Page<CallbackRecord>>), ErrorResponse)
)]
async fn list(
    State(state): State<AppState>,
    scope: ProjectScope,
    Query(params): Query<PageParams>,
) -> Result<Envelope<Page<CallbackRecord>>> {
    let request = params.validate()?;
    state
        .authority
        .require_member(&scope.project, &scope.user)
        .await?;
    page_of(&state, &scope.project, request).await
}

pub(super) async fn page_of(
    state: &AppState,
    project: &ProjectId,
    request: crate::domain::PageRequest,
) -> Result<Envelope<Page<CallbackRecord>>> {
    let (count, callbacks) = state.store.list_callbacks(project, request).await?;
    let records = callbacks.into_iter().map(CallbackRecord::from).collect();
    Ok(Envelope::ok(Page::new(request, count, records)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct IdParams {
    /// The callback's id, as `callback_list` shows it.
    id: CallbackId,
}

/// Deletes one callback of the project. Admin only.
#[utoipa::path(
    delete,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks/callback",
    operation_id = "callback_delete",
    tag = "callbacks",
    params(ProjectScopeParams, CallerHeaders, IdParams),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn remove(
    State(state): State<AppState>,
    scope: ProjectScope,
    Query(IdParams { id }): Query<IdParams>,
) -> Result<Envelope<bool>> {
    state
        .authority
        .require_admin(&scope.project, &scope.user)
        .await?;
    if !state.store.delete_callback(&scope.project, id).await? {
        return Err(AppError::CallbackNotFound(id));
    }
    Ok(Envelope::ok(true))
}

/// Enables a callback and clears its failure state. Admin only.
#[utoipa::path(
    put,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks/callback_enable",
    operation_id = "callback_enable",
    tag = "callbacks",
    params(ProjectScopeParams, CallerHeaders, IdParams),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn enable(
    State(state): State<AppState>,
    scope: ProjectScope,
    Query(IdParams { id }): Query<IdParams>,
) -> Result<Envelope<bool>> {
    set_enabled(state, scope, id, true).await
}

/// Disables a callback: its pending deliveries stop (they are marked cancelled when due). Admin only.
#[utoipa::path(
    put,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks/callback_disable",
    operation_id = "callback_disable",
    tag = "callbacks",
    params(ProjectScopeParams, CallerHeaders, IdParams),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn disable(
    State(state): State<AppState>,
    scope: ProjectScope,
    Query(IdParams { id }): Query<IdParams>,
) -> Result<Envelope<bool>> {
    set_enabled(state, scope, id, false).await
}

async fn set_enabled(
    state: AppState,
    scope: ProjectScope,
    id: CallbackId,
    enabled: bool,
) -> Result<Envelope<bool>> {
    let ProjectScope { project, user } = scope;
    state.authority.require_admin(&project, &user).await?;
    let reason = (!enabled).then(|| format!("disabled by {user}"));
    if !state
        .store
        .set_callback_enabled(&project, id, &user, enabled, reason.as_deref())
        .await?
    {
        return Err(AppError::CallbackNotFound(id));
    }
    Ok(Envelope::ok(true))
}
