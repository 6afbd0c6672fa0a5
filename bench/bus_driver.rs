//! Bench-only driver of `bench/bus.sh`, not part of the service. It plays bk-ci around a running
//! service whose bridge is on: bk-ci's record API (`FAKE_ADDR`), the receiver (`RECEIVER_ADDR`)
//! and the producer. It registers one callback for the 9 BUILD_* events, waits until the bridge
//! consumes, publishes `MESSAGES` build status messages (10 per build, as a build's life sends
//! them: start, stage, job, two tasks started and ended, job, stage, end) to bk-ci's build
//! exchange, waits until each has arrived at the receiver, and prints the figures as
//! `name=value` lines: messages/s from the first publish to the last arrival, the p50/p99/max
//! bus→receipt latency, the lookups the fake bk-ci answered, duplicates and missing; then
//! `LIGHT_MESSAGES` (default 300) more at about 50 a second, and their p50/p99 latency.
//!
//! Environment: `SERVICE_URL`, `SERVICE_TOKEN`, `AMQP_URL`, `QUEUE` (the bridge's build queue),
//! `FAKE_ADDR`, `RECEIVER_ADDR`, `MESSAGES` (default 20000), `LIMIT_SECS` (default 120).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::get;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

const EXCHANGE: &str = "engine.pipeline.build.callback.fanout";
const PIPELINE: &str = "p-5f2c8a0e4b7d4e19a3c6b8d0f1e2a3b4";
const PER_BUILD: [(&str, Option<&str>, Option<&str>); 10] = [
    ("BUILD_START", None, None),
    ("BUILD_STAGE_START", Some("stage-2"), None),
    ("BUILD_JOB_START", Some("stage-2"), None),
    ("BUILD_TASK_START", Some("stage-2"), Some("e-1")),
    ("BUILD_TASK_END", Some("stage-2"), Some("e-1")),
    ("BUILD_TASK_START", Some("stage-2"), Some("e-2")),
    ("BUILD_TASK_END", Some("stage-2"), Some("e-2")),
    ("BUILD_JOB_END", Some("stage-2"), None),
    ("BUILD_STAGE_END", Some("stage-2"), None),
    ("BUILD_END", None, None),
];

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// What identifies one message in the body that reaches the receiver.
fn key(build: &str, event: &str, task: Option<&str>) -> String {
    format!("{build}|{event}|{}", task.unwrap_or("-"))
}

#[derive(Default)]
struct Arrivals {
    first: HashMap<String, Instant>,
    duplicates: u64,
}

#[tokio::main]
async fn main() {
    let messages: usize = std::env::var("MESSAGES").map_or(20_000, |m| m.parse().unwrap());
    let limit =
        Duration::from_secs(std::env::var("LIMIT_SECS").map_or(120, |s| s.parse().unwrap()));
    let lookups = Arc::new(AtomicU64::new(0));
    let arrivals = Arc::new(Mutex::new(Arrivals::default()));
    serve_fake(&var("FAKE_ADDR"), lookups.clone()).await;
    serve_receiver(&var("RECEIVER_ADDR"), arrivals.clone()).await;
    register(
        &var("SERVICE_URL"),
        &var("SERVICE_TOKEN"),
        &var("RECEIVER_ADDR"),
    )
    .await;

    let connection = Connection::connect(&var("AMQP_URL"), ConnectionProperties::default())
        .await
        .expect("RabbitMQ answers");
    wait_for_consumer(&connection, &var("QUEUE")).await;
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();

    // Throughput: every message as fast as the broker confirms them.
    let builds = messages.div_ceil(PER_BUILD.len());
    let started = Instant::now();
    let published = publish(&channel, "b", messages, None).await;
    let publishing = started.elapsed();
    wait_for_arrivals(&arrivals, messages, started + limit).await;
    let (delivered, last, latencies) = arrivals.lock().unwrap().of(&published);
    println!("messages={messages}");
    println!("builds={builds}");
    println!("publish_secs={:.2}", publishing.as_secs_f64());
    println!("delivered={delivered}");
    println!("missing={}", messages - delivered.min(messages));
    println!("duplicates={}", arrivals.lock().unwrap().duplicates);
    println!("record_lookups={}", lookups.load(Ordering::Relaxed));
    println!(
        "messages_per_sec={:.0}",
        delivered as f64 / (last.unwrap_or(started) - started).as_secs_f64()
    );
    println!("latency_p50_ms={:.1}", percentile(&latencies, 0.50));
    println!("latency_p99_ms={:.1}", percentile(&latencies, 0.99));
    println!("latency_max_ms={:.1}", percentile(&latencies, 1.0));

    // Light load: LIGHT_MESSAGES more at about 50 a second, each on its own.
    let light: usize = std::env::var("LIGHT_MESSAGES").map_or(300, |m| m.parse().unwrap());
    let light_started = Instant::now();
    let published = publish(&channel, "l", light, Some(Duration::from_millis(20))).await;
    wait_for_arrivals(&arrivals, messages + light, light_started + limit).await;
    let (delivered, _, latencies) = arrivals.lock().unwrap().of(&published);
    println!("light_messages={light}");
    println!("light_missing={}", light - delivered.min(light));
    println!("light_latency_p50_ms={:.1}", percentile(&latencies, 0.50));
    println!("light_latency_p99_ms={:.1}", percentile(&latencies, 0.99));
    println!("driver_cpu_secs={:.2}", own_cpu_secs());
}

