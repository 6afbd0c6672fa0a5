//! Global callbacks (op API, service token): registrations under `DEVOPS_ALL_PROJECT` that
//! receive the PROJECT_* events of every project.

use axum::extract::State;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::domain::{CallbackEvent, CallbackId, NewCallback, Page, ProjectId, Region};
use crate::error::{AppError, Result};
use crate::http::callbacks::{CallbackRecord, page_of, secret_token};
use crate::http::envelope::{Envelope, ErrorResponse};
use crate::http::extract::{Caller, Path, Query, ServiceCaller, ServiceTokenHeader};
use crate::http::paging::PageParams;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(remove))
}

/// `CreateParams` with `event` limited to the PROJECT_* events.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct GlobalParams {
    #[param(schema_with = project_event_schema, required = true)]
    event: CallbackEvent,
    region: Region,
    #[param(max_length = 1024)]
    url: String,
    #[param(max_length = 1024)]
    secret_token: Option<String>,
}

fn project_event_schema() -> utoipa::openapi::schema::Object {
    let names = CallbackEvent::ALL
        .iter()
        .filter(|e| e.is_project_event())
        .map(|e| e.as_str());
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(names))
        .build()
}

/// Registers (or updates) a global callback; only PROJECT_* events are delivered from them.
#[utoipa::path(
    post,
    path = "/op/callbacks/global",
    operation_id = "global_callback_create",
    tag = "op",
    params(ServiceTokenHeader, ("X-DEVOPS-UID" = String, Header, description = "The acting user, 1 to 64 characters"), GlobalParams),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn create(
    State(state): State<AppState>,
    _: ServiceCaller,
    Caller(user): Caller,
    Query(params): Query<GlobalParams>,
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
            project_id: ProjectId::global(),
            url: url.into_string(),
            event: params.event,
            region: params.region,
            secret_token,
            user,
        })
        .await?;
    Ok(Envelope::ok(true))
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
    page_of(&state, &ProjectId::global(), params.validate()?).await
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
    if !state
        .store
        .delete_callback(&ProjectId::global(), id)
        .await?
    {
        return Err(AppError::CallbackNotFound(id));
    }
    Ok(Envelope::ok(true))
}
