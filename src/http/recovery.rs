//! Bulk recovery: `POST …/callbacks/callback_recover` starts a job that re-queues a callback's
//! deliveries that ended FAILED or CANCELLED in a window; `…/callbacks/recover_jobs/{jobId}`
//! shows it (GET) or cancels it (DELETE). The op API does the same for global callbacks
//! (`global.rs`). The jobs themselves run in `delivery::recovery`.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::domain::{
    CallbackId, EpochMillis, NewRecovery, ProjectId, RecoverJob, RecoverJobId, RecoverState,
    RecoveryStart, TimeParam, UserId, now_millis,
};
use crate::error::{AppError, Result};
use crate::http::deliveries::AnyCallback;
use crate::http::envelope::{Envelope, ErrorResponse};
use crate::http::extract::{
    CallerHeaders, Path, ProjectAdmin, ProjectMember, ProjectScopeParams, Query,
};
use crate::http::history::instant_param;
use crate::http::params::IdParams;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(show, cancel))
}

/// The window of a recovery, in the history API's time forms (see `TimeParam`).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct WindowParams {
    /// Deliveries that ended (FAILED or CANCELLED) at or after this time.
    #[param(value_type = TimeParam, inline)]
    since: String,
    /// … and at or before this time; default now.
    #[param(value_type = Option<TimeParam>, inline)]
    until: Option<String>,
}

/// The window, read in `TIME_ZONE` and checked, before any permission check.
pub(super) struct Window {
    from: EpochMillis,
    to: EpochMillis,
}

impl FromRequestParts<AppState> for Window {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Query(params) = Query::<WindowParams>::from_request_parts(parts, state).await?;
        Self::parse(
            &params.since,
            params.until.as_deref(),
            state.config.time_zone,
        )
    }
}

impl Window {
    /// `since` and `until` (default now) in the history format, read in `zone` (these routes'
    /// query and the console's form).
    pub(super) fn parse(since: &str, until: Option<&str>, zone: chrono_tz::Tz) -> Result<Self> {
        let from = instant_param("since", since, zone)?;
        let to = match until {
            Some(until) => instant_param("until", until, zone)?,
            None => now_millis(),
        };
        if from > to {
            return Err(AppError::BadRequest(
                "query parameter since must not be after until (which defaults to now)".to_owned(),
            ));
        }
        Ok(Self { from, to })
    }
}

/// The v4 query of a recovery: `?id=` and the window.
struct RecoverQuery {
    callback: CallbackId,
    window: Window,
}

impl FromRequestParts<AppState> for RecoverQuery {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Query(IdParams { id, .. }) =
            Query::<IdParams<AnyCallback>>::from_request_parts(parts, state).await?;
        let window = Window::from_request_parts(parts, state).await?;
        Ok(Self {
            callback: id,
            window,
        })
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RecoverStarted {
    job_id: RecoverJobId,
}

/// A recovery job; the progress of a running one is `(done + failed) / total`.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct RecoverJobView {
    job_id: RecoverJobId,
    callback_id: CallbackId,
    state: RecoverState,
    /// Why it was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// Deliveries in the window when the job started.
    total: u64,
    /// Re-queued so far (the workers send them as any other delivery).
    done: u64,
    /// Counted when the job is done: deliveries of the window that were no longer FAILED or
    /// CANCELLED when their batch came (re-queued by another job, or removed by retention).
    failed: u64,
    /// The window, epoch ms: deliveries that ended between `since` and `until`.
    since: EpochMillis,
    until: EpochMillis,
    creator: UserId,
    created_time: EpochMillis,
    updated_time: EpochMillis,
}

impl From<RecoverJob> for RecoverJobView {
    fn from(job: RecoverJob) -> Self {
        Self {
            job_id: job.id,
            callback_id: job.callback_id,
            state: job.state,
            reason: job.reason,
            total: job.total,
            done: job.done,
            failed: job.failed,
            since: job.from,
            until: job.to,
            creator: job.creator,
            created_time: job.created_at,
            updated_time: job.updated_at,
        }
    }
}

/// Starts re-queuing, as new attempts, every delivery of the callback that ended FAILED or
/// CANCELLED (by a disable) in the window; answers the job's id at once. The callback must be
/// enabled (409 otherwise). Admin only.
#[utoipa::path(
    post,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks/callback_recover",
    operation_id = "callback_recover",
    tag = "recovery",
    params(ProjectScopeParams, CallerHeaders, IdParams<AnyCallback>, WindowParams),
    responses((status = 200, description = "Success envelope", body = Envelope<RecoverStarted>), ErrorResponse)
)]
async fn start(
    State(state): State<AppState>,
    ProjectAdmin {
        project,
        user,
        input,
        ..
    }: ProjectAdmin<RecoverQuery>,
) -> Result<Envelope<RecoverStarted>> {
    begin(&state, project, input.callback, input.window, user).await
}

