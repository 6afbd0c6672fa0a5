//! Pipeline-level callbacks: `/{apigwType}/v4/projects/{projectId}/callbacks/pipelines/{pipelineId}`
//! (bk-ci's `T_PIPELINE_CALLBACK` routes). A pipeline's callbacks are keyed by name; BUILD_*
//! events of that pipeline go to them, besides the project's callbacks.

use std::collections::HashSet;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::openapi::schema::ArrayBuilder;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::domain::{
    CallbackEvent, CallbackName, NewPipelineCallback, PipelineCallback, PipelineId, ProjectId,
    Region,
};
use crate::error::{AppError, Result};
use crate::http::envelope::{Envelope, ErrorResponse};
use crate::http::extract::{
    CallerHeaders, Path, ProjectAdmin, ProjectMember, ProjectScopeParams, Query, WithBody,
};
use crate::secrets::Secret;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create, list, remove))
}

/// The pipeline in the path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PipelinePathParams {
    /// The pipeline's id, e.g. `p-7e1c2b3a4d5e4f60a1b2c3d4e5f60718`.
    #[param(value_type = PipelineId)]
    pipeline_id: String,
}

/// The pipeline a route acts on, from its path; a bad id is a 400 naming `pipelineId`.
pub struct PipelinePath(pub PipelineId);

impl FromRequestParts<AppState> for PipelinePath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Path(params) = Path::<PipelinePathParams>::from_request_parts(parts, state).await?;
        params
            .pipeline_id
            .parse()
            .map(Self)
            .map_err(|e| AppError::BadRequest(format!("path parameter pipelineId {e}")))
    }
}

/// The pipeline of the path and the route's query `I`.
pub struct InPipeline<I> {
    pub pipeline: PipelineId,
    pub input: I,
}

impl<I> FromRequestParts<AppState> for InPipeline<I>
where
    I: FromRequestParts<AppState, Rejection = AppError> + Send,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let PipelinePath(pipeline) = PipelinePath::from_request_parts(parts, state).await?;
        let input = I::from_request_parts(parts, state).await?;
        Ok(Self { pipeline, input })
    }
}

/// bk-ci's `PipelineCallbackEvent`, as the POST body holds it (note `callbackUrl`, with a
/// lower-case b, unlike the project level's `callBackUrl`).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineCallbackItem {
    /// Any event may be registered; only BUILD_* events are ever delivered at pipeline level.
    callback_event: CallbackEvent,
    /// An http(s) URL whose host resolves to public addresses only (see the SSRF rule).
    #[schema(max_length = 1024)]
    callback_url: String,
    /// Sent as `X-DEVOPS-WEBHOOK-TOKEN` and used to sign deliveries; never shown again.
    #[serde(default, deserialize_with = "body_secret_token")]
    #[schema(value_type = Option<String>, max_length = 1024)]
    secret_token: Option<Secret>,
    /// The key of the pipeline's callback: a POST with an existing name updates it.
    callback_name: CallbackName,
    /// `IDC` when absent or null.
    #[serde(default)]
    region: Option<Region>,
}

/// `secretToken` of a body item: null or empty is none.
fn body_secret_token<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Secret>, D::Error> {
    Option::<String>::deserialize(deserializer)?
        .map(|token| Secret::callback_token(token).map_err(|e| e.to_string()))
        .transpose()
        .map(Option::flatten)
        .map_err(serde::de::Error::custom)
}

/// The POST body: at most [`Registrations::MAX`] items.
#[derive(Deserialize)]
#[serde(try_from = "Vec<PipelineCallbackItem>")]
pub struct Registrations(Vec<PipelineCallbackItem>);

impl Registrations {
    pub const MAX: usize = 100;
}

impl TryFrom<Vec<PipelineCallbackItem>> for Registrations {
    type Error = String;

    fn try_from(items: Vec<PipelineCallbackItem>) -> std::result::Result<Self, String> {
        if items.len() > Self::MAX {
            return Err(format!(
                "the body may hold at most {} callbacks, not {}",
                Self::MAX,
                items.len()
            ));
        }
        Ok(Self(items))
    }
}

impl PartialSchema for Registrations {
    fn schema() -> RefOr<Schema> {
        ArrayBuilder::new()
            .items(PipelineCallbackItem::schema())
            .max_items(Some(Self::MAX))
            .into()
    }
}

/// The item is inlined in the array: its own references are what must be registered.
impl ToSchema for Registrations {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        PipelineCallbackItem::schemas(schemas);
    }
}

