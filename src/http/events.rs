//! Event intake, for the services that produce events: `/service/callbacks/…`, service token only.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::delivery::intake::{self, MAX_BATCH};
use crate::domain::{CallbackEvent, EventId, ProjectId, Published};
use crate::error::{AppError, Result};
use crate::http::envelope::{Envelope, ErrorResponse};
use crate::http::extract::{Json, Path, ServiceCaller, ServiceTokenHeader, parse_project_id};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(publish_one))
        .routes(routes!(publish_batch))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct EventBody {
    event: CallbackEvent,
    /// Delivered byte for byte as sent.
    #[schema(value_type = Object)]
    data: Box<RawValue>,
    /// Idempotency key: a repeated id in the project is accepted once (1 to 128 characters).
    #[schema(value_type = Option<EventId>)]
    event_id: Option<String>,
}

/// Accepts one event of the project; answers once it and its deliveries are committed.
#[utoipa::path(
    post,
    path = "/service/callbacks/projects/{project_id}/events",
    operation_id = "event_publish",
    tag = "intake",
    params(("project_id" = ProjectId, Path, description = "The project's English name"), ServiceTokenHeader),
    request_body = EventBody,
    responses((status = 200, description = "Success envelope", body = Envelope<PublishedEvent>), ErrorResponse)
)]
async fn publish_one(
    State(state): State<AppState>,
    _: ServiceCaller,
    Path(project_id): Path<String>,
    Json(body): Json<EventBody>,
) -> Result<Envelope<PublishedEvent>> {
    let project = parse_project_id(&project_id)?;
    let event = intake::accept(project, body.event, &body.data, body.event_id.as_deref())?;
    let mut published = intake::publish(state.store.clone(), &state.wake, vec![event]).await?;
    Ok(Envelope::ok(published.remove(0).into()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct BatchItem {
    #[schema(value_type = ProjectId)]
    project_id: String,
    event: CallbackEvent,
    #[schema(value_type = Object)]
    data: Box<RawValue>,
    #[schema(value_type = Option<EventId>)]
    event_id: Option<String>,
}

/// 1 to `MAX_BATCH` events.
#[derive(Deserialize)]
#[serde(transparent)]
struct EventBatch(Vec<BatchItem>);

impl utoipa::PartialSchema for EventBatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(utoipa::openapi::Ref::from_schema_name("BatchItem"))
            .min_items(Some(1))
            .max_items(Some(MAX_BATCH))
            .into()
    }
}

impl utoipa::ToSchema for EventBatch {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            "BatchItem".to_owned(),
            <BatchItem as utoipa::PartialSchema>::schema(),
        ));
    }
}

/// Accepts up to 1000 events of any projects in one transaction; answers in the same order.
#[utoipa::path(
    post,
    path = "/service/callbacks/events:batch",
    operation_id = "event_publish_batch",
    tag = "intake",
    params(ServiceTokenHeader),
    request_body = EventBatch,
    responses((status = 200, description = "Success envelope", body = Envelope<Vec<PublishedEvent>>), ErrorResponse)
)]
async fn publish_batch(
    State(state): State<AppState>,
    _: ServiceCaller,
    Json(EventBatch(items)): Json<EventBatch>,
) -> Result<Envelope<Vec<PublishedEvent>>> {
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(AppError::BadRequest(format!(
            "a batch carries 1 to {MAX_BATCH} events, this one has {}",
            items.len()
        )));
    }
    let events = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let project = parse_project_id(&item.project_id).and_then(|project| {
                intake::accept(project, item.event, &item.data, item.event_id.as_deref())
                    .map_err(AppError::from)
            });
            project.map_err(|e| AppError::BadRequest(format!("event [{index}]: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let published = intake::publish(state.store.clone(), &state.wake, events).await?;
    Ok(Envelope::ok(
        published.into_iter().map(Into::into).collect(),
    ))
}

/// What the intake answers for one event (the original answer when the event id was seen before).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishedEvent {
    event_id: EventId,
    deliveries: u32,
}

impl From<Published> for PublishedEvent {
    fn from(published: Published) -> Self {
        Self {
            event_id: published.event_id,
            deliveries: published.deliveries,
        }
    }
}
