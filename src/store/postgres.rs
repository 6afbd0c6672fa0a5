//! PostgreSQL, the production store.

use std::convert::Infallible;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};

use super::shared::impl_store;
use crate::secrets::Sealer;

pub struct PgStore {
    pool: PgPool,
    /// For leases only: they commit without waiting for the WAL flush. A lease lost in a server
    /// crash only lets the delivery be claimed again (at-least-once holds); everything else,
    /// intake and outcomes included, commits durably through `pool`.
    leases: PgPool,
    sealer: Sealer,
}

/// The LISTEN/NOTIFY channel on which intake announces new deliveries.
const WAKE_CHANNEL: &str = "devops_callbacks_deliveries";

impl PgStore {
    const MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");
    const JSON_ROWS: &str = "jsonb_array_elements(CAST($1 AS jsonb))";
    const SKIP_LOCKED: &str = "FOR UPDATE SKIP LOCKED";
    const BEGIN: &str = "BEGIN";
    /// Delivered to listeners when the intake transaction commits, not before.
    const WAKE_SQL: Option<&str> = Some("SELECT pg_notify('devops_callbacks_deliveries', '')");

    /// Connects without migrating. Sessions left "idle in transaction" (a cancelled request
    /// future, launchbadge/sqlx#4393) are ended by the server after 30 s instead of holding locks.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        sealer: Sealer,
    ) -> Result<Self, sqlx::Error> {
        let options = PgConnectOptions::from_str(url)?
            .options([("idle_in_transaction_session_timeout", "30s")]);
        // No ping before each checkout (sqlx's default costs a round trip per query): a dead
        // connection fails its query instead, is dropped, and the error is a 503.
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await?;
        let leases = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .connect_with(options.options([("synchronous_commit", "off")]))
            .await?;
        Ok(Self {
            pool,
            leases,
            sealer,
        })
    }

    /// LISTENs on the wake channel, reconnecting after failures, for as long as the process runs.
    async fn watch(&self, wake: Arc<Notify>) {
        loop {
            let Err(error) = self.listen(&wake).await;
            tracing::warn!(%error, "LISTEN for new deliveries failed; retrying in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn listen(&self, wake: &Notify) -> Result<Infallible, sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(WAKE_CHANNEL).await?;
        loop {
            listener.recv().await?;
            wake.notify_one();
        }
    }
}

impl_store!(PgStore);
