//! The `events` and `deliveries` tables as a queue: intake, leases, outcomes.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};
use tokio::sync::Notify;

use super::intake::{CallbackTarget, Routing, scope_rows, targets_of};
use super::outcomes::{
    EffectStatements, attempt_rows, effect_rows, leased_ids, manual_success_rows, state_rows,
};
use super::rows::{ClaimRow, TargetRow};
use super::{Backend, RowsAffected, SqlStore, cancel_pending, json_rows, materialized_rows};
use crate::domain::{
    CallbackId, DeliveryOutcome, DeliveryTarget, EpochMillis, EventRoute, NewEvent, Published,
    now_millis,
};
use crate::store::{Claim, ClaimedDelivery, DeliveryQueue, DisableRule, Lane, StoreResult};

#[async_trait]
impl<B: Backend> DeliveryQueue for SqlStore<B>
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
    async fn publish(&self, events: &[NewEvent]) -> StoreResult<Vec<Published>> {
        let now = now_millis();
        let (_turn, mut tx) = self.begin_write().await?;
        let callbacks: Vec<CallbackTarget> = sqlx::query_as(&scope_callbacks_sql::<B>())
            .bind(scope_rows(events.iter().map(|e| &e.route)))
            .fetch_all(&mut *tx)
            .await?;
        let routing = Routing::new(events, &callbacks);
        // `WHERE TRUE` keeps SQLite from reading ON CONFLICT as a join constraint.
        let inserted: Vec<(i64, String, String)> = sqlx::query_as(&format!(
            "{} INSERT INTO events (project_id, event_id, event, body, deliveries, created_at) \
             SELECT value->>'p', value->>'i', value->>'e', value->>'b', CAST(value->>'n' AS INTEGER), $2 \
             FROM rows WHERE TRUE \
             ON CONFLICT (project_id, event_id) DO NOTHING \
             RETURNING id, project_id, event_id",
            materialized_rows::<B>()
        ))
        .bind(routing.event_rows())
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let (deliveries, mut answers) = routing.deliveries_of(inserted);
        if !deliveries.is_empty() {
            sqlx::query(&format!(
                "INSERT INTO deliveries (event_pk, callback_id, host, status, attempts, \
                     next_attempt_at, created_at, updated_at) \
                 SELECT CAST(value->>'v' AS BIGINT), CAST(value->>'c' AS BIGINT), value->>'h', \
                     'PENDING', 0, $2, $2, $2 \
                 FROM {}",
                B::JSON_ROWS
            ))
            .bind(json_rows(deliveries))
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if let Some(wake) = B::WAKE_SQL {
                sqlx::query(wake).execute(&mut *tx).await?;
            }
        }
        if let Some(repeated) = routing.repeated_rows(&answers) {
            let earlier: Vec<(String, String, i32)> = sqlx::query_as(&format!(
                "SELECT e.project_id, e.event_id, e.deliveries FROM events e \
                 JOIN {} AS j ON e.project_id = j.value->>'p' AND e.event_id = j.value->>'i'",
                B::JSON_ROWS
            ))
            .bind(repeated)
            .fetch_all(&mut *tx)
            .await?;
            for (project, event_id, deliveries) in earlier {
                answers.insert((project, event_id), deliveries.unsigned_abs());
            }
        }
        tx.commit().await?;
        routing.published(&answers)
    }

    async fn count_targets(&self, routes: &[EventRoute]) -> StoreResult<Vec<u32>> {
        let callbacks: Vec<CallbackTarget> = sqlx::query_as(&scope_callbacks_sql::<B>())
            .bind(scope_rows(routes.iter()))
            .fetch_all(&self.pool)
            .await?;
        Ok(targets_of(routes.iter(), &callbacks)
            .iter()
            .map(|targets| u32::try_from(targets.len()).unwrap_or(u32::MAX))
            .collect())
    }

    async fn claim_due(&self, claim: &Claim<'_>) -> StoreResult<Vec<ClaimedDelivery>> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let busy = json_rows(
            claim
                .busy_hosts
                .iter()
                .map(|h| serde_json::json!({ "h": h })),
        );
        // Found again by id, not by token: the token has no index, so taking a lease changes no
        // indexed column and PostgreSQL can update the row in place (HOT).
        let turn = self.writer_turn().await;
        let claimed: Vec<i64> = sqlx::query_scalar(&format!(
            "WITH due AS (SELECT id FROM deliveries \
                 WHERE {} AND next_attempt_at <= $2 \
                   AND (lease_until IS NULL OR lease_until <= $2) \
                   AND host NOT IN (SELECT value->>'h' FROM {}) \
                 ORDER BY next_attempt_at LIMIT $3 {}) \
             UPDATE deliveries SET lease_until = $4, claim_token = $5 \
             WHERE id IN (SELECT id FROM due) RETURNING id",
            pending_in(claim.lane),
            B::JSON_ROWS,
            B::SKIP_LOCKED
        ))
        .bind(busy)
        .bind(claim.now)
        .bind(i64::from(claim.limit))
        .bind(claim.lease_until)
        .bind(&token)
        .fetch_all(&self.leases)
        .await?;
        drop(turn);
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<ClaimRow> = sqlx::query_as(&format!(
            "SELECT d.id, d.host, d.attempts, d.retry_base, d.recover_job_id, d.callback_id, \
                 e.event, e.body, cb.project_id AS callback_project, cb.url, cb.secret_token, \
                 cb.secret_headers, cb.enabled, cb.disabled_reason \
             FROM deliveries d JOIN events e ON e.id = d.event_pk \
             LEFT JOIN callbacks cb ON cb.id = d.callback_id \
             WHERE d.id {} AND d.claim_token = $2 \
             ORDER BY d.next_attempt_at, d.id",
            B::ids_in("$1")
        ))
        .bind(json_rows(claimed.iter().map(|&id| serde_json::json!(id))))
        .bind(&token)
        .fetch_all(&self.leases)
        .await?;
        rows.into_iter()
            .map(|row| row.into_claimed(&token, &self.sealer))
            .collect()
    }

    async fn defer_host(
        &self,
        host: &str,
        now: EpochMillis,
        until: EpochMillis,
    ) -> StoreResult<u64> {
        let mut moved = 0;
        let _turn = self.writer_turn().await;
        for lane in [Lane::First, Lane::Retry] {
            moved += sqlx::query(&format!(
                "UPDATE deliveries SET next_attempt_at = $3 \
                 WHERE {} AND host = $1 AND next_attempt_at <= $2 \
                   AND (lease_until IS NULL OR lease_until <= $2)",
                pending_in(lane)
            ))
            .bind(host)
            .bind(now)
            .bind(until)
            .execute(&self.leases)
            .await?
            .rows_affected();
        }
        Ok(moved)
    }

    async fn next_due_at(&self) -> StoreResult<Option<EpochMillis>> {
        let due = sqlx::query_scalar(&format!(
            "SELECT MIN(due) FROM (SELECT ({first}) AS due UNION ALL SELECT ({retry})) AS lanes",
            first = first_unleased(Lane::First),
            retry = first_unleased(Lane::Retry)
        ))
        .fetch_one(&self.pool)
        .await?;
        Ok(due)
    }

    async fn record_outcomes(
        &self,
        outcomes: &[DeliveryOutcome],
        disable: &DisableRule,
    ) -> StoreResult<()> {
        if outcomes.is_empty() {
            return Ok(());
        }
        let now = now_millis();
        let (_turn, mut tx) = self.begin_write().await?;
        if let Some(attempts) = attempt_rows(outcomes) {
            sqlx::query(&format!(
                "{} INSERT INTO callback_history (delivery_id, callback_id, project_id, url, \
                     event, status, attempt, error_msg, request_headers, request_body, \
                     response_code, response_body, start_time, end_time, created_at, manual, \
                     recover_job_id, body_from_event) \
                 SELECT CAST(value->>'delivery_id' AS BIGINT), CAST(value->>'callback_id' AS BIGINT), \
                     value->>'project_id', value->>'url', value->>'event', value->>'status', \
                     CAST(value->>'attempt' AS INTEGER), value->>'error_msg', \
                     value->>'request_headers', COALESCE(value->>'request_body', ''), \
                     CAST(value->>'response_code' AS INTEGER), value->>'response_body', \
                     CAST(value->>'start_time' AS BIGINT), CAST(value->>'end_time' AS BIGINT), $2, \
                     CAST(value->>'manual' AS INTEGER) = 1, CAST(value->>'recover_job_id' AS BIGINT), \
                     CAST(value->>'body_from_event' AS INTEGER) = 1 \
                 FROM rows",
                materialized_rows::<B>()
            ))
            .bind(attempts)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        // The last attempt's error and status stay when an outcome made no attempt (a hand-back,
        // a cancellation).
        sqlx::query(&format!(
            "UPDATE deliveries SET status = j.status, attempts = j.attempts, \
                 next_attempt_at = j.next_attempt_at, cancel_reason = j.cancel_reason, \
                 last_error = CASE WHEN j.attempted = 1 THEN j.last_error ELSE deliveries.last_error END, \
                 last_response_code = CASE WHEN j.attempted = 1 THEN j.code \
                     ELSE deliveries.last_response_code END, \
                 lease_until = NULL, claim_token = NULL, updated_at = $2 \
             FROM (SELECT CAST(value->>'id' AS BIGINT) AS id, value->>'token' AS token, \
                     value->>'status' AS status, CAST(value->>'attempts' AS INTEGER) AS attempts, \
                     CAST(value->>'next_attempt_at' AS BIGINT) AS next_attempt_at, \
                     value->>'last_error' AS last_error, value->>'cancel_reason' AS cancel_reason, \
                     CAST(value->>'attempted' AS INTEGER) AS attempted, \
                     CAST(value->>'code' AS INTEGER) AS code \
                   FROM {}) AS j \
             WHERE deliveries.id = j.id AND deliveries.claim_token = j.token \
               AND deliveries.id {}",
            B::JSON_ROWS,
            B::ids_in("$3")
        ))
        .bind(state_rows(outcomes))
        .bind(now)
        .bind(leased_ids(outcomes))
        .execute(&mut *tx)
        .await?;
        if let Some(delivered) = manual_success_rows(outcomes) {
            // A delivered re-send settles its delivery, unless a worker holds it right now (its
            // own outcome follows): a recovery must not send it again.
            sqlx::query(&format!(
                "UPDATE deliveries SET status = 'SUCCESS', last_error = NULL, \
                     last_response_code = j.code, cancel_reason = NULL, updated_at = $2 \
                 FROM (SELECT CAST(value->>'id' AS BIGINT) AS id, \
                         CAST(value->>'code' AS INTEGER) AS code FROM {}) AS j \
                 WHERE deliveries.id = j.id AND deliveries.status <> 'SUCCESS' \
                   AND (deliveries.lease_until IS NULL OR deliveries.lease_until <= $2)",
                B::JSON_ROWS
            ))
            .bind(delivered)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(effects) = effect_rows(outcomes) {
            let sql = EffectStatements::new(B::JSON_ROWS);
            let rows = &effects.rows;
            // Each callback has one net effect, so these statements touch disjoint rows.
            let mut disabled: Vec<i64> = Vec::new();
            if effects.succeeded {
                sqlx::query(&sql.clear).bind(rows).execute(&mut *tx).await?;
            }
            if effects.failed {
                sqlx::query(&sql.start).bind(rows).execute(&mut *tx).await?;
                disabled.extend(
                    sqlx::query_scalar::<_, i64>(&sql.expire)
                        .bind(rows)
                        .bind(now)
                        .bind(disable.cutoff)
                        .bind(&disable.reason)
                        .fetch_all(&mut *tx)
                        .await?,
                );
            }
            if effects.gone {
                disabled.extend(
                    sqlx::query_scalar::<_, i64>(&sql.gone)
                        .bind(rows)
                        .bind(now)
                        .fetch_all(&mut *tx)
                        .await?,
                );
            }
            cancel_pending::<B>(&mut tx, &disabled, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn delivery_target(&self, callback: CallbackId) -> StoreResult<Option<DeliveryTarget>> {
        let row: Option<TargetRow> = sqlx::query_as(
            "SELECT project_id, url, secret_token, secret_headers FROM callbacks WHERE id = $1",
        )
        .bind(callback)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| row.into_target(&self.sealer)).transpose()
    }

    async fn watch_new_deliveries(&self, wake: Arc<Notify>) {
        self.backend.watch(&self.pool, wake).await
    }
}

/// The pending deliveries of one lane, each lane through its own partial index (migration 0010),
/// so a claim of retries does not walk past a backlog of first attempts, nor the reverse.
fn pending_in(lane: Lane) -> &'static str {
    match lane {
        Lane::First => "status = 'PENDING' AND attempts = 0",
        Lane::Retry => "status = 'PENDING' AND attempts > 0",
    }
}

/// The earliest `next_attempt_at` of a lane's unleased deliveries, as an ordered walk of its
/// index that stops at the first one: `MIN()` may be planned as a full aggregate while the
/// table's statistics are stale.
fn first_unleased(lane: Lane) -> String {
    format!(
        "SELECT next_attempt_at FROM deliveries WHERE {} AND lease_until IS NULL \
         ORDER BY next_attempt_at LIMIT 1",
        pending_in(lane)
    )
}

/// The enabled callbacks in the scopes of `scope_rows` (bound as `$1`): project-level and global
/// callbacks of the scopes' projects, then the pipeline-level callbacks of the scopes' pipelines
/// (each through its own partial unique index).
fn scope_callbacks_sql<B: Backend>() -> String {
    format!(
        "SELECT id, project_id, pipeline_id, event, url FROM callbacks \
         WHERE enabled AND pipeline_id IS NULL \
           AND project_id IN (SELECT value->>'p' FROM {rows}) \
         UNION ALL \
         SELECT c.id, c.project_id, c.pipeline_id, c.event, c.url FROM callbacks c \
         JOIN {rows} AS j ON c.project_id = j.value->>'p' AND c.pipeline_id = j.value->>'l' \
         WHERE c.enabled",
        rows = B::JSON_ROWS
    )
}
