//! Logging (`RUST_LOG` filters, `LOG_FORMAT` picks text or JSON) and Prometheus metrics. Logs go
//! to stderr, so the CLI's results on stdout stay clean.

use std::io::IsTerminal;
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::config::{ConfigError, DEFAULT_LOG_FILTER, LogFormat};

/// Starts logging; an unusable `RUST_LOG` stops the start, as any unusable variable does (an
/// empty one is unset).
pub fn init(format: LogFormat) -> Result<(), ConfigError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::try_new(&directives).map_err(|e| ConfigError {
                name: "RUST_LOG",
                reason: format!(
                    "{e}; expected comma-separated directives like devops_callbacks=debug,tower_http=info"
                ),
                value: directives,
            })?
        }
        _ => EnvFilter::new(DEFAULT_LOG_FILTER),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour_wanted(std::io::stderr().is_terminal()))
        .with_writer(std::io::stderr);
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}

/// Colour codes only for a person at a terminal: a file, a pipe or a log collector gets plain
/// text. `NO_COLOR` (https://no-color.org) turns them off on a terminal too.
fn colour_wanted(terminal: bool) -> bool {
    terminal && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty())
}

/// The process-wide Prometheus recorder, installed on first use; `GET /metrics` renders it.
/// If an embedding program installed a recorder of its own first, that one receives the
/// metrics and `/metrics` renders none (a warning says so); the service runs on regardless.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ])
            .expect("the bucket list is not empty")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will stay empty");
        }
        handle
    })
}

/// Folds the histograms' recorded samples into their buckets every few seconds. The recorder
/// keeps raw samples until then, and a service nobody scrapes would otherwise pile them up
/// (about 100 bytes per request); `install_recorder` leaves this to its caller.
pub async fn upkeep(stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => metrics().run_upkeep(),
            () = stop.cancelled() => return,
        }
    }
}

/// Metric names, in one place.
pub mod names {
    pub const HTTP_REQUESTS: &str = "devops_callbacks_http_requests_total";
    pub const HTTP_DURATION: &str = "devops_callbacks_http_request_duration_seconds";
    pub const EVENTS_ACCEPTED: &str = "devops_callbacks_events_accepted_total";
    pub const DELIVERIES: &str = "devops_callbacks_deliveries_total";
    /// Outcomes the database refused even without the receiver's answer (should stay 0).
    pub const OUTCOMES_UNRECORDABLE: &str = "devops_callbacks_outcomes_unrecordable_total";
    pub const ATTEMPT_DURATION: &str = "devops_callbacks_delivery_attempt_duration_seconds";
    pub const QUEUE: &str = "devops_callbacks_delivery_queue";
    pub const CALLBACKS_DISABLED: &str = "devops_callbacks_callbacks_disabled";
    /// bk-ci bus messages by exchange and outcome: consumed, acked, parked, requeued.
    pub const BUS_MESSAGES: &str = "devops_callbacks_bus_messages_total";
    /// Messages acked without an event, by exchange and reason (what bk-ci drops, or no target).
    pub const BUS_DROPPED: &str = "devops_callbacks_bus_dropped_total";
    pub const BUS_LOOKUP_DURATION: &str = "devops_callbacks_bus_lookup_duration_seconds";
    pub const BUS_LOOKUP_ERRORS: &str = "devops_callbacks_bus_lookup_errors_total";
    /// Messages waiting in each of the bridge's queues, read from the broker (the consumer lag).
    pub const BUS_QUEUE_DEPTH: &str = "devops_callbacks_bus_queue_depth";
    /// 1 while the exchange's queue is being consumed.
    pub const BUS_CONSUMING: &str = "devops_callbacks_bus_consuming";
}
