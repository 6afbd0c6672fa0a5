//! `GET …/callbacks/callback_history`: the attempts of a project, newest first.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use chrono::{Days, NaiveDateTime, NaiveTime, TimeZone};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::domain::{
    AttemptStatus, CallbackEvent, CallbackId, EpochMillis, HeaderPair, HistoryEntry, HistoryFilter,
    Page, ProjectId,
};
use crate::error::{AppError, Result};
use crate::http::envelope::Envelope;
use crate::http::extract::{Caller, ProjectScope, Query};
use crate::http::paging::PageParams;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/{apigw_type}/v4/projects/{project_id}/callbacks/callback_history",
        get(list),
    )
}

/// Separate page fields: `serde(flatten)` would hand the numbers over as strings.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HistoryParams {
    url: Option<String>,
    event: Option<CallbackEvent>,
    start_time: Option<String>,
    end_time: Option<String>,
    page: Option<u32>,
    page_size: Option<u32>,
}

const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

#[derive(Serialize)]
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
            request_headers: a.request_headers,
            request_body: a.request_body,
            response_code: a.response_code,
            response_body: a.response_body,
            start_time: a.start_time,
            end_time: a.end_time,
            created_time: entry.created_at,
        }
    }
}

/// Members only. The window defaults to today in `TIME_ZONE`; `url` and `event` are optional.
async fn list(
    State(state): State<AppState>,
    scope: ProjectScope,
    Caller(user): Caller,
    Query(params): Query<HistoryParams>,
) -> Result<Envelope<Page<HistoryRecord>>> {
    let page = PageParams {
        page: params.page,
        page_size: params.page_size,
    }
    .validate()?;
    let filter = history_filter(params, state.config.time_zone)?;
    state
        .authority
        .require_member(&scope.project, &user)
        .await?;
    let (count, entries) = state
        .store
        .list_history(&scope.project, &filter, page)
        .await?;
    let records = entries.into_iter().map(HistoryRecord::from).collect();
    Ok(Envelope::ok(Page::new(page, count, records)))
}

fn history_filter(params: HistoryParams, zone: chrono_tz::Tz) -> Result<HistoryFilter> {
    let today = chrono::Utc::now().with_timezone(&zone).date_naive();
    let start_of_today = today.and_time(NaiveTime::MIN);
    let start_of_tomorrow = (today + Days::new(1)).and_time(NaiveTime::MIN);
    let from = match &params.start_time {
        Some(text) => local_millis("startTime", text, zone)?,
        None => to_millis(start_of_today, zone),
    };
    let to = match &params.end_time {
        Some(text) => local_millis("endTime", text, zone)?,
        None => to_millis(start_of_tomorrow, zone) - 1,
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

/// `yyyy-MM-dd HH:mm:ss` in `zone` to epoch ms; anything else is a 400 naming the parameter.
fn local_millis(name: &str, text: &str, zone: chrono_tz::Tz) -> Result<EpochMillis> {
    let naive = NaiveDateTime::parse_from_str(text, TIME_FORMAT).map_err(|_| {
        AppError::BadRequest(format!(
            "query parameter {name} must be a time like 2024-05-01 13:45:00 (yyyy-MM-dd HH:mm:ss), got {text:?}"
        ))
    })?;
    Ok(to_millis(naive, zone))
}

/// A local time that a clock change skips is read as the same wall time an hour later.
fn to_millis(naive: NaiveDateTime, zone: chrono_tz::Tz) -> EpochMillis {
    zone.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(naive + chrono::TimeDelta::hours(1)))
                .earliest()
        })
        .unwrap_or_else(|| zone.from_utc_datetime(&naive))
        .timestamp_millis()
}
