//! Global callbacks (op API, service token): registrations under `DEVOPS_ALL_PROJECT` that
//! receive the PROJECT_* events of every project, their deliveries and their recovery jobs.

use axum::extract::State;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::domain::{CallbackId, ProjectId};
use crate::error::Result;
use crate::http::callbacks::{self, CallbackRecord, page_of, register};
use crate::http::deliveries::{self, DeliveriesParams, DeliveryView, Listing};
use crate::http::envelope::{Envelope, ErrorResponse};
use crate::http::extract::{Caller, Path, Query, ServiceCaller, ServiceTokenHeader};
use crate::http::paging::{Page, PageParams};
use crate::http::params::{ProjectEvent, RegisterParams};
use crate::http::recovery::{
    self, JobPath, JobPathParams, RecoverJobView, RecoverStarted, Window, WindowParams,
};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(remove))
        .routes(routes!(list_deliveries))
        .routes(routes!(recover))
        .routes(routes!(recover_job, cancel_recovery))
}

/// The acting user of an op route (documentation only: `Caller` reads it).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct OpUserHeader {
    /// The acting user, 1 to 64 characters
    #[param(rename = "X-DEVOPS-UID")]
    x_devops_uid: String,
}

/// The global callback in the path.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct GlobalPath {
    /// The global callback's id
    id: CallbackId,
}

/// A global callback's deliveries, newest first, of one status if given.
#[utoipa::path(
    get,
    path = "/op/callbacks/global/{id}/deliveries",
    operation_id = "global_callback_deliveries",
    tag = "op",
    params(GlobalPath, ServiceTokenHeader, DeliveriesParams, PageParams),
    responses((status = 200, description = "Success envelope", body = Envelope<Page<DeliveryView>>), ErrorResponse)
)]
async fn list_deliveries(
    State(state): State<AppState>,
    _: ServiceCaller,
    Path(GlobalPath { id }): Path<GlobalPath>,
    listing: Listing,
) -> Result<Envelope<Page<DeliveryView>>> {
    deliveries::page_of(&state, &ProjectId::global(), id, listing).await
}

/// Starts re-queuing every delivery of the global callback that ended FAILED or CANCELLED in
/// the window (see `callback_recover`); answers the job's id.
#[utoipa::path(
    post,
    path = "/op/callbacks/global/{id}/recover",
    operation_id = "global_callback_recover",
    tag = "op",
    params(GlobalPath, ServiceTokenHeader, OpUserHeader, WindowParams),
    responses((status = 200, description = "Success envelope", body = Envelope<RecoverStarted>), ErrorResponse)
)]
async fn recover(
    State(state): State<AppState>,
    _: ServiceCaller,
    Caller(user): Caller,
    Path(GlobalPath { id }): Path<GlobalPath>,
    window: Window,
) -> Result<Envelope<RecoverStarted>> {
    recovery::begin(&state, ProjectId::global(), id, window, user).await
}

/// A recovery job of a global callback and how far it got.
#[utoipa::path(
    get,
    path = "/op/callbacks/global/recover_jobs/{job_id}",
    operation_id = "global_recover_job_get",
    tag = "op",
    params(JobPathParams, ServiceTokenHeader),
    responses((status = 200, description = "Success envelope", body = Envelope<RecoverJobView>), ErrorResponse)
)]
async fn recover_job(
    State(state): State<AppState>,
    _: ServiceCaller,
    JobPath(id): JobPath,
) -> Result<Envelope<RecoverJobView>> {
    recovery::job_of(&state, &ProjectId::global(), id).await
}

/// Cancels a running recovery job of a global callback; answers the job.
#[utoipa::path(
    delete,
    path = "/op/callbacks/global/recover_jobs/{job_id}",
    operation_id = "global_recover_job_cancel",
    tag = "op",
    params(JobPathParams, ServiceTokenHeader, OpUserHeader),
    responses((status = 200, description = "Success envelope", body = Envelope<RecoverJobView>), ErrorResponse)
)]
async fn cancel_recovery(
    State(state): State<AppState>,
    _: ServiceCaller,
    Caller(user): Caller,
    JobPath(id): JobPath,
) -> Result<Envelope<RecoverJobView>> {
    recovery::stop(&state, &ProjectId::global(), id, &user).await
}

/// Registers (or updates) a global callback; only PROJECT_* events are delivered from them.
#[utoipa::path(
    post,
    path = "/op/callbacks/global",
    operation_id = "global_callback_create",
    tag = "op",
    params(ServiceTokenHeader, ("X-DEVOPS-UID" = String, Header, description = "The acting user, 1 to 64 characters"), RegisterParams<ProjectEvent>),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn create(
    State(state): State<AppState>,
    _: ServiceCaller,
    Caller(user): Caller,
    Query(params): Query<RegisterParams<ProjectEvent>>,
) -> Result<Envelope<bool>> {
    register(&state, ProjectId::global(), user, params).await
}

/// The global callbacks, newest first.
#[utoipa::path(
    get,
    path = "/op/callbacks/global",
    operation_id = "global_callback_list",
    tag = "op",
    params(ServiceTokenHeader, PageParams),
    responses((status = 200, description = "Success envelope", body = Envelope<Page<CallbackRecord>>), ErrorResponse)
)]
async fn list(
    State(state): State<AppState>,
    _: ServiceCaller,
    Query(params): Query<PageParams>,
) -> Result<Envelope<Page<CallbackRecord>>> {
    page_of(&state, &ProjectId::global(), params.request()).await
}

/// Deletes a global callback.
#[utoipa::path(
    delete,
    path = "/op/callbacks/global/{id}",
    operation_id = "global_callback_delete",
    tag = "op",
    params(("id" = i64, Path, description = "The global callback's id"), ServiceTokenHeader),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn remove(
    State(state): State<AppState>,
    _: ServiceCaller,
    Path(id): Path<CallbackId>,
) -> Result<Envelope<bool>> {
    delete_global(&state, id).await
}

/// Deletes global callback `id` (this route and bk-ci's op delete); 2101136 when there is none.
pub(super) async fn delete_global(state: &AppState, id: CallbackId) -> Result<Envelope<bool>> {
    callbacks::delete(state, &ProjectId::global(), id).await?;
    Ok(Envelope::ok(true))
}
