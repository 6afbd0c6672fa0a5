//! The store, written once for both databases. PostgreSQL and SQLite accept the same SQL here
//! (`$n` parameters, `ON CONFLICT … DO UPDATE`, `RETURNING`, epoch-millisecond integers), so
//! `SqlStore<B>` holds all of it, grouped by aggregate in this folder, and a `Backend` supplies
//! only what differs: a few SQL fragments, migrations, readiness and cross-process wake-ups.
//!
//! Every `impl` of a store trait in this folder carries the same `where` clause: the sqlx
//! capabilities the queries use (executors, and the column types bound and read). Rust does not
//! carry such bounds from a trait to its users, so each impl states them.

mod callbacks;
mod console;
mod history;
mod import;
mod intake;
mod maintenance;
mod members;
mod outcomes;
mod pipelines;
mod queue;
mod recovery;
mod rows;

use std::future::Future;
use std::sync::Arc;

use sqlx::{Database, Encode, Executor, IntoArguments, Pool, Type};
use tokio::sync::Notify;

use crate::domain::{CANCELLED_DISABLED, CallbackId, EpochMillis};
use crate::secrets::Sealer;

/// What one database does its own way.
pub trait Backend: Send + Sync + 'static {
    type Db: Database<QueryResult: RowsAffected>;

    /// A table function over the JSON array bound as `$1`, one row per element in a column
    /// `value`: bulk statements bind one JSON array instead of N parameters.
    const JSON_ROWS: &'static str;
    /// How `materialized_rows` has its rows read: `MATERIALIZED` where reading a field of an
    /// element costs a parse of the element, else empty.
    const READ_ROWS_ONCE: &'static str;
    /// `<column> {ids_in(param)}`: the column's value is one of the JSON array of integers bound
    /// as `param`, written so that the plan looks each id up in the column's index whatever the
    /// array holds.
    fn ids_in(param: &str) -> String;
    /// The row-locking clause that lets concurrent claimers pass each other.
    const SKIP_LOCKED: &'static str;
    /// How a write transaction starts.
    const BEGIN: &'static str;
    /// Whether the database takes one writer at a time. Then writers queue in the process (see
    /// `SqlStore::begin_write`) rather than in the database, whose busy handler sleeps.
    const ONE_WRITER: bool;
    /// A statement run in the intake transaction to wake other processes, if the database can.
    const WAKE_SQL: Option<&'static str>;
    /// A statement that moves id generation past the largest `callbacks.id`, where the
    /// database does not do so by itself when ids are written explicitly.
    const SYNC_IDS: Option<&'static str>;

    /// Applies this backend's embedded migrations.
    fn migrate(pool: &Pool<Self::Db>) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Whether the database takes writes now (see `Maintenance::ready`).
    fn check_ready(
        &self,
        pool: &Pool<Self::Db>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Wakes `wake` whenever another process commits new deliveries, for as long as the
    /// process runs; returns at once when the database cannot tell.
    fn watch(&self, pool: &Pool<Self::Db>, wake: Arc<Notify>) -> impl Future<Output = ()> + Send;
}

/// How many rows a statement changed (each driver has its own result type).
pub trait RowsAffected {
    fn rows_affected(&self) -> u64;
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        self.rows_affected()
    }
}

pub struct SqlStore<B: Backend> {
    pool: Pool<B::Db>,
    /// The pool claims commit through (see the backend's `connect`).
    leases: Pool<B::Db>,
    /// Seals callback tokens on every write and opens them on every read for delivery.
    sealer: Sealer,
    backend: B,
    /// Held by the writer of a `Backend::ONE_WRITER` database.
    writer: Option<tokio::sync::Mutex<()>>,
}

/// The turn of a writer of a `Backend::ONE_WRITER` database; nothing elsewhere.
type WriterTurn<'a> = Option<tokio::sync::MutexGuard<'a, ()>>;

impl<B: Backend> SqlStore<B> {
    pub fn new(backend: B, pool: Pool<B::Db>, leases: Pool<B::Db>, sealer: Sealer) -> Self {
        Self {
            pool,
            leases,
            sealer,
            backend,
            writer: B::ONE_WRITER.then(|| tokio::sync::Mutex::new(())),
        }
    }

    /// Waits for the writer's turn where the database has one writer at a time. SQLite makes a
    /// writer that finds the lock taken sleep and retry, in steps of milliseconds (measured on
    /// the bus bench: 3,203 such sleeps of 2.75 ms on average in 20,000 messages); queued here,
    /// the next writer starts the moment the last one commits.
    async fn writer_turn(&self) -> WriterTurn<'_> {
        match &self.writer {
            Some(writer) => Some(writer.lock().await),
            None => None,
        }
    }

    /// Begins a write transaction in the writer's turn; keep the turn until the transaction
    /// ends.
    async fn begin_write(
        &self,
    ) -> Result<(WriterTurn<'_>, sqlx::Transaction<'static, B::Db>), sqlx::Error> {
        let turn = self.writer_turn().await;
        let tx = self.pool.begin_with(B::BEGIN).await?;
        Ok((turn, tx))
    }
}

/// Rows for `Backend::JSON_ROWS`, as the one JSON array bound to a bulk statement.
fn json_rows(rows: impl IntoIterator<Item = serde_json::Value>) -> String {
    serde_json::Value::from_iter(rows).to_string()
}

/// `WITH rows AS … (…)`: the elements of `Backend::JSON_ROWS`, for a statement that reads many
/// fields of large elements (`FROM rows`), each element read once where the backend needs that
/// (`Backend::READ_ROWS_ONCE`).
fn materialized_rows<B: Backend>() -> String {
    format!(
        "WITH rows AS {} (SELECT value FROM {})",
        B::READ_ROWS_ONCE,
        B::JSON_ROWS
    )
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

/// Cancels the pending deliveries of `callbacks` (just disabled) that no worker holds now, each
/// with its callback's disabled reason: they stop visibly, and a recovery can bring them back.
/// Those a worker holds are cancelled when they are claimed next, if they are still pending.
async fn cancel_pending<B: Backend>(
    connection: &mut <B::Db as Database>::Connection,
    callbacks: &[CallbackId],
    now: EpochMillis,
) -> Result<(), sqlx::Error>
where
    for<'c> &'c mut <B::Db as Database>::Connection: Executor<'c, Database = B::Db>,
    for<'q> <B::Db as Database>::Arguments<'q>: IntoArguments<'q, B::Db>,
    for<'q> i64: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> String: Encode<'q, B::Db> + Type<B::Db>,
    for<'q> &'q str: Encode<'q, B::Db> + Type<B::Db>,
{
    if callbacks.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "UPDATE deliveries SET status = 'CANCELLED', next_attempt_at = $2, updated_at = $2, \
             cancel_reason = COALESCE((SELECT c.disabled_reason FROM callbacks c \
                 WHERE c.id = deliveries.callback_id), $3) \
         WHERE status = 'PENDING' AND (lease_until IS NULL OR lease_until <= $2) \
           AND callback_id IN (SELECT CAST(value->>'i' AS BIGINT) FROM {})",
        B::JSON_ROWS
    ))
    .bind(json_rows(
        callbacks.iter().map(|id| serde_json::json!({ "i": id })),
    ))
    .bind(now)
    .bind(CANCELLED_DISABLED)
    .execute(connection)
    .await?;
    Ok(())
}
