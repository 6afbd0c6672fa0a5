//! The pipeline-level rows of the `callbacks` table: those with a `pipeline_id` and a `name`.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::rows::{PIPELINE_CALLBACK_COLUMNS, PipelineCallbackRow};
use super::{Backend, SqlStore, json_rows};
use crate::domain::{
    CallbackEvent, CallbackName, NewPipelineCallback, PipelineCallback, PipelineId, ProjectId,
    UserId, now_millis,
};
use crate::store::{PipelineCallbackStore, StoreResult};

#[async_trait]
impl<B: Backend> PipelineCallbackStore for SqlStore<B>
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
    async fn upsert_pipeline_callbacks(
        &self,
        project: &ProjectId,
        pipeline: &PipelineId,
        user: &UserId,
        callbacks: &[NewPipelineCallback],
    ) -> StoreResult<()> {
        if callbacks.is_empty() {
            return Ok(());
        }
        let rows = callbacks.iter().map(|c| {
            serde_json::json!({
                "n": c.name.as_str(),
                "u": c.url,
                "e": c.event.as_str(),
                "r": c.region.as_str(),
                "t": c.secret_token.as_ref().map(|token| {
                    self.sealer.seal_token(token.expose(), project.as_str(), &c.url)
                }),
            })
        });
        // Unlike bk-ci, which keeps a name's first event and region, a re-POST updates all of it.
        sqlx::query(&format!(
            "INSERT INTO callbacks (project_id, pipeline_id, name, url, event, region, \
                 secret_token, enabled, creator, updater, created_at, updated_at) \
             SELECT $2, $3, value->>'n', value->>'u', value->>'e', value->>'r', value->>'t', \
                 TRUE, $4, $4, $5, $5 \
             FROM {} WHERE TRUE \
             ON CONFLICT (project_id, pipeline_id, name) WHERE pipeline_id IS NOT NULL \
             DO UPDATE SET \
                 url = excluded.url, event = excluded.event, region = excluded.region, \
                 secret_token = excluded.secret_token, \
                 enabled = TRUE, failure_time = NULL, disabled_reason = NULL, \
                 updater = excluded.updater, updated_at = excluded.updated_at",
            B::JSON_ROWS
        ))
        .bind(json_rows(rows))
        .bind(project.as_str())
        .bind(pipeline.as_str())
        .bind(user.as_str())
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn list_pipeline_callbacks(
        &self,
        project: &ProjectId,
        pipeline: &PipelineId,
        event: Option<CallbackEvent>,
    ) -> StoreResult<Vec<PipelineCallback>> {
        let rows: Vec<PipelineCallbackRow> = sqlx::query_as(&format!(
            "SELECT {PIPELINE_CALLBACK_COLUMNS} FROM callbacks \
             WHERE project_id = $1 AND pipeline_id = $2 AND ($3 IS NULL OR event = $3) \
             ORDER BY name"
        ))
        .bind(project.as_str())
        .bind(pipeline.as_str())
        .bind(event.map(CallbackEvent::as_str))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(TryInto::try_into).collect()
    }

    async fn delete_pipeline_callback(
        &self,
        project: &ProjectId,
        pipeline: &PipelineId,
        name: &CallbackName,
    ) -> StoreResult<()> {
        sqlx::query(
            "DELETE FROM callbacks WHERE project_id = $1 AND pipeline_id = $2 AND name = $3",
        )
        .bind(project.as_str())
        .bind(pipeline.as_str())
        .bind(name.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
