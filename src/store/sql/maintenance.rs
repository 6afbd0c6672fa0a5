//! Start-up, readiness, retention, metrics and the secret-token key operations.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::{Backend, RowsAffected, SqlStore, json_rows};
use crate::domain::{EpochMillis, now_millis};
use crate::secrets::{SEALED_PREFIX, Sealer};
use crate::store::{Maintenance, QueueStats, SecretTokenCounts, StoreResult};

/// Retention's statements, each deleting up to `$2` rows older than `$1`. A delivery stays while
/// history names it: its attempts read their body from its event.
const PRUNE: [&str; 4] = [
    "DELETE FROM callback_history WHERE id IN \
         (SELECT id FROM callback_history WHERE created_at < $1 LIMIT $2)",
    "DELETE FROM deliveries WHERE id IN \
         (SELECT id FROM deliveries d WHERE status <> 'PENDING' AND updated_at < $1 \
            AND NOT EXISTS (SELECT 1 FROM callback_history h WHERE h.delivery_id = d.id) LIMIT $2)",
    "DELETE FROM events WHERE id IN \
         (SELECT id FROM events e WHERE created_at < $1 \
            AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_pk = e.id) LIMIT $2)",
    "DELETE FROM recover_jobs WHERE id IN \
         (SELECT id FROM recover_jobs WHERE state <> 'RUNNING' AND updated_at < $1 LIMIT $2)",
];

/// How a secret column's value is sealed (`Sealer::seal_token`, `Sealer::seal_headers`).
type SealFn = fn(&Sealer, &str, &str, &str) -> String;

/// Plaintext values sealed per statement.
const SEAL_BATCH: i64 = 500;

/// `SEALED_PREFIX.len()` as the SQL `substr` takes it.
fn sealed_prefix_len() -> i32 {
    i32::try_from(SEALED_PREFIX.len()).expect("a short prefix")
}

#[async_trait]
impl<B: Backend> Maintenance for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> i32: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> String: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    async fn migrate(&self) -> StoreResult<()> {
        Ok(B::migrate(&self.pool).await?)
    }

    async fn ready(&self) -> StoreResult<()> {
        Ok(self.backend.check_ready(&self.pool).await?)
    }

    async fn prune(&self, before: EpochMillis, batch: u32) -> StoreResult<u64> {
        let mut removed = 0;
        for statement in PRUNE {
            removed += sqlx::query(statement)
                .bind(before)
                .bind(i64::from(batch))
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(removed)
    }

    async fn secret_key_check(&self, fresh: &str) -> StoreResult<String> {
        // Of two processes starting at once, the first one's value stays.
        sqlx::query(
            "INSERT INTO secret_key_check (id, check_value, created_at) \
             VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(fresh)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        let check = sqlx::query_scalar("SELECT check_value FROM secret_key_check WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(check)
    }

    async fn count_secret_tokens(&self) -> StoreResult<SecretTokenCounts> {
        let (sealed, all): (i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(CASE WHEN substr(secret_token, 1, $1) = $2 \
                 THEN 1 ELSE 0 END), 0) + COALESCE(SUM(CASE WHEN substr(secret_headers, 1, $1) = $2 \
                 THEN 1 ELSE 0 END), 0) AS BIGINT), \
                 CAST(COUNT(secret_token) + COUNT(secret_headers) AS BIGINT) \
             FROM callbacks",
        )
        .bind(sealed_prefix_len())
        .bind(SEALED_PREFIX)
        .fetch_one(&self.pool)
        .await?;
        Ok(SecretTokenCounts {
            sealed: sealed.unsigned_abs(),
            plaintext: (all - sealed).unsigned_abs(),
        })
    }

    async fn seal_plaintext_secret_tokens(&self) -> StoreResult<u64> {
        if !self.sealer.has_key() {
            return Ok(0);
        }
        let columns: [(&str, SealFn); 2] = [
            ("secret_token", Sealer::seal_token),
            ("secret_headers", Sealer::seal_headers),
        ];
        let mut sealed = 0;
        for (column, seal) in columns {
            let mut after = 0_i64;
            loop {
                let rows: Vec<(i64, String, String, String)> = sqlx::query_as(&format!(
                    "SELECT id, project_id, url, {column} FROM callbacks \
                     WHERE id > $1 AND {column} IS NOT NULL \
                       AND substr({column}, 1, $2) <> $3 \
                     ORDER BY id LIMIT $4"
                ))
                .bind(after)
                .bind(sealed_prefix_len())
                .bind(SEALED_PREFIX)
                .bind(SEAL_BATCH)
                .fetch_all(&self.pool)
                .await?;
                let Some(last) = rows.last() else {
                    break;
                };
                after = last.0;
                let updates = rows.iter().map(|(id, project, url, plain)| {
                    serde_json::json!({
                        "i": id,
                        "o": plain,
                        "n": seal(&self.sealer, plain, project, url),
                    })
                });
                // Only rows still holding the plaintext read: a concurrent re-create wins.
                sealed += sqlx::query(&format!(
                    "UPDATE callbacks SET {column} = j.sealed \
                     FROM (SELECT CAST(value->>'i' AS BIGINT) AS id, value->>'o' AS plain, \
                             value->>'n' AS sealed FROM {}) AS j \
                     WHERE callbacks.id = j.id AND callbacks.{column} = j.plain",
                    B::JSON_ROWS
                ))
                .bind(json_rows(updates))
                .execute(&self.pool)
                .await?
                .rows_affected();
            }
        }
        Ok(sealed)
    }

    async fn queue_stats(&self, now: EpochMillis) -> StoreResult<QueueStats> {
        let stats = sqlx::query_as(
            "SELECT \
               COALESCE(SUM(CASE WHEN lease_until IS NULL AND next_attempt_at <= $1 \
                            THEN 1 ELSE 0 END), 0) AS due, \
               COALESCE(SUM(CASE WHEN lease_until > $1 THEN 1 ELSE 0 END), 0) AS leased, \
               COALESCE(SUM(CASE WHEN attempts > 0 AND next_attempt_at > $1 \
                            THEN 1 ELSE 0 END), 0) AS retrying, \
               (SELECT COUNT(*) FROM callbacks WHERE NOT enabled) AS disabled_callbacks \
             FROM deliveries WHERE status = 'PENDING'",
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        Ok(stats)
    }
}