impl Arrivals {
    /// Of the `published` messages: how many arrived, the last arrival, and the sorted
    /// publish-to-arrival latencies in ms.
    fn of(&self, published: &HashMap<String, Instant>) -> (usize, Option<Instant>, Vec<f64>) {
        let mut last = None;
        let mut latencies: Vec<f64> = published
            .iter()
            .filter_map(|(key, at)| {
                let arrived = *self.first.get(key)?;
                last = last.max(Some(arrived));
                Some((arrived - *at).as_secs_f64() * 1000.0)
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        (latencies.len(), last, latencies)
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(index).copied().unwrap_or(f64::NAN)
}

async fn wait_for_arrivals(arrivals: &Mutex<Arrivals>, count: usize, deadline: Instant) {
    while arrivals.lock().unwrap().first.len() < count && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Publishes `count` messages of builds named `<prefix>-n`, 10 per build, each `pace` apart
/// (none: as fast as the broker confirms them, 500 confirms at a time); answers when each was
/// published, by the key its body will arrive with.
async fn publish(
    channel: &lapin::Channel,
    prefix: &str,
    count: usize,
    pace: Option<Duration>,
) -> HashMap<String, Instant> {
    let mut published = HashMap::with_capacity(count);
    let mut confirms = Vec::with_capacity(500);
    for n in 0..count {
        let build = format!("{prefix}-{:08}", n / PER_BUILD.len());
        let index = n % PER_BUILD.len();
        let (event, stage, task) = PER_BUILD[index];
        let payload = message(&build, index, event, stage, task);
        published.insert(key(&build, event, task), Instant::now());
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        let confirm = channel
            .basic_publish(
                EXCHANGE.into(),
                EXCHANGE.into(),
                BasicPublishOptions::default(),
                payload.as_bytes(),
                properties,
            )
            .await
            .unwrap();
        confirms.push(confirm);
        if confirms.len() == 500 || pace.is_some() {
            for confirm in confirms.drain(..) {
                assert!(
                    confirm.await.unwrap().is_ack(),
                    "the broker took the message"
                );
            }
        }
        if let Some(pace) = pace {
            tokio::time::sleep(pace).await;
        }
    }
    for confirm in confirms.drain(..) {
        assert!(
            confirm.await.unwrap().is_ack(),
            "the broker took the message"
        );
    }
    published
}

/// One `PipelineBuildStatusBroadCastEvent`, as bk-ci's producers write it.
fn message(
    build: &str,
    index: usize,
    event: &str,
    stage: Option<&str>,
    task: Option<&str>,
) -> String {
    let mut message = serde_json::json!({
        "source": format!("bench-{index}"), "projectId": "bench", "pipelineId": PIPELINE,
        "userId": "bench-admin", "buildId": build, "executeCount": 1, "buildStatus": "RUNNING",
        "eventTime": "2026-12-02T10:00:00.000", "type": event, "actionType": "END",
        "delayMills": 0, "retryTime": 1, "channelCode": "BS"
    });
    if let Some(stage) = stage {
        message["stageId"] = stage.into();
    }
    if let Some(task) = task {
        message["taskId"] = task.into();
        message["atomCode"] = "linuxScript".into();
    }
    message.to_string()
}

/// bk-ci's record API: every build is a small one of the bench pipeline.
async fn serve_fake(addr: &str, lookups: Arc<AtomicU64>) {
    async fn record(
        State(lookups): State<Arc<AtomicU64>>,
        Path((_project, _pipeline, build)): Path<(String, String, String)>,
    ) -> axum::response::Response {
        lookups.fetch_add(1, Ordering::Relaxed);
        let body = format!(
            r#"{{"status":0,"data":{{"id":"{build}","pipelineId":"{PIPELINE}","pipelineName":"backend-service-ci","userId":"bench-admin","triggerUser":"bench-admin","status":"RUNNING","startTime":1764669600000,"trigger":"手动","buildNum":7,"debug":false,"model":{{"name":"backend-service-ci","stages":[{{"id":"stage-1","name":"stage-1","containers":[{{"@type":"trigger","name":"trigger","status":"SUCCEED","startEpoch":1764669600100,"elementElapsed":5,"systemElapsed":0,"elements":[{{"@type":"manualTrigger","id":"T-1-1-1","name":"manual","status":"SUCCEED","startEpoch":1764669600100,"elapsed":0,"atomCode":"manualTrigger"}}]}}]}},{{"id":"stage-2","name":"Build","containers":[{{"@type":"vmBuild","name":"Linux","status":"RUNNING","startEpoch":1764669601000,"elements":[{{"@type":"marketBuild","id":"e-1","name":"Checkout","atomCode":"checkout","status":"SUCCEED","startEpoch":1764669602000,"elapsed":3000}},{{"@type":"linuxScript","id":"e-2","name":"Bash","status":"RUNNING","startEpoch":1764669605000,"atomCode":"linuxScript"}}]}}]}}]}}}}}}"#
        );
        ([("content-type", "application/json")], body).into_response()
    }
    use axum::response::IntoResponse;
    let app = Router::new()
        .route(
            "/ms/process/api/service/builds/projects/{project}/pipelines/{pipeline}/builds/{build}/record",
            get(record),
        )
        .with_state(lookups);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("FAKE_ADDR is free");
    tokio::spawn(async move { axum::serve(listener, app).await });
}

/// The receiver: 200 at once, and the first arrival of each message.
async fn serve_receiver(addr: &str, arrivals: Arc<Mutex<Arrivals>>) {
    async fn receive(State(arrivals): State<Arc<Mutex<Arrivals>>>, body: Bytes) -> &'static str {
        let at = Instant::now();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let data = &body["data"];
        let key = key(
            data["buildId"].as_str().unwrap_or_default(),
            body["event"].as_str().unwrap_or_default(),
            data["taskId"].as_str(),
        );
        let mut arrivals = arrivals.lock().unwrap();
        if arrivals.first.insert(key, at).is_some() {
            arrivals.duplicates += 1;
        }
        "ok"
    }
    let app = Router::new().fallback(receive).with_state(arrivals);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("RECEIVER_ADDR is free");
    tokio::spawn(async move { axum::serve(listener, app).await });
}

/// One callback of project `bench` for the 9 BUILD_* events, to the receiver.
async fn register(service: &str, token: &str, receiver: &str) {
    let client = reqwest::Client::new();
    let member = client
        .put(format!(
            "{service}/op/projects/bench/members/bench-admin?role=admin"
        ))
        .header("X-DEVOPS-BK-TOKEN", token)
        .send()
        .await
        .unwrap();
    assert!(member.status().is_success(), "making bench-admin admin");
    let events = PER_BUILD.map(|(event, _, _)| event).join(",");
    let mut url = url::Url::parse(&format!(
        "{service}/apigw-user/v4/projects/bench/callbacks/batch"
    ))
    .expect("SERVICE_URL is a URL");
    url.query_pairs_mut()
        .append_pair("event", &events)
        .append_pair("region", "IDC")
        .append_pair("url", &format!("http://{receiver}/hook"));
    let created = client
        .post(url)
        .header("X-DEVOPS-UID", "bench-admin")
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "registering the callback");
}

/// Waits until the bridge consumes its build queue, so no message is published unroutable.
async fn wait_for_consumer(connection: &Connection, queue: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        // A passive declare of a missing queue closes the channel: each check takes a new one.
        let probe = connection.create_channel().await.unwrap();
        if let Ok(queue) = probe
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            && queue.consumer_count() > 0
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the bridge never consumed {queue}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// CPU seconds this process has used (user + system), from `/proc/self/stat`: what playing
/// bk-ci and the receiver cost the machine, beside the service.
fn own_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_command = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_command.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime, fields 14 and 15 of the line: 11 and 12 after the command; 100 Hz.
    (ticks(11) + ticks(12)) / 100.0
}
