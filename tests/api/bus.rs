//! The bk-ci bus bridge against the real RabbitMQ on 127.0.0.1:5672 (guest/guest): each test in
//! a vhost of its own, with bk-ci's exchanges declared as plain topic exchanges (the delayed-
//! message plugin is not installed here), a fake bk-ci service on 127.0.0.1 answering the
//! lookups, MariaDB for deleted pipelines, and a real receiver.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::sync::RwLock;

use crate::common::{
    Backend, SERVICE_TOKEN, TestDb, TestServer, backend_tests, cli, enc, start_delivering,
    wait_until,
};
use crate::import::BkciDb;
use crate::processes::ServerProcess;
use crate::receiver::{Received, Receiver};

backend_tests!(bkci_messages_reach_receivers_exactly_as_bkci_sends_them);

const BUILD: &str = "engine.pipeline.build.callback.fanout";
const EXCHANGES: [&str; 9] = [
    BUILD,
    "engine.pipeline.create",
    "engine.pipeline.update",
    "engine.pipeline.delete",
    "engine.pipeline.restore",
    "engine.pipeline.stream.enabled",
    "project.create.exchange.fanout",
    "project.update.exchange.fanout",
    "project.enable.exchange.fanout",
];
const PREFIX: &str = "dc-test";
const PIPELINE: &str = "p-7e1c2b3a4d5e4f60a1b2c3d4e5f60718";
const BUILD_ID: &str = "b-0d5a8c3e2f1b4c7a9e6d5c4b3a291807";
const LONG: Duration = Duration::from_secs(60);

/// Bus tests share the broker; the broker-restart test takes it alone.
static BROKER: RwLock<()> = RwLock::const_new(());

/// A vhost of the test's own, deleted at the end.
struct Vhost {
    name: String,
}

fn rabbitmqctl(args: &[&str]) -> std::process::Output {
    let output = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl runs (RabbitMQ is installed)");
    assert!(
        output.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl Vhost {
    async fn new() -> Self {
        let name = format!("dc-test-{}", uuid::Uuid::new_v4().simple());
        let vhost = name.clone();
        tokio::task::spawn_blocking(move || {
            rabbitmqctl(&["add_vhost", &vhost]);
            rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
        })
        .await
        .unwrap();
        Self { name }
    }

    fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }

    /// Declares bk-ci's exchanges as bk-ci's producers would find them (topic, durable).
    async fn publisher(&self) -> Publisher {
        let connection = Connection::connect(&self.url(), ConnectionProperties::default())
            .await
            .expect("RabbitMQ is up on 127.0.0.1:5672");
        let channel = connection.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        for exchange in EXCHANGES {
            let options = ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            };
            channel
                .exchange_declare(
                    exchange.into(),
                    ExchangeKind::Topic,
                    options,
                    FieldTable::default(),
                )
                .await
                .unwrap();
        }
        Publisher {
            _connection: connection,
            channel,
        }
    }

    /// Messages waiting in `queue` and its consumers; `None` while it does not exist.
    async fn queue(&self, queue: &str) -> Option<(u32, u32)> {
        let connection = Connection::connect(&self.url(), ConnectionProperties::default())
            .await
            .ok()?;
        let channel = connection.create_channel().await.ok()?;
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declared = channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .ok();
        let _ = connection.close(200, "".into()).await;
        declared.map(|q| (q.message_count(), q.consumer_count()))
    }

    /// Waits until the bridge consumes every one of its queues, so nothing published after
    /// this is unroutable.
    async fn wait_for_bridge(&self) {
        wait_until("the bridge to consume every exchange", LONG, async || {
            for exchange in EXCHANGES {
                match self.queue(&format!("{exchange}.{PREFIX}")).await {
                    Some((_, consumers)) if consumers > 0 => {}
                    _ => return false,
                }
            }
            true
        })
        .await;
    }

    async fn parked(&self) -> u32 {
        self.queue(&format!("{PREFIX}.parked"))
            .await
            .map_or(0, |(messages, _)| messages)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.name])
            .output();
    }
}

struct Publisher {
    _connection: Connection,
    channel: Channel,
}

impl Publisher {
    /// Publishes as bk-ci's producers do: routing key = exchange, JSON, persistent, confirmed.
    async fn publish(&self, exchange: &str, message: &Value) {
        self.publish_raw(exchange, message.to_string().as_bytes())
            .await;
    }

    async fn publish_raw(&self, exchange: &str, payload: &[u8]) {
        let properties = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(2);
        let confirmation = self
            .channel
            .basic_publish(
                exchange.into(),
                exchange.into(),
                BasicPublishOptions::default(),
                payload,
                properties,
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirmation.is_ack());
    }
}

/// bk-ci's process and project services, as the bridge asks them.
#[derive(Clone, Default)]
struct FakeBkci {
    inner: Arc<Mutex<Fake>>,
}

#[derive(Default)]
struct Fake {
    /// Build records by build id; builds without one get `generic_record`.
    records: HashMap<String, Value>,
    pipelines: HashMap<String, Value>,
    projects: HashMap<String, String>,
    /// While set, every lookup answers 503 with no envelope.
    down: bool,
    /// Every lookup's path and query.
    asked: Vec<String>,
    /// When set, record lookups are answered one at a time, each after this long: a slow
    /// bk-ci, so a stream of messages takes a while.
    pace: Option<Duration>,
}

