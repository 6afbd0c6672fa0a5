//! Global callbacks (op API, service token): registrations under `DEVOPS_ALL_PROJECT` that
//! receive the PROJECT_* events of every project.

use axum::Router;
use axum::extract::State;
use axum::routing::{delete, post};

use crate::AppState;
use crate::domain::{ALL_PROJECTS, CallbackId, NewCallback, Page, ProjectId};
use crate::error::{AppError, Result};
use crate::http::callbacks::{CallbackRecord, CreateParams, page_of, secret_token};
use crate::http::envelope::Envelope;
use crate::http::extract::{Caller, Path, Query, ServiceCaller};
use crate::http::paging::PageParams;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/op/callbacks/global", post(create).get(list))
        .route("/op/callbacks/global/{id}", delete(remove))
}

fn all_projects() -> ProjectId {
    ALL_PROJECTS.parse().expect("a valid project id")
}

/// Registers (or updates) a global callback; only PROJECT_* events are delivered from them.
async fn create(
    State(state): State<AppState>,
    _: ServiceCaller,
    Caller(user): Caller,
    Query(params): Query<CreateParams>,
) -> Result<Envelope<bool>> {
    if !params.event.is_project_event() {
        return Err(AppError::BadRequest(format!(
            "invalid query parameter: event: global callbacks receive only PROJECT_CREATE, \
             PROJECT_UPDATE, PROJECT_ENABLE and PROJECT_DISABLE, not {}",
            params.event
        )));
    }
    let secret_token = secret_token(params.secret_token)?;
    let url = state.vet_callback_url(params.url).await?;
    state
        .callbacks
        .upsert(NewCallback {
            project_id: all_projects(),
            url: url.into_string(),
            event: params.event,
            region: params.region,
            secret_token,
            user,
        })
        .await?;
    Ok(Envelope::ok(true))
}

async fn list(
    State(state): State<AppState>,
    _: ServiceCaller,
    Query(params): Query<PageParams>,
) -> Result<Envelope<Page<CallbackRecord>>> {
    page_of(&state, &all_projects(), params.validate()?).await
}

async fn remove(
    State(state): State<AppState>,
    _: ServiceCaller,
    Path(id): Path<CallbackId>,
) -> Result<Envelope<bool>> {
    if !state.store.delete_callback(&all_projects(), id).await? {
        return Err(AppError::CallbackNotFound(id));
    }
    Ok(Envelope::ok(true))
}
