//! Registrations brought over from bk-ci, under their bk-ci ids.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::rows::open_headers;
use super::{Backend, SqlStore};
use crate::domain::{ImportOutcome, ImportedCallback, ImportedPipelineCallback};
use crate::secrets::Secret;
use crate::store::{ImportStore, StoreResult};

/// What an imported registration is compared with.
#[derive(sqlx::FromRow)]
struct StoredState {
    project_id: String,
    /// A pipeline-level row never matches a project-level import.
    is_pipeline: bool,
    url: String,
    event: String,
    region: String,
    secret_token: Option<String>,
    enabled: bool,
    updater: String,
    failure_time: Option<i64>,
    disabled_reason: Option<String>,
    secret_headers: Option<String>,
}

/// What an imported pipeline-level registration is compared with.
#[derive(sqlx::FromRow)]
struct StoredPipelineState {
    url: String,
    event: String,
    region: String,
    secret_token: Option<String>,
    enabled: bool,
}

impl<B: Backend> SqlStore<B> {
    /// Whether `stored` already says all that `imported` says.
    fn holds(&self, stored: &StoredState, imported: &ImportedCallback) -> bool {
        let new = &imported.callback;
        stored.region == new.region.as_str()
            && stored.enabled == imported.enabled
            && stored.updater == imported.updater.as_str()
            && stored.failure_time == imported.failure_time
            && stored.disabled_reason == imported.disabled_reason
            && self.same_token(
                stored.secret_token.as_deref(),
                new.secret_token.as_ref(),
                &stored.project_id,
                &stored.url,
            )
            && open_headers(
                &self.sealer,
                stored.secret_headers.clone(),
                &stored.project_id,
                &stored.url,
            )
            .is_ok_and(|headers| headers == new.headers)
    }

    /// The custom headers as stored: sealed JSON, none when empty.
    fn sealed_headers(&self, imported: &ImportedCallback) -> Option<String> {
        let new = &imported.callback;
        (!new.headers.is_empty()).then(|| {
            self.sealer
                .seal_headers(&new.headers.to_json(), new.project_id.as_str(), &new.url)
        })
    }

    /// Whether a stored token opens to `token` (compared opened: each sealing differs).
    fn same_token(
        &self,
        stored: Option<&str>,
        token: Option<&Secret>,
        project: &str,
        url: &str,
    ) -> bool {
        let opened = stored.map(|stored| self.sealer.open_token(stored, project, url).ok());
        opened == token.map(|token| Some(token.expose().to_owned()))
    }

    fn sealed(&self, token: Option<&Secret>, project: &str, url: &str) -> Option<String> {
        token.map(|token| self.sealer.seal_token(token.expose(), project, url))
    }
}