/// Creates the pipeline's callbacks or updates them by name (URL, event, region and token):
/// every URL is vetted first, in order, and the first refused one answers with its code and
/// writes nothing; of repeated names the last wins. Admin only.
#[utoipa::path(
    post,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks/pipelines/{pipeline_id}",
    operation_id = "pipeline_callback_create",
    tag = "callbacks",
    params(ProjectScopeParams, PipelinePathParams, CallerHeaders),
    request_body(content = Registrations, content_type = "application/json"),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn create(
    State(state): State<AppState>,
    ProjectAdmin {
        project,
        user,
        input:
            WithBody {
                input: PipelinePath(pipeline),
                body: Registrations(items),
            },
        ..
    }: ProjectAdmin<WithBody<PipelinePath, Registrations>>,
) -> Result<Envelope<bool>> {
    let mut callbacks = Vec::with_capacity(items.len());
    for item in items {
        callbacks.push(NewPipelineCallback {
            url: state
                .vet_callback_url(item.callback_url)
                .await?
                .into_string(),
            name: item.callback_name,
            event: item.callback_event,
            region: item.region.unwrap_or(Region::Idc),
            secret_token: item.secret_token,
        });
    }
    state
        .store
        .upsert_pipeline_callbacks(&project, &pipeline, &user, &last_of_each_name(callbacks))
        .await?;
    Ok(Envelope::ok(true))
}

/// The last item of each name, in the order of those last items.
fn last_of_each_name(callbacks: Vec<NewPipelineCallback>) -> Vec<NewPipelineCallback> {
    let mut seen = HashSet::new();
    let mut kept: Vec<NewPipelineCallback> = callbacks
        .into_iter()
        .rev()
        .filter(|c| seen.insert(c.name.clone()))
        .collect();
    kept.reverse();
    kept
}

/// A pipeline's callback as the API shows it: bk-ci's fields, but `hasSecretToken` instead of
/// the token, and whether failures disabled it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PipelineCallbackRecord {
    callback_event: CallbackEvent,
    callback_url: String,
    callback_name: CallbackName,
    region: Region,
    has_secret_token: bool,
    /// False once failing deliveries disabled it (a 410, or failing for
    /// `CALLBACK_DISABLE_AFTER`); a POST of its name enables it again.
    enable: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
}

impl From<PipelineCallback> for PipelineCallbackRecord {
    fn from(c: PipelineCallback) -> Self {
        Self {
            callback_event: c.event,
            callback_url: c.url,
            callback_name: c.name,
            region: c.region,
            has_secret_token: c.has_secret_token,
            enable: c.enabled,
            disabled_reason: c.disabled_reason,
        }
    }
}

/// `?event=` of the list.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventFilter {
    /// Only the callbacks of this event.
    event: Option<CallbackEvent>,
}

/// The pipeline's callbacks, by name. Members only.
#[utoipa::path(
    get,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks/pipelines/{pipeline_id}",
    operation_id = "pipeline_callback_get",
    tag = "callbacks",
    params(ProjectScopeParams, PipelinePathParams, CallerHeaders, EventFilter),
    responses((status = 200, description = "Success envelope", body = Envelope<Vec<PipelineCallbackRecord>>), ErrorResponse)
)]
async fn list(
    State(state): State<AppState>,
    ProjectMember {
        project,
        input:
            InPipeline {
                pipeline,
                input: Query(EventFilter { event }),
            },
        ..
    }: ProjectMember<InPipeline<Query<EventFilter>>>,
) -> Result<Envelope<Vec<PipelineCallbackRecord>>> {
    let callbacks = state
        .store
        .list_pipeline_callbacks(&project, &pipeline, event)
        .await?;
    Ok(Envelope::ok(
        callbacks.into_iter().map(Into::into).collect(),
    ))
}

/// `?callbackName=` of the delete.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct NameParams {
    /// The name of the callback to delete.
    callback_name: CallbackName,
}

/// Deletes the pipeline's callback of that name; `true` even when there was none, as in bk-ci.
/// Admin only.
#[utoipa::path(
    delete,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks/pipelines/{pipeline_id}",
    operation_id = "pipeline_callback_delete",
    tag = "callbacks",
    params(ProjectScopeParams, PipelinePathParams, CallerHeaders, NameParams),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn remove(
    State(state): State<AppState>,
    ProjectAdmin {
        project,
        input:
            InPipeline {
                pipeline,
                input: Query(NameParams { callback_name }),
            },
        ..
    }: ProjectAdmin<InPipeline<Query<NameParams>>>,
) -> Result<Envelope<bool>> {
    delete(&state, &project, &pipeline, &callback_name).await?;
    Ok(Envelope::ok(true))
}

/// Deletes the pipeline's callback of that name, if there is one (this route and the console).
pub(super) async fn delete(
    state: &AppState,
    project: &ProjectId,
    pipeline: &PipelineId,
    name: &CallbackName,
) -> Result<()> {
    Ok(state
        .store
        .delete_pipeline_callback(project, pipeline, name)
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn of_repeated_names_the_last_wins() {
        let item = |name: &str, url: &str| NewPipelineCallback {
            name: name.parse().unwrap(),
            url: url.to_owned(),
            event: CallbackEvent::BuildEnd,
            region: Region::Idc,
            secret_token: None,
        };
        let kept = last_of_each_name(vec![
            item("a", "u1"),
            item("b", "u2"),
            item("a", "u3"),
            item("c", "u4"),
        ]);
        let kept: Vec<(&str, &str)> = kept
            .iter()
            .map(|c| (c.name.as_str(), c.url.as_str()))
            .collect();
        assert_eq!(kept, [("b", "u2"), ("a", "u3"), ("c", "u4")]);
    }
}
