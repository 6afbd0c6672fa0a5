//! The store's fault model, in one place: what each database failure means (unavailable, the
//! request's fault, a bug), whether one more try on a fresh connection may help, and the state
//! that keeps a connection that failed from being handed out again. See the README's "Database
//! faults" section.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What a database failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The connection cannot be used any more (transport lost, session ended by the server, a
    /// read-only server after a failover): it is dropped, and idempotent work is tried once more
    /// on a fresh connection. Unavailable if that fails too.
    Connection,
    /// The transaction lost to a concurrent one (serialization failure, deadlock): idempotent
    /// work is tried once more. Unavailable if that fails too.
    Conflict,
    /// The database cannot serve now and an immediate retry will not help: it refuses
    /// connections, is starting or shutting down, is out of connections, disk or memory, or is
    /// busy beyond the busy timeout (SQLite).
    Unavailable,
    /// A value of the request cannot be stored (data exception, too big).
    BadValue,
    /// The request conflicts with stored data (a constraint).
    Constraint,
    /// Anything else: a bug, answered 500.
    Bug,
}

impl Fault {
    pub fn of(error: &sqlx::Error) -> Self {
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
                "40" => Self::Conflict,
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

    /// Answered 503: the database, not the request, is at fault, and it may pass.
    pub fn is_unavailable(self) -> bool {
        matches!(self, Self::Connection | Self::Conflict | Self::Unavailable)
    }

    /// Worth one more try of idempotent work.
    fn retry(self) -> bool {
        matches!(self, Self::Connection | Self::Conflict)
    }
}

pub fn is_unavailable(error: &sqlx::Error) -> bool {
    Fault::of(error).is_unavailable()
}

/// Background work logs only failures that are not the database being away: those are logged
/// by `Faults`, once when the fault starts and once when it ends, not once per attempt.
pub fn warn_unless_unavailable(error: &sqlx::Error, what: &str) {
    if !is_unavailable(error) {
        tracing::warn!(%error, "{what}");
    }
}

/// The fault state of one store, shared by its pools.
pub struct Faults {
    origin: Instant,
    /// Microseconds after `origin` (plus one; 0: never) of the last connection fault: pooled
    /// connections opened before it are dropped at checkout instead of being reused.
    last_connection_fault: AtomicU64,
    /// Whether an outage is going on (from its first failure until it is quiet again).
    down: AtomicBool,
    /// Microseconds after `origin` when the current outage started.
    down_since: AtomicU64,
    /// Microseconds after `origin` of the last unavailable failure.
    last_failure: AtomicU64,
}

/// How long calls must succeed without an unavailable failure for an outage to be over.
const QUIET_MICROS: u64 = 2_000_000;

impl Default for Faults {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            last_connection_fault: AtomicU64::new(0),
            down: AtomicBool::new(false),
            down_since: AtomicU64::new(0),
            last_failure: AtomicU64::new(0),
        }
    }
}

impl Faults {
    /// Microseconds since `origin`.
    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Whether a pooled connection of this age may be handed out: not if it was opened before
    /// the last connection fault. An atomic load and a clock read, no round trip.
    pub fn may_reuse(&self, age: Duration) -> bool {
        match self.last_connection_fault.load(Ordering::Relaxed) {
            0 => true,
            at => age.as_micros() <= u128::from(self.now().saturating_sub(at - 1)),
        }
    }

    /// Runs idempotent work, once more after a connection fault or a conflict (a connection
    /// fault has by then retired every pooled connection, so the retry gets a fresh one).
    pub async fn retried<T, F, Fut>(&self, work: F) -> Result<T, sqlx::Error>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, sqlx::Error>>,
    {
        let first = work().await;
        let result = match first {
            Err(error) if Fault::of(&error).retry() => {
                // Not an outage yet (the retry may well succeed): only retire the connections.
                self.retire_connections(&error);
                work().await
            }
            other => other,
        };
        self.observe(&result);
        result
    }

    /// Runs work that must not be repeated (its answer or effect would differ the second time).
    pub async fn once<T>(
        &self,
        work: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        let result = work.await;
        self.observe(&result);
        result
    }

