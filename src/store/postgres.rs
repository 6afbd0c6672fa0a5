//! PostgreSQL, the production store.

use std::convert::Infallible;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};

use super::fault::Faults;
use super::sql::{Backend, SqlStore};
use super::{StoreError, warn_unless_unavailable};
use crate::secrets::Sealer;

/// PostgreSQL's part of the store: it wakes other processes with LISTEN/NOTIFY.
pub struct Postgres {
    faults: Arc<Faults>,
}

/// The LISTEN/NOTIFY channel on which intake announces new deliveries.
const WAKE_CHANNEL: &str = "devops_callbacks_deliveries";

const MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// Connects without migrating. Sessions left "idle in transaction" (a cancelled request future,
/// launchbadge/sqlx#4393) are ended by the server after 30 s instead of holding locks. `faults`
/// decides which pooled connections may be reused. Leases get a pool of their own that commits
/// without waiting for the WAL flush: a lease lost in a server crash only lets the delivery be
/// claimed again (at-least-once holds); everything else, intake and outcomes included, commits
/// durably.
pub async fn connect(
    url: &str,
    max_connections: u32,
    sealer: Sealer,
    faults: Arc<Faults>,
) -> Result<SqlStore<Postgres>, sqlx::Error> {
    let options =
        PgConnectOptions::from_str(url)?.options([("idle_in_transaction_session_timeout", "30s")]);
    let pool_options = |max| {
        let faults = faults.clone();
        // No ping before each checkout (sqlx's default costs a round trip per query): a
        // dead connection fails its query instead, and then every connection opened before
        // that failure is dropped at its next checkout rather than reused.
        PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .before_acquire(move |_, meta| {
                let reuse = faults.may_reuse(meta.age);
                Box::pin(async move { Ok(reuse) })
            })
    };
    let pool = match pool_options(max_connections)
        .connect_with(options.clone())
        .await
    {
        Ok(pool) => pool,
        Err(sqlx::Error::PoolTimedOut) => return Err(why_unreachable(&options).await),
        Err(error) => return Err(error),
    };
    let leases = pool_options(2)
        .connect_with(options.options([("synchronous_commit", "off")]))
        .await?;
    Ok(SqlStore::new(Postgres { faults }, pool, leases, sealer))
}

/// The pool retries a refused connection until its acquire timeout and then says only that it
/// timed out; one plain connection says why (refused, no route, the server starting up).
async fn why_unreachable(options: &PgConnectOptions) -> sqlx::Error {
    use sqlx::Connection;
    match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(options)).await {
        Ok(Err(error)) => error,
        Ok(Ok(_)) => sqlx::Error::PoolTimedOut,
        Err(_) => sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer within 5 s",
        )),
    }
}

impl Backend for Postgres {
    type Db = sqlx::Postgres;

    const JSON_ROWS: &str = "jsonb_array_elements(CAST($1 AS jsonb))";
    /// jsonb elements are read in place; a materialized copy cost the events insert 2.5 µs per
    /// event (20.3 → 22.8, pg_stat_statements).
    const READ_ROWS_ONCE: &str = "";
    /// An array, not a join: a generic plan cannot know how many rows a join would bring and
    /// may scan the whole table; `= ANY(array)` is always an index scan.
    fn ids_in(param: &str) -> String {
        format!(
            "= ANY(ARRAY(SELECT CAST(value AS BIGINT) \
             FROM jsonb_array_elements_text(CAST({param} AS jsonb))))"
        )
    }
    const SKIP_LOCKED: &str = "FOR UPDATE SKIP LOCKED";
    const BEGIN: &str = "BEGIN";
    const ONE_WRITER: bool = false;
    /// Delivered to listeners when the intake transaction commits, not before.
    const WAKE_SQL: Option<&str> = Some("SELECT pg_notify('devops_callbacks_deliveries', '')");
    /// An identity column keeps counting from its own sequence.
    const SYNC_IDS: Option<&str> = Some(
        "SELECT setval(pg_get_serial_sequence('callbacks', 'id'), \
             GREATEST((SELECT MAX(id) FROM callbacks), 1))",
    );

    async fn migrate(pool: &PgPool) -> Result<(), sqlx::Error> {
        Ok(MIGRATOR.run(pool).await?)
    }

    /// Ready when the session can write: not on a standby, not read-only by default (as after
    /// a switchover that left it on a read-only server). Fails with SQLSTATE 25006 otherwise.
    async fn check_ready(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        sqlx::query(
            "DO $$BEGIN \
               IF pg_is_in_recovery() OR current_setting('transaction_read_only')::boolean THEN \
                 RAISE EXCEPTION USING ERRCODE = 'read_only_sql_transaction', \
                   MESSAGE = 'the database is read-only'; \
               END IF; \
             END$$",
        )
        .execute(pool)
        .await?;
        Ok(())
    }

    /// LISTENs on the wake channel, reconnecting after failures, for as long as the process
    /// runs. An outage is logged once by `faults`; the poll covers the wake-ups missed meanwhile.
    async fn watch(&self, pool: &PgPool, wake: Arc<Notify>) {
        loop {
            let Err(error) = listen(pool, &wake, &self.faults).await;
            warn_unless_unavailable(&error, "LISTEN for new deliveries failed; retrying in 1 s");
            self.faults.observe::<()>(&Err(error));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

async fn listen(pool: &PgPool, wake: &Notify, faults: &Faults) -> Result<Infallible, StoreError> {
    let mut listener = PgListener::connect_with(pool).await?;
    let listening = listener
        .listen(WAKE_CHANNEL)
        .await
        .map_err(StoreError::from);
    faults.observe(&listening);
    listening?;
    loop {
        listener.recv().await?;
        wake.notify_one();
    }
}
