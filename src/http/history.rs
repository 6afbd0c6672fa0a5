//! `GET …/callbacks/callback_history`: the attempts of a project, newest first.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use chrono::{Days, NaiveTime};
use serde::{Deserialize, Deserializer, Serialize};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::delivery::resend;
use crate::delivery::sender::masked;
use crate::domain::{
    AttemptStatus, CallbackEvent, CallbackId, EpochMillis, HeaderPair, HistoryEntry, HistoryFilter,
    PageRequest, ProjectId, RecoverJobId, TimeParam, local_millis,
};
use crate::error::{AppError, Result};
use crate::http::deliveries::ProgressView;
use crate::http::envelope::{Envelope, ErrorResponse};
use crate::http::extract::{
    CallerHeaders, ProjectAdmin, ProjectMember, ProjectScopeParams, Query, Refusal, checked,
};
use crate::http::paging::{Page, PageParams};
use crate::http::params::{IdParams, Identified, time_param};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(retry))
}

/// The filters; the page is [`PageParams`], read from the same query.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
struct HistoryParams {
    /// Only attempts to this callback URL.
    #[serde(default, deserialize_with = "url_filter")]
    #[param(value_type = Option<String>)]
    url: Option<String>,
    /// Only attempts of this event.
    event: Option<CallbackEvent>,
    /// From this time on; default today 00:00:00 in `TIME_ZONE`.
    #[serde(default, deserialize_with = "start_time")]
    #[param(inline)]
    start_time: Option<TimeParam>,
    /// Up to this time; default today 23:59:59.999 in `TIME_ZONE`.
    #[serde(default, deserialize_with = "end_time")]
    #[param(inline)]
    end_time: Option<TimeParam>,
}

/// Stored URLs never hold control characters (see `CallbackUrl`), so such a filter is a
/// mistake, and PostgreSQL could not even compare a NUL.
fn url_filter<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    checked(deserializer, |url| {
        if url.chars().any(char::is_control) {
            return Err(Refusal(
                "query parameter url must not contain control characters".to_owned(),
            ));
        }
        Ok(url)
    })
}

fn start_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TimeParam>, D::Error> {
    checked(d, |text| time_param("startTime", &text))
}

fn end_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TimeParam>, D::Error> {
    checked(d, |text| time_param("endTime", &text))
}

/// The history query, whole: the window is read in `TIME_ZONE`, so it is checked here, still
/// before any permission check.
struct HistoryQuery {
    filter: HistoryFilter,
    page: PageRequest,
}

impl FromRequestParts<AppState> for HistoryQuery {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Query(params) = Query::<HistoryParams>::from_request_parts(parts, state).await?;
        let Query(page) = Query::<PageParams>::from_request_parts(parts, state).await?;
        let page = page.request();
        let filter = history_filter(params, state.config.time_zone)?;
        Ok(Self { filter, page })
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct HistoryRecord {
    id: i64,
    callback_id: CallbackId,
    project_id: ProjectId,
    call_back_url: String,
    events: CallbackEvent,
    status: AttemptStatus,
    attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_msg: Option<String>,
    request_headers: Vec<HeaderPair>,
    request_body: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_code: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_body: Option<String>,
    start_time: EpochMillis,
    end_time: EpochMillis,
    created_time: EpochMillis,
    /// A manual re-send (`callback_retry`), not an attempt of the delivery's schedule.
    manual: bool,
    /// The recovery job that re-queued the delivery this attempt belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    recover_job_id: Option<RecoverJobId>,
    /// Where the attempt's delivery stands now; absent once retention removed the delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    delivery: Option<ProgressView>,
}

impl From<HistoryEntry> for HistoryRecord {
    fn from(entry: HistoryEntry) -> Self {
        let a = entry.attempt;
        Self {
            id: entry.id,
            callback_id: a.callback_id,
            project_id: a.project_id,
            call_back_url: a.url,
            events: a.event,
            status: a.status,
            attempt: a.attempt,
            error_msg: a.error_msg,
            // Rows written before signatures were masked are masked on the way out.
            request_headers: masked(&a.request_headers),
            request_body: a.request_body,
            response_code: a.response_code,
            response_body: a.response_body,
            start_time: a.start_time,
            end_time: a.end_time,
            created_time: entry.created_at,
            manual: a.manual,
            recover_job_id: a.recover_job,
            delivery: entry.delivery.map(ProgressView::from),
        }
    }
}

/// Members only. The window defaults to today in `TIME_ZONE`; `url` and `event` are optional.
#[utoipa::path(
    get,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks/callback_history",
    operation_id = "callback_history_list",
    tag = "history",
    params(ProjectScopeParams, CallerHeaders, HistoryParams, PageParams),
    responses((status = 200, description = "Success envelope", body = Envelope<Page<HistoryRecord>>), ErrorResponse)
)]
async fn list(
    State(state): State<AppState>,
    ProjectMember {
        project,
        input: HistoryQuery { filter, page },
        ..
    }: ProjectMember<HistoryQuery>,
) -> Result<Envelope<Page<HistoryRecord>>> {
    let (count, entries) = state.store.list_history(&project, &filter, page).await?;
    let records = entries.into_iter().map(HistoryRecord::from).collect();
    Ok(Envelope::ok(Page::new(page, count, records)))
}

