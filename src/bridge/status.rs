//! Where the bridge stands, as the console shows it: per queue, whether it is consumed, the
//! last failure to attach, and its depth as last read from the broker.

use parking_lot::Mutex;

use super::topology::{self, EXCHANGES};

/// One of our queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueState {
    /// The bk-ci exchange it is bound to; `None` for the parked queue.
    pub exchange: Option<&'static str>,
    pub queue: String,
    /// A consumer is attached now (always false for the parked queue, which nothing consumes).
    pub consuming: bool,
    /// Why the last attempt to attach failed, until one succeeds.
    pub last_error: Option<String>,
    /// Messages waiting, as last read (every few seconds); `None` before the first read.
    pub depth: Option<u32>,
}

/// Updated by the consumers and the depth watcher; read by `Bridge::status`.
pub(super) struct Status {
    queues: Mutex<Vec<QueueState>>,
}

impl Status {
    pub(super) fn new(prefix: &str) -> Self {
        let consumed = EXCHANGES.iter().map(|exchange| QueueState {
            exchange: Some(exchange.name),
            queue: exchange.queue(prefix),
            consuming: false,
            last_error: None,
            depth: None,
        });
        let parked = QueueState {
            exchange: None,
            queue: topology::parked_queue(prefix),
            consuming: false,
            last_error: None,
            depth: None,
        };
        Self {
            queues: Mutex::new(consumed.chain([parked]).collect()),
        }
    }

    pub(super) fn snapshot(&self) -> Vec<QueueState> {
        self.queues.lock().clone()
    }

    /// A consumer attached to `exchange`'s queue (`Ok`), failed to (`Err`), or stopped.
    pub(super) fn attached(&self, exchange: &str, outcome: Result<(), String>) {
        self.update(
            |q| q.exchange == Some(exchange),
            |q| match outcome {
                Ok(()) => {
                    q.consuming = true;
                    q.last_error = None;
                }
                Err(error) => {
                    q.consuming = false;
                    q.last_error = Some(error);
                }
            },
        );
    }

    pub(super) fn detached(&self, exchange: &str) {
        self.update(|q| q.exchange == Some(exchange), |q| q.consuming = false);
    }

    pub(super) fn depth(&self, queue: &str, depth: u32) {
        self.update(|q| q.queue == queue, |q| q.depth = Some(depth));
    }

    fn update(&self, which: impl Fn(&QueueState) -> bool, change: impl FnOnce(&mut QueueState)) {
        if let Some(queue) = self.queues.lock().iter_mut().find(|q| which(q)) {
            change(queue);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_shows_until_the_queue_is_consumed_again() {
        let status = Status::new("dc");
        let exchange = EXCHANGES[0].name;
        status.attached(exchange, Err("connection refused".to_owned()));
        let first = &status.snapshot()[0];
        assert!(!first.consuming);
        assert_eq!(first.last_error.as_deref(), Some("connection refused"));
        status.attached(exchange, Ok(()));
        status.depth(&first.queue, 7);
        let first = &status.snapshot()[0];
        assert!(first.consuming);
        assert_eq!((first.last_error.as_deref(), first.depth), (None, Some(7)));
        status.detached(exchange);
        assert!(!status.snapshot()[0].consuming);
        let parked = status.snapshot().pop().unwrap();
        assert_eq!(
            (parked.exchange, parked.queue.as_str()),
            (None, "dc.parked")
        );
    }
}
