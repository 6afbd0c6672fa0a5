//! What the operators' console reads: callbacks of every level together, projects, disabled
//! callbacks, recent outcomes, and the attempts of one delivery.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::history::history_from;
use super::rows::{CALLBACK_COLUMNS, CallbackRow, HistoryRow, decode};
use super::{Backend, SqlStore};
use crate::domain::{
    AttemptBucket, CallbackId, CallbackSearch, EpochMillis, HistoryEntry, PageRequest, ProjectId,
    ProjectSummary, RegisteredCallback,
};
use crate::store::{ConsoleStore, StoreError, StoreResult};

/// A callback of any level: `CALLBACK_COLUMNS, pipeline_id, name`.
#[derive(sqlx::FromRow)]
struct RegisteredRow {
    #[sqlx(flatten)]
    callback: CallbackRow,
    pipeline_id: Option<String>,
    name: Option<String>,
}

impl TryFrom<RegisteredRow> for RegisteredCallback {
    type Error = StoreError;

    fn try_from(row: RegisteredRow) -> Result<Self, Self::Error> {
        let pipeline = match (row.pipeline_id, row.name) {
            (Some(pipeline), Some(name)) => {
                Some((decode("pipeline_id", &pipeline)?, decode("name", &name)?))
            }
            _ => None,
        };
        Ok(Self {
            callback: row.callback.try_into()?,
            pipeline,
        })
    }
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    project_id: String,
    callbacks: i64,
    disabled: i64,
}

/// The filters of `search_callbacks`, binding `$1` (project), `$2` (URL pattern), `$3` (event).
const SEARCH: &str = "WHERE (CAST($1 AS TEXT) IS NULL OR project_id = $1) \
     AND (CAST($2 AS TEXT) IS NULL OR LOWER(url) LIKE $2 ESCAPE '\\' OR event = $3)";

fn registered_select() -> String {
    format!("SELECT {CALLBACK_COLUMNS}, pipeline_id, name FROM callbacks")
}

#[async_trait]
impl<B: Backend> ConsoleStore for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> i32: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> bool: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> String: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<String>: Decode<'q, B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    async fn project_summaries(
        &self,
        page: PageRequest,
    ) -> StoreResult<(u64, Vec<ProjectSummary>)> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT project_id) FROM callbacks")
            .fetch_one(&self.pool)
            .await?;
        let rows: Vec<SummaryRow> = sqlx::query_as(
            "SELECT project_id, COUNT(*) AS callbacks, \
                 COALESCE(SUM(CASE WHEN enabled THEN 0 ELSE 1 END), 0) AS disabled \
             FROM callbacks GROUP BY project_id ORDER BY project_id LIMIT $1 OFFSET $2",
        )
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        let summaries = rows
            .into_iter()
            .map(|row| {
                Ok(ProjectSummary {
                    project_id: ProjectId::from_stored(&row.project_id)
                        .map_err(|e| StoreError::corrupt("project_id", e))?,
                    callbacks: row.callbacks.unsigned_abs(),
                    disabled: row.disabled.unsigned_abs(),
                })
            })
            .collect::<StoreResult<_>>()?;
        Ok((count.unsigned_abs(), summaries))
    }

    async fn search_callbacks(
        &self,
        search: &CallbackSearch,
        page: PageRequest,
    ) -> StoreResult<(u64, Vec<RegisteredCallback>)> {
        let project = search.project.as_ref().map(ProjectId::as_str);
        let pattern = search.url_pattern();
        let event = search.event().map(|e| e.as_str());
        let count: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM callbacks {SEARCH}"))
            .bind(project)
            .bind(pattern.as_deref())
            .bind(event)
            .fetch_one(&self.pool)
            .await?;
        let rows: Vec<RegisteredRow> = sqlx::query_as(&format!(
            "{} {SEARCH} ORDER BY project_id, id DESC LIMIT $4 OFFSET $5",
            registered_select()
        ))
        .bind(project)
        .bind(pattern.as_deref())
        .bind(event)
        .bind(page.limit())
        .bind(page.offset())
        .fetch_all(&self.pool)
        .await?;
        let found = rows
            .into_iter()
            .map(TryInto::try_into)
            .collect::<StoreResult<_>>()?;
        Ok((count.unsigned_abs(), found))
    }

    async fn find_callback(
        &self,
        project: &ProjectId,
        id: CallbackId,
    ) -> StoreResult<Option<RegisteredCallback>> {
        let row: Option<RegisteredRow> = sqlx::query_as(&format!(
            "{} WHERE project_id = $1 AND id = $2",
            registered_select()
        ))
        .bind(project.as_str())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(TryInto::try_into).transpose()
    }

    async fn disabled_callbacks(&self, limit: u32) -> StoreResult<Vec<RegisteredCallback>> {
        let rows: Vec<RegisteredRow> = sqlx::query_as(&format!(
            "{} WHERE NOT enabled ORDER BY updated_at DESC, id DESC LIMIT $1",
            registered_select()
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn attempt_buckets(
        &self,
        from: EpochMillis,
        width: EpochMillis,
    ) -> StoreResult<Vec<AttemptBucket>> {
        let rows: Vec<(i64, i64, i64)> = sqlx::query_as(
            "SELECT CAST((created_at - $1) / $2 AS BIGINT) AS slice, \
                 COALESCE(SUM(CASE WHEN status = 'SUCCESS' THEN 1 ELSE 0 END), 0), \
                 COALESCE(SUM(CASE WHEN status = 'SUCCESS' THEN 0 ELSE 1 END), 0) \
             FROM callback_history WHERE created_at >= $1 GROUP BY slice ORDER BY slice",
        )
        .bind(from)
        .bind(width.max(1))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(slice, succeeded, failed)| AttemptBucket {
                start: from + slice * width,
                succeeded: succeeded.unsigned_abs(),
                failed: failed.unsigned_abs(),
            })
            .collect())
    }

    async fn delivery_history(
        &self,
        project: &ProjectId,
        delivery: i64,
    ) -> StoreResult<Vec<HistoryEntry>> {
        let rows: Vec<HistoryRow> = sqlx::query_as(&format!(
            "{} WHERE h.project_id = $1 AND h.delivery_id = $2 \
             ORDER BY h.created_at DESC, h.id DESC",
            history_from()
        ))
        .bind(project.as_str())
        .bind(delivery)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }
}
