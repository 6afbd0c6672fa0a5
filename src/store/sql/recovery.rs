//! The `recover_jobs` table, and the batches that re-queue a job's deliveries.

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::rows::{RECOVER_JOB_COLUMNS, RecoverJobRow};
use super::{Backend, RowsAffected, SqlStore, json_rows};
use crate::domain::{
    CANCELLED_DELETED, CANCELLED_DISABLED, EpochMillis, NewRecovery, ProjectId, RecoverJob,
    RecoverJobId, RecoverState, RecoveryBatch, RecoveryStart, now_millis,
};
use crate::store::{RecoveryStore, StoreResult};

/// A job's deliveries in its window that a recovery takes: ended FAILED or CANCELLED between
/// `$2` and `$3`, of callback `$1`.
const ENDED_IN_WINDOW: &str = "callback_id = $1 AND status IN ('FAILED', 'CANCELLED') \
     AND updated_at >= $2 AND updated_at <= $3";

/// Where a running job stands, as a batch reads it (its row locked).
#[derive(sqlx::FromRow)]
struct RunningJob {
    id: i64,
    callback_id: i64,
    window_from: i64,
    window_to: i64,
    cursor_id: i64,
    last_id: i64,
}

#[async_trait]
impl<B: Backend> RecoveryStore for SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> i32: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> bool: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> String: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    async fn start_recovery(&self, recovery: &NewRecovery) -> StoreResult<RecoveryStart> {
        let now = now_millis();
        let to = recovery.to.min(now);
        let (_turn, mut tx) = self.begin_write().await?;
        let enabled: Option<bool> =
            sqlx::query_scalar("SELECT enabled FROM callbacks WHERE id = $1 AND project_id = $2")
                .bind(recovery.callback_id)
                .bind(recovery.project_id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        match enabled {
            None => return Ok(RecoveryStart::NoCallback),
            Some(false) => return Ok(RecoveryStart::Disabled),
            Some(true) => {}
        }
        let (total, last_id): (i64, i64) = sqlx::query_as(&format!(
            "SELECT COUNT(*), CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM deliveries \
             WHERE {ENDED_IN_WINDOW}"
        ))
        .bind(recovery.callback_id)
        .bind(recovery.from)
        .bind(to)
        .fetch_one(&mut *tx)
        .await?;
        // Nothing to re-queue: the job is done as it starts.
        let state = if total == 0 {
            RecoverState::Done
        } else {
            RecoverState::Running
        };
        let row: RecoverJobRow = sqlx::query_as(&format!(
            "INSERT INTO recover_jobs (project_id, callback_id, window_from, window_to, state, \
                 last_id, total, creator, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING {RECOVER_JOB_COLUMNS}"
        ))
        .bind(recovery.project_id.as_str())
        .bind(recovery.callback_id)
        .bind(recovery.from)
        .bind(to)
        .bind(state.as_str())
        .bind(last_id)
        .bind(total)
        .bind(recovery.creator.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(RecoveryStart::Started(row.try_into()?))
    }

    async fn recover_job(
        &self,
        project: &ProjectId,
        id: RecoverJobId,
    ) -> StoreResult<Option<RecoverJob>> {
        let row: Option<RecoverJobRow> = sqlx::query_as(&format!(
            "SELECT {RECOVER_JOB_COLUMNS} FROM recover_jobs WHERE project_id = $1 AND id = $2"
        ))
        .bind(project.as_str())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(TryInto::try_into).transpose()
    }

    async fn cancel_recovery(
        &self,
        project: &ProjectId,
        id: RecoverJobId,
        reason: &str,
    ) -> StoreResult<Option<RecoverJob>> {
        sqlx::query(
            "UPDATE recover_jobs SET state = 'CANCELLED', reason = $3, updated_at = $4 \
             WHERE project_id = $1 AND id = $2 AND state = 'RUNNING'",
        )
        .bind(project.as_str())
        .bind(id)
        .bind(reason)
        .bind(now_millis())
        .execute(&self.pool)
        .await?;
        self.recover_job(project, id).await
    }

    async fn recover_batch(&self, batch: u32) -> StoreResult<Option<RecoveryBatch>> {
        // Most of the time no job runs: a read says so without taking the write lock.
        let running: Option<i64> =
            sqlx::query_scalar("SELECT id FROM recover_jobs WHERE state = 'RUNNING' LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        if running.is_none() {
            return Ok(None);
        }
        let batch = i64::from(batch);
        let (_turn, mut tx) = self.begin_write().await?;
        let Some(job) = Self::take_job(&mut tx, batch).await? else {
            return Ok(None);
        };
        let now = now_millis();
        let enabled: Option<bool> =
            sqlx::query_scalar("SELECT enabled FROM callbacks WHERE id = $1")
                .bind(job.callback_id)
                .fetch_optional(&mut *tx)
                .await?;
        let done = match enabled {
            Some(true) => Self::requeue(&mut tx, &job, batch, now).await?,
            None => Self::stop(&mut tx, &job, CANCELLED_DELETED, now).await?,
            Some(false) => Self::stop(&mut tx, &job, CANCELLED_DISABLED, now).await?,
        };
        tx.commit().await?;
        Ok(Some(done))
    }
}

/// The steps of a batch, each inside its transaction.
impl<B: Backend> SqlStore<B>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> String: Encode<'q, B::Db> + Decode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
    for<'r> &'r str: ColumnIndex<<B::Db as Database>::Row>,
    usize: ColumnIndex<<B::Db as Database>::Row>,
{
    /// Locks the first running job with room: fewer than `batch` of its re-queued deliveries
    /// wait for their attempt. A job another runner holds is passed over.
    async fn take_job(
        connection: &mut <B::Db as Database>::Connection,
        batch: i64,
    ) -> Result<Option<RunningJob>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT id, callback_id, window_from, window_to, cursor_id, last_id \
             FROM recover_jobs j WHERE state = 'RUNNING' \
               AND (SELECT COUNT(*) FROM deliveries d WHERE d.recover_job_id = j.id \
                      AND d.status = 'PENDING' AND d.attempts <= d.retry_base) < $1 \
             ORDER BY id LIMIT 1 {}",
            B::SKIP_LOCKED
        ))
        .bind(batch)
        .fetch_optional(connection)
        .await
    }

    /// Cancels a job whose callback is gone or disabled.
    async fn stop(
        connection: &mut <B::Db as Database>::Connection,
        job: &RunningJob,
        why: &str,
        now: EpochMillis,
    ) -> Result<RecoveryBatch, sqlx::Error> {
        sqlx::query(
            "UPDATE recover_jobs SET state = 'CANCELLED', reason = $2, updated_at = $3 \
             WHERE id = $1",
        )
        .bind(job.id)
        .bind(why)
        .bind(now)
        .execute(connection)
        .await?;
        Ok(RecoveryBatch {
            job: job.id,
            requeued: 0,
            through: job.cursor_id,
            state: RecoverState::Cancelled,
        })
    }

    /// Re-queues the job's next `batch` deliveries after its cursor and moves the cursor past
    /// them; fewer than `batch` left means the job is done.
    async fn requeue(
        connection: &mut <B::Db as Database>::Connection,
        job: &RunningJob,
        batch: i64,
        now: EpochMillis,
    ) -> Result<RecoveryBatch, sqlx::Error> {
        let ids: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT id FROM deliveries WHERE {ENDED_IN_WINDOW} AND id > $4 AND id <= $5 \
             ORDER BY id LIMIT $6"
        ))
        .bind(job.callback_id)
        .bind(job.window_from)
        .bind(job.window_to)
        .bind(job.cursor_id)
        .bind(job.last_id)
        .bind(batch)
        .fetch_all(&mut *connection)
        .await?;
        // The status is checked again: another job may have taken one meanwhile.
        let requeued = sqlx::query(&format!(
            "UPDATE deliveries SET status = 'PENDING', retry_base = attempts, \
                 next_attempt_at = $2, recover_job_id = $3, cancel_reason = NULL, \
                 lease_until = NULL, claim_token = NULL, updated_at = $2 \
             WHERE id IN (SELECT CAST(value->>'i' AS BIGINT) FROM {}) \
               AND status IN ('FAILED', 'CANCELLED')",
            B::JSON_ROWS
        ))
        .bind(json_rows(
            ids.iter().map(|id| serde_json::json!({ "i": id })),
        ))
        .bind(now)
        .bind(job.id)
        .execute(&mut *connection)
        .await?
        .rows_affected();
        let state = if i64::try_from(ids.len()).unwrap_or(i64::MAX) < batch {
            RecoverState::Done
        } else {
            RecoverState::Running
        };
        let through = ids.last().copied().unwrap_or(job.cursor_id);
        // Done: whatever of the window was not re-queued had left it (see `RecoverJob::failed`).
        sqlx::query(
            "UPDATE recover_jobs SET cursor_id = $2, done = done + $3, state = $4, \
                 failed = CASE WHEN $4 = 'DONE' AND total > done + $3 THEN total - done - $3 \
                     ELSE failed END, \
                 updated_at = $5 \
             WHERE id = $1",
        )
        .bind(job.id)
        .bind(through)
        .bind(i64::try_from(requeued).unwrap_or(i64::MAX))
        .bind(state.as_str())
        .bind(now)
        .execute(&mut *connection)
        .await?;
        if let (true, Some(wake)) = (requeued > 0, B::WAKE_SQL) {
            sqlx::query(wake).execute(&mut *connection).await?;
        }
        Ok(RecoveryBatch {
            job: job.id,
            requeued,
            through,
            state,
        })
    }
}
