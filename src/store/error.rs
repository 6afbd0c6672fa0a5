//! The store's error: what went wrong, in the terms its callers act on (unavailable, the
//! request's fault, corrupt data, a bug), with the database's error as the source. Which
//! database failure means what is decided here, from SQLSTATE classes and SQLite result codes,
//! so no caller needs to know the backend.

use std::sync::Arc;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The connection cannot be used any more (transport lost, session ended by the server, a
    /// read-only server after a failover): it is dropped, and idempotent work is tried once more
    /// on a fresh connection. Unavailable if that fails too.
    #[error("the database connection failed: {0}")]
    Connection(#[source] Arc<sqlx::Error>),
    /// The transaction lost to a concurrent one (serialization failure, deadlock): idempotent
    /// work is tried once more. Unavailable if that fails too.
    #[error("the transaction lost to a concurrent one: {0}")]
    Contention(#[source] Arc<sqlx::Error>),
    /// The database cannot serve now and an immediate retry will not help: it refuses
    /// connections, is starting or shutting down, is out of connections, disk or memory, or is
    /// busy beyond the busy timeout (SQLite).
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] Arc<sqlx::Error>),
    /// A value of the request cannot be stored (data exception, too big).
    #[error("the database cannot store a value: {0}")]
    BadValue(#[source] Arc<sqlx::Error>),
    /// The request conflicts with stored data (a constraint).
    #[error("the write conflicts with stored data: {0}")]
    Constraint(#[source] Arc<sqlx::Error>),
    /// A stored value no longer parses, or a sealed token does not open.
    #[error("a stored {column} is corrupt: {source}")]
    CorruptRow {
        column: &'static str,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The store broke one of its own rules (a bug).
    #[error("the store broke its own rule: {0}")]
    Invariant(String),
    /// The registration writer's task has ended (the service is stopping).
    #[error("the registration writer has stopped")]
    WriterStopped,
    /// Any other database failure: a bug (bad SQL, a missing table).
    #[error("database error: {0}")]
    Database(#[source] Arc<sqlx::Error>),
}

impl StoreError {
    /// The database, not the request, is at fault, and it may pass (answered 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Connection(_) | Self::Contention(_) | Self::Unavailable(_) | Self::WriterStopped
        )
    }

    /// Worth one more try of idempotent work.
    pub(super) fn is_retryable(&self) -> bool {
        matches!(self, Self::Connection(_) | Self::Contention(_))
    }

    /// The database's own words for a refused value or write (they name the problem, not a
    /// secret); the whole error otherwise.
    pub fn reason(&self) -> String {
        match self {
            Self::BadValue(error) | Self::Constraint(error) => match error.as_ref() {
                sqlx::Error::Database(db) => db.message().to_owned(),
                other => other.to_string(),
            },
            other => other.to_string(),
        }
    }

    pub(super) fn corrupt(
        column: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::CorruptRow {
            column,
            source: Arc::new(source),
        }
    }
}

/// Background work logs only failures that are not the database being away: those are logged
/// by `Faults`, once when the fault starts and once when it ends, not once per attempt.
pub fn warn_unless_unavailable(error: &StoreError, what: &str) {
    if !error.is_unavailable() {
        tracing::warn!(%error, "{what}");
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> Self {
        let make = match Fault::of(&error) {
            Fault::Connection => Self::Connection,
            Fault::Contention => Self::Contention,
            Fault::Unavailable => Self::Unavailable,
            Fault::BadValue => Self::BadValue,
            Fault::Constraint => Self::Constraint,
            Fault::Bug => Self::Database,
        };
        make(Arc::new(error))
    }
}

/// What a database failure means; the variants of `StoreError` that wrap one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Connection,
    Contention,
    Unavailable,
    BadValue,
    Constraint,
    Bug,
}

impl Fault {
    fn of(error: &sqlx::Error) -> Self {
        match error {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => Self::Connection,
            // The pool waited its acquire timeout for a connection (sqlx already retried
            // refused connections and start-up meanwhile), or is shutting down.
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => Self::Unavailable,
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    code.parse().map_or(Self::Bug, Self::of_sqlite)
                } else {
                    Self::of_sqlstate(&code)
                }
            }
            _ => Self::Bug,
        }
    }

    /// PostgreSQL, by SQLSTATE class first (appendix A of its manual).
    fn of_sqlstate(code: &str) -> Self {
        match code {
            // The session was ended under us (admin or crash shutdown, idle timeouts), or it
            // sits on a server that became read-only: a fresh connection may land well.
            "57P01" | "57P02" | "57P05" | "25P03" | "25006" => Self::Connection,
            "3D000" => Self::Unavailable,
            _ => match code.get(..2).unwrap_or_default() {
                "08" => Self::Connection,
                "40" => Self::Contention,
                // Operator intervention (start-up, database dropped, cancelled), insufficient
                // resources (connections, disk, memory), object not in prerequisite state
                // (refusing connections, lock not available), system errors, authorization
                // (credentials changed under a running service).
                "57" | "53" | "55" | "58" | "28" => Self::Unavailable,
                "22" => Self::BadValue,
                "23" => Self::Constraint,
                _ => Self::Bug,
            },
        }
    }

    /// SQLite, by the primary result code (the low byte of the extended one).
    fn of_sqlite(code: i32) -> Self {
        match code & 0xff {
            // I/O error (e.g. the file made read-only under us), protocol (WAL locks), and
            // read-only: a connection opened while the file could not be written stays
            // read-only after it can, so it is replaced.
            8 | 10 | 15 => Self::Connection,
            // Busy and locked (after busy_timeout waited), out of memory, disk full, cannot
            // open.
            5 | 6 | 7 | 13 | 14 => Self::Unavailable,
            18 | 20 | 25 => Self::BadValue,
            19 => Self::Constraint,
            _ => Self::Bug,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_failures_are_classified_by_sqlstate_class() {
        let table = [
            ("08006", Fault::Connection),
            ("08P01", Fault::Connection),
            ("57P01", Fault::Connection),
            ("57P02", Fault::Connection),
            ("25006", Fault::Connection),
            ("25P03", Fault::Connection),
            ("40001", Fault::Contention),
            ("40P01", Fault::Contention),
            ("57P03", Fault::Unavailable),
            ("57P04", Fault::Unavailable),
            ("57014", Fault::Unavailable),
            ("53100", Fault::Unavailable),
            ("53200", Fault::Unavailable),
            ("53300", Fault::Unavailable),
            ("55000", Fault::Unavailable),
            ("55P03", Fault::Unavailable),
            ("58030", Fault::Unavailable),
            ("3D000", Fault::Unavailable),
            ("28P01", Fault::Unavailable),
            ("22021", Fault::BadValue),
            ("22001", Fault::BadValue),
            ("23505", Fault::Constraint),
            ("23503", Fault::Constraint),
            ("42601", Fault::Bug),
            ("42P01", Fault::Bug),
            ("XX000", Fault::Bug),
            ("25001", Fault::Bug),
            ("", Fault::Bug),
        ];
        for (code, fault) in table {
            assert_eq!(Fault::of_sqlstate(code), fault, "{code}");
        }
    }

    #[test]
    fn sqlite_failures_are_classified_by_primary_result_code() {
        let table = [
            (5, Fault::Unavailable),   // SQLITE_BUSY
            (517, Fault::Unavailable), // SQLITE_BUSY_SNAPSHOT
            (6, Fault::Unavailable),   // SQLITE_LOCKED
            (7, Fault::Unavailable),   // SQLITE_NOMEM
            (8, Fault::Connection),    // SQLITE_READONLY
            (1032, Fault::Connection), // SQLITE_READONLY_DBMOVED
            (13, Fault::Unavailable),  // SQLITE_FULL
            (14, Fault::Unavailable),  // SQLITE_CANTOPEN
            (778, Fault::Connection),  // SQLITE_IOERR_WRITE
            (15, Fault::Connection),   // SQLITE_PROTOCOL
            (18, Fault::BadValue),     // SQLITE_TOOBIG
            (19, Fault::Constraint),   // SQLITE_CONSTRAINT
            (2067, Fault::Constraint), // SQLITE_CONSTRAINT_UNIQUE
            (1, Fault::Bug),           // SQLITE_ERROR (syntax, missing table)
            (11, Fault::Bug),          // SQLITE_CORRUPT
        ];
        for (code, fault) in table {
            assert_eq!(Fault::of_sqlite(code), fault, "{code}");
        }
    }

    #[test]
    fn errors_outside_the_database_are_classified_too() {
        let io = || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert_eq!(Fault::of(&sqlx::Error::Io(io())), Fault::Connection);
        assert_eq!(
            Fault::of(&sqlx::Error::Protocol("unexpected EOF".into())),
            Fault::Connection
        );
        assert_eq!(Fault::of(&sqlx::Error::WorkerCrashed), Fault::Connection);
        assert_eq!(Fault::of(&sqlx::Error::PoolTimedOut), Fault::Unavailable);
        assert_eq!(Fault::of(&sqlx::Error::PoolClosed), Fault::Unavailable);
        assert_eq!(Fault::of(&sqlx::Error::RowNotFound), Fault::Bug);
        assert_eq!(
            Fault::of(&sqlx::Error::ColumnNotFound("x".into())),
            Fault::Bug
        );
    }

    #[test]
    fn the_error_says_what_callers_do_with_it() {
        let unavailable = StoreError::from(sqlx::Error::PoolTimedOut);
        assert!(unavailable.is_unavailable() && !unavailable.is_retryable());
        let reset = StoreError::from(sqlx::Error::Io(std::io::Error::other("reset")));
        assert!(reset.is_unavailable() && reset.is_retryable());
        assert!(StoreError::WriterStopped.is_unavailable());
        let bug = StoreError::from(sqlx::Error::RowNotFound);
        assert!(!bug.is_unavailable() && !bug.is_retryable());
        assert!(std::error::Error::source(&bug).is_some(), "keeps its cause");
    }
}
