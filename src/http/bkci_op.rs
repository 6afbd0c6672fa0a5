//! bk-ci's op routes for callbacks, `/op/pipeline/callback/…` (reference §3), beside our own
//! `/op/callbacks/global`: the same parameter names and answers, behind the service token. Where
//! they differ from bk-ci (custom headers masked in the list, reserved header names refused, a
//! re-create that does update the headers) the README says so.

use std::fmt;

use axum::extract::State;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::delivery::sender::MASK;
use crate::domain::{
    CallbackEvent, CallbackId, CallbackUrl, CustomHeaders, GlobalCallback, NewCallback, ProjectId,
    Region, local_date_time,
};
use crate::error::{AppError, Result};
use crate::http::callbacks::BatchResult;
use crate::http::envelope::{Envelope, ErrorResponse};
use crate::http::extract::{Json, OpUser, Path, Query, Refusal, ServiceCaller, ServiceTokenHeader};
use crate::http::global::delete_global;
use crate::http::params::ProjectEvent;
use crate::store::Selection;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(list))
        .routes(routes!(remove))
        .routes(routes!(enable_by_id))
        .routes(routes!(enable_by_url))
        .routes(routes!(disable_by_id))
}

/// The query of bk-ci's op create.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct CreateParams {
    #[param(inline)]
    event: ProjectEvent,
    /// An http(s) URL whose host resolves to public addresses only (see the SSRF rule).
    #[param(max_length = 1024)]
    url: String,
    /// Stored and shown by our own routes (bk-ci ignores it); IDC when absent.
    region: Option<Region>,
}

/// bk-ci's `ISecretParam`, polymorphic on `@type`; `header` (`HeaderSecretParam`) is the only
/// kind. The headers keep the order they were given in.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(tag = "@type")]
enum SecretParam {
    #[serde(rename = "header")]
    Header {
        /// Header name → value, sent with every delivery of the callback. Names are HTTP
        /// tokens and may not be one a delivery sets itself (Content-Type, Content-Length,
        /// Host, User-Agent, X-DEVOPS-WEBHOOK-TOKEN, X-DEVOPS-WEBHOOK-UNIQUE-ID,
        /// X-DEVOPS-TRACE-BIZ-ID, webhook-id, webhook-timestamp, webhook-signature, or a
        /// framing header); values are visible ASCII and inner spaces; at most 32 headers and
        /// 8 KiB in all.
        #[serde(deserialize_with = "in_order", serialize_with = "as_object")]
        #[schema(value_type = std::collections::BTreeMap<String, String>)]
        headers: Vec<(String, String)>,
    },
}

/// bk-ci's stored `SECRET_PARAM` (once decrypted): the headers it names, in order.
pub(crate) fn secret_param_headers(json: &str) -> Result<Vec<(String, String)>, serde_json::Error> {
    let SecretParam::Header { headers } = serde_json::from_str(json)?;
    Ok(headers)
}

/// A JSON object's members in document order (a map type would sort them, and drop repeats).
fn in_order<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<(String, String)>, D::Error> {
    struct Members;

    impl<'de> Visitor<'de> for Members {
        type Value = Vec<(String, String)>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of header names to string values")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut members = Vec::new();
            while let Some(member) = map.next_entry()? {
                members.push(member);
            }
            Ok(members)
        }
    }

    deserializer.deserialize_map(Members)
}

fn as_object<S: Serializer>(pairs: &[(String, String)], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_map(pairs.iter().map(|(name, value)| (name, value)))
}

