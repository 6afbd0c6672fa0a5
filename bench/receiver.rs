//! Bench-only webhook receiver, not part of the service: answers every POST with 200 at once and
//! remembers when each `X-DEVOPS-WEBHOOK-UNIQUE-ID` arrived. `bench/deliver.sh` drives it.
//!
//! `GET /stats`: `{"received", "distinct", "first_ms", "last_ms"}` (epoch ms).
//! `GET /arrivals`: CSV `unique_id,arrived_ms` of the first arrival of each id.
//! `POST /reset`: forgets everything. `LISTEN_ADDR` (default 127.0.0.1:9900). `HOLD_MS` (default
//! 0): hold every delivery this long before answering, to play a receiver that times out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use serde_json::json;

#[derive(Default)]
struct Arrivals {
    received: u64,
    first_ms: HashMap<String, f64>,
    earliest: Option<f64>,
    latest: Option<f64>,
}

type Shared = Arc<Mutex<Arrivals>>;

/// How long each delivery is held before the answer.
static HOLD: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();

fn now_ms() -> f64 {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    since_epoch.as_secs_f64() * 1000.0
}

async fn receive(State(arrivals): State<Shared>, headers: HeaderMap) -> &'static str {
    let at = now_ms();
    let id = headers
        .get("x-devops-webhook-unique-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    {
        let mut arrivals = arrivals.lock().expect("not poisoned");
        arrivals.received += 1;
        arrivals.first_ms.entry(id).or_insert(at);
        arrivals.earliest.get_or_insert(at);
        arrivals.latest = Some(at);
    }
    let hold = HOLD.get().copied().unwrap_or_default();
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    "ok"
}

async fn stats(State(arrivals): State<Shared>) -> String {
    let arrivals = arrivals.lock().expect("not poisoned");
    json!({
        "received": arrivals.received,
        "distinct": arrivals.first_ms.len(),
        "first_ms": arrivals.earliest,
        "last_ms": arrivals.latest,
    })
    .to_string()
}

async fn dump(State(arrivals): State<Shared>) -> String {
    let arrivals = arrivals.lock().expect("not poisoned");
    let mut csv = String::from("unique_id,arrived_ms\n");
    for (id, at) in &arrivals.first_ms {
        csv.push_str(&format!("{id},{at:.3}\n"));
    }
    csv
}

async fn reset(State(arrivals): State<Shared>) -> &'static str {
    *arrivals.lock().expect("not poisoned") = Arrivals::default();
    "reset"
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:9900".to_owned());
    let hold_ms = std::env::var("HOLD_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    HOLD.get_or_init(|| std::time::Duration::from_millis(hold_ms));
    let app = Router::new()
        .route("/stats", get(stats))
        .route("/arrivals", get(dump))
        .route("/reset", post(reset))
        .fallback(receive)
        .with_state(Shared::default());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await
}
