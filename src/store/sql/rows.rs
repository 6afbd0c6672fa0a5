//! Row shapes and their conversion into domain types.

use crate::domain::{
    Attempt, CANCELLED_DELETED, CANCELLED_DISABLED, Callback, CustomHeaders, DeliveryProgress,
    DeliveryRecord, DeliveryTarget, GlobalCallback, HistoryEntry, Member, PipelineCallback,
    ProjectId, RecoverJob, StoredProgress,
};
use crate::secrets::{Sealer, Secret};
use crate::store::{ClaimedDelivery, StoreError, StoreResult};

/// Columns of `callbacks` as the list query returns them.
pub const CALLBACK_COLUMNS: &str = "id, project_id, url, event, region, enabled, \
     secret_token IS NOT NULL AS has_secret_token, creator, updater, created_at, updated_at, \
     failure_time, disabled_reason";

#[derive(sqlx::FromRow)]
pub struct CallbackRow {
    id: i64,
    project_id: String,
    url: String,
    event: String,
    region: String,
    enabled: bool,
    has_secret_token: bool,
    creator: String,
    updater: String,
    created_at: i64,
    updated_at: i64,
    failure_time: Option<i64>,
    disabled_reason: Option<String>,
}

/// Columns of `callbacks` as the pipeline-level list returns them.
pub const PIPELINE_CALLBACK_COLUMNS: &str = "name, url, event, region, \
     secret_token IS NOT NULL AS has_secret_token, enabled, disabled_reason";

#[derive(sqlx::FromRow)]
pub struct PipelineCallbackRow {
    name: String,
    url: String,
    event: String,
    region: String,
    has_secret_token: bool,
    enabled: bool,
    disabled_reason: Option<String>,
}

/// A callback with its stored custom headers (`CALLBACK_COLUMNS, secret_headers`).
#[derive(sqlx::FromRow)]
pub struct GlobalRow {
    #[sqlx(flatten)]
    callback: CallbackRow,
    secret_headers: Option<String>,
}