/// Registers (or updates) a global callback with custom headers: bk-ci's op create. A
/// re-create of the same (url, event) replaces the headers (bk-ci keeps the old ones).
#[utoipa::path(
    post,
    path = "/op/pipeline/callback/create",
    operation_id = "bkci_op_callback_create",
    tag = "op",
    params(ServiceTokenHeader, ("X-DEVOPS-UID" = String, Header, description = "The acting user, 1 to 64 characters"), CreateParams),
    request_body = SecretParam,
    responses((status = 200, description = "Success envelope", body = Envelope<BatchResult>), ErrorResponse)
)]
async fn create(
    State(state): State<AppState>,
    _: ServiceCaller,
    OpUser(user): OpUser,
    Query(params): Query<CreateParams>,
    Json(secret): Json<SecretParam>,
) -> Result<Envelope<BatchResult>> {
    let SecretParam::Header { headers } = secret;
    let headers = CustomHeaders::new(headers)
        .map_err(|e| AppError::BadRequest(format!("invalid JSON body: headers: {e}")))?;
    let url = state.vet_callback_url(params.url).await?.into_string();
    let event = CallbackEvent::from(params.event);
    state
        .callbacks
        .upsert(NewCallback {
            project_id: ProjectId::global(),
            url,
            event,
            region: params.region.unwrap_or(Region::Idc),
            secret_token: None,
            headers,
            user,
        })
        .await?;
    Ok(Envelope::ok(BatchResult::succeeded(vec![event])))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ListParams {
    event: CallbackEvent,
}

/// bk-ci's `ProjectPipelineCallBack`, as its op list shows a global callback. The custom
/// headers' values are masked: only their names are shown.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ProjectPipelineCallBack {
    id: CallbackId,
    project_id: ProjectId,
    call_back_url: String,
    events: CallbackEvent,
    enable: bool,
    /// When failures without a success began: ISO local date-time in `TIME_ZONE`, no offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "2026-08-21T10:00:00")]
    failure_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_param: Option<SecretParam>,
}

/// The enabled global callbacks of one event, oldest first: bk-ci's op list.
#[utoipa::path(
    get,
    path = "/op/pipeline/callback/list",
    operation_id = "bkci_op_callback_list",
    tag = "op",
    params(ServiceTokenHeader, ListParams),
    responses((status = 200, description = "Success envelope", body = Envelope<Vec<ProjectPipelineCallBack>>), ErrorResponse)
)]
async fn list(
    State(state): State<AppState>,
    _: ServiceCaller,
    Query(params): Query<ListParams>,
) -> Result<Envelope<Vec<ProjectPipelineCallBack>>> {
    let zone = state.config.time_zone;
    let records = state
        .store
        .global_callbacks(params.event)
        .await?
        .into_iter()
        .map(|global| record(global, zone))
        .collect();
    Ok(Envelope::ok(records))
}

fn record(global: GlobalCallback, zone: chrono_tz::Tz) -> ProjectPipelineCallBack {
    let GlobalCallback { callback, headers } = global;
    let secret_param = (!headers.is_empty()).then(|| SecretParam::Header {
        headers: headers
            .pairs()
            .iter()
            .map(|h| (h.name.clone(), MASK.to_owned()))
            .collect(),
    });
    ProjectPipelineCallBack {
        id: callback.id,
        project_id: callback.project_id,
        call_back_url: callback.url,
        events: callback.event,
        enable: callback.enabled,
        failure_time: callback.failure_time.map(|at| local_date_time(at, zone)),
        secret_param,
    }
}

/// Deletes a global callback: bk-ci's op delete.
#[utoipa::path(
    delete,
    path = "/op/pipeline/callback/delete/{id}",
    operation_id = "bkci_op_callback_delete",
    tag = "op",
    params(("id" = i64, Path, description = "The global callback's id"), ServiceTokenHeader, ("X-DEVOPS-UID" = String, Header, description = "The acting user, 1 to 64 characters")),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn remove(
    State(state): State<AppState>,
    _: ServiceCaller,
    _: OpUser,
    Path(id): Path<CallbackId>,
) -> Result<Envelope<bool>> {
    delete_global(&state, id).await
}

/// Most ids one `callbackIds` may name.
const MAX_IDS: usize = 1000;

