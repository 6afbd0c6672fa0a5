//! The store's fault state, shared by its pools: it logs an outage once when it starts and once
//! when it ends, tries idempotent work once more after a connection fault or a lost race, and
//! keeps a connection that failed from being handed out again. What each failure means is
//! `StoreError`'s business (`error.rs`). See the README's "Database faults" section.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::error::{StoreError, StoreResult};

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
    pub async fn retried<T, F, Fut>(&self, work: F) -> StoreResult<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = StoreResult<T>>,
    {
        let first = work().await;
        let result = match first {
            Err(error) if error.is_retryable() => {
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
    pub async fn once<T>(&self, work: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        let result = work.await;
        self.observe(&result);
        result
    }

    /// Notes the outcome of a database call: logs the start and the end of an outage. An outage
    /// ends with a success `QUIET_MICROS` after the last unavailable failure, so one that leaves some
    /// calls working (reads on a read-only server) is not logged as many short ones.
    pub fn observe<T>(&self, result: &StoreResult<T>) {
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
        if error.is_unavailable() {
            self.last_failure.store(self.now(), Ordering::Relaxed);
            if !self.down.swap(true, Ordering::AcqRel) {
                self.down_since.store(self.now(), Ordering::Relaxed);
                tracing::warn!(%error, "the database is unavailable; answering 503 and retrying until it is back");
            }
        }
    }

    /// After a connection fault, no pooled connection opened before it is handed out again.
    fn retire_connections(&self, error: &StoreError) {
        if matches!(error, StoreError::Connection(_)) {
            self.last_connection_fault
                .store(self.now() + 1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail(error: sqlx::Error) -> StoreError {
        error.into()
    }

    #[test]
    fn connections_opened_before_a_connection_fault_are_not_reused() {
        let faults = Faults::default();
        assert!(faults.may_reuse(Duration::from_secs(3600)), "no fault yet");
        std::thread::sleep(Duration::from_millis(5));
        faults.observe::<()>(&Err(fail(sqlx::Error::Io(std::io::Error::other("gone")))));
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
        faults.observe::<()>(&Err(fail(sqlx::Error::PoolTimedOut)));
        assert!(faults.may_reuse(Duration::from_millis(1)));
    }

    #[test]
    fn an_outage_ends_only_after_quiet_successes() {
        let faults = Faults::default();
        let down = |f: &Faults| f.down.load(Ordering::SeqCst);
        faults.observe::<()>(&Ok(()));
        assert!(!down(&faults));
        faults.observe::<()>(&Err(fail(sqlx::Error::PoolTimedOut)));
        assert!(down(&faults));
        // A read that works during the outage does not end it.
        faults.observe::<()>(&Ok(()));
        assert!(down(&faults));
        std::thread::sleep(Duration::from_micros(QUIET_MICROS + 100_000));
        faults.observe::<()>(&Ok(()));
        assert!(!down(&faults));
        // A bug is not an outage.
        faults.observe::<()>(&Err(fail(sqlx::Error::RowNotFound)));
        assert!(!down(&faults));
    }

    #[tokio::test]
    async fn idempotent_work_is_tried_once_more_after_a_connection_fault_only() {
        let faults = Faults::default();
        let calls = std::sync::atomic::AtomicU32::new(0);
        let flaky = || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(fail(sqlx::Error::Io(std::io::Error::other("reset")))),
                _ => Ok(7),
            }
        };
        assert_eq!(faults.retried(flaky).await.unwrap(), 7);
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        let calls = std::sync::atomic::AtomicU32::new(0);
        let refused = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(fail(sqlx::Error::PoolTimedOut))
        };
        assert!(faults.retried(refused).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "no retry that cannot help");

        let calls = std::sync::atomic::AtomicU32::new(0);
        let always = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err::<(), _>(fail(sqlx::Error::Io(std::io::Error::other("reset"))))
        };
        assert!(faults.retried(always).await.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2, "once more, not forever");
    }
}
