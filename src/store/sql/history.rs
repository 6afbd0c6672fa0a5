//! The `callback_history` table: one row per delivery attempt.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::rows::{HISTORY_COLUMNS, HistoryRow};
use super::{Backend, SqlStore};
use crate::domain::{HistoryEntry, HistoryFilter, PageRequest, ProjectId};
use crate::store::{HistoryStore, StoreResult};

/// The window and filters of `list_history`, binding `$1` to `$5`.
const WHERE: &str = "WHERE project_id = $1 AND created_at >= $2 AND created_at <= $3 \
     AND (CAST($4 AS TEXT) IS NULL OR url = $4) \
     AND (CAST($5 AS TEXT) IS NULL OR event = $5)";

#[async_trait]
impl<B: Backend> HistoryStore for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> i32: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
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
            "SELECT {HISTORY_COLUMNS} FROM callback_history WHERE project_id = $1 AND id = $2"
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
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM callback_history {WHERE}"))
                .bind(project.as_str())
                .bind(filter.from)
                .bind(filter.to)
                .bind(filter.url.as_deref())
                .bind(event)
                .fetch_one(&self.pool)
                .await?;
        let rows: Vec<HistoryRow> = sqlx::query_as(&format!(
            "SELECT {HISTORY_COLUMNS} FROM callback_history {WHERE} \
             ORDER BY created_at DESC, id DESC LIMIT $6 OFFSET $7"
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
}