    /// Notes the outcome of a database call: logs the start and the end of an outage. An outage
    /// ends with a success `QUIET_MICROS` after the last unavailable failure, so one that leaves some
    /// calls working (reads on a read-only server) is not logged as many short ones.
    pub fn observe<T>(&self, result: &Result<T, sqlx::Error>) {
        let Err(error) = result else {
            if self.down.load(Ordering::Relaxed)
                && self
                    .now()
                    .saturating_sub(self.last_failure.load(Ordering::Relaxed))
                    >= QUIET_MICROS
                && self.down.swap(false, Ordering::AcqRel)
            {
                let lasted = self
                    .now()
                    .saturating_sub(self.down_since.load(Ordering::Relaxed));
                tracing::info!(
                    after_ms = lasted / 1000,
                    "the database is available again; serving normally"
                );
            }
            return;
        };
        self.retire_connections(error);
        if Fault::of(error).is_unavailable() {
            self.last_failure.store(self.now(), Ordering::Relaxed);
            if !self.down.swap(true, Ordering::AcqRel) {
                self.down_since.store(self.now(), Ordering::Relaxed);
                tracing::warn!(%error, "the database is unavailable; answering 503 and retrying until it is back");
            }
        }
    }

    /// After a connection fault, no pooled connection opened before it is handed out again.
    fn retire_connections(&self, error: &sqlx::Error) {
        if Fault::of(error) == Fault::Connection {
            self.last_connection_fault
                .store(self.now() + 1, Ordering::Relaxed);
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
            ("40001", Fault::Conflict),
            ("40P01", Fault::Conflict),
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
    fn connections_opened_before_a_connection_fault_are_not_reused() {
        let faults = Faults::default();
        assert!(faults.may_reuse(Duration::from_secs(3600)), "no fault yet");
        std::thread::sleep(Duration::from_millis(5));
        faults.observe::<()>(&Err(sqlx::Error::Io(std::io::Error::other("gone"))));
        assert!(
            !faults.may_reuse(Duration::from_millis(5)),
            "older than the fault"
        );
        std::thread::sleep(Duration::from_millis(20));
        assert!(
            faults.may_reuse(Duration::from_millis(1)),
            "opened after it"
        );
        // A conflict or an outage that is not the connection's retires nothing.
        faults.observe::<()>(&Err(sqlx::Error::PoolTimedOut));
        assert!(faults.may_reuse(Duration::from_millis(1)));
    }

    #[test]
    fn an_outage_ends_only_after_quiet_successes() {
        let faults = Faults::default();
        let down = |f: &Faults| f.down.load(Ordering::SeqCst);
        faults.observe::<()>(&Ok(()));
        assert!(!down(&faults));
        faults.observe::<()>(&Err(sqlx::Error::PoolTimedOut));
        assert!(down(&faults));
        // A read that works during the outage does not end it.
        faults.observe::<()>(&Ok(()));
        assert!(down(&faults));
        std::thread::sleep(Duration::from_micros(QUIET_MICROS + 100_000));
        faults.observe::<()>(&Ok(()));
        assert!(!down(&faults));
        // A bug is not an outage.
        faults.observe::<()>(&Err(sqlx::Error::RowNotFound));
        assert!(!down(&faults));
    }

    #[tokio::test]
    async fn idempotent_work_is_tried_once_more_after_a_connection_fault_only() {
        let faults = Faults::default();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let flaky = || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(sqlx::Error::Io(std::io::Error::other("reset"))),
                _ => Ok(7),
            }
        };
        assert_eq!(faults.retried(flaky).await.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        let calls = std::sync::atomic::AtomicU32::new(0);
        let refused = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(sqlx::Error::PoolTimedOut)
        };
        assert!(faults.retried(refused).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no retry that cannot help");

        let calls = std::sync::atomic::AtomicU32::new(0);
        let always = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(sqlx::Error::Io(std::io::Error::other("reset")))
        };
        assert!(faults.retried(always).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2, "once more, not forever");
    }
}
