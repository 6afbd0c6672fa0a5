//! The queries both backends share. PostgreSQL and SQLite accept the same SQL here (`$n`
//! parameters, `ON CONFLICT … DO UPDATE`, `RETURNING`, epoch-millisecond integers), so the
//! `Store` implementation is written once and instantiated per backend by `impl_store!`.
//!
//! Each backend supplies `self.pool`, `self.leases` (the pool claims commit through),
//! `self.sealer` (which seals callback tokens on every write
//! and opens them on every read for delivery), `Self::MIGRATOR`, `self.watch(wake)`,
//! `self.check_ready()` (the readiness check, see `Store::ready`) and these
//! fragments:
//! - `Self::JSON_ROWS`: a table function over the JSON array bound as `$1`, one row per element
//!   in a column `value` (bulk statements bind one JSON array instead of N parameters);
//! - `Self::SKIP_LOCKED`: the row-locking clause that lets concurrent claimers pass each other;
//! - `Self::WAKE_SQL`: a statement run in the intake transaction to wake other processes;
//! - `Self::BEGIN`: how a write transaction starts.

macro_rules! impl_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn migrate(&self) -> $crate::store::StoreResult<()> {
                Self::MIGRATOR.run(&self.pool).await?;
                Ok(())
            }

            async fn ready(&self) -> $crate::store::StoreResult<()> {
                self.check_ready().await
            }

            async fn upsert_callbacks(
                &self,
                callbacks: &[$crate::domain::NewCallback],
            ) -> $crate::store::StoreResult<()> {
                let now = $crate::domain::now_millis();
                let rows: Vec<serde_json::Value> = callbacks
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "p": c.project_id.as_str(),
                            "u": c.url,
                            "e": c.event.as_str(),
                            "r": c.region.as_str(),
                            "t": c.secret_token.as_ref().map(|token| {
                                self.sealer.seal_token(token.expose(), c.project_id.as_str(), &c.url)
                            }),
                            "w": c.user.as_str(),
                        })
                    })
                    .collect();
                sqlx::query(&format!(
                    "INSERT INTO callbacks (project_id, url, event, region, secret_token, enabled, \
                         creator, updater, created_at, updated_at) \
                     SELECT value->>'p', value->>'u', value->>'e', value->>'r', value->>'t', TRUE, \
                         value->>'w', value->>'w', $2, $2 \
                     FROM {} WHERE TRUE \
                     ON CONFLICT (project_id, url, event) DO UPDATE SET \
                         region = excluded.region, secret_token = excluded.secret_token, \
                         enabled = TRUE, failure_time = NULL, disabled_reason = NULL, \
                         updater = excluded.updater, updated_at = excluded.updated_at",
                    Self::JSON_ROWS
                ))
                .bind(serde_json::Value::from(rows).to_string())
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_callbacks(
                &self,
                project: &$crate::domain::ProjectId,
                page: $crate::domain::PageRequest,
            ) -> $crate::store::StoreResult<(u64, Vec<$crate::domain::Callback>)> {
                let count: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM callbacks WHERE project_id = $1")
                        .bind(project.as_str())
                        .fetch_one(&self.pool)
                        .await?;
                let rows: Vec<$crate::store::rows::CallbackRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM callbacks WHERE project_id = $1 \
                     ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3",
                    $crate::store::rows::CALLBACK_COLUMNS
                ))
                .bind(project.as_str())
                .bind(page.limit())
                .bind(page.offset())
                .fetch_all(&self.pool)
                .await?;
                let records = rows
                    .into_iter()
                    .map(TryInto::try_into)
                    .collect::<Result<_, _>>()?;
                Ok((count.unsigned_abs(), records))
            }

            async fn delete_callback(
                &self,
                project: &$crate::domain::ProjectId,
                id: $crate::domain::CallbackId,
            ) -> $crate::store::StoreResult<bool> {
                let done = sqlx::query("DELETE FROM callbacks WHERE project_id = $1 AND id = $2")
                    .bind(project.as_str())
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn member_role(
                &self,
                project: &$crate::domain::ProjectId,
                user: &$crate::domain::UserId,
            ) -> $crate::store::StoreResult<Option<$crate::domain::MemberRole>> {
                let role: Option<String> = sqlx::query_scalar(
                    "SELECT role FROM project_members WHERE project_id = $1 AND user_id = $2",
                )
                .bind(project.as_str())
                .bind(user.as_str())
                .fetch_optional(&self.pool)
                .await?;
                role.map(|role| $crate::store::rows::decode("role", &role)).transpose()
            }

            async fn set_member(
                &self,
                project: &$crate::domain::ProjectId,
                user: &$crate::domain::UserId,
                role: $crate::domain::MemberRole,
            ) -> $crate::store::StoreResult<()> {
                let now = $crate::domain::now_millis();
                sqlx::query(
                    "INSERT INTO project_members (project_id, user_id, role, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $4) \
                     ON CONFLICT (project_id, user_id) DO UPDATE SET \
                         role = excluded.role, updated_at = excluded.updated_at",
                )
                .bind(project.as_str())
                .bind(user.as_str())
                .bind(role.as_str())
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn remove_member(
                &self,
                project: &$crate::domain::ProjectId,
                user: &$crate::domain::UserId,
            ) -> $crate::store::StoreResult<bool> {
                let done =
                    sqlx::query("DELETE FROM project_members WHERE project_id = $1 AND user_id = $2")
                        .bind(project.as_str())
                        .bind(user.as_str())
                        .execute(&self.pool)
                        .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn list_members(
                &self,
                project: &$crate::domain::ProjectId,
            ) -> $crate::store::StoreResult<Vec<$crate::domain::Member>> {
                let rows: Vec<$crate::store::rows::MemberRow> = sqlx::query_as(
                    "SELECT project_id, user_id, role, created_at, updated_at \
                     FROM project_members WHERE project_id = $1 ORDER BY user_id",
                )
                .bind(project.as_str())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn publish(
                &self,
                events: &[$crate::domain::NewEvent],
            ) -> $crate::store::StoreResult<Vec<$crate::domain::Published>> {
                $crate::store::shared::publish!(self, events)
            }

            async fn claim_due(
                &self,
                claim: &$crate::store::Claim<'_>,
            ) -> $crate::store::StoreResult<Vec<$crate::domain::ClaimedDelivery>> {
                let token = uuid::Uuid::new_v4().simple().to_string();
                let busy = serde_json::Value::from(
                    claim.busy_hosts.iter().map(|h| serde_json::json!({ "h": h })).collect::<Vec<_>>(),
                )
                .to_string();
                let claimed = sqlx::query(&format!(
                    "WITH due AS (SELECT id FROM deliveries \
                         WHERE status = 'PENDING' AND next_attempt_at <= $2 \
                           AND (lease_until IS NULL OR lease_until <= $2) \
                           AND (attempts = 0) = $6 \
                           AND host NOT IN (SELECT value->>'h' FROM {}) \
                         ORDER BY next_attempt_at LIMIT $3 {}) \
                     UPDATE deliveries SET lease_until = $4, claim_token = $5 \
                     WHERE id IN (SELECT id FROM due)",
                    Self::JSON_ROWS,
                    Self::SKIP_LOCKED
                ))
                .bind(busy)
                .bind(claim.now)
                .bind(i64::from(claim.limit))
                .bind(claim.lease_until)
                .bind(&token)
                .bind(claim.lane == $crate::domain::Lane::First)
                .execute(&self.leases)
                .await?;
                if claimed.rows_affected() == 0 {
                    return Ok(Vec::new());
                }
                let rows: Vec<$crate::store::rows::ClaimRow> = sqlx::query_as(
                    "SELECT d.id, d.host, d.attempts, d.callback_id, e.event, e.body, \
                         cb.project_id AS callback_project, cb.url, cb.secret_token, cb.enabled \
                     FROM deliveries d JOIN events e ON e.id = d.event_pk \
                     LEFT JOIN callbacks cb ON cb.id = d.callback_id \
                     WHERE d.claim_token = $1 ORDER BY d.next_attempt_at, d.id",
                )
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
                now: $crate::domain::EpochMillis,
                until: $crate::domain::EpochMillis,
            ) -> $crate::store::StoreResult<u64> {
                let moved = sqlx::query(
                    "UPDATE deliveries SET next_attempt_at = $3 \
                     WHERE status = 'PENDING' AND host = $1 AND next_attempt_at <= $2 \
                       AND (lease_until IS NULL OR lease_until <= $2)",
                )
                .bind(host)
                .bind(now)
                .bind(until)
                .execute(&self.leases)
                .await?;
                Ok(moved.rows_affected())
            }

            async fn next_due_at(
                &self,
            ) -> $crate::store::StoreResult<Option<$crate::domain::EpochMillis>> {
                sqlx::query_scalar(
                    "SELECT MIN(next_attempt_at) FROM deliveries \
                     WHERE status = 'PENDING' AND lease_until IS NULL",
                )
                .fetch_one(&self.pool)
                .await
            }

            async fn record_outcomes(
                &self,
                outcomes: &[$crate::domain::DeliveryOutcome],
                disable: &$crate::store::DisableRule,
            ) -> $crate::store::StoreResult<()> {
                if outcomes.is_empty() {
                    return Ok(());
                }
                let now = $crate::domain::now_millis();
                let attempts = $crate::store::shared::attempt_rows(outcomes);
                let states = $crate::store::shared::state_rows(outcomes);
                let effects = $crate::store::shared::effect_rows(outcomes);
                let mut tx = self.pool.begin_with(Self::BEGIN).await?;
                if attempts != "[]" {
                    sqlx::query(&format!(
                        "INSERT INTO callback_history (delivery_id, callback_id, project_id, url, \
                             event, status, attempt, error_msg, request_headers, request_body, \
                             response_code, response_body, start_time, end_time, created_at) \
                         SELECT CAST(value->>'delivery_id' AS BIGINT), CAST(value->>'callback_id' AS BIGINT), \
                             value->>'project_id', value->>'url', value->>'event', value->>'status', \
                             CAST(value->>'attempt' AS INTEGER), value->>'error_msg', \
                             value->>'request_headers', value->>'request_body', \
                             CAST(value->>'response_code' AS INTEGER), value->>'response_body', \
                             CAST(value->>'start_time' AS BIGINT), CAST(value->>'end_time' AS BIGINT), $2 \
                         FROM {}",
                        Self::JSON_ROWS
                    ))
                    .bind(attempts)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
                sqlx::query(&format!(
                    "UPDATE deliveries SET status = j.status, attempts = j.attempts, \
                         next_attempt_at = j.next_attempt_at, last_error = j.last_error, \
                         lease_until = NULL, claim_token = NULL, updated_at = $2 \
                     FROM (SELECT CAST(value->>'id' AS BIGINT) AS id, value->>'token' AS token, \
                             value->>'status' AS status, CAST(value->>'attempts' AS INTEGER) AS attempts, \
                             CAST(value->>'next_attempt_at' AS BIGINT) AS next_attempt_at, \
                             value->>'last_error' AS last_error \
                           FROM {}) AS j \
                     WHERE deliveries.id = j.id AND deliveries.claim_token = j.token",
                    Self::JSON_ROWS
                ))
                .bind(states)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if effects != "[]" {
                    $crate::store::shared::apply_effects!(self, tx, effects, now, disable);
                }
                tx.commit().await
            }

            async fn set_callback_enabled(
                &self,
                project: &$crate::domain::ProjectId,
                id: $crate::domain::CallbackId,
                user: &$crate::domain::UserId,
                enabled: bool,
                reason: Option<&str>,
            ) -> $crate::store::StoreResult<bool> {
                // Enabling clears the failure state; disabling keeps it and records why.
                let done = sqlx::query(
                    "UPDATE callbacks SET enabled = $3, updater = $4, updated_at = $5, \
                         disabled_reason = $6, \
                         failure_time = CASE WHEN $3 THEN NULL ELSE failure_time END \
                     WHERE project_id = $1 AND id = $2",
                )
                .bind(project.as_str())
                .bind(id)
                .bind(enabled)
                .bind(user.as_str())
                .bind($crate::domain::now_millis())
                .bind(reason)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn find_history(
                &self,
                project: &$crate::domain::ProjectId,
                id: i64,
            ) -> $crate::store::StoreResult<Option<$crate::domain::HistoryEntry>> {
                let row: Option<$crate::store::rows::HistoryRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM callback_history WHERE project_id = $1 AND id = $2",
                    $crate::store::rows::HISTORY_COLUMNS
                ))
                .bind(project.as_str())
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn delivery_target(
                &self,
                callback: $crate::domain::CallbackId,
            ) -> $crate::store::StoreResult<Option<$crate::domain::DeliveryTarget>> {
                let row: Option<$crate::store::rows::TargetRow> = sqlx::query_as(
                    "SELECT project_id, url, secret_token FROM callbacks WHERE id = $1",
                )
                .bind(callback)
                .fetch_optional(&self.pool)
                .await?;
                row.map(|row| row.into_target(&self.sealer)).transpose()
            }

            async fn prune(
                &self,
                before: $crate::domain::EpochMillis,
                batch: u32,
            ) -> $crate::store::StoreResult<u64> {
                const STATEMENTS: [&str; 3] = [
                    "DELETE FROM callback_history WHERE id IN \
                         (SELECT id FROM callback_history WHERE created_at < $1 LIMIT $2)",
                    "DELETE FROM deliveries WHERE id IN \
                         (SELECT id FROM deliveries WHERE status <> 'PENDING' AND updated_at < $1 LIMIT $2)",
                    "DELETE FROM events WHERE id IN \
                         (SELECT id FROM events e WHERE created_at < $1 \
                            AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_pk = e.id) LIMIT $2)",
                ];
                let mut removed = 0;
                for statement in STATEMENTS {
                    removed += sqlx::query(statement)
                        .bind(before)
                        .bind(i64::from(batch))
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                }
                Ok(removed)
            }

            async fn list_history(
                &self,
                project: &$crate::domain::ProjectId,
                filter: &$crate::domain::HistoryFilter,
                page: $crate::domain::PageRequest,
            ) -> $crate::store::StoreResult<(u64, Vec<$crate::domain::HistoryEntry>)> {
                const WHERE: &str = "WHERE project_id = $1 AND created_at >= $2 AND created_at <= $3 \
                     AND (CAST($4 AS TEXT) IS NULL OR url = $4) \
                     AND (CAST($5 AS TEXT) IS NULL OR event = $5)";
                let event = filter.event.map(|e| e.as_str());
                let count: i64 = sqlx::query_scalar(&format!(
                    "SELECT COUNT(*) FROM callback_history {WHERE}"
                ))
                .bind(project.as_str())
                .bind(filter.from)
                .bind(filter.to)
                .bind(filter.url.as_deref())
                .bind(event)
                .fetch_one(&self.pool)
                .await?;
                let rows: Vec<$crate::store::rows::HistoryRow> = sqlx::query_as(&format!(
                    "SELECT {} FROM callback_history {WHERE} \
                     ORDER BY created_at DESC, id DESC LIMIT $6 OFFSET $7",
                    $crate::store::rows::HISTORY_COLUMNS
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
                    .collect::<Result<_, _>>()?;
                Ok((count.unsigned_abs(), records))
            }

            async fn secret_key_check(&self, fresh: &str) -> $crate::store::StoreResult<String> {
                // Of two processes starting at once, the first one's value stays.
                sqlx::query(
                    "INSERT INTO secret_key_check (id, check_value, created_at) \
                     VALUES (1, $1, $2) ON CONFLICT (id) DO NOTHING",
                )
                .bind(fresh)
                .bind($crate::domain::now_millis())
                .execute(&self.pool)
                .await?;
                sqlx::query_scalar("SELECT check_value FROM secret_key_check WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await
            }

            async fn count_secret_tokens(
                &self,
            ) -> $crate::store::StoreResult<$crate::store::SecretTokenCounts> {
                let (sealed, all): (i64, i64) = sqlx::query_as(
                    "SELECT CAST(COALESCE(SUM(CASE WHEN substr(secret_token, 1, $1) = $2 \
                         THEN 1 ELSE 0 END), 0) AS BIGINT), COUNT(secret_token) \
                     FROM callbacks",
                )
                .bind($crate::store::sealed_prefix_len())
                .bind($crate::secrets::SEALED_PREFIX)
                .fetch_one(&self.pool)
                .await?;
                Ok($crate::store::SecretTokenCounts {
                    sealed: sealed.unsigned_abs(),
                    plaintext: (all - sealed).unsigned_abs(),
                })
            }

            async fn seal_plaintext_secret_tokens(&self) -> $crate::store::StoreResult<u64> {
                if !self.sealer.has_key() {
                    return Ok(0);
                }
                let mut after = 0_i64;
                let mut sealed = 0;
                loop {
                    let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
                        "SELECT id, project_id, url, secret_token FROM callbacks \
                         WHERE id > $1 AND secret_token IS NOT NULL \
                           AND substr(secret_token, 1, $2) <> $3 \
                         ORDER BY id LIMIT 500",
                    )
                    .bind(after)
                    .bind($crate::store::sealed_prefix_len())
                    .bind($crate::secrets::SEALED_PREFIX)
                    .fetch_all(&self.pool)
                    .await?;
                    let Some(last) = rows.last() else {
                        return Ok(sealed);
                    };
                    after = last.0;
                    let updates: Vec<serde_json::Value> = rows
                        .iter()
                        .map(|(id, project, url, plain)| {
                            serde_json::json!({
                                "i": id,
                                "o": plain,
                                "n": self.sealer.seal_token(plain, project, url),
                            })
                        })
                        .collect();
                    // Only rows still holding the plaintext read: a concurrent re-create wins.
                    sealed += sqlx::query(&format!(
                        "UPDATE callbacks SET secret_token = j.sealed \
                         FROM (SELECT CAST(value->>'i' AS BIGINT) AS id, value->>'o' AS plain, \
                                 value->>'n' AS sealed FROM {}) AS j \
                         WHERE callbacks.id = j.id AND callbacks.secret_token = j.plain",
                        Self::JSON_ROWS
                    ))
                    .bind(serde_json::Value::from(updates).to_string())
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                }
            }

            async fn queue_stats(
                &self,
                now: $crate::domain::EpochMillis,
            ) -> $crate::store::StoreResult<$crate::store::QueueStats> {
                sqlx::query_as(
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
                .await
            }

            async fn watch_new_deliveries(&self, wake: std::sync::Arc<tokio::sync::Notify>) {
                self.watch(wake).await
            }
        }
    };
}

/// The intake transaction (see `Store::publish`), shared by both backends.
macro_rules! publish {
    ($self:ident, $events:ident) => {{
        use std::collections::HashMap;
        use $crate::domain::{ALL_PROJECTS, Published};

        let now = $crate::domain::now_millis();
        let mut tx = $self.pool.begin_with(Self::BEGIN).await?;

        // Enabled callbacks of the events' projects (and the global ones for PROJECT_* events).
        let mut projects: Vec<&str> = $events.iter().map(|e| e.project_id.as_str()).collect();
        if $events.iter().any(|e| e.event.is_project_event()) {
            projects.push(ALL_PROJECTS);
        }
        projects.sort_unstable();
        projects.dedup();
        let project_rows = serde_json::Value::from(
            projects.iter().map(|p| serde_json::json!({ "p": p })).collect::<Vec<_>>(),
        )
        .to_string();
        let callbacks: Vec<(i64, String, String, String)> = sqlx::query_as(&format!(
            "SELECT id, project_id, event, url FROM callbacks \
             WHERE enabled AND project_id IN (SELECT value->>'p' FROM {})",
            Self::JSON_ROWS
        ))
        .bind(project_rows)
        .fetch_all(&mut *tx)
        .await?;
        let mut by_target: HashMap<(&str, &str), Vec<(i64, String)>> = HashMap::new();
        for (id, project, event, url) in &callbacks {
            let host = url::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            by_target.entry((project.as_str(), event.as_str())).or_default().push((*id, host));
        }
        // Each event's (callback id, host) targets, computed once, in input order.
        let targets: Vec<Vec<(i64, String)>> = $events
            .iter()
            .map(|event| {
                let name = event.event.as_str();
                let mut ids = by_target.get(&(event.project_id.as_str(), name)).cloned().unwrap_or_default();
                if event.event.is_project_event() && event.project_id.as_str() != ALL_PROJECTS {
                    ids.extend(by_target.get(&(ALL_PROJECTS, name)).into_iter().flatten().cloned());
                }
                ids
            })
            .collect();
        // Where each (project, event id) first stands in the batch, to match RETURNING rows.
        let mut position: HashMap<(&str, &str), usize> = HashMap::new();
        for (index, event) in $events.iter().enumerate() {
            position.entry((event.project_id.as_str(), event.event_id.as_str())).or_insert(index);
        }

        let event_rows = serde_json::Value::from(
            $events
                .iter()
                .zip(&targets)
                .map(|(e, ids)| {
                    serde_json::json!({
                        "p": e.project_id.as_str(),
                        "i": e.event_id.as_str(),
                        "e": e.event.as_str(),
                        "b": e.body,
                        "n": ids.len(),
                    })
                })
                .collect::<Vec<_>>(),
        )
        .to_string();
        // `WHERE TRUE` keeps SQLite from reading ON CONFLICT as a join constraint.
        let inserted: Vec<(i64, String, String)> = sqlx::query_as(&format!(
            "INSERT INTO events (project_id, event_id, event, body, deliveries, created_at) \
             SELECT value->>'p', value->>'i', value->>'e', value->>'b', CAST(value->>'n' AS INTEGER), $2 \
             FROM {} WHERE TRUE \
             ON CONFLICT (project_id, event_id) DO NOTHING \
             RETURNING id, project_id, event_id",
            Self::JSON_ROWS
        ))
        .bind(event_rows)
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;

        let mut answers: HashMap<(String, String), u32> = HashMap::new();
        let mut delivery_rows = Vec::new();
        for (pk, project, event_id) in inserted {
            let index = position[&(project.as_str(), event_id.as_str())];
            let ids = &targets[index];
            answers.insert((project, event_id), u32::try_from(ids.len()).unwrap_or(u32::MAX));
            delivery_rows.extend(
                ids.iter().map(|(id, host)| serde_json::json!({ "v": pk, "c": id, "h": host })),
            );
        }
        if !delivery_rows.is_empty() {
            sqlx::query(&format!(
                "INSERT INTO deliveries (event_pk, callback_id, host, status, attempts, \
                     next_attempt_at, created_at, updated_at) \
                 SELECT CAST(value->>'v' AS BIGINT), CAST(value->>'c' AS BIGINT), value->>'h', \
                     'PENDING', 0, $2, $2, $2 \
                 FROM {}",
                Self::JSON_ROWS
            ))
            .bind(serde_json::Value::from(delivery_rows).to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            if let Some(wake) = Self::WAKE_SQL {
                sqlx::query(wake).execute(&mut *tx).await?;
            }
        }

        // Event ids seen before (or twice in this batch): answer what was answered then.
        let repeated: Vec<serde_json::Value> = $events
            .iter()
            .filter(|e| !answers.contains_key(&(e.project_id.as_str().to_owned(), e.event_id.as_str().to_owned())))
            .map(|e| serde_json::json!({ "p": e.project_id.as_str(), "i": e.event_id.as_str() }))
            .collect();
        if !repeated.is_empty() {
            let earlier: Vec<(String, String, i32)> = sqlx::query_as(&format!(
                "SELECT e.project_id, e.event_id, e.deliveries FROM events e \
                 JOIN {} AS j ON e.project_id = j.value->>'p' AND e.event_id = j.value->>'i'",
                Self::JSON_ROWS
            ))
            .bind(serde_json::Value::from(repeated).to_string())
            .fetch_all(&mut *tx)
            .await?;
            for (project, event_id, deliveries) in earlier {
                answers.insert((project, event_id), deliveries.unsigned_abs());
            }
        }
        tx.commit().await?;

        $events
            .iter()
            .map(|e| {
                let key = (e.project_id.as_str().to_owned(), e.event_id.as_str().to_owned());
                let deliveries = answers.get(&key).copied().ok_or_else(|| {
                    sqlx::Error::Protocol(format!("event {} vanished during intake", e.event_id.as_str()))
                })?;
                Ok(Published { event_id: e.event_id.clone(), deliveries })
            })
            .collect()
    }};
}

/// Text as both databases can hold it: PostgreSQL refuses NUL in text, so NUL (which a hostile
/// receiver can put in its answer) becomes U+FFFD on both backends alike.
fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}").into()
    } else {
        text.into()
    }
}

/// History rows of the outcomes that made an attempt, as one JSON array.
pub fn attempt_rows(outcomes: &[crate::domain::DeliveryOutcome]) -> String {
    let rows: Vec<serde_json::Value> = outcomes
        .iter()
        .filter_map(|o| o.attempt.as_ref())
        .map(|a| {
            serde_json::json!({
                "delivery_id": a.delivery_id,
                "callback_id": a.callback_id,
                "project_id": a.project_id.as_str(),
                "url": a.url,
                "event": a.event.as_str(),
                "status": a.status.as_str(),
                "attempt": a.attempt,
                "error_msg": a.error_msg.as_deref().map(storable),
                "request_headers": serde_json::to_string(&a.request_headers).expect("headers serialize"),
                "request_body": storable(&a.request_body),
                "response_code": a.response_code,
                "response_body": a.response_body.as_deref().map(storable),
                "start_time": a.start_time,
                "end_time": a.end_time,
            })
        })
        .collect();
    serde_json::Value::from(rows).to_string()
}

/// The new states of the deliveries whose lease the outcomes hold, as one JSON array.
pub fn state_rows(outcomes: &[crate::domain::DeliveryOutcome]) -> String {
    let rows: Vec<serde_json::Value> = outcomes
        .iter()
        .filter(|o| o.claim_token.is_some())
        .map(|o| {
            serde_json::json!({
                "id": o.delivery_id,
                "token": o.claim_token,
                "status": o.status.as_str(),
                "attempts": o.attempts,
                "next_attempt_at": o.next_attempt_at,
                "last_error": o.last_error.as_deref().map(storable),
            })
        })
        .collect();
    serde_json::Value::from(rows).to_string()
}

/// Each callback's net effect in this batch (its last attempt decides), as one JSON array of
/// `{"c": callback id, "k": "ok" | "fail" | "gone", "s": failing since}`.
pub fn effect_rows(outcomes: &[crate::domain::DeliveryOutcome]) -> String {
    use std::collections::HashMap;

    use crate::domain::CallbackEffect;

    let mut last: HashMap<i64, CallbackEffect> = HashMap::new();
    for outcome in outcomes {
        let (Some(attempt), Some(effect)) = (&outcome.attempt, outcome.effect) else {
            continue;
        };
        let merged = match (last.get(&attempt.callback_id), effect) {
            // The earliest failure of a run starts the clock.
            (Some(CallbackEffect::Failed { since: earlier }), CallbackEffect::Failed { since }) => {
                CallbackEffect::Failed {
                    since: since.min(*earlier),
                }
            }
            (Some(CallbackEffect::Gone), _) => CallbackEffect::Gone,
            (_, effect) => effect,
        };
        last.insert(attempt.callback_id, merged);
    }
    let rows: Vec<serde_json::Value> = last
        .into_iter()
        .map(|(callback, effect)| match effect {
            CallbackEffect::Succeeded => serde_json::json!({ "c": callback, "k": "ok", "s": 0 }),
            CallbackEffect::Failed { since } => {
                serde_json::json!({ "c": callback, "k": "fail", "s": since })
            }
            CallbackEffect::Gone => serde_json::json!({ "c": callback, "k": "gone", "s": 0 }),
        })
        .collect();
    serde_json::Value::from(rows).to_string()
}

/// Applies `effect_rows` to the callbacks inside the recording transaction: clear on success,
/// start the clock on failure, disable on 410 or on a clock older than the rule's cutoff.
macro_rules! apply_effects {
    ($self:ident, $tx:ident, $effects:ident, $now:ident, $disable:ident) => {{
        let effect_ids = |kind: &str| {
            format!(
                "SELECT CAST(value->>'c' AS BIGINT) FROM {} WHERE value->>'k' = '{kind}'",
                Self::JSON_ROWS
            )
        };
        sqlx::query(&format!(
            "UPDATE callbacks SET failure_time = NULL \
             WHERE failure_time IS NOT NULL AND id IN ({})",
            effect_ids("ok")
        ))
        .bind(&$effects)
        .execute(&mut *$tx)
        .await?;
        sqlx::query(&format!(
            "UPDATE callbacks SET failure_time = j.since \
             FROM (SELECT CAST(value->>'c' AS BIGINT) AS id, CAST(value->>'s' AS BIGINT) AS since \
                   FROM {} WHERE value->>'k' = 'fail') AS j \
             WHERE callbacks.id = j.id AND callbacks.failure_time IS NULL",
            Self::JSON_ROWS
        ))
        .bind(&$effects)
        .execute(&mut *$tx)
        .await?;
        sqlx::query(&format!(
            "UPDATE callbacks SET enabled = FALSE, updated_at = $2, \
                 failure_time = COALESCE(failure_time, $2), \
                 disabled_reason = 'the receiver answered 410 Gone' \
             WHERE enabled AND id IN ({})",
            effect_ids("gone")
        ))
        .bind(&$effects)
        .bind($now)
        .execute(&mut *$tx)
        .await?;
        sqlx::query(&format!(
            "UPDATE callbacks SET enabled = FALSE, updated_at = $2, disabled_reason = $4 \
             WHERE enabled AND failure_time IS NOT NULL AND failure_time <= $3 AND id IN ({})",
            effect_ids("fail")
        ))
        .bind(&$effects)
        .bind($now)
        .bind($disable.cutoff)
        .bind(&$disable.reason)
        .execute(&mut *$tx)
        .await?;
    }};
}

pub(crate) use {apply_effects, impl_store, publish};
