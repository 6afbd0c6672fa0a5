//! SQLite, the embedded default: one file, created on first start.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::fault::Faults;
use super::sql::{Backend, SqlStore};
use crate::secrets::Sealer;

/// SQLite's part of the store: its readiness asks about the database file.
pub struct Sqlite {
    file: PathBuf,
}

const MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");

/// WAL lets readers run beside the single writer; `busy_timeout` makes writers queue instead of
/// failing with "database is locked". `faults` decides which pooled connections may be reused:
/// one opened while the file could not be written stays read-only. Leases use the same pool:
/// SQLite has no cheaper commit worth a second one.
pub async fn connect(
    url: &str,
    max_connections: u32,
    sealer: Sealer,
    faults: Arc<Faults>,
) -> Result<SqlStore<Sqlite>, sqlx::Error> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
        .pragma("cache_size", "-16384");
    let file = options.get_filename().to_owned();
    let pool = SqlitePoolOptions::new()
        .max_connections(max_connections.min(8))
        .acquire_timeout(Duration::from_secs(5))
        .before_acquire(move |_, meta| {
            let reuse = faults.may_reuse(meta.age);
            Box::pin(async move { Ok(reuse) })
        })
        .connect_with(options)
        .await?;
    Ok(SqlStore::new(Sqlite { file }, pool.clone(), pool, sealer))
}

/// The database file's absolute path (it is opened relative to the working directory), or the
/// URL as it is for an in-memory database or a URL that does not parse.
pub fn file_label(url: &str) -> String {
    let Ok(options) = SqliteConnectOptions::from_str(url) else {
        return url.to_owned();
    };
    let file = options.get_filename();
    // sqlx names in-memory databases `file:…`; they have no path.
    if file.to_string_lossy().starts_with("file:") {
        return url.to_owned();
    }
    std::path::absolute(file)
        .unwrap_or_else(|_| file.to_owned())
        .display()
        .to_string()
}

impl Backend for Sqlite {
    type Db = sqlx::Sqlite;

    const JSON_ROWS: &str = "json_each($1)";
    /// `json_each` turns an element back into text for every `value->>'x'` read from it.
    const READ_ROWS_ONCE: &str = "MATERIALIZED";
    fn ids_in(param: &str) -> String {
        format!("IN (SELECT value FROM json_each({param}))")
    }
    /// SQLite has one writer at a time, so a claim never races another claim.
    const SKIP_LOCKED: &str = "";
    /// Take the write lock up front: a transaction that reads first and writes later fails at
    /// once with SQLITE_BUSY when another writer committed in between, instead of waiting.
    const BEGIN: &str = "BEGIN IMMEDIATE";
    const ONE_WRITER: bool = true;
    /// Same-process workers are woken directly; other processes (the CLI) rely on the poll.
    const WAKE_SQL: Option<&str> = None;
    /// AUTOINCREMENT continues after the largest id ever stored.
    const SYNC_IDS: Option<&str> = None;

    async fn migrate(pool: &SqlitePool) -> Result<(), sqlx::Error> {
        Ok(MIGRATOR.run(pool).await?)
    }

    /// Ready when the database answers and its files may be written (a file made read-only or
    /// immutable, or a read-only mount, is not ready even for root). The files are asked with
    /// access(2), never opened: closing any descriptor of a database file drops every POSIX
    /// lock this process holds on it, SQLite's included, and lets other processes write over
    /// our transactions.
    async fn check_ready(&self, pool: &SqlitePool) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(pool).await?;
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || {
            for suffix in ["", "-wal", "-shm"] {
                let mut path = file.clone().into_os_string();
                path.push(suffix);
                match rustix::fs::access(&path, rustix::fs::Access::WRITE_OK) {
                    Err(rustix::io::Errno::NOENT) | Ok(()) => {}
                    Err(errno) => return Err(std::io::Error::from(errno)),
                }
            }
            Ok(())
        })
        .await
        .map_err(|_| sqlx::Error::WorkerCrashed)?
        .map_err(sqlx::Error::Io)
    }

    async fn watch(&self, _pool: &SqlitePool, _wake: Arc<Notify>) {}
}