/// `callbackIds=1,2,3`: callback ids separated by commas (spaces and tabs around them allowed),
/// each once; empty, zero, negative or non-numeric entries refuse the whole list.
#[derive(Debug, Deserialize)]
#[serde(try_from = "String")]
struct IdList(Vec<CallbackId>);

impl TryFrom<String> for IdList {
    type Error = Refusal;

    fn try_from(raw: String) -> Result<Self, Refusal> {
        let mut ids = Vec::new();
        for entry in raw.split(',').map(|entry| entry.trim_matches([' ', '\t'])) {
            let id = entry
                .parse::<CallbackId>()
                .ok()
                .filter(|id| *id > 0 && entry.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    Refusal(format!(
                        "query parameter callbackIds must be positive callback ids separated \
                         by commas, not {entry:?}"
                    ))
                })?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        if ids.len() > MAX_IDS {
            return Err(Refusal(format!(
                "query parameter callbackIds may name at most {MAX_IDS} callbacks"
            )));
        }
        Ok(Self(ids))
    }
}

impl PartialSchema for IdList {
    fn schema() -> RefOr<Schema> {
        let one = "[ \t]*[1-9][0-9]{0,17}[ \t]*";
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("Comma-separated callback ids, e.g. `1,2`."))
            .pattern(Some(format!("^{one}(,{one})*$")))
            .into()
    }
}

impl ToSchema for IdList {}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct IdsParams {
    #[param(inline)]
    callback_ids: IdList,
}

/// `{projectId}` of the by-id routes: a project, or `DEVOPS_ALL_PROJECT` for global callbacks.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct ScopePath {
    /// A project's English name, or `DEVOPS_ALL_PROJECT`.
    #[param(value_type = String, max_length = 64)]
    project_id: String,
}

fn parse_scope(raw: &str, what: &str) -> Result<ProjectId> {
    ProjectId::from_stored(raw).map_err(|e| AppError::BadRequest(format!("{what} projectId {e}")))
}

/// Enables the project's callbacks with these ids and clears their failure state; ids of other
/// projects or of no callback are left alone. bk-ci's op enable by id.
#[utoipa::path(
    put,
    path = "/op/pipeline/callback/{project_id}/enableCallback/byId",
    operation_id = "bkci_op_callback_enable_by_id",
    tag = "op",
    params(ScopePath, ServiceTokenHeader, IdsParams),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn enable_by_id(
    State(state): State<AppState>,
    _: ServiceCaller,
    Path(scope): Path<ScopePath>,
    Query(params): Query<IdsParams>,
) -> Result<Envelope<bool>> {
    set_by_id(&state, &scope, &params, true).await
}

/// Disables the project's callbacks with these ids: their pending deliveries stop. bk-ci's op
/// disable by id.
#[utoipa::path(
    put,
    path = "/op/pipeline/callback/{project_id}/disable/byId",
    operation_id = "bkci_op_callback_disable_by_id",
    tag = "op",
    params(ScopePath, ServiceTokenHeader, IdsParams),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn disable_by_id(
    State(state): State<AppState>,
    _: ServiceCaller,
    Path(scope): Path<ScopePath>,
    Query(params): Query<IdsParams>,
) -> Result<Envelope<bool>> {
    set_by_id(&state, &scope, &params, false).await
}

async fn set_by_id(
    state: &AppState,
    scope: &ScopePath,
    params: &IdsParams,
    enabled: bool,
) -> Result<Envelope<bool>> {
    let project = parse_scope(&scope.project_id, "path parameter")?;
    let selection = Selection::Ids {
        project: &project,
        ids: &params.callback_ids.0,
    };
    set_enabled(state, selection, enabled, OP_DISABLE_REASON).await?;
    Ok(Envelope::ok(true))
}