fn history_filter(params: HistoryParams, zone: chrono_tz::Tz) -> Result<HistoryFilter> {
    let today = chrono::Utc::now().with_timezone(&zone).date_naive();
    let from = match params.start_time {
        Some(start) => start.millis(zone),
        None => local_millis(today.and_time(NaiveTime::MIN), zone),
    };
    let to = match params.end_time {
        Some(end) => end.millis(zone),
        None => local_millis((today + Days::new(1)).and_time(NaiveTime::MIN), zone) - 1,
    };
    if from > to {
        return Err(AppError::BadRequest(
            "query parameter startTime must not be after endTime".to_owned(),
        ));
    }
    Ok(HistoryFilter {
        url: params.url,
        event: params.event,
        from,
        to,
    })
}

/// A time parameter (any form of `TimeParam`), read in `zone`: the one call other routes' time
/// parameters (a recovery's `since`/`until`) go through, with the history window's parser.
pub(super) fn instant_param(name: &str, text: &str, zone: chrono_tz::Tz) -> Result<EpochMillis> {
    time_param(name, text)
        .map(|time| time.millis(zone))
        .map_err(|Refusal(message)| AppError::BadRequest(message))
}

impl Identified for HistoryRecord {
    const ID: &'static str = "The history record's id.";
}

/// Sends the request of one history row again, once, now: the stored body to the callback's
/// current URL with its current token and a fresh signature. A new history row records it;
/// `data` is whether it got a 2xx (the reason in `message` when not). Admin only.
#[utoipa::path(
    post,
    path = "/{apigw_type}/v4/projects/{project_id}/callbacks/callback_retry",
    operation_id = "callback_history_retry",
    tag = "history",
    params(ProjectScopeParams, CallerHeaders, IdParams<HistoryRecord>),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn retry(
    State(state): State<AppState>,
    ProjectAdmin {
        project,
        input: Query(IdParams { id, .. }),
        ..
    }: ProjectAdmin<Query<IdParams<HistoryRecord>>>,
) -> Result<Envelope<bool>> {
    Ok(match resend_history(&state, &project, id).await? {
        None => Envelope::ok(true),
        Some(reason) => Envelope::ok_with_message(false, format!("the re-send failed: {reason}")),
    })
}

/// Re-sends history row `id` of `project` (this route and the console): why it failed, `None`
/// when it was delivered.
pub(super) async fn resend_history(
    state: &AppState,
    project: &ProjectId,
    id: i64,
) -> Result<Option<String>> {
    let entry = state
        .store
        .find_history(project, id)
        .await?
        .ok_or(AppError::HistoryNotFound(id))?;
    let target = state
        .store
        .delivery_target(entry.attempt.callback_id)
        .await?
        .ok_or(AppError::CallbackNotFound(entry.attempt.callback_id))?;
    state.vet_callback_url(target.url.clone()).await?;
    let resend = tokio::spawn(resend::resend(
        state.sender.clone(),
        state.store.clone(),
        state.config.callback_disable_after,
        entry,
        target,
    ));
    Ok(resend
        .await
        .map_err(|e| AppError::Internal(format!("re-send task failed: {e}")))??)
}
