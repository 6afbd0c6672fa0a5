//! The `callback_history` table: one row per delivery attempt.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::rows::{DeliveryRow, HISTORY_COLUMNS, HistoryRow, PROGRESS_COLUMNS, delivery_columns};
use super::{Backend, SqlStore};
use crate::domain::{
    CallbackId, DeliveryRecord, DeliveryState, DeliveryStatus, HistoryEntry, HistoryFilter,
    PageRequest, ProjectId,
};
use crate::store::{HistoryStore, StoreResult};

/// The window and filters of `list_history`, binding `$1` to `$5`.
const WHERE: &str = "WHERE h.project_id = $1 AND h.created_at >= $2 AND h.created_at <= $3 \
     AND (CAST($4 AS TEXT) IS NULL OR h.url = $4) \
     AND (CAST($5 AS TEXT) IS NULL OR h.event = $5)";

/// History rows with where their delivery stands now (and its event, whose body a scheduled
/// attempt sent).
pub(super) fn history_from() -> String {
    format!(
        "SELECT {HISTORY_COLUMNS}, {PROGRESS_COLUMNS} \
         FROM callback_history h LEFT JOIN deliveries d ON d.id = h.delivery_id \
         LEFT JOIN events e ON e.id = d.event_pk"
    )
}

#[async_trait]
impl<B: Backend> HistoryStore for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> i32: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> bool: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> String: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    async fn find_history(
        &self,
        project: &ProjectId,
        id: i64,
    ) -> StoreResult<Option<HistoryEntry>> {
        let row: Option<HistoryRow> = sqlx::query_as(&format!(
            "{} WHERE h.project_id = $1 AND h.id = $2",
            history_from()
        ))
        .bind(project.as_str())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(TryInto::try_into).transpose()
    }

    async fn list_history(
        &self,
        project: &ProjectId,
        filter: &HistoryFilter,
        page: PageRequest,
    ) -> StoreResult<(u64, Vec<HistoryEntry>)> {
        let event = filter.event.map(|e| e.as_str());
        let count: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM callback_history h {WHERE}"))
                .bind(project.as_str())
                .bind(filter.from)
                .bind(filter.to)
                .bind(filter.url.as_deref())
                .bind(event)
                .fetch_one(&self.pool)
                .await?;
        let rows: Vec<HistoryRow> = sqlx::query_as(&format!(
            "{} {WHERE} ORDER BY h.created_at DESC, h.id DESC LIMIT $6 OFFSET $7",
            history_from()
        ))
        .bind(project.as_str())
        .bind(filter.from)
        .bind(filter.to)
        .bind(filter.url.as_deref())
        .bind(event)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        let records = rows
            .into_iter()
            .map(TryInto::try_into)
            .collect::<StoreResult<_>>()?;
        Ok((count.unsigned_abs(), records))
    }

    async fn list_deliveries(
        &self,
        project: &ProjectId,
        callback: CallbackId,
        state: Option<DeliveryState>,
        page: PageRequest,
    ) -> StoreResult<Option<(u64, Vec<DeliveryRecord>)>> {
        let known: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM callbacks WHERE id = $1 AND project_id = $2")
                .bind(callback)
                .bind(project.as_str())
                .fetch_one(&self.pool)
                .await?;
        if known == 0 {
            return Ok(None);
        }
        let (status, run) = state_filter(state);
        let count: i64 = sqlx::query_scalar(&format!(
            "SELECT COUNT(*) FROM deliveries d {DELIVERIES_WHERE}"
        ))
        .bind(callback)
        .bind(status)
        .bind(run)
        .fetch_one(&self.pool)
        .await?;
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {} FROM deliveries d JOIN events e ON e.id = d.event_pk {DELIVERIES_WHERE} \
             ORDER BY d.id DESC LIMIT $4 OFFSET $5",
            delivery_columns()
        ))
        .bind(callback)
        .bind(status)
        .bind(run)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        let records = rows
            .into_iter()
            .map(TryInto::try_into)
            .collect::<StoreResult<_>>()?;
        Ok(Some((count.unsigned_abs(), records)))
    }
}

/// The deliveries view's filter, binding `$1` the callback, `$2` the stored status (NULL: any)
/// and `$3` which run of a pending delivery (see `state_filter`).
const DELIVERIES_WHERE: &str = "WHERE d.callback_id = $1 \
     AND (CAST($2 AS TEXT) IS NULL OR d.status = $2) \
     AND (CAST($3 AS INTEGER) = 0 OR (CAST($3 AS INTEGER) = 1) = (d.attempts <= d.retry_base))";

/// A state as the stored status and which pending deliveries it means: 0 any, 1 those waiting
/// for the first attempt of their run (`PENDING`), 2 the others (`RETRYING`).
fn state_filter(state: Option<DeliveryState>) -> (Option<&'static str>, i32) {
    let stored = |status: DeliveryStatus| Some(status.as_str());
    match state {
        None => (None, 0),
        Some(DeliveryState::Pending) => (stored(DeliveryStatus::Pending), 1),
        Some(DeliveryState::Retrying) => (stored(DeliveryStatus::Pending), 2),
        Some(DeliveryState::Success) => (stored(DeliveryStatus::Success), 0),
        Some(DeliveryState::Failed) => (stored(DeliveryStatus::Failed), 0),
        Some(DeliveryState::Cancelled) => (stored(DeliveryStatus::Cancelled), 0),
    }
}
