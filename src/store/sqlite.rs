//! SQLite, the embedded default: one file, created on first start.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::shared::impl_store;
use crate::secrets::Sealer;

pub struct SqliteStore {
    pool: SqlitePool,
    /// The same pool: SQLite has no cheaper commit worth a second one.
    leases: SqlitePool,
    sealer: Sealer,
}

impl SqliteStore {
    const MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
    const JSON_ROWS: &str = "json_each($1)";
    /// SQLite has one writer at a time, so a claim never races another claim.
    const SKIP_LOCKED: &str = "";
    /// Take the write lock up front: a transaction that reads first and writes later fails at
    /// once with SQLITE_BUSY when another writer committed in between, instead of waiting.
    const BEGIN: &str = "BEGIN IMMEDIATE";
    /// Same-process workers are woken directly; other processes (the CLI) rely on the poll.
    const WAKE_SQL: Option<&str> = None;

    /// WAL lets readers run beside the single writer; `busy_timeout` makes writers queue
    /// instead of failing with "database is locked".
    pub async fn connect(
        url: &str,
        max_connections: u32,
        sealer: Sealer,
    ) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(max_connections.min(8))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        Ok(Self {
            leases: pool.clone(),
            pool,
            sealer,
        })
    }

    async fn watch(&self, _wake: Arc<Notify>) {}
}

impl_store!(SqliteStore);
