//! Registrations brought over from bk-ci, under their bk-ci ids.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::{Backend, SqlStore};
use crate::domain::{ImportOutcome, ImportedCallback};
use crate::store::{ImportStore, StoreResult};

/// What an imported registration is compared with.
#[derive(sqlx::FromRow)]
struct StoredState {
    project_id: String,
    url: String,
    event: String,
    region: String,
    secret_token: Option<String>,
    enabled: bool,
    updater: String,
    failure_time: Option<i64>,
    disabled_reason: Option<String>,
}

impl<B: Backend> SqlStore<B> {
    /// Whether `stored` already says all that `imported` says (tokens compared opened, since
    /// each sealing differs).
    fn holds(&self, stored: &StoredState, imported: &ImportedCallback) -> bool {
        let new = &imported.callback;
        let token = stored.secret_token.as_deref().map(|token| {
            self.sealer
                .open_token(token, &stored.project_id, &stored.url)
                .ok()
        });
        stored.region == new.region.as_str()
            && stored.enabled == imported.enabled
            && stored.updater == imported.updater.as_str()
            && stored.failure_time == imported.failure_time
            && stored.disabled_reason == imported.disabled_reason
            && token
                == new
                    .secret_token
                    .as_ref()
                    .map(|t| Some(t.expose().to_owned()))
    }

    fn sealed_token(&self, imported: &ImportedCallback) -> Option<String> {
        let new = &imported.callback;
        new.secret_token.as_ref().map(|token| {
            self.sealer
                .seal_token(token.expose(), new.project_id.as_str(), &new.url)
        })
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
        let mut tx = self.pool.begin_with(B::BEGIN).await?;
        let by_id: Option<StoredState> = sqlx::query_as(
            "SELECT project_id, url, event, region, secret_token, enabled, updater, \
                 failure_time, disabled_reason \
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
                if (
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
            Some(_) => {
                sqlx::query(
                    "UPDATE callbacks SET region = $2, secret_token = $3, enabled = $4, \
                         updater = $5, updated_at = $6, failure_time = $7, disabled_reason = $8 \
                     WHERE id = $1",
                )
                .bind(imported.id)
                .bind(new.region.as_str())
                .bind(self.sealed_token(imported))
                .bind(imported.enabled)
                .bind(imported.updater.as_str())
                .bind(imported.updated_at)
                .bind(imported.failure_time)
                .bind(imported.disabled_reason.as_deref())
                .execute(&mut *tx)
                .await?;
                ImportOutcome::Updated
            }
            None => {
                let holder: Option<i64> = sqlx::query_scalar(
                    "SELECT id FROM callbacks WHERE project_id = $1 AND url = $2 AND event = $3",
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
                    None => {
                        sqlx::query(
                            "INSERT INTO callbacks (id, project_id, url, event, region, \
                                 secret_token, enabled, creator, updater, created_at, updated_at, \
                                 failure_time, disabled_reason) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                        )
                        .bind(imported.id)
                        .bind(key.0)
                        .bind(key.1)
                        .bind(key.2)
                        .bind(new.region.as_str())
                        .bind(self.sealed_token(imported))
                        .bind(imported.enabled)
                        .bind(new.user.as_str())
                        .bind(imported.updater.as_str())
                        .bind(imported.created_at)
                        .bind(imported.updated_at)
                        .bind(imported.failure_time)
                        .bind(imported.disabled_reason.as_deref())
                        .execute(&mut *tx)
                        .await?;
                        ImportOutcome::Imported
                    }
                }
            }
        };
        if dry_run {
            tx.rollback().await?;
        } else {
            tx.commit().await?;
        }
        Ok(outcome)
    }

    async fn sync_callback_ids(&self) -> StoreResult<()> {
        if let Some(sync) = B::SYNC_IDS {
            sqlx::query(sync).execute(&self.pool).await?;
        }
        Ok(())
    }
}
