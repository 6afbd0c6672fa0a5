//! A real HTTP (or HTTPS) receiver on 127.0.0.1:0 that records what it is sent and answers as
//! scripted.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::serve::Listener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;

use crate::common::TestCa;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: std::time::Instant,
    /// The status it was answered with; `None` for `Answer::Hang` (never answered).
    pub status: Option<u16>,
}

impl Received {
    /// A header's value; a missing or empty header fails the test (so two missing values
    /// never compare equal).
    #[track_caller]
    pub fn header(&self, name: &str) -> &str {
        let value = self
            .headers
            .get(name)
            .unwrap_or_else(|| panic!("{} arrived without {name}", self.path))
            .to_str()
            .unwrap();
        assert!(
            !value.is_empty(),
            "{} arrived with an empty {name}",
            self.path
        );
        value
    }
}

/// How the receiver answers a path.
#[derive(Debug, Clone)]
pub enum Answer {
    Status(u16),
    /// A 302 to another path of the receiver.
    Redirect(String),
    /// Waits this long, then answers 200 (or is cut off by the sender's timeout).
    Slow(Duration),
    /// A status with a `Retry-After` header.
    RetryAfter(u16, String),
    /// A status with these exact body bytes (NUL, invalid UTF-8, …).
    Body(u16, Vec<u8>),
    /// Waits this long, then answers this status.
    Late(Duration, u16),
    /// Never answers (the sender's timeout, or its end, cuts it off).
    Hang,
}

impl Answer {
    /// The status this answer sends, if it sends one.
    fn status(&self) -> Option<u16> {
        match self {
            Self::Status(code)
            | Self::RetryAfter(code, _)
            | Self::Body(code, _)
            | Self::Late(_, code) => Some(*code),
            Self::Redirect(_) => Some(302),
            Self::Slow(_) => Some(200),
            Self::Hang => None,
        }
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    scripts: HashMap<String, VecDeque<Answer>>,
    /// The answer once a path's script is used up (200 when unset).
    default: Option<Answer>,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    scheme: &'static str,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, "http")
    }

    /// The receiver over HTTPS, presenting `ca`'s receiver certificate.
    pub async fn start_https(ca: &TestCa) -> Self {
        let tls = ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(ca.chain.clone(), ca.key.clone_key())
        .unwrap();
        let listener = TlsListener {
            tcp: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            acceptor: TlsAcceptor::from(Arc::new(tls)),
        };
        Self::serve(listener, "https")
    }

    fn serve<L: Listener<Addr = SocketAddr>>(listener: L, scheme: &'static str) -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().fallback(receive).with_state(inner.clone());
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            addr,
            scheme,
            inner,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// The next answers for `path`, in order; after them, 200.
    pub fn script(&self, path: &str, answers: Vec<Answer>) {
        self.inner
            .lock()
            .unwrap()
            .scripts
            .insert(path.to_owned(), answers.into());
    }

    /// How every request is answered once its path's script is used up.
    pub fn answer_by_default(&self, answer: Answer) {
        self.inner.lock().unwrap().default = Some(answer);
    }

    /// Distinct `X-DEVOPS-WEBHOOK-UNIQUE-ID`s seen, and how many requests repeated one.
    pub fn distinct_and_duplicates(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap();
        let mut ids: Vec<&str> = inner
            .received
            .iter()
            .map(|r| r.header("x-devops-webhook-unique-id"))
            .collect();
        let total = ids.len();
        ids.sort_unstable();
        ids.dedup();
        (ids.len(), total - ids.len())
    }

    /// How many times each `X-DEVOPS-WEBHOOK-UNIQUE-ID` was answered with a 2xx.
    pub fn delivered(&self) -> HashMap<String, usize> {
        let inner = self.inner.lock().unwrap();
        let mut counts = HashMap::new();
        for request in &inner.received {
            if request
                .status
                .is_some_and(|code| (200..300).contains(&code))
            {
                let id = request.header("x-devops-webhook-unique-id").to_owned();
                *counts.entry(id).or_default() += 1;
            }
        }
        counts
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap().received.clone()
    }

    pub fn count(&self) -> usize {
        self.inner.lock().unwrap().received.len()
    }

    /// Waits until at least `n` requests arrived, failing the test after `limit`.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "receiver got {} requests, expected {n} within {limit:?}",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Accepts TCP connections and completes their TLS handshake. A client that refuses the
/// certificate ends its handshake with an alert; the listener goes on to the next connection.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
}

impl Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = Listener::accept(&mut self.tcp).await;
            let handshake = self.acceptor.accept(tcp);
            if let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), handshake).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let answer = {
        let mut inner = inner.lock().unwrap();
        let scripted = inner.scripts.get_mut(&path).and_then(VecDeque::pop_front);
        let answer = scripted
            .or_else(|| inner.default.clone())
            .unwrap_or(Answer::Status(200));
        inner.received.push(Received {
            path: path.clone(),
            headers,
            body,
            at: std::time::Instant::now(),
            status: answer.status(),
        });
        answer
    };
    match answer {
        Answer::Hang => std::future::pending().await,
        Answer::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            format!("answered {code}"),
        )
            .into_response(),
        Answer::Redirect(to) => (StatusCode::FOUND, [("location", to)], "moved").into_response(),
        Answer::RetryAfter(code, after) => (
            StatusCode::from_u16(code).unwrap(),
            [("retry-after", after)],
            "later",
        )
            .into_response(),
        Answer::Late(delay, code) => {
            tokio::time::sleep(delay).await;
            (StatusCode::from_u16(code).unwrap(), "late").into_response()
        }
        Answer::Body(code, bytes) => (StatusCode::from_u16(code).unwrap(), bytes).into_response(),
        Answer::Slow(delay) => {
            tokio::time::sleep(delay).await;
            "slow ok".into_response()
        }
    }
}
