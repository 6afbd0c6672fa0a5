//! The `callbacks` table: project-level (and global) registrations, the rows without a
//! `pipeline_id`. Pipeline-level rows are `pipelines.rs`'s and are never touched here.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::rows::{CALLBACK_COLUMNS, CallbackRow, GlobalRow};
use super::{Backend, RowsAffected, SqlStore, cancel_pending, json_rows};
use crate::domain::{
    Callback, CallbackEvent, CallbackId, GlobalCallback, NewCallback, PageRequest, ProjectId,
    UserId, now_millis,
};
use crate::store::{CallbackStore, Selection, StoreResult};

/// What a bulk enable or disable sets: `$2` enabled, `$3` now, `$4` the reason. Enabling clears
/// the failure state, disabling keeps it.
const SET_ENABLED: &str = "UPDATE callbacks SET enabled = $2, updated_at = $3, \
     disabled_reason = $4, failure_time = CASE WHEN $2 THEN NULL ELSE failure_time END";

#[async_trait]
impl<B: Backend> CallbackStore for SqlStore<B>
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
    async fn upsert_callbacks(&self, callbacks: &[NewCallback]) -> StoreResult<()> {
        let rows = callbacks.iter().map(|c| {
            serde_json::json!({
                "p": c.project_id.as_str(),
                "u": c.url,
                "e": c.event.as_str(),
                "r": c.region.as_str(),
                "t": c.secret_token.as_ref().map(|token| {
                    self.sealer.seal_token(token.expose(), c.project_id.as_str(), &c.url)
                }),
                "h": (!c.headers.is_empty()).then(|| {
                    self.sealer.seal_headers(&c.headers.to_json(), c.project_id.as_str(), &c.url)
                }),
                "w": c.user.as_str(),
            })
        });
        sqlx::query(&format!(
            "INSERT INTO callbacks (project_id, url, event, region, secret_token, \
                 secret_headers, enabled, creator, updater, created_at, updated_at) \
             SELECT value->>'p', value->>'u', value->>'e', value->>'r', value->>'t', \
                 value->>'h', TRUE, value->>'w', value->>'w', $2, $2 \
             FROM {} WHERE TRUE \
             ON CONFLICT (project_id, url, event) WHERE pipeline_id IS NULL DO UPDATE SET \
                 region = excluded.region, secret_token = excluded.secret_token, \
                 secret_headers = excluded.secret_headers, \
                 enabled = TRUE, failure_time = NULL, disabled_reason = NULL, \
                 updater = excluded.updater, updated_at = excluded.updated_at",
            B::JSON_ROWS
        ))
        .bind(json_rows(rows))
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_callbacks(
        &self,
        project: &ProjectId,
        page: PageRequest,
    ) -> StoreResult<(u64, Vec<Callback>)> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM callbacks WHERE project_id = $1 AND pipeline_id IS NULL",
        )
        .bind(project.as_str())
        .fetch_one(&self.pool)
        .await?;
        let rows: Vec<CallbackRow> = sqlx::query_as(&format!(
            "SELECT {CALLBACK_COLUMNS} FROM callbacks \
             WHERE project_id = $1 AND pipeline_id IS NULL \
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(project.as_str())
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

    async fn delete_callback(&self, project: &ProjectId, id: CallbackId) -> StoreResult<bool> {
        let done = sqlx::query(
            "DELETE FROM callbacks WHERE project_id = $1 AND id = $2 AND pipeline_id IS NULL",
        )
        .bind(project.as_str())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_callback_enabled(
        &self,
        project: &ProjectId,
        id: CallbackId,
        user: &UserId,
        enabled: bool,
        reason: Option<&str>,
    ) -> StoreResult<bool> {
        // Enabling clears the failure state; disabling keeps it and records why.
        let now = now_millis();
        let (_turn, mut tx) = self.begin_write().await?;
        let touched: Vec<i64> = sqlx::query_scalar(
            "UPDATE callbacks SET enabled = $3, updater = $4, updated_at = $5, \
                 disabled_reason = $6, \
                 failure_time = CASE WHEN $3 THEN NULL ELSE failure_time END \
             WHERE project_id = $1 AND id = $2 AND pipeline_id IS NULL RETURNING id",
        )
        .bind(project.as_str())
        .bind(id)
        .bind(enabled)
        .bind(user.as_str())
        .bind(now)
        .bind(reason)
        .fetch_all(&mut *tx)
        .await?;
        if !enabled {
            cancel_pending::<B>(&mut tx, &touched, now).await?;
        }
        tx.commit().await?;
        Ok(!touched.is_empty())
    }

    async fn global_callbacks(&self, event: CallbackEvent) -> StoreResult<Vec<GlobalCallback>> {
        let rows: Vec<GlobalRow> = sqlx::query_as(&format!(
            "SELECT {CALLBACK_COLUMNS}, secret_headers FROM callbacks \
             WHERE project_id = $1 AND event = $2 AND enabled ORDER BY id"
        ))
        .bind(ProjectId::global().as_str())
        .bind(event.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| row.into_global(&self.sealer))
            .collect()
    }

    async fn set_callbacks_enabled(
        &self,
        selection: Selection<'_>,
        enabled: bool,
        reason: Option<&str>,
    ) -> StoreResult<u64> {
        let (sql, first, project) = match selection {
            Selection::Ids { project, ids } => (
                format!(
                    "{SET_ENABLED} WHERE project_id = $5 \
                       AND id IN (SELECT CAST(value->>'i' AS BIGINT) FROM {})",
                    B::JSON_ROWS
                ),
                json_rows(ids.iter().map(|id| serde_json::json!({ "i": id }))),
                Some(project),
            ),
            Selection::Url { project, url } => (
                format!("{SET_ENABLED} WHERE url = $1 AND project_id = COALESCE($5, project_id)"),
                url.to_owned(),
                project,
            ),
        };
        let now = now_millis();
        let (_turn, mut tx) = self.begin_write().await?;
        let touched: Vec<i64> = sqlx::query_scalar(&format!("{sql} RETURNING id"))
            .bind(first)
            .bind(enabled)
            .bind(now)
            .bind(reason)
            .bind(project.map(ProjectId::as_str))
            .fetch_all(&mut *tx)
            .await?;
        if !enabled {
            cancel_pending::<B>(&mut tx, &touched, now).await?;
        }
        tx.commit().await?;
        Ok(u64::try_from(touched.len()).unwrap_or(u64::MAX))
    }
}
