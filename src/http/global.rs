//! Global callbacks (op API, service token): registrations under `DEVOPS_ALL_PROJECT` that
//! receive the PROJECT_* events of every project.

use axum::extract::State;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::domain::{CallbackId, ProjectId};
use crate::error::Result;
use crate::http::callbacks::{self, CallbackRecord, page_of, register};
use crate::http::envelope::{Envelope, ErrorResponse};
use crate::http::extract::{Caller, Path, Query, ServiceCaller, ServiceTokenHeader};
use crate::http::paging::{Page, PageParams};
use crate::http::params::{ProjectEvent, RegisterParams};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(remove))
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
