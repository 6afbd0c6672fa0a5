//! devops-callbacks: register project callbacks through the bk-ci v4 API and deliver events to them.
//!
//! `main.rs` is only the command line; everything it runs lives here so tests can run it too.

pub mod auth;
pub mod bridge;
pub mod config;
pub mod delivery;
pub mod domain;
pub(crate) mod error;
pub mod http;
pub mod import;
pub(crate) mod secrets;
pub mod store;
pub mod telemetry;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use http::app;

use auth::Authority;
use auth::gateway::GatewayVerifier;
use bridge::Bridge;
use config::{Config, ConfigError};
use delivery::sender::Sender;
use delivery::ssrf::SsrfGuard;
use delivery::worker::Workers;
use delivery::{recovery, retention};
use domain::CallbackUrl;
use error::Result;
use http::server::ConnectionLimits;
use store::{CallbackWriter, Store};

/// Everything a request handler may need, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub authority: Arc<Authority>,
    /// Verifies `X-Bkapi-JWT` when `APIGW_PUBLIC_KEY_FILE` is set.
    pub gateway: Option<Arc<GatewayVerifier>>,
    pub ssrf: Arc<SsrfGuard>,
    /// Coalesces concurrent registrations into multi-row upserts.
    pub callbacks: CallbackWriter,
    /// The one pooled delivery client, shared by the workers and manual re-sends.
    pub sender: Arc<Sender>,
    /// Rung after an intake commits, so idle workers start at once instead of on the next poll.
    pub wake: Arc<Notify>,
    /// The bk-ci bus bridge, when `BKCI_AMQP_URL` is set; `serve` runs it.
    pub bridge: Option<Arc<Bridge>>,
    /// Rung when a recovery job starts, so this process's runner takes its first batch at once.
    pub recoveries: Arc<Notify>,
}

impl AppState {
    /// Must be called inside the runtime: it starts the registration writer's task. `gateway`
    /// comes from `GatewayVerifier::from_config`, which fails on an unusable key file; this fails
    /// on an unusable `DELIVERY_CA_FILE`.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        gateway: Option<GatewayVerifier>,
    ) -> std::result::Result<Self, ConfigError> {
        telemetry::metrics();
        let ssrf = Arc::new(SsrfGuard::new(
            config.allowed_cidrs.clone(),
            config.allowlist_only,
        ));
        let sender = Arc::new(Sender::new(&config, ssrf.clone())?);
        let wake = Arc::new(Notify::new());
        let bridge = config
            .bridge
            .clone()
            .map(|bridge| Bridge::new(bridge, store.clone(), wake.clone()).map(Arc::new))
            .transpose()?;
        Ok(Self {
            callbacks: CallbackWriter::start(store.clone()),
            authority: Arc::new(Authority::new(&config, store.clone())),
            gateway: gateway.map(Arc::new),
            sender,
            ssrf,
            config: Arc::new(config),
            store,
            wake,
            bridge,
            recoveries: Arc::new(Notify::new()),
        })
    }

    /// The registration-time URL rule (`SsrfGuard::vet`) with this deployment's blocked ports.
    pub async fn vet_callback_url(&self, raw: String) -> Result<CallbackUrl> {
        Ok(self.ssrf.vet(raw, &self.config.blocked_ports).await?)
    }
}

/// Serves the API on `listener` and runs the delivery workers and the recovery runner until
/// `shutdown` resolves; then stops taking requests and claims, and lets requests and attempts in
/// flight finish.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let identity = if state.gateway.is_some() {
        "gateway JWT"
    } else {
        "X-DEVOPS-UID as sent"
    };
    tracing::info!(
        addr = %listener.local_addr()?,
        database = %store::database_label(&state.config.database_url),
        auth = %state.config.auth_mode,
        identity,
        "listening"
    );
    let stop = CancellationToken::new();
    let workers = Workers::new(
        &state.config,
        state.store.clone(),
        state.sender.clone(),
        state.wake.clone(),
    );
    let delivering = tokio::spawn(workers.run(stop.clone()));
    let recovering = tokio::spawn(
        recovery::Runner {
            store: state.store.clone(),
            batch: state.config.recover_batch_size,
            poll: state.config.delivery_poll,
            wake: state.recoveries.clone(),
            workers: state.wake.clone(),
        }
        .run(stop.clone()),
    );
    let sweeping = tokio::spawn(retention::sweep(
        state.store.clone(),
        state.config.history_retention,
        state.config.retention_sweep,
        stop.clone(),
    ));
    let upkeep = tokio::spawn(telemetry::upkeep(stop.clone()));
    let bridging = state
        .bridge
        .clone()
        .map(|bridge| tokio::spawn(bridge.run(stop.clone())));
    let stopping = stop.clone();
    let limits = ConnectionLimits {
        idle_timeout: state.config.header_read_timeout,
        max_connections: state.config.max_connections,
    };
    http::server::run(listener, app(state), limits, async move {
        tokio::select! {
            () = shutdown => stopping.cancel(),
            () = stopping.cancelled() => {}
        }
    })
    .await;
    stop.cancel();
    if let Err(e) = delivering.await {
        tracing::error!(error = %e, "the delivery workers failed");
    }
    let _ = recovering.await;
    if let Some(bridging) = bridging {
        let _ = bridging.await;
    }
    let _ = sweeping.await;
    let _ = upkeep.await;
    Ok(())
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        // Without a handler there is no ctrl-c to wait for (not a reason to stop at once).
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received, draining");
}