impl FakeBkci {
    async fn start() -> (Self, String) {
        let fake = Self::default();
        let app = Router::new()
            .route(
                "/ms/process/api/service/builds/projects/{project}/pipelines/{pipeline}/builds/{build}/record",
                get(record),
            )
            .route(
                "/ms/process/api/service/pipelines/{project}/{pipeline}/getPipelineInfo",
                get(pipeline_info),
            )
            .route("/ms/project/api/service/projects/{name}", get(project))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (fake, url)
    }

    fn set_record(&self, build: &str, record: Value) {
        self.inner
            .lock()
            .unwrap()
            .records
            .insert(build.to_owned(), record);
    }

    fn set_down(&self, down: bool) {
        self.inner.lock().unwrap().down = down;
    }

    fn set_pace(&self, pace: Duration) {
        self.inner.lock().unwrap().pace = Some(pace);
    }

    fn asked(&self) -> Vec<String> {
        self.inner.lock().unwrap().asked.clone()
    }

    /// Records the request; `None` during an outage.
    fn ask(&self, uri: &Uri) -> Option<std::sync::MutexGuard<'_, Fake>> {
        let mut fake = self.inner.lock().unwrap();
        fake.asked.push(uri.to_string());
        (!fake.down).then_some(fake)
    }
}

/// An outage's answer: a 503 that is not bk-ci's envelope.
fn down() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "down").into_response()
}

fn ok(data: Option<Value>) -> Response {
    match data {
        Some(data) => axum::Json(json!({"status": 0, "data": data})).into_response(),
        None => axum::Json(json!({"status": 0})).into_response(),
    }
}