impl GlobalRow {
    pub fn into_global(self, sealer: &Sealer) -> StoreResult<GlobalCallback> {
        let headers = open_headers(
            sealer,
            self.secret_headers,
            &self.callback.project_id,
            &self.callback.url,
        )?;
        Ok(GlobalCallback {
            callback: self.callback.try_into()?,
            headers,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct MemberRow {
    project_id: String,
    user_id: String,
    role: String,
    created_at: i64,
    updated_at: i64,
}

/// A stored value that no longer parses is corruption.
pub(super) fn decode<T: std::str::FromStr>(column: &'static str, value: &str) -> StoreResult<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    decode_with(column, value, str::parse)
}

/// A stored project id: the global scope is one too.
fn decode_project(value: &str) -> StoreResult<ProjectId> {
    decode_with("project_id", value, ProjectId::from_stored)
}

fn decode_with<T, E>(
    column: &'static str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> StoreResult<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    parse(value).map_err(|e| StoreError::corrupt(column, e))
}

impl TryFrom<CallbackRow> for Callback {
    type Error = StoreError;

    fn try_from(row: CallbackRow) -> Result<Self, Self::Error> {
        Ok(Self {
            id: row.id,
            project_id: decode_project(&row.project_id)?,
            url: row.url,
            event: decode("event", &row.event)?,
            region: decode("region", &row.region)?,
            enabled: row.enabled,
            has_secret_token: row.has_secret_token,
            creator: decode("creator", &row.creator)?,
            updater: decode("updater", &row.updater)?,
            created_at: row.created_at,
            updated_at: row.updated_at,
            failure_time: row.failure_time,
            disabled_reason: row.disabled_reason,
        })
    }
}

impl TryFrom<PipelineCallbackRow> for PipelineCallback {
    type Error = StoreError;

    fn try_from(row: PipelineCallbackRow) -> Result<Self, Self::Error> {
        Ok(Self {
            name: decode("name", &row.name)?,
            url: row.url,
            event: decode("event", &row.event)?,
            region: decode("region", &row.region)?,
            has_secret_token: row.has_secret_token,
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
        })
    }
}

impl TryFrom<MemberRow> for Member {
    type Error = StoreError;

    fn try_from(row: MemberRow) -> Result<Self, Self::Error> {
        Ok(Self {
            project_id: decode_project(&row.project_id)?,
            user_id: decode("user_id", &row.user_id)?,
            role: decode("role", &row.role)?,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

/// A leased delivery joined with its event and (if still there) its callback.
#[derive(sqlx::FromRow)]
pub struct ClaimRow {
    id: i64,
    host: String,
    attempts: i32,
    retry_base: i32,
    recover_job_id: Option<i64>,
    callback_id: i64,
    event: String,
    body: String,
    callback_project: Option<String>,
    url: Option<String>,
    secret_token: Option<String>,
    secret_headers: Option<String>,
    enabled: Option<bool>,
    disabled_reason: Option<String>,
}

/// A stored token, opened for sending. One that does not open is reported like any corrupt
/// value, without its content.
fn open_token(
    sealer: &Sealer,
    stored: Option<String>,
    project: &str,
    url: &str,
) -> StoreResult<Option<Secret>> {
    stored
        .map(|stored| {
            sealer
                .open_token(&stored, project, url)
                .map(Secret::new)
                .map_err(|e| StoreError::corrupt("secret_token", e))
        })
        .transpose()
}

/// Stored custom headers, opened and parsed for sending (none when NULL). Like a token, a value
/// that does not open or parse is reported without its content.
pub(super) fn open_headers(
    sealer: &Sealer,
    stored: Option<String>,
    project: &str,
    url: &str,
) -> StoreResult<CustomHeaders> {
    let Some(stored) = stored else {
        return Ok(CustomHeaders::default());
    };
    let json = sealer
        .open_headers(&stored, project, url)
        .map_err(|e| StoreError::corrupt("secret_headers", e))?;
    CustomHeaders::from_json(&json).map_err(|e| StoreError::corrupt("secret_headers", e))
}

impl ClaimRow {
    pub fn into_claimed(self, claim_token: &str, sealer: &Sealer) -> StoreResult<ClaimedDelivery> {
        let target = match (self.enabled, self.callback_project, self.url) {
            (Some(true), Some(project), Some(url)) => Ok(DeliveryTarget {
                secret_token: open_token(sealer, self.secret_token, &project, &url)?,
                headers: open_headers(sealer, self.secret_headers, &project, &url)?,
                project_id: decode_project(&project)?,
                url,
            }),
            (Some(false), ..) => Err(self
                .disabled_reason
                .unwrap_or_else(|| CANCELLED_DISABLED.to_owned())),
            _ => Err(CANCELLED_DELETED.to_owned()),
        };
        Ok(ClaimedDelivery {
            id: self.id,
            claim_token: claim_token.to_owned(),
            host: self.host,
            attempts: self.attempts.unsigned_abs(),
            retry_base: self.retry_base.unsigned_abs(),
            recover_job: self.recover_job_id,
            callback_id: self.callback_id,
            event: decode("event", &self.event)?,
            body: self.body,
            target,
        })
    }
}

/// Columns of `deliveries d` that say where a delivery stands (`ProgressRow`).
pub const PROGRESS_COLUMNS: &str = "d.status AS d_status, d.attempts AS d_attempts, \
     d.retry_base AS d_retry_base, d.next_attempt_at AS d_next_attempt_at, \
     d.cancel_reason AS d_cancel_reason, d.recover_job_id AS d_recover_job_id";

/// Where a delivery stands; every column is NULL when a LEFT JOIN found no delivery.
#[derive(sqlx::FromRow)]
pub struct ProgressRow {
    d_status: Option<String>,
    d_attempts: Option<i32>,
    d_retry_base: Option<i32>,
    d_next_attempt_at: Option<i64>,
    d_cancel_reason: Option<String>,
    d_recover_job_id: Option<i64>,
}

impl ProgressRow {
    fn into_progress(self) -> StoreResult<Option<DeliveryProgress>> {
        let Some(status) = self.d_status else {
            return Ok(None);
        };
        Ok(Some(DeliveryProgress::from(StoredProgress {
            status: decode("status", &status)?,
            attempts: self.d_attempts.unwrap_or_default().unsigned_abs(),
            retry_base: self.d_retry_base.unwrap_or_default().unsigned_abs(),
            next_attempt_at: self.d_next_attempt_at.unwrap_or_default(),
            cancel_reason: self.d_cancel_reason,
            recover_job: self.d_recover_job_id,
        })))
    }
}

/// Columns of `callback_history h` joined with its delivery `d` and the delivery's event `e`.
pub const HISTORY_COLUMNS: &str = "h.id, h.delivery_id, h.callback_id, h.project_id, h.url, \
     h.event, h.status, h.attempt, h.error_msg, h.request_headers, \
     CASE WHEN h.body_from_event THEN COALESCE(e.body, '') ELSE h.request_body END \
         AS request_body, \
     h.response_code, h.response_body, h.start_time, h.end_time, h.created_at, h.manual, \
     h.recover_job_id";

#[derive(sqlx::FromRow)]
pub struct HistoryRow {
    id: i64,
    delivery_id: Option<i64>,
    callback_id: i64,
    project_id: String,
    url: String,
    event: String,
    status: String,
    attempt: i32,
    error_msg: Option<String>,
    request_headers: String,
    request_body: String,
    response_code: Option<i32>,
    response_body: Option<String>,
    start_time: i64,
    end_time: i64,
    created_at: i64,
    manual: bool,
    recover_job_id: Option<i64>,
    #[sqlx(flatten)]
    delivery: ProgressRow,
}

impl TryFrom<HistoryRow> for HistoryEntry {
    type Error = StoreError;

    fn try_from(row: HistoryRow) -> Result<Self, Self::Error> {
        let request_headers = serde_json::from_str(&row.request_headers)
            .map_err(|e| StoreError::corrupt("request_headers", e))?;
        Ok(Self {
            id: row.id,
            created_at: row.created_at,
            attempt: Attempt {
                delivery_id: row.delivery_id,
                callback_id: row.callback_id,
                project_id: decode_project(&row.project_id)?,
                url: row.url,
                event: decode("event", &row.event)?,
                status: decode("status", &row.status)?,
                attempt: row.attempt.unsigned_abs(),
                error_msg: row.error_msg,
                request_headers,
                request_body: row.request_body,
                response_code: row.response_code.and_then(|code| u16::try_from(code).ok()),
                response_body: row.response_body,
                start_time: row.start_time,
                end_time: row.end_time,
                manual: row.manual,
                recover_job: row.recover_job_id,
            },
            delivery: row.delivery.into_progress()?,
        })
    }
}

/// Columns of `deliveries d` joined with its event `e`, for the deliveries view.
pub fn delivery_columns() -> String {
    format!(
        "d.id, e.event_id, e.event, d.attempts, d.last_response_code, d.last_error, \
         d.created_at, d.updated_at, {PROGRESS_COLUMNS}"
    )
}

#[derive(sqlx::FromRow)]
pub struct DeliveryRow {
    id: i64,
    event_id: String,
    event: String,
    attempts: i32,
    last_response_code: Option<i32>,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
    #[sqlx(flatten)]
    progress: ProgressRow,
}

impl TryFrom<DeliveryRow> for DeliveryRecord {
    type Error = StoreError;

    fn try_from(row: DeliveryRow) -> Result<Self, Self::Error> {
        let progress = row.progress.into_progress()?.ok_or_else(|| {
            StoreError::corrupt(
                "status",
                std::io::Error::other("a delivery without a status"),
            )
        })?;
        Ok(Self {
            id: row.id,
            event_id: decode("event_id", &row.event_id)?,
            event: decode("event", &row.event)?,
            attempts: row.attempts.unsigned_abs(),
            progress,
            last_response_code: row
                .last_response_code
                .and_then(|code| u16::try_from(code).ok()),
            last_error: row.last_error,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

pub const RECOVER_JOB_COLUMNS: &str = "id, project_id, callback_id, state, reason, window_from, \
     window_to, total, done, failed, creator, created_at, updated_at";

#[derive(sqlx::FromRow)]
pub struct RecoverJobRow {
    id: i64,
    project_id: String,
    callback_id: i64,
    state: String,
    reason: Option<String>,
    window_from: i64,
    window_to: i64,
    total: i64,
    done: i64,
    failed: i64,
    creator: String,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<RecoverJobRow> for RecoverJob {
    type Error = StoreError;

    fn try_from(row: RecoverJobRow) -> Result<Self, Self::Error> {
        Ok(Self {
            id: row.id,
            project_id: decode_project(&row.project_id)?,
            callback_id: row.callback_id,
            state: decode("state", &row.state)?,
            reason: row.reason,
            from: row.window_from,
            to: row.window_to,
            total: row.total.unsigned_abs(),
            done: row.done.unsigned_abs(),
            failed: row.failed.unsigned_abs(),
            creator: decode("creator", &row.creator)?,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct TargetRow {
    project_id: String,
    url: String,
    secret_token: Option<String>,
    secret_headers: Option<String>,
}

impl TargetRow {
    pub fn into_target(self, sealer: &Sealer) -> StoreResult<DeliveryTarget> {
        Ok(DeliveryTarget {
            secret_token: open_token(sealer, self.secret_token, &self.project_id, &self.url)?,
            headers: open_headers(sealer, self.secret_headers, &self.project_id, &self.url)?,
            project_id: decode_project(&self.project_id)?,
            url: self.url,
        })
    }
}