/// Starts a recovery of `callback`, which must be the project's (404) and enabled (409).
pub(super) async fn begin(
    state: &AppState,
    project: ProjectId,
    callback: CallbackId,
    window: Window,
    creator: UserId,
) -> Result<Envelope<RecoverStarted>> {
    let job = launch(state, project, callback, window, creator).await?;
    Ok(Envelope::ok(RecoverStarted { job_id: job.id }))
}

/// [`begin`], answering the job (the console shows its progress).
pub(super) async fn launch(
    state: &AppState,
    project: ProjectId,
    callback: CallbackId,
    Window { from, to }: Window,
    creator: UserId,
) -> Result<RecoverJob> {
    let recovery = NewRecovery {
        project_id: project,
        callback_id: callback,
        from,
        to,
        creator,
    };
    let job = match state.store.start_recovery(&recovery).await? {
        RecoveryStart::Started(job) => job,
        RecoveryStart::NoCallback => return Err(AppError::CallbackNotFound(callback)),
        RecoveryStart::Disabled => {
            return Err(AppError::Conflict(format!(
                "callback {callback} is disabled; enable it before recovering its deliveries"
            )));
        }
    };
    tracing::info!(
        job = job.id,
        callback,
        total = job.total,
        creator = %job.creator,
        "recovery job started"
    );
    state.recoveries.notify_one();
    Ok(job)
}

/// The job in the path.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub(super) struct JobPathParams {
    /// The recovery job's id, as `callback_recover` answered it.
    job_id: RecoverJobId,
}

/// The job a route acts on, from its path.
pub(super) struct JobPath(pub RecoverJobId);

impl FromRequestParts<AppState> for JobPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Path(params) = Path::<JobPathParams>::from_request_parts(parts, state).await?;
        Ok(Self(params.job_id))
    }
}

/// A recovery job of the project and how far it got. Members only.
#[utoipa::path(
    get,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks/recover_jobs/{job_id}",
    operation_id = "recover_job_get",
    tag = "recovery",
    params(ProjectScopeParams, JobPathParams, CallerHeaders),
    responses((status = 200, description = "Success envelope", body = Envelope<RecoverJobView>), ErrorResponse)
)]
async fn show(
    State(state): State<AppState>,
    ProjectMember {
        project,
        input: JobPath(id),
        ..
    }: ProjectMember<JobPath>,
) -> Result<Envelope<RecoverJobView>> {
    job_of(&state, &project, id).await
}

pub(super) async fn job_of(
    state: &AppState,
    project: &ProjectId,
    id: RecoverJobId,
) -> Result<Envelope<RecoverJobView>> {
    let job = state
        .store
        .recover_job(project, id)
        .await?
        .ok_or(AppError::RecoverJobNotFound(id))?;
    Ok(Envelope::ok(job.into()))
}

/// Cancels a running recovery job: nothing more is re-queued (what was is delivered). A
/// finished job stays as it is. Answers the job. Admin only.
#[utoipa::path(
    delete,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks/recover_jobs/{job_id}",
    operation_id = "recover_job_cancel",
    tag = "recovery",
    params(ProjectScopeParams, JobPathParams, CallerHeaders),
    responses((status = 200, description = "Success envelope", body = Envelope<RecoverJobView>), ErrorResponse)
)]
async fn cancel(
    State(state): State<AppState>,
    ProjectAdmin {
        project,
        user,
        input: JobPath(id),
        ..
    }: ProjectAdmin<JobPath>,
) -> Result<Envelope<RecoverJobView>> {
    stop(&state, &project, id, &user).await
}

pub(super) async fn stop(
    state: &AppState,
    project: &ProjectId,
    id: RecoverJobId,
    user: &UserId,
) -> Result<Envelope<RecoverJobView>> {
    Ok(Envelope::ok(halt(state, project, id, user).await?.into()))
}

/// [`stop`], answering the job as it then stands (the console says whether it was running).
pub(super) async fn halt(
    state: &AppState,
    project: &ProjectId,
    id: RecoverJobId,
    user: &UserId,
) -> Result<RecoverJob> {
    let job = state
        .store
        .cancel_recovery(project, id, &format!("cancelled by {user}"))
        .await?
        .ok_or(AppError::RecoverJobNotFound(id))?;
    if job.state == RecoverState::Cancelled {
        tracing::info!(job = id, %user, "recovery job cancelled");
    }
    Ok(job)
}