async fn record(
    State(fake): State<FakeBkci>,
    Path((_project, pipeline, build)): Path<(String, String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let pace = fake.inner.lock().unwrap().pace;
    if let Some(pace) = pace {
        let _turn = ONE_AT_A_TIME.lock().await;
        tokio::time::sleep(pace).await;
    }
    let Some(fake) = fake.ask(&uri) else {
        return down();
    };
    if headers.get("x-devops-uid").is_none_or(|user| user != "svc")
        || !uri.query().unwrap_or_default().contains("channelCode=BS")
    {
        return (StatusCode::BAD_REQUEST, "no user or channel").into_response();
    }
    let record = fake
        .records
        .get(&build)
        .cloned()
        .unwrap_or_else(|| generic_record(&pipeline));
    ok(Some(record))
}

async fn pipeline_info(
    State(fake): State<FakeBkci>,
    Path((_project, pipeline)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    match fake.ask(&uri) {
        Some(fake) => ok(fake.pipelines.get(&pipeline).cloned()),
        None => down(),
    }
}

async fn project(State(fake): State<FakeBkci>, Path(name): Path<String>, uri: Uri) -> Response {
    match fake.ask(&uri) {
        Some(fake) => ok(fake
            .projects
            .get(&name)
            .map(|project_name| json!({"englishName": name, "projectName": project_name}))),
        None => down(),
    }
}

/// A small finished build of `pipeline`.
fn generic_record(pipeline: &str) -> Value {
    json!({
        "id": "b", "pipelineId": pipeline, "pipelineName": "load", "userId": "alice",
        "triggerUser": "alice", "status": "SUCCEED", "startTime": 1, "endTime": 2,
        "trigger": "手动", "buildNum": 1, "debug": false,
        "model": {"name": "load", "stages": [{"id": "stage-1", "name": "s", "containers": [
            {"@type": "trigger", "name": "t", "status": "SUCCEED", "startEpoch": 1,
             "elementElapsed": 1, "systemElapsed": 0, "elements": [
                {"@type": "manualTrigger", "id": "T-1-1-1", "name": "m", "status": "SUCCEED",
                 "startEpoch": 1, "elapsed": 0, "atomCode": "manualTrigger"}]}]}]}
    })
}

/// The reference's build, as bk-ci's record API answers it: finished (`done`), or with the Bash
/// task just ended and Upload still queued.
fn example_record(done: bool) -> Value {
    let stage_two_job = if done {
        json!({"@type": "vmBuild", "id": "1", "containerHashId": "c-3b2a190f8e7d4c6b",
               "name": "Linux", "status": "SUCCEED", "startEpoch": 1755747001000_i64,
               "elementElapsed": 60000, "systemElapsed": 1000, "elements": [checkout(), bash()]})
    } else {
        json!({"@type": "vmBuild", "id": "1", "name": "Linux", "status": "RUNNING",
               "startEpoch": 1755747001000_i64, "elements": [checkout(), bash(),
               {"@type": "marketBuild", "id": "e-0b1c2d3e4f5a46b7c8d9e0f1a2b3c4d5",
                "name": "Upload", "atomCode": "UploadArtifact", "status": "QUEUE"}]})
    };
    let mut record = json!({
        "id": BUILD_ID, "pipelineId": PIPELINE, "pipelineName": "demo-build",
        "pipelineVersion": 3, "userId": "alice", "triggerUser": "alice",
        "status": if done { "SUCCEED" } else { "RUNNING" }, "startTime": 1755747000123_i64,
        "trigger": "手动", "buildNum": 42, "debug": false, "queueTime": 1755747000001_i64,
        "model": {"name": "demo-build", "stages": [
            {"id": "stage-1", "name": "stage-1", "startEpoch": 1755747000200_i64, "containers": [
                {"@type": "trigger", "id": "0", "name": "构建触发", "status": "SUCCEED",
                 "startEpoch": 1755747000200_i64, "elementElapsed": 10, "systemElapsed": 0,
                 "elements": [{"@type": "manualTrigger", "id": "T-1-1-1", "name": "手动触发",
                     "status": "SUCCEED", "startEpoch": 1755747000200_i64, "elapsed": 0,
                     "atomCode": "manualTrigger"}]}]},
            {"id": "stage-2", "name": "Build", "containers": [stage_two_job]}]}
    });
    if done {
        record["endTime"] = json!(1755747062456_i64);
    }
    record
}

fn checkout() -> Value {
    json!({"@type": "marketBuild", "id": "e-1f0c9d8b7a6e4d3c2b1a0f9e8d7c6b5a", "name": "Checkout",
           "atomCode": "checkout", "version": "1.*", "status": "SUCCEED",
           "startEpoch": 1755747005000_i64, "elapsed": 10000})
}

fn bash() -> Value {
    json!({"@type": "linuxScript", "id": "e-9a8b7c6d5e4f40312a1b0c9d8e7f6a5b", "name": "Bash",
           "status": "SUCCEED", "startEpoch": 1755747015100_i64, "elapsed": 44900,
           "atomCode": "linuxScript"})
}

/// The reference's full BUILD_END body, on one line as on the wire.
const BUILD_END_BODY: &str = concat!(
    r#"{"event":"BUILD_END","data":{"#,
    r#""buildId":"b-0d5a8c3e2f1b4c7a9e6d5c4b3a291807","pipelineId":"p-7e1c2b3a4d5e4f60a1b2c3d4e5f60718","#,
    r#""pipelineName":"demo-build","userId":"alice","triggerUser":"alice","cancelUserId":null,"#,
    r#""status":"SUCCEED","startTime":1755747000123,"endTime":1755747062456,"#,
    r#""model":{"stages":["#,
    r#"{"stageName":"Stage-1","name":"stage-1","status":"SUCCEED","startTime":1755747000200,"endTime":1755747000210,"#,
    r#""jobs":[{"jobName":"构建触发","status":"SUCCEED","startTime":1755747000200,"endTime":1755747000210,"#,
    r#""tasks":[{"taskId":"T-1-1-1","taskName":"手动触发","atomCode":"manualTrigger","status":"SUCCEED","startTime":1755747000200,"endTime":1755747000200}]}]},"#,
    r#"{"stageName":"Stage-2","name":"Build","status":"SUCCEED","startTime":1755747001000,"endTime":1755747062000,"#,
    r#""jobs":[{"jobName":"Linux","status":"SUCCEED","startTime":1755747001000,"endTime":1755747062000,"#,
    r#""tasks":[{"taskId":"e-1f0c9d8b7a6e4d3c2b1a0f9e8d7c6b5a","taskName":"Checkout","atomCode":"checkout","status":"SUCCEED","startTime":1755747005000,"endTime":1755747015000},"#,
    r#"{"taskId":"e-9a8b7c6d5e4f40312a1b0c9d8e7f6a5b","taskName":"Bash","atomCode":"linuxScript","status":"SUCCEED","startTime":1755747015100,"endTime":1755747060000}]}]}]},"#,
    r#""projectId":"demo","trigger":"手动","stageId":null,"taskId":null,"buildNo":42,"debug":false}}"#,
);

/// The reference's full BUILD_TASK_END body (the Bash task ended, the build runs on).
const BUILD_TASK_END_BODY: &str = concat!(
    r#"{"event":"BUILD_TASK_END","data":{"#,
    r#""buildId":"b-0d5a8c3e2f1b4c7a9e6d5c4b3a291807","pipelineId":"p-7e1c2b3a4d5e4f60a1b2c3d4e5f60718","#,
    r#""pipelineName":"demo-build","userId":"alice","triggerUser":"alice","cancelUserId":null,"#,
    r#""status":"RUNNING","startTime":1755747000123,"endTime":0,"#,
    r#""model":{"stages":["#,
    r#"{"stageName":"Stage-1","name":"stage-1","status":"SUCCEED","startTime":1755747000200,"endTime":1755747000210,"#,
    r#""jobs":[{"jobName":"构建触发","status":"SUCCEED","startTime":1755747000200,"endTime":1755747000210,"#,
    r#""tasks":[{"taskId":"T-1-1-1","taskName":"手动触发","atomCode":"manualTrigger","status":"SUCCEED","startTime":1755747000200,"endTime":1755747000200}]}]},"#,
    r#"{"stageName":"Stage-2","name":"Build","status":"RUNNING","startTime":1755747001000,"endTime":0,"#,
    r#""jobs":[{"jobName":"Linux","status":"RUNNING","startTime":1755747001000,"endTime":0,"#,
    r#""tasks":[{"taskId":"e-1f0c9d8b7a6e4d3c2b1a0f9e8d7c6b5a","taskName":"Checkout","atomCode":"checkout","status":"SUCCEED","startTime":1755747005000,"endTime":1755747015000},"#,
    r#"{"taskId":"e-9a8b7c6d5e4f40312a1b0c9d8e7f6a5b","taskName":"Bash","atomCode":"linuxScript","status":"SUCCEED","startTime":1755747015100,"endTime":1755747060000},"#,
    r#"{"taskId":"e-0b1c2d3e4f5a46b7c8d9e0f1a2b3c4d5","taskName":"Upload","atomCode":"UploadArtifact","status":"QUEUE","startTime":0,"endTime":0}]}]}]},"#,
    r#""projectId":"demo","trigger":"手动","stageId":"stage-2","taskId":"e-9a8b7c6d5e4f40312a1b0c9d8e7f6a5b","buildNo":42,"debug":false}}"#,
);

/// A build status broadcast as bk-ci's producers write it (nulls left out, unknown fields on).
fn build_message(kind: &str, build: &str, stage: Option<&str>, task: Option<&str>) -> Value {
    let mut message = json!({
        "source": format!("test-{kind}-{}", uuid::Uuid::new_v4()), "projectId": "demo",
        "pipelineId": PIPELINE, "userId": "alice", "buildId": build, "executeCount": 1,
        "buildStatus": "RUNNING", "eventTime": "2026-08-21T11:48:25.123", "type": kind,
        "labels": {"stepName": "Bash"}, "actionType": "END", "delayMills": 0, "retryTime": 1,
        "traceId": "bizId-2b9c1f0e", "channelCode": "BS"
    });
    if let Some(stage) = stage {
        message["stageId"] = json!(stage);
    }
    if let Some(task) = task {
        message["taskId"] = json!(task);
        message["atomCode"] = json!("linuxScript");
    }
    message
}

/// The bridge's settings for `vhost` and `fake`, with `extra` over them.
fn bridge_vars(vhost: &Vhost, fake: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut vars: HashMap<String, String> = [
        ("BKCI_AMQP_URL", vhost.url()),
        ("BKCI_AMQP_DECLARE", "topic".to_owned()),
        ("BKCI_AMQP_QUEUE_PREFIX", PREFIX.to_owned()),
        ("BKCI_SERVICE_URL", fake.to_owned()),
        ("BKCI_SERVICE_USER", "svc".to_owned()),
        ("BKCI_ENRICH_ATTEMPTS", "3".to_owned()),
        ("BKCI_ENRICH_BACKOFF_MS", "100".to_owned()),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect();
    for (name, value) in extra {
        vars.insert((*name).to_owned(), (*value).to_owned());
    }
    vars.into_iter().collect()
}

fn as_refs(vars: &[(String, String)]) -> Vec<(&str, &str)> {
    vars.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
}

/// A server delivering, with the bridge on, and the bridge consuming.
async fn start_bridged(
    db: &TestDb,
    vhost: &Vhost,
    fake: &str,
    extra: &[(&str, &str)],
) -> TestServer {
    let vars = bridge_vars(vhost, fake, extra);
    let server = start_delivering(db, &as_refs(&vars)).await;
    vhost.wait_for_bridge().await;
    server
}

/// Registers project callbacks of `demo` for `events` to `url`.
async fn register(server: &TestServer, events: &str, url: &str) {
    let (status, body) = server
        .call(
            Method::POST,
            &format!(
                "/apigw-user/v4/projects/demo/callbacks/batch?event={events}&region=IDC&url={}",
                enc(url)
            ),
            &[("X-DEVOPS-UID", "alice")],
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["failureEvents"], json!({}), "{body}");
}

/// Registers a global callback (bk-ci's op route) of `event` to `url`.
async fn register_global(server: &TestServer, event: &str, url: &str) {
    let response = reqwest::Client::new()
        .post(server.url(&format!(
            "/op/pipeline/callback/create?event={event}&url={}",
            enc(url)
        )))
        .header("X-DEVOPS-BK-TOKEN", SERVICE_TOKEN)
        .header("X-DEVOPS-UID", "ops")
        .header("content-type", "application/json")
        .body(r#"{"@type":"header","headers":{"X-Tenant":"t1"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "{}",
        response.text().await.unwrap()
    );
}

fn body(received: &Received) -> String {
    String::from_utf8(received.body.to_vec()).unwrap()
}

/// The bodies that arrived at `path`, in arrival order.
fn bodies_at(receiver: &Receiver, path: &str) -> Vec<String> {
    receiver
        .received()
        .iter()
        .filter(|r| r.path == path)
        .map(body)
        .collect()
}

/// Waits for a body at `path` whose event is `event`, and returns it.
async fn arrival(receiver: &Receiver, path: &str, event: &str) -> String {
    let prefix = format!(r#"{{"event":"{event}","#);
    let mut found = None;
    wait_until(&format!("{event} at {path}"), LONG, async || {
        found = bodies_at(receiver, path)
            .into_iter()
            .find(|b| b.starts_with(&prefix));
        found.is_some()
    })
    .await;
    found.unwrap()
}

async fn bkci_messages_reach_receivers_exactly_as_bkci_sends_them(backend: Backend) {
    let _broker = BROKER.read().await;
    let db = TestDb::new(backend).await;
    let receiver = Receiver::start().await;
    let (fake, fake_url) = FakeBkci::start().await;
    let vhost = Vhost::new().await;
    let bus = vhost.publisher().await;
    let server = start_bridged(&db, &vhost, &fake_url, &[]).await;
    let build_events = "BUILD_START,BUILD_END,BUILD_STAGE_START,BUILD_STAGE_END,BUILD_JOB_START,\
                        BUILD_JOB_END,BUILD_TASK_START,BUILD_TASK_END,BUILD_TASK_PAUSE";
    register(&server, build_events, &receiver.url("/hook")).await;
    register(
        &server,
        "CREATE_PIPELINE,UPDATE_PIPELINE,RESTORE_PIPELINE,STREAM_ENABLED",
        &receiver.url("/hook"),
    )
    .await;
    for event in [
        "PROJECT_CREATE",
        "PROJECT_UPDATE",
        "PROJECT_ENABLE",
        "PROJECT_DISABLE",
    ] {
        register_global(&server, event, &receiver.url("/global")).await;
    }
    // A pipeline-level callback of the build's pipeline gets BUILD_END too, after the project's.
    let (status, answer) = server
        .call(
            Method::POST,
            "/apigw-app/v4/projects/demo/callbacks/pipelines/p-7e1c2b3a4d5e4f60a1b2c3d4e5f60718",
            &[
                ("X-DEVOPS-UID", "alice"),
                ("content-type", "application/json"),
            ],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let pipeline_level = reqwest::Client::new()
        .post(server.url(&format!("/apigw-app/v4/projects/demo/callbacks/pipelines/{PIPELINE}")))
        .header("X-DEVOPS-UID", "alice")
        .json(&json!([{"callbackEvent": "BUILD_END", "callbackUrl": receiver.url("/pipeline"), "callbackName": "ci"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(pipeline_level.status(), StatusCode::OK);

    // The Bash task ends while the build runs; then the build ends. Each body is built from the
    // record as it is when the message is handled, never from an older read.
    fake.set_record(BUILD_ID, example_record(false));
    let task = "e-9a8b7c6d5e4f40312a1b0c9d8e7f6a5b";
    bus.publish(
        BUILD,
        &build_message("BUILD_TASK_END", BUILD_ID, Some("stage-2"), Some(task)),
    )
    .await;
    assert_eq!(
        arrival(&receiver, "/hook", "BUILD_TASK_END").await,
        BUILD_TASK_END_BODY
    );
    fake.set_record(BUILD_ID, example_record(true));
    bus.publish(BUILD, &build_message("BUILD_END", BUILD_ID, None, None))
        .await;
    assert_eq!(
        arrival(&receiver, "/hook", "BUILD_END").await,
        BUILD_END_BODY
    );
    assert_eq!(
        arrival(&receiver, "/pipeline", "BUILD_END").await,
        BUILD_END_BODY
    );

    // The other seven build types: the same data under their own event, ids as the message has.
    for kind in [
        "BUILD_START",
        "BUILD_STAGE_START",
        "BUILD_STAGE_END",
        "BUILD_JOB_START",
        "BUILD_JOB_END",
        "BUILD_TASK_START",
        "BUILD_TASK_PAUSE",
    ] {
        let stage = kind.contains("JOB").then_some("stage-2");
        bus.publish(BUILD, &build_message(kind, BUILD_ID, stage, None))
            .await;
        let mut expected = BUILD_END_BODY.replace("BUILD_END", kind);
        if stage.is_some() {
            expected = expected.replace(r#""stageId":null"#, r#""stageId":"stage-2""#);
        }
        assert_eq!(arrival(&receiver, "/hook", kind).await, expected);
    }

    // Pipeline changes, from getPipelineInfo.
    fake.inner.lock().unwrap().pipelines.insert(
        PIPELINE.to_owned(),
        json!({"projectId": "demo", "pipelineId": PIPELINE, "pipelineName": "demo-build",
               "lastModifyUser": "alice", "updateTime": 1755747062000_i64, "version": 3,
               "creator": "bob", "channelCode": "BS"}),
    );
    for (exchange, event, extra) in [
        (
            "engine.pipeline.create",
            "CREATE_PIPELINE",
            json!({"pipelineName": "demo-build", "version": 1}),
        ),
        (
            "engine.pipeline.update",
            "UPDATE_PIPELINE",
            json!({"version": 3}),
        ),
        (
            "engine.pipeline.restore",
            "RESTORE_PIPELINE",
            json!({"version": 3}),
        ),
    ] {
        let mut message = json!({"source": "test", "projectId": "demo", "pipelineId": PIPELINE,
                                 "userId": "bob", "actionType": "START", "delayMills": 0, "retryTime": 1});
        message
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        bus.publish(exchange, &message).await;
        assert_eq!(
            arrival(&receiver, "/hook", event).await,
            format!(
                r#"{{"event":"{event}","data":{{"pipelineId":"{PIPELINE}","pipelineName":"demo-build","userId":"alice","updateTime":1755747062000,"projectId":"demo"}}}}"#
            )
        );
    }

    // STREAM_ENABLED, from the message alone.
    bus.publish(
        "engine.pipeline.stream.enabled",
        &json!({"source": "stream", "projectId": "demo", "pipelineId": "", "userId": "alice",
                "gitProjectId": 12345, "gitProjectUrl": "https://git.example.com/team/repo.git",
                "enable": true, "actionType": "START", "delayMills": 0, "retryTime": 1}),
    )
    .await;
    assert_eq!(
        arrival(&receiver, "/hook", "STREAM_ENABLED").await,
        r#"{"event":"STREAM_ENABLED","data":{"userId":"alice","gitProjectId":12345,"gitProjectUrl":"https://git.example.com/team/repo.git","enable":true}}"#
    );

    // Project events go to the global callbacks only. The update's projectId is bk-ci's internal
    // id; the body names the project by its English name.
    fake.inner
        .lock()
        .unwrap()
        .projects
        .insert("demo".to_owned(), "Demo Project".to_owned());
    bus.publish(
        "project.create.exchange.fanout",
        &json!({"userId": "alice", "projectId": "demo", "retryCount": 0, "delayMills": 0,
                "projectInfo": {"englishName": "demo", "projectName": "Demo Project"}}),
    )
    .await;
    bus.publish(
        "project.update.exchange.fanout",
        &json!({"userId": "alice", "projectId": "5f1d0e9c8b7a", "retryCount": 0, "delayMills": 0,
                "projectInfo": {"englishName": "demo", "projectName": "Demo Renamed"}}),
    )
    .await;
    for enabled in [false, true] {
        bus.publish(
            "project.enable.exchange.fanout",
            &json!({"userId": "", "projectId": "demo", "retryCount": 0, "delayMills": 0, "enabled": enabled}),
        )
        .await;
    }
    let project = |event: &str, name: &str, enable: bool, user: &str| {
        format!(
            r#"{{"event":"{event}","data":{{"projectId":"demo","projectName":"{name}","enable":{enable},"userId":"{user}"}}}}"#
        )
    };
    assert_eq!(
        arrival(&receiver, "/global", "PROJECT_CREATE").await,
        project("PROJECT_CREATE", "Demo Project", true, "alice")
    );
    assert_eq!(
        arrival(&receiver, "/global", "PROJECT_UPDATE").await,
        project("PROJECT_UPDATE", "Demo Renamed", true, "alice")
    );
    assert_eq!(
        arrival(&receiver, "/global", "PROJECT_DISABLE").await,
        project("PROJECT_DISABLE", "Demo Project", false, "")
    );
    assert_eq!(
        arrival(&receiver, "/global", "PROJECT_ENABLE").await,
        project("PROJECT_ENABLE", "Demo Project", true, "")
    );
    // Nothing else arrived: one body per message and target.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bodies_at(&receiver, "/hook").len(), 9 + 3 + 1);
    assert_eq!(bodies_at(&receiver, "/pipeline").len(), 1);
    assert_eq!(bodies_at(&receiver, "/global").len(), 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_bkci_drops_and_repeated_messages_send_nothing_more() {
    let _broker = BROKER.read().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let receiver = Receiver::start().await;
    let (fake, fake_url) = FakeBkci::start().await;
    let vhost = Vhost::new().await;
    // bk-ci declared its exchanges (the publisher plays it): the default, passive, finds them.
    let bus = vhost.publisher().await;
    let server = start_bridged(&db, &vhost, &fake_url, &[("BKCI_AMQP_DECLARE", "passive")]).await;
    register(
        &server,
        "BUILD_START,BUILD_TASK_END",
        &receiver.url("/hook"),
    )
    .await;

    // Types without a callback, VM start/stop atoms, a project nobody registered in, a physical
    // delete, a message without a type: no body, and no lookup either.
    let mut vm = build_message("BUILD_TASK_END", "b-vm", Some("stage-1"), Some("e-vm"));
    vm["atomCode"] = json!("dispatchVMStartupTaskAtom-DOCKER-LINUX");
    let mut elsewhere = build_message("BUILD_START", "b-other", None, None);
    elsewhere["projectId"] = json!("other");
    let mut untyped = build_message("BUILD_START", "b-untyped", None, None);
    untyped.as_object_mut().unwrap().remove("type");
    for message in [
        build_message("BUILD_QUEUE", "b-q", None, None),
        build_message("BUILD_AGENT_START", "b-a", None, None),
        build_message("BUILD_QUALITY", "b-qc", None, None),
        build_message("BUILD_END", "b-unregistered-type", None, None),
        vm,
        elsewhere,
        untyped,
    ] {
        bus.publish(BUILD, &message).await;
    }
    bus.publish(
        "engine.pipeline.delete",
        &json!({"source": "delete_pipeline", "projectId": "demo", "pipelineId": PIPELINE,
                "userId": "alice", "clearUpModel": true}),
    )
    .await;
    // The same message twice (a redelivery, or a producer retry): delivered once.
    let twice = build_message("BUILD_START", "b-twice", None, None);
    bus.publish(BUILD, &twice).await;
    bus.publish(BUILD, &twice).await;
    let sentinel = build_message("BUILD_TASK_END", "b-sentinel", Some("stage-1"), Some("e-1"));
    bus.publish(BUILD, &sentinel).await;
    receiver.wait_for(2, LONG).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let arrived: Vec<Value> = receiver
        .received()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let mut builds: Vec<&str> = arrived
        .iter()
        .map(|b| b["data"]["buildId"].as_str().unwrap())
        .collect();
    builds.sort_unstable();
    assert_eq!(builds, ["b-sentinel", "b-twice"]);
    // Only the delivered builds were looked up (the repeated message once more at most, when it
    // came in a batch of its own: a record is never older than the message it serves).
    let asked = fake.asked();
    assert!(
        (2..=3).contains(&asked.len())
            && asked
                .iter()
                .all(|path| path.contains("b-twice") || path.contains("b-sentinel")),
        "{asked:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrichment_outage_parks_and_the_bridge_recovers() {
    let _broker = BROKER.read().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let receiver = Receiver::start().await;
    let (fake, fake_url) = FakeBkci::start().await;
    let vhost = Vhost::new().await;
    let bus = vhost.publisher().await;
    let server = start_bridged(&db, &vhost, &fake_url, &[]).await;
    register(&server, "BUILD_START", &receiver.url("/hook")).await;

    fake.set_down(true);
    for build in ["b-1", "b-2", "b-3"] {
        bus.publish(BUILD, &build_message("BUILD_START", build, None, None))
            .await;
    }
    // Not what the exchange carries: parked at once, no retries.
    bus.publish_raw(BUILD, b"{not json").await;
    wait_until("four parked messages", LONG, async || {
        vhost.parked().await == 4
    })
    .await;
    // Each build was tried BKCI_ENRICH_ATTEMPTS (3) times.
    assert_eq!(fake.asked().len(), 9);
    assert_eq!(receiver.count(), 0);

    fake.set_down(false);
    bus.publish(BUILD, &build_message("BUILD_START", "b-after", None, None))
        .await;
    receiver.wait_for(1, LONG).await;

    let vars = bridge_vars(&vhost, &fake_url, &[]);
    let output = cli(&db, &as_refs(&vars), &["bus", "replay-parked"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.trim(), "replayed 4, kept 0");
    receiver.wait_for(4, LONG).await;
    // The malformed one is parked again; the three builds arrived once each.
    wait_until("the malformed message parked again", LONG, async || {
        vhost.parked().await == 1
    })
    .await;
    let mut builds: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["data"]["buildId"].to_string())
        .collect();
    builds.sort_unstable();
    assert_eq!(builds, [r#""b-1""#, r#""b-2""#, r#""b-3""#, r#""b-after""#]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_pipeline_is_read_from_bkci_database() {
    let _broker = BROKER.read().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let bkci = BkciDb::new().await;
    // Soft-deleted: renamed with bk-ci's suffix, the deleter as last modifier, updated at
    // 2025-08-21 11:31:02 in Shanghai.
    bkci.execute(
        "INSERT INTO T_PIPELINE_INFO (PIPELINE_ID, PROJECT_ID, PIPELINE_NAME, \
             LAST_MODIFY_USER, UPDATE_TIME, `DELETE`) \
         VALUES ('p-7e1c2b3a4d5e4f60a1b2c3d4e5f60718', 'demo', 'demo-build[250821113102]', \
             'carol', FROM_UNIXTIME(1755747062), b'1')",
    )
    .await;
    let receiver = Receiver::start().await;
    let (_fake, fake_url) = FakeBkci::start().await;
    let vhost = Vhost::new().await;
    let bus = vhost.publisher().await;
    let mysql = bkci.url();
    let server = start_bridged(&db, &vhost, &fake_url, &[("BKCI_MYSQL_URL", &mysql)]).await;
    register(
        &server,
        "DELETE_PIPELINE,UPDATE_PIPELINE",
        &receiver.url("/hook"),
    )
    .await;
    bus.publish(
        "engine.pipeline.delete",
        &json!({"source": "delete_pipeline", "projectId": "demo", "pipelineId": PIPELINE,
                "userId": "carol", "clearUpModel": false, "actionType": "START"}),
    )
    .await;
    let expected = |event: &str| {
        format!(
            r#"{{"event":"{event}","data":{{"pipelineId":"{PIPELINE}","pipelineName":"demo-build[250821113102]","userId":"carol","updateTime":1755747062000,"projectId":"demo"}}}}"#
        )
    };
    assert_eq!(
        arrival(&receiver, "/hook", "DELETE_PIPELINE").await,
        expected("DELETE_PIPELINE")
    );
    // An update of a pipeline the service API no longer shows (deleted meanwhile) is read from
    // the database too, as bk-ci reads it.
    bus.publish(
        "engine.pipeline.update",
        &json!({"source": "update_pipeline", "projectId": "demo", "pipelineId": PIPELINE,
                "userId": "carol", "version": 4}),
    )
    .await;
    assert_eq!(
        arrival(&receiver, "/hook", "UPDATE_PIPELINE").await,
        expected("UPDATE_PIPELINE")
    );
    server.stop().await;
}

/// Distinct build ids among the bodies that arrived, and how many bodies repeated one.
fn builds_arrived(receiver: &Receiver) -> (usize, usize) {
    let mut builds: Vec<String> = receiver
        .received()
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["data"]["buildId"].to_string())
        .collect();
    let total = builds.len();
    builds.sort_unstable();
    builds.dedup();
    (builds.len(), total - builds.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_mid_stream_loses_nothing() {
    // Every other bus test waits: the broker goes down for all of them.
    let _broker = BROKER.write().await;
    let db = TestDb::new(Backend::Sqlite).await;
    let receiver = Receiver::start().await;
    let (_fake, fake_url) = FakeBkci::start().await;
    let vhost = Vhost::new().await;
    let server = start_bridged(&db, &vhost, &fake_url, &[]).await;
    register(&server, "BUILD_START", &receiver.url("/hook")).await;
    let bus = vhost.publisher().await;
    for n in 0..300 {
        bus.publish(
            BUILD,
            &build_message("BUILD_START", &format!("b-{n}"), None, None),
        )
        .await;
    }
    drop(bus);
    tokio::task::spawn_blocking(|| {
        rabbitmqctl(&["stop_app"]);
        std::thread::sleep(Duration::from_secs(1));
        rabbitmqctl(&["start_app"]);
        rabbitmqctl(&["await_startup"]);
    })
    .await
    .unwrap();
    let bus = vhost.publisher().await;
    vhost.wait_for_bridge().await;
    for n in 300..400 {
        bus.publish(
            BUILD,
            &build_message("BUILD_START", &format!("b-{n}"), None, None),
        )
        .await;
    }
    wait_until("all 400 builds at the receiver", LONG, async || {
        builds_arrived(&receiver).0 == 400
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(builds_arrived(&receiver), (400, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_kill_9_mid_stream_lose_nothing() {
    const MESSAGES: usize = 1500;
    let _broker = BROKER.read().await;
    let db = TestDb::new(Backend::Postgres).await;
    let receiver = Receiver::start().await;
    let (fake, fake_url) = FakeBkci::start().await;
    // About 200 builds a second, so a stream of hundreds lasts seconds.
    fake.set_pace(Duration::from_millis(5));
    let vhost = Vhost::new().await;
    let bus = vhost.publisher().await;
    let logs = tempfile::tempdir().unwrap();
    let mut vars = bridge_vars(&vhost, &fake_url, &[]);
    vars.extend(
        crate::common::DELIVERY_VARS
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
    );
    let vars = as_refs(&vars);
    let mut server = ServerProcess::start(&db, logs.path(), "first", &vars).await;
    vhost.wait_for_bridge().await;
    server
        .register_event("BUILD_START", &receiver.url("/hook"))
        .await;
    let publish = async |range: std::ops::Range<usize>| {
        for n in range {
            bus.publish(
                BUILD,
                &build_message("BUILD_START", &format!("b-{n}"), None, None),
            )
            .await;
        }
    };
    let third = MESSAGES / 3;
    publish(0..third).await;

    // SIGTERM mid-stream: it stops consuming, finishes what it holds, hands back the rest.
    wait_until("some deliveries", LONG, async || receiver.count() >= 50).await;
    let pid = server.child.id().expect("running").to_string();
    let signalled = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(signalled.success());
    let status = tokio::time::timeout(Duration::from_secs(30), server.child.wait())
        .await
        .expect("a stopping server exits")
        .unwrap();
    assert!(status.success(), "a graceful stop exits 0: {status:?}");
    // Published while no bridge runs: they wait in our queue.
    publish(third..2 * third).await;

    // kill -9 mid-stream: the messages it held unacked come back from the broker.
    let mut server = ServerProcess::start(&db, logs.path(), "second", &vars).await;
    let seen = receiver.count();
    wait_until("more deliveries", LONG, async || {
        receiver.count() >= seen + 50
    })
    .await;
    server.child.start_kill().unwrap();
    server.child.wait().await.unwrap();
    let at_kill = builds_arrived(&receiver).0;
    assert!(
        at_kill < 2 * third,
        "the kill came mid-stream ({at_kill} arrived)"
    );
    publish(2 * third..MESSAGES).await;

    let _third = ServerProcess::start(&db, logs.path(), "third", &vars).await;
    wait_until("every build at the receiver", LONG, async || {
        builds_arrived(&receiver).0 == MESSAGES
    })
    .await;
    let (_, duplicates) = builds_arrived(&receiver);
    eprintln!(
        "bus: SIGTERM, then kill -9 after {at_kill} of {MESSAGES}: all arrived, {duplicates} duplicate(s)"
    );
    assert_eq!(vhost.parked().await, 0);
}
