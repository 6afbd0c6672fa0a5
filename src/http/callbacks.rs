//! The v4 callback resource: `/{apigwType}/v4/projects/{projectId}/callbacks…`.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::domain::{
    Callback, CallbackEvent, CallbackId, CustomHeaders, EpochMillis, NewCallback, ProjectId,
    Region, UserId, local_date_time,
};
use crate::error::{AppError, Result};
use crate::http::envelope::{Envelope, ErrorResponse};
use crate::http::extract::{CallerHeaders, ProjectAdmin, ProjectMember, ProjectScopeParams, Query};
use crate::http::paging::{Page, PageParams};
use crate::http::params::{EventList, IdParams, Identified, RegisterParams};

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

/// The seed API: register (or update) one callback. Admin only.
#[utoipa::path(
    post,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks",
    operation_id = "callback_create",
    tag = "callbacks",
    params(ProjectScopeParams, CallerHeaders, RegisterParams<CallbackEvent>),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn create(
    State(state): State<AppState>,
    ProjectAdmin {
        project,
        user,
        input: Query(params),
        ..
    }: ProjectAdmin<Query<RegisterParams<CallbackEvent>>>,
) -> Result<Envelope<bool>> {
    register(&state, project, user, params).await
}

/// Vets the URL and registers it for the one event, through the create coalescer (create and
/// the global create).
pub(super) async fn register<E>(
    state: &AppState,
    project: ProjectId,
    user: UserId,
    params: RegisterParams<E>,
) -> Result<Envelope<bool>>
where
    E: Into<CallbackEvent> + Copy + ToSchema,
{
    let event = params.event.into();
    for row in registrations(state, &project, &user, params, &[event]).await? {
        state.callbacks.upsert(row).await?;
    }
    Ok(Envelope::ok(true))
}

/// Vets the URL, then the rows that register it for each of `events`.
async fn registrations<E: ToSchema>(
    state: &AppState,
    project: &ProjectId,
    user: &UserId,
    params: RegisterParams<E>,
    events: &[CallbackEvent],
) -> Result<Vec<NewCallback>> {
    let url = state.vet_callback_url(params.url).await?.into_string();
    Ok(events
        .iter()
        .map(|&event| NewCallback {
            project_id: project.clone(),
            url: url.clone(),
            event,
            region: params.region,
            secret_token: params.secret_token.clone(),
            headers: CustomHeaders::default(),
            user: user.clone(),
        })
        .collect())
}

/// bk-ci's `CreateCallBackResult`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct BatchResult {
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
    params(ProjectScopeParams, CallerHeaders, RegisterParams<EventList>),
    responses((status = 200, description = "Success envelope", body = Envelope<BatchResult>), ErrorResponse)
)]
async fn create_batch(
    State(state): State<AppState>,
    ProjectAdmin {
        project,
        user,
        input: Query(params),
        ..
    }: ProjectAdmin<Query<RegisterParams<EventList>>>,
) -> Result<Envelope<BatchResult>> {
    let events = params.event.0.clone();
    let rows = registrations(&state, &project, &user, params, &events).await?;
    state.store.upsert_callbacks(&rows).await?;
    Ok(Envelope::ok(BatchResult::succeeded(events)))
}

impl BatchResult {
    /// Every event registered (there are no partial failures: see `failure_events`).
    pub(super) fn succeeded(events: Vec<CallbackEvent>) -> Self {
        Self {
            success_events: events,
            failure_events: Default::default(),
        }
    }
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
    /// When the failing began, as bk-ci writes it: a local date-time in `TIME_ZONE`, to the
    /// second, without an offset.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "2026-08-21T10:00:00", pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}$")]
    failure_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
    has_secret_token: bool,
}

impl CallbackRecord {
    /// `zone` is `TIME_ZONE`, in which `failureTime` is written.
    pub(super) fn new(c: Callback, zone: chrono_tz::Tz) -> Self {
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
            failure_time: c.failure_time.map(|at| local_date_time(at, zone)),
            disabled_reason: c.disabled_reason,
            has_secret_token: c.has_secret_token,
        }
    }
}

impl Identified for CallbackRecord {
    const ID: &'static str = "The callback's id, as `callback_list` shows it.";
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
    ProjectMember {
        project,
        input: Query(params),
        ..
    }: ProjectMember<Query<PageParams>>,
) -> Result<Envelope<Page<CallbackRecord>>> {
    page_of(&state, &project, params.request()).await
}

pub(super) async fn page_of(
    state: &AppState,
    project: &ProjectId,
    request: crate::domain::PageRequest,
) -> Result<Envelope<Page<CallbackRecord>>> {
    let (count, callbacks) = state.store.list_callbacks(project, request).await?;
    let zone = state.config.time_zone;
    let records = callbacks
        .into_iter()
        .map(|callback| CallbackRecord::new(callback, zone))
        .collect();
    Ok(Envelope::ok(Page::new(request, count, records)))
}

/// `?id=` of a callback, for the admin routes below.
type CallbackAdmin = ProjectAdmin<Query<IdParams<CallbackRecord>>>;

/// Deletes one callback of the project. Admin only.
#[utoipa::path(
    delete,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks/callback",
    operation_id = "callback_delete",
    tag = "callbacks",
    params(ProjectScopeParams, CallerHeaders, IdParams<CallbackRecord>),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn remove(State(state): State<AppState>, admin: CallbackAdmin) -> Result<Envelope<bool>> {
    let Query(IdParams { id, .. }) = admin.input;
    delete(&state, &admin.project, id).await?;
    Ok(Envelope::ok(true))
}

/// Deletes a project-level (or global) callback of `project` (this route, the global delete and
/// the console); 2101136 when there is none.
pub(super) async fn delete(state: &AppState, project: &ProjectId, id: CallbackId) -> Result<()> {
    if !state.store.delete_callback(project, id).await? {
        return Err(AppError::CallbackNotFound(id));
    }
    Ok(())
}

/// Enables a callback and clears its failure state. Admin only.
#[utoipa::path(
    put,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks/callback_enable",
    operation_id = "callback_enable",
    tag = "callbacks",
    params(ProjectScopeParams, CallerHeaders, IdParams<CallbackRecord>),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn enable(State(state): State<AppState>, admin: CallbackAdmin) -> Result<Envelope<bool>> {
    set_enabled(state, admin, true).await
}

/// Disables a callback: its pending deliveries are cancelled at once, with the reason (a
/// recovery can bring them back). Admin only.
#[utoipa::path(
    put,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks/callback_disable",
    operation_id = "callback_disable",
    tag = "callbacks",
    params(ProjectScopeParams, CallerHeaders, IdParams<CallbackRecord>),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn disable(State(state): State<AppState>, admin: CallbackAdmin) -> Result<Envelope<bool>> {
    set_enabled(state, admin, false).await
}

async fn set_enabled(
    state: AppState,
    admin: CallbackAdmin,
    enabled: bool,
) -> Result<Envelope<bool>> {
    let ProjectAdmin {
        project,
        user,
        input: Query(IdParams { id, .. }),
        ..
    } = admin;
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