#[async_trait]
impl<B: Backend> ImportStore for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> bool: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> String: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> Option<&'q str>: Encode<'q, B::Db>,
    for<'q> Option<i64>: Encode<'q, B::Db>,
    for<'q> Option<String>: Encode<'q, B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    async fn import_callback(
        &self,
        imported: &ImportedCallback,
        dry_run: bool,
    ) -> StoreResult<ImportOutcome> {
        let new = &imported.callback;
        let (_turn, mut tx) = self.begin_write().await?;
        let by_id: Option<StoredState> = sqlx::query_as(
            "SELECT project_id, pipeline_id IS NOT NULL AS is_pipeline, url, event, region, \
                 secret_token, enabled, updater, failure_time, disabled_reason, secret_headers \
             FROM callbacks WHERE id = $1",
        )
        .bind(imported.id)
        .fetch_optional(&mut *tx)
        .await?;
        let key = (
            new.project_id.as_str(),
            new.url.as_str(),
            new.event.as_str(),
        );
        let outcome = match by_id {
            Some(stored)
                if stored.is_pipeline
                    || (
                        stored.project_id.as_str(),
                        stored.url.as_str(),
                        stored.event.as_str(),
                    ) != key =>
            {
                ImportOutcome::Conflict(format!(
                    "id {} already holds another registration here ({} {} {})",
                    imported.id, stored.project_id, stored.event, stored.url
                ))
            }
            Some(stored) if self.holds(&stored, imported) => ImportOutcome::Unchanged,
            Some(_) => ImportOutcome::Updated,
            None => {
                let holder: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM callbacks \
                     WHERE project_id = $1 AND url = $2 AND event = $3 AND pipeline_id IS NULL",
                )
                .bind(key.0)
                .bind(key.1)
                .bind(key.2)
                .fetch_optional(&mut *tx)
                .await?;
                match holder {
                    Some(other) => {
                        ImportOutcome::Conflict(format!("already registered here under id {other}"))
                    }
                    None => ImportOutcome::Imported,
                }
            }
        };
        if matches!(outcome, ImportOutcome::Imported | ImportOutcome::Updated) {
            // An update keeps the creator and the creation time.
            sqlx::query(
                "INSERT INTO callbacks (id, project_id, url, event, region, secret_token, enabled, \
                     creator, updater, created_at, updated_at, failure_time, disabled_reason, \
                     secret_headers) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) \
                 ON CONFLICT (id) DO UPDATE SET \
                     region = excluded.region, secret_token = excluded.secret_token, \
                     enabled = excluded.enabled, updater = excluded.updater, \
                     updated_at = excluded.updated_at, failure_time = excluded.failure_time, \
                     disabled_reason = excluded.disabled_reason, \
                     secret_headers = excluded.secret_headers",
            )
            .bind(imported.id)
            .bind(key.0)
            .bind(key.1)
            .bind(key.2)
            .bind(new.region.as_str())
            .bind(self.sealed(new.secret_token.as_ref(), key.0, key.1))
            .bind(imported.enabled)
            .bind(new.user.as_str())
            .bind(imported.updater.as_str())
            .bind(imported.created_at)
            .bind(imported.updated_at)
            .bind(imported.failure_time)
            .bind(imported.disabled_reason.as_deref())
            .bind(self.sealed_headers(imported))
            .execute(&mut *tx)
            .await?;
        }
        finish(tx, dry_run).await?;
        Ok(outcome)
    }

    async fn import_pipeline_callback(
        &self,
        imported: &ImportedPipelineCallback,
        dry_run: bool,
    ) -> StoreResult<ImportOutcome> {
        let (project, pipeline) = (imported.project_id.as_str(), imported.pipeline_id.as_str());
        let new = &imported.callback;
        let (_turn, mut tx) = self.begin_write().await?;
        let stored: Option<StoredPipelineState> = sqlx::query_as(
            "SELECT url, event, region, secret_token, enabled FROM callbacks \
             WHERE project_id = $1 AND pipeline_id = $2 AND name = $3",
        )
        .bind(project)
        .bind(pipeline)
        .bind(new.name.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match stored {
            Some(stored)
                if stored.enabled
                    && stored.url == new.url
                    && stored.event == new.event.as_str()
                    && stored.region == new.region.as_str()
                    && self.same_token(
                        stored.secret_token.as_deref(),
                        new.secret_token.as_ref(),
                        project,
                        &stored.url,
                    ) =>
            {
                ImportOutcome::Unchanged
            }
            Some(_) => ImportOutcome::Updated,
            None => ImportOutcome::Imported,
        };
        if outcome != ImportOutcome::Unchanged {
            // An update re-enables, clears the failure state and keeps the creator and the
            // creation time, as the pipeline route's upsert does.
            sqlx::query(
                "INSERT INTO callbacks (project_id, pipeline_id, name, url, event, region, \
                     secret_token, enabled, creator, updater, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, TRUE, $8, $8, $9, $10) \
                 ON CONFLICT (project_id, pipeline_id, name) WHERE pipeline_id IS NOT NULL \
                 DO UPDATE SET \
                     url = excluded.url, event = excluded.event, region = excluded.region, \
                     secret_token = excluded.secret_token, \
                     enabled = TRUE, failure_time = NULL, disabled_reason = NULL, \
                     updater = excluded.updater, updated_at = excluded.updated_at",
            )
            .bind(project)
            .bind(pipeline)
            .bind(new.name.as_str())
            .bind(new.url.as_str())
            .bind(new.event.as_str())
            .bind(new.region.as_str())
            .bind(self.sealed(new.secret_token.as_ref(), project, &new.url))
            .bind(imported.user.as_str())
            .bind(imported.created_at)
            .bind(imported.updated_at)
            .execute(&mut *tx)
            .await?;
        }
        finish(tx, dry_run).await?;
        Ok(outcome)
    }

    async fn sync_callback_ids(&self) -> StoreResult<()> {
        if let Some(sync) = B::SYNC_IDS {
            sqlx::query(sync).execute(&self.pool).await?;
        }
        Ok(())
    }
}

/// Commits, or rolls back a dry run.
async fn finish<DB: Database>(tx: sqlx::Transaction<'_, DB>, dry_run: bool) -> StoreResult<()> {
    if dry_run {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(())
}
