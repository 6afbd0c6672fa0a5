//! `GET …/callbacks/callback_deliveries`: one callback's deliveries, newest first, each with
//! where it stands (the op API lists a global callback's the same way, see `global.rs`).

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::domain::{
    CallbackEvent, CallbackId, DeliveryProgress, DeliveryRecord, DeliveryState, EpochMillis,
    EventId, PageRequest, ProjectId, RecoverJobId,
};
use crate::error::{AppError, Result};
use crate::http::envelope::{Envelope, ErrorResponse};
use crate::http::extract::{CallerHeaders, ProjectMember, ProjectScopeParams, Query};
use crate::http::paging::{Page, PageParams};
use crate::http::params::{IdParams, Identified};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// Where a delivery stands.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct ProgressView {
    /// `PENDING`: waiting for its first attempt (or its first since a recovery re-queued it);
    /// `RETRYING`: an attempt failed and another follows at `nextAttemptAt`; `SUCCESS`;
    /// `FAILED`: given up after the retry schedule; `CANCELLED`: see `cancelReason`.
    status: DeliveryState,
    /// When a `PENDING` or `RETRYING` delivery is attempted next, epoch ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_attempt_at: Option<EpochMillis>,
    /// Why a `CANCELLED` delivery was cancelled (its callback was disabled, with the reason, or
    /// deleted).
    #[serde(skip_serializing_if = "Option::is_none")]
    cancel_reason: Option<String>,
    /// The recovery job that last re-queued it.
    #[serde(skip_serializing_if = "Option::is_none")]
    recover_job_id: Option<RecoverJobId>,
}

impl From<DeliveryProgress> for ProgressView {
    fn from(progress: DeliveryProgress) -> Self {
        Self {
            status: progress.state,
            next_attempt_at: progress.next_attempt_at,
            cancel_reason: progress.cancel_reason,
            recover_job_id: progress.recover_job,
        }
    }
}

/// One delivery: one event for one callback, sent until it succeeds or gives up.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeliveryView {
    /// The delivery id, sent as `X-DEVOPS-WEBHOOK-UNIQUE-ID` with every attempt.
    id: i64,
    event_id: EventId,
    event: CallbackEvent,
    /// Attempts made (manual re-sends are not counted).
    attempts: u32,
    #[serde(flatten)]
    progress: ProgressView,
    /// The status code the receiver answered to the last attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_response_code: Option<u16>,
    /// Why the last attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
    created_time: EpochMillis,
    updated_time: EpochMillis,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(record: DeliveryRecord) -> Self {
        Self {
            id: record.id,
            event_id: record.event_id,
            event: record.event,
            attempts: record.attempts,
            progress: record.progress.into(),
            last_response_code: record.last_response_code,
            last_error: record.last_error,
            created_time: record.created_at,
            updated_time: record.updated_at,
        }
    }
}

/// The callbacks whose deliveries can be listed and recovered by `?id=`.
pub(super) struct AnyCallback;

impl Identified for AnyCallback {
    const ID: &'static str = "The callback's id: a project-level one as `callback_list` shows \
                              it, or a pipeline-level one (history's `callbackId`).";
}

/// The filter of the deliveries view; the callback is `?id=`, the page [`PageParams`].
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct DeliveriesParams {
    /// Only deliveries that stand so.
    status: Option<DeliveryState>,
}

/// Which deliveries to list: a status, if any, and the page.
pub(super) struct Listing {
    status: Option<DeliveryState>,
    page: PageRequest,
}

impl FromRequestParts<AppState> for Listing {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Query(filter) = Query::<DeliveriesParams>::from_request_parts(parts, state).await?;
        let Query(page) = Query::<PageParams>::from_request_parts(parts, state).await?;
        Ok(Self {
            status: filter.status,
            page: page.request(),
        })
    }
}

/// The v4 view's query, whole: `?id=` and the [`Listing`].
struct DeliveriesQuery {
    callback: CallbackId,
    listing: Listing,
}

impl FromRequestParts<AppState> for DeliveriesQuery {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Query(IdParams { id, .. }) =
            Query::<IdParams<AnyCallback>>::from_request_parts(parts, state).await?;
        let listing = Listing::from_request_parts(parts, state).await?;
        Ok(Self {
            callback: id,
            listing,
        })
    }
}

/// One callback's deliveries, newest first, of one status if given. Members only.
#[utoipa::path(
    get,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks/callback_deliveries",
    operation_id = "callback_deliveries",
    tag = "history",
    params(ProjectScopeParams, CallerHeaders, IdParams<AnyCallback>, DeliveriesParams, PageParams),
    responses((status = 200, description = "Success envelope", body = Envelope<Page<DeliveryView>>), ErrorResponse)
)]
async fn list(
    State(state): State<AppState>,
    ProjectMember { project, input, .. }: ProjectMember<DeliveriesQuery>,
) -> Result<Envelope<Page<DeliveryView>>> {
    page_of(&state, &project, input.callback, input.listing).await
}

/// A page of `callback`'s deliveries, which must be the project's (404 otherwise).
pub(super) async fn page_of(
    state: &AppState,
    project: &ProjectId,
    callback: CallbackId,
    Listing { status, page }: Listing,
) -> Result<Envelope<Page<DeliveryView>>> {
    let (count, records) = state
        .store
        .list_deliveries(project, callback, status, page)
        .await?
        .ok_or(AppError::CallbackNotFound(callback))?;
    let records = records.into_iter().map(DeliveryView::from).collect();
    Ok(Envelope::ok(Page::new(page, count, records)))
}