/// Why the op routes' disable disabled a callback.
const OP_DISABLE_REASON: &str = "disabled through the op API";

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct ByUrlParams {
    /// Only this project's callbacks (`DEVOPS_ALL_PROJECT`: the global ones); all when absent.
    #[param(max_length = 64)]
    project_id: Option<String>,
    /// The callback URL, exactly as registered.
    #[param(min_length = 1, max_length = 1024)]
    url: String,
}

/// Enables every callback with exactly this URL (in one project, or in all) and clears their
/// failure state: bk-ci's op enable by URL, in one statement.
#[utoipa::path(
    put,
    path = "/op/pipeline/callback/enableCallback/byUrl",
    operation_id = "bkci_op_callback_enable_by_url",
    tag = "op",
    params(ServiceTokenHeader, ByUrlParams),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn enable_by_url(
    State(state): State<AppState>,
    _: ServiceCaller,
    Query(params): Query<ByUrlParams>,
) -> Result<Envelope<bool>> {
    if params.url.is_empty() || params.url.len() > CallbackUrl::MAX_LEN {
        return Err(AppError::BadRequest(format!(
            "query parameter url must be 1 to {} bytes",
            CallbackUrl::MAX_LEN
        )));
    }
    let project = params
        .project_id
        .as_deref()
        .map(|raw| parse_scope(raw, "query parameter"))
        .transpose()?;
    let selection = Selection::Url {
        project: project.as_ref(),
        url: &params.url,
    };
    set_enabled(&state, selection, true, OP_DISABLE_REASON).await?;
    Ok(Envelope::ok(true))
}

/// Enables the selected callbacks of any level (clearing their failure state) or disables them
/// with `reason` (the op routes and the console); answers how many it touched. The op routes
/// answer `true` whether or not any matched, as bk-ci does.
pub(super) async fn set_enabled(
    state: &AppState,
    selection: Selection<'_>,
    enabled: bool,
    reason: &str,
) -> Result<u64> {
    let reason = (!enabled).then_some(reason);
    Ok(state
        .store
        .set_callbacks_enabled(selection, enabled, reason)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists_parse_or_refuse_whole() {
        let ids = IdList::try_from(" 1,\t2 ,1".to_owned()).unwrap();
        assert_eq!(ids.0, [1, 2]);
        for bad in [
            "",
            " ",
            "1,,2",
            "1,x",
            "0",
            "-3",
            "+4",
            "1.5",
            "99999999999999999999",
        ] {
            assert!(IdList::try_from(bad.to_owned()).is_err(), "{bad:?}");
        }
        let many = (1..=MAX_IDS + 1)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert!(IdList::try_from(many).is_err());
    }

    #[test]
    fn secret_params_keep_order_and_need_their_type() {
        let body = r#"{"@type":"header","headers":{"X-B":"2","X-A":"1"}}"#;
        let SecretParam::Header { headers } = serde_json::from_str(body).unwrap();
        assert_eq!(
            headers,
            [
                ("X-B".to_owned(), "2".to_owned()),
                ("X-A".to_owned(), "1".to_owned())
            ]
        );
        for bad in [
            r#"{"headers":{"X-A":"1"}}"#,
            r#"{"@type":"token","headers":{"X-A":"1"}}"#,
            r#"{"@type":"header","headers":{"X-A":1}}"#,
        ] {
            assert!(serde_json::from_str::<SecretParam>(bad).is_err(), "{bad}");
        }
        let shown = SecretParam::Header {
            headers: vec![("X-B".to_owned(), MASK.to_owned())],
        };
        assert_eq!(
            serde_json::to_string(&shown).unwrap(),
            r#"{"@type":"header","headers":{"X-B":"******"}}"#
        );
    }

    #[test]
    fn failure_times_are_local_without_offset() {
        let at = chrono::DateTime::parse_from_rfc3339("2026-08-21T02:00:00Z")
            .unwrap()
            .timestamp_millis();
        assert_eq!(
            local_date_time(at, chrono_tz::Asia::Shanghai),
            "2026-08-21T10:00:00"
        );
    }
}
