//! Configuration from the environment, read once at start into one typed struct.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use crate::secrets::{Secret, SecretKey};

/// bk-ci's default list of "high-risk" ports (`project.callback.black-ports`).
pub const DEFAULT_BLOCKED_PORTS: &[u16] = &[
    21, 22, 23, 25, 69, 135, 137, 138, 139, 161, 162, 389, 465, 514, 587, 636, 873, 1099, 2181,
    2375, 2376, 3306, 3389, 4848, 5432, 5900, 5901, 6379, 7001, 7002, 9200, 9300, 10050, 10051,
    10250, 10255, 11211, 27017, 36000, 50070, 50075, 56000,
];

pub const DEFAULT_DATABASE_URL: &str = "sqlite://devops-callbacks.db";

pub const DEFAULT_RETRY_SCHEDULE: &str = "5s,30s,2m,10m,30m,1h,3h";

/// The log filter when `RUST_LOG` is unset: one line per request and per failed delivery
/// attempt, the start line, warnings and errors.
pub const DEFAULT_LOG_FILTER: &str = "devops_callbacks=info,tower_http=info";

/// One environment variable the service reads.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    pub name: &'static str,
    pub default: VariableDefault,
    pub meaning: &'static str,
}

/// What an unset variable means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VariableDefault {
    /// Unset is a state of its own (no token, no key file, …).
    Unset,
    /// Unset is this value, exactly as it could be written.
    Value(&'static str),
    /// Unset is what this says (it cannot be written as one value).
    Described(&'static str),
}

/// Every variable of the configuration, in the order of `.env.example`: the one list that
/// `--help` prints and that tests hold `Config::from_env`, `.env.example` and the README to.
pub const VARIABLES: &[Variable] = {
    use VariableDefault::{Described, Unset, Value};
    const fn var(name: &'static str, default: VariableDefault, meaning: &'static str) -> Variable {
        Variable {
            name,
            default,
            meaning,
        }
    }
    &[
        var(
            "DATABASE_URL",
            Value(DEFAULT_DATABASE_URL),
            "postgres://user:password@host:5432/db, or sqlite://FILE (created if missing)",
        ),
        var(
            "DATABASE_MAX_CONNECTIONS",
            Value("32"),
            "database pool size (SQLite uses at most 8)",
        ),
        var(
            "LISTEN_ADDR",
            Value("127.0.0.1:8080"),
            "IP:port the HTTP API listens on",
        ),
        var(
            "LOG_FORMAT",
            Value("text"),
            "text or json, written to stderr",
        ),
        var(
            "RUST_LOG",
            Value(DEFAULT_LOG_FILTER),
            "which log lines are written",
        ),
        var(
            "SERVICE_TOKEN",
            Unset,
            "secret of the /op and /service routes (X-DEVOPS-BK-TOKEN); unset: they answer 503",
        ),
        var(
            "CALLBACK_ALLOWED_CIDRS",
            Value(""),
            "CIDRs or addresses callbacks may reach although private or local, e.g. 127.0.0.0/8,10.1.2.3",
        ),
        var(
            "CALLBACK_ALLOWLIST_ONLY",
            Value("false"),
            "true: callbacks may reach only CALLBACK_ALLOWED_CIDRS",
        ),
        var(
            "CALLBACK_BLOCKED_PORTS",
            Described("bk-ci's list of high-risk ports"),
            "ports callback URLs may not use, comma-separated (empty: none)",
        ),
        var(
            "TIME_ZONE",
            Value("Asia/Shanghai"),
            "IANA zone of the history API's local times and of failureTime",
        ),
        var(
            "AUTH_MODE",
            Value("local"),
            "who decides permissions: local (the project_members table) or bkci (the bk-ci auth service)",
        ),
        var(
            "BKCI_AUTH_URL",
            Unset,
            "with AUTH_MODE=bkci, required: the auth service's base URL",
        ),
        var(
            "BKCI_AUTH_TOKEN",
            Unset,
            "with AUTH_MODE=bkci, required: sent to it as X-DEVOPS-BK-TOKEN",
        ),
        var(
            "BKCI_AUTH_TIMEOUT_MS",
            Value("3000"),
            "with AUTH_MODE=bkci: milliseconds a permission question may take (then 503)",
        ),
        var(
            "AUTH_CACHE_TTL_SECS",
            Described("5 with local, 30 with bkci"),
            "seconds a permission decision is reused (0: off)",
        ),
        var(
            "APIGW_PUBLIC_KEY_FILE",
            Unset,
            "PEM RSA public key of the API gateway; set: X-Bkapi-JWT is required on the v4 routes",
        ),
        var(
            "SECRET_ENCRYPTION_KEY",
            Unset,
            "32 bytes, base64: encrypts callback tokens at rest",
        ),
        var(
            "REQUEST_TIMEOUT_SECS",
            Value("30"),
            "seconds a request may take (then 503)",
        ),
        var(
            "MAX_BODY_BYTES",
            Value("16777216"),
            "largest request body (then 413)",
        ),
        var(
            "MAX_URI_BYTES",
            Value("8192"),
            "longest path and query (then 414)",
        ),
        var(
            "MAX_HEADER_BYTES",
            Value("32768"),
            "most bytes of request headers (then 431)",
        ),
        var(
            "HEADER_READ_TIMEOUT_MS",
            Value("10000"),
            "a connection that completes no request's headers for this long is closed",
        ),
        var(
            "MAX_CONNECTIONS",
            Value("1024"),
            "client connections open at once (more wait)",
        ),
        var(
            "DELIVERY_CONCURRENCY",
            Value("64"),
            "delivery attempts in flight in this process",
        ),
        var(
            "DELIVERY_MAX_IN_FLIGHT_PER_HOST",
            Value("16"),
            "delivery attempts in flight to one host",
        ),
        var(
            "DELIVERY_TIMEOUT_MS",
            Value("10000"),
            "milliseconds one delivery attempt may take",
        ),
        var(
            "DELIVERY_SUCCESS",
            Value("2xx"),
            "what counts as delivered: 2xx, or any-response (as bk-ci)",
        ),
        var(
            "DELIVERY_CA_FILE",
            Unset,
            "PEM file of extra root certificates trusted for receivers",
        ),
        var(
            "DELIVERY_TLS_VERIFY",
            Value("true"),
            "false: trust any receiver certificate (as bk-ci; warned at start)",
        ),
        var(
            "DELIVERY_RETRY_SCHEDULE",
            Value(DEFAULT_RETRY_SCHEDULE),
            "delays between attempts (ms, s, m, h; none: no retries)",
        ),
        var(
            "DELIVERY_LEASE_SECS",
            Value("60"),
            "seconds a claimed delivery is reserved; more than DELIVERY_TIMEOUT_MS",
        ),
        var(
            "DELIVERY_POLL_MS",
            Value("1000"),
            "backstop poll for due deliveries",
        ),
        var(
            "CALLBACK_DISABLE_AFTER",
            Value("12h"),
            "a callback failing without a success this long is disabled",
        ),
        var(
            "SHUTDOWN_GRACE_SECS",
            Value("20"),
            "seconds a stopping process lets attempts in flight finish",
        ),
        var(
            "RECOVER_BATCH_SIZE",
            Value("500"),
            "deliveries a recovery job re-queues per batch",
        ),
        var(
            "HISTORY_RETENTION_DAYS",
            Value("30"),
            "history and finished deliveries older than this are deleted",
        ),
        var(
            "RETENTION_SWEEP_SECS",
            Value("300"),
            "how often the retention sweep runs",
        ),
        var(
            "BKCI_AMQP_URL",
            Unset,
            "bk-ci's RabbitMQ, amqp(s)://; set: the bus bridge runs",
        ),
        var(
            "BKCI_AMQP_QUEUE_PREFIX",
            Value("devops-callbacks"),
            "names the bridge's queues: <exchange>.<prefix> and <prefix>.parked",
        ),
        var(
            "BKCI_AMQP_DECLARE",
            Value("passive"),
            "passive (bk-ci's exchanges must exist), topic or delayed (declare them)",
        ),
        var(
            "BKCI_AMQP_PREFETCH",
            Value("200"),
            "most unacknowledged messages per queue",
        ),
        var(
            "BKCI_SERVICE_URL",
            Unset,
            "with BKCI_AMQP_URL, required: bk-ci's gateway base for the bridge's lookups",
        ),
        var(
            "BKCI_SERVICE_USER",
            Unset,
            "with BKCI_AMQP_URL, required: X-DEVOPS-UID of the build-record lookup",
        ),
        var(
            "BKCI_MYSQL_URL",
            Unset,
            "bk-ci's process database, for DELETE_PIPELINE (and import-bkci)",
        ),
        var(
            "BKCI_LOOKUP_TIMEOUT_MS",
            Value("5000"),
            "milliseconds one bridge lookup may take",
        ),
        var(
            "BKCI_ENRICH_ATTEMPTS",
            Value("5"),
            "tries of a message's lookups before it is parked",
        ),
        var(
            "BKCI_ENRICH_BACKOFF_MS",
            Value("1000"),
            "milliseconds of the first wait between tries; doubles, up to 30 s",
        ),
    ]
};

/// The variables for `--help`: `NAME=default` (or why there is none) and what it means.
pub fn variables_help() -> String {
    let mut help = String::from(
        "Configuration comes from the environment. In development a .env file is read too (from \
         the working directory or the nearest parent that has one; variables already set win, \
         and a line that does not parse stops the start). Every variable may be left unset, \
         unless another one says it is required:\n",
    );
    for variable in VARIABLES {
        let first = match variable.default {
            VariableDefault::Value(value) => format!("{}={value}", variable.name),
            VariableDefault::Unset => format!("{} (unset)", variable.name),
            VariableDefault::Described(what) => format!("{} (default: {what})", variable.name),
        };
        help.push_str(&format!("\n  {first}\n          {}\n", variable.meaning));
    }
    help
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("`{other}` is not one of: text, json")),
        }
    }
}

/// Which answers count as a delivery (`DELIVERY_SUCCESS`). A transport error, a timeout and a
/// redirect (never followed) are failures under either rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuccessRule {
    /// `2xx` (the default): a 2xx status.
    Status2xx,
    /// `any-response`: any status the receiver answers, as bk-ci counts them.
    AnyResponse,
}

impl FromStr for SuccessRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "2xx" => Ok(Self::Status2xx),
            "any-response" => Ok(Self::AnyResponse),
            other => Err(format!("`{other}` is not one of: 2xx, any-response")),
        }
    }
}

/// Who decides permissions (`AUTH_MODE`).
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// The `project_members` table (the default).
    Local,
    /// The bk-ci auth service.
    BkCi(BkCiAuthConfig),
}

impl fmt::Display for AuthMode {
    /// As the start line shows it: `local`, or `bkci` and the service's URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local => f.write_str("local"),
            Self::BkCi(service) => {
                let mut url = service.url.clone();
                let _ = url.set_password(None);
                write!(f, "bkci ({url})")
            }
        }
    }
}

/// Where and how to ask the bk-ci auth service.
#[derive(Debug, Clone)]
pub struct BkCiAuthConfig {
    /// `BKCI_AUTH_URL`: the service's base URL, http(s).
    pub url: url::Url,
    /// `BKCI_AUTH_TOKEN`, sent as `X-DEVOPS-BK-TOKEN`.
    pub token: Secret,
    /// `BKCI_AUTH_TIMEOUT_MS`: longest a question may take before the request answers 503.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `postgres://…` or `sqlite://…`.
    pub database_url: String,
    pub database_max_connections: u32,
    pub listen_addr: SocketAddr,
    pub log_format: LogFormat,
    /// Guards `/op/…` and `/service/…`; those routes answer 503 while it is unset.
    pub service_token: Option<Secret>,
    /// Ranges the SSRF guard lets through although they are private or local.
    pub allowed_cidrs: Vec<IpNet>,
    /// When set, callbacks may reach only `allowed_cidrs`, public addresses included: for closed
    /// networks, and for contract tests that must never send traffic off the machine.
    pub allowlist_only: bool,
    pub blocked_ports: Vec<u16>,
    /// Zone for the `yyyy-MM-dd HH:mm:ss` times of the history API.
    pub time_zone: chrono_tz::Tz,
    pub auth_mode: AuthMode,
    /// How long a permission decision may be reused (0 disables the cache); refusals are kept
    /// for a fifth of it.
    pub auth_cache_ttl: Duration,
    /// The file of the API gateway's public key (read and checked by `auth::gateway` at start);
    /// when set, `/{apigwType}/…` requests need a valid `X-Bkapi-JWT`. Unset: `X-DEVOPS-UID` is
    /// trusted as sent.
    pub apigw_public_key_file: Option<PathBuf>,
    /// Seals callback tokens at rest; unset: they are stored as sent.
    pub secret_encryption_key: Option<SecretKey>,
    pub request_timeout: Duration,
    /// A connection that completes no request's headers for this long (silent, idle between
    /// requests, or dripping its headers) is closed.
    pub header_read_timeout: Duration,
    /// Most client connections open at once; more wait in the listen backlog.
    pub max_connections: usize,
    pub max_body_bytes: usize,
    /// Longest request target (path and query); longer is a 414.
    pub max_uri_bytes: usize,
    /// Most bytes of request headers (names and values); more is a 431.
    pub max_header_bytes: usize,
    /// Attempts in flight at once in this process.
    pub delivery_concurrency: usize,
    pub delivery_timeout: Duration,
    /// Which receivers' answers count as a delivery.
    pub delivery_success: SuccessRule,
    /// A PEM file of root certificates trusted for receivers besides the default ones (read and
    /// checked by `delivery::sender` at start).
    pub delivery_ca_file: Option<PathBuf>,
    /// `false` trusts any certificate a receiver presents.
    pub delivery_tls_verify: bool,
    /// The delays between attempts: one retry per entry; empty (`none`): no retries.
    pub retry_schedule: Vec<Duration>,
    /// How long a claimed delivery stays reserved for this process; after that (a crash)
    /// another worker may take it. Longer than `delivery_timeout`.
    pub delivery_lease: Duration,
    /// The backstop poll for due deliveries when no wake-up arrives.
    pub delivery_poll: Duration,
    /// How long a stopping process lets attempts in flight finish.
    pub shutdown_grace: Duration,
    /// Most attempts in flight to one host in this process, so a slow host cannot take every slot.
    pub max_in_flight_per_host: usize,
    /// A callback failing without a success for this long is disabled.
    pub callback_disable_after: Duration,
    /// History and finished deliveries older than this are deleted.
    pub history_retention: Duration,
    /// How often the retention sweep runs.
    pub retention_sweep: Duration,
    /// Deliveries a recovery job re-queues per batch; it queues the next batch once fewer than
    /// this many of its deliveries wait for their attempt.
    pub recover_batch_size: u32,
    /// The bk-ci bus bridge; `None` (no `BKCI_AMQP_URL`): events come only through the intake API.
    pub bridge: Option<BridgeConfig>,
}

/// How the bridge treats bk-ci's exchanges (`BKCI_AMQP_DECLARE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeclareMode {
    /// `passive` (the default): they must exist (bk-ci declares them when it starts).
    Passive,
    /// `topic`: declared as plain topic exchanges, for brokers without the delayed-message plugin.
    Topic,
    /// `delayed`: declared exactly as bk-ci does (`x-delayed-message`, `x-delayed-type: topic`).
    Delayed,
}

impl FromStr for DeclareMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "passive" => Ok(Self::Passive),
            "topic" => Ok(Self::Topic),
            "delayed" => Ok(Self::Delayed),
            other => Err(format!("`{other}` is not one of: passive, topic, delayed")),
        }
    }
}

/// Where the bridge reads bk-ci's bus and asks bk-ci about builds, pipelines and projects.
#[derive(Debug, Clone)]
pub struct BridgeConfig {
    /// `BKCI_AMQP_URL`: the broker, with its credentials.
    pub amqp_url: Secret,
    /// `BKCI_AMQP_QUEUE_PREFIX`: names our own queues, `<exchange>.<prefix>` and `<prefix>.parked`.
    pub queue_prefix: String,
    pub declare: DeclareMode,
    /// `BKCI_AMQP_PREFETCH`: most unacknowledged messages per queue.
    pub prefetch: u16,
    /// `BKCI_SERVICE_URL`: bk-ci's gateway, where `/ms/process/api/service/…` and
    /// `/ms/project/api/service/…` answer.
    pub service_url: url::Url,
    /// `BKCI_SERVICE_USER`: the `X-DEVOPS-UID` of the build-record lookup (it needs VIEW on
    /// every pipeline; its language picks the `trigger` label's).
    pub service_user: String,
    /// `BKCI_MYSQL_URL`: bk-ci's process database, for deleted pipelines.
    pub mysql_url: Option<Secret>,
    /// `BKCI_LOOKUP_TIMEOUT_MS`: longest one lookup may take.
    pub lookup_timeout: Duration,
    /// `BKCI_ENRICH_ATTEMPTS`: lookups tried this many times before the message is parked.
    pub enrich_attempts: u32,
    /// `BKCI_ENRICH_BACKOFF_MS`: the first wait between tries; it doubles, up to 30 s.
    pub enrich_backoff: Duration,
}

/// A variable that is set but cannot be used; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("invalid environment variable {name}={value:?}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    /// For secrets: the message keeps the reason but not the value.
    fn redacted(mut self) -> Self {
        if !self.value.is_empty() {
            self.value = "***".to_owned();
        }
        self
    }
}

/// A `.env` file that cannot be read, or a line of it that does not parse. Values are never
/// shown: a `.env` holds secrets.
#[derive(Debug, thiserror::Error)]
pub enum DotenvError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} line {line}: {problem}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

/// Reads `.env` from the working directory or the nearest parent that has one (as dotenvy
/// looks for it) into the environment, keeping variables already set. The whole file is checked
/// first: a line that does not parse stops the start, naming its number, and sets nothing.
pub fn load_dotenv() -> Result<Option<PathBuf>, DotenvError> {
    let Some(path) = std::env::current_dir().ok().and_then(|dir| {
        dir.ancestors()
            .map(|d| d.join(".env"))
            .find(|p| p.is_file())
    }) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| DotenvError::Read {
        path: path.clone(),
        source,
    })?;
    if let Some((line, problem)) = first_bad_line(&text) {
        return Err(DotenvError::Line {
            path,
            line,
            problem,
        });
    }
    dotenvy::from_read(text.as_bytes()).map_err(|e| DotenvError::Read {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    Ok(Some(path))
}

/// The number (from 1) of the first line of a `.env` text that dotenvy cannot parse, and what
/// is wrong with it. dotenvy names the failing line's text and a position in it, not its
/// number, so the line is found as the end of the shortest prefix of the file that fails the
/// same way (a quoted value may span lines).
fn first_bad_line(text: &str) -> Option<(usize, String)> {
    let failure = parse_failure(text)?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut end = 0;
    let last = lines.iter().position(|line| {
        end += line.len();
        parse_failure(&text[..end]).as_ref() == Some(&failure)
    })?;
    let (content, index) = failure;
    let number = if index >= content.chars().count() {
        // A quote never closed: the line where it opened.
        last - content.trim_end_matches('\n').matches('\n').count()
    } else {
        last - content.chars().skip(index).filter(|&c| c == '\n').count()
    };
    Some((number + 1, line_problem(lines[number])))
}

/// dotenvy's first parse error in `text`: the failing line's text and a position in it.
fn parse_failure(text: &str) -> Option<(String, usize)> {
    dotenvy::from_read_iter(text.as_bytes()).find_map(|item| match item {
        Err(dotenvy::Error::LineParse(content, index)) => Some((content, index)),
        _ => None,
    })
}

/// What is wrong with a line that does not parse, naming its variable but not its value.
fn line_problem(line: &str) -> String {
    let key = line
        .split_once('=')
        .map(|(key, _)| key.trim().trim_start_matches("export ").trim())
        .filter(|key| {
            key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        });
    match key {
        Some(key) => format!(
            "the value of {key} does not parse (quote a value that holds spaces, quotes or #, \
             and close every quote)"
        ),
        None => "expected NAME=value, a comment (#) or an empty line".to_owned(),
    }
}

impl Config {
    /// Reads the process environment (call `load_dotenv()` first in development).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads from an explicit map, for tests and embedding.
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| vars.get(name).cloned())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(&lookup);
        let auth_mode = match vars.parsed("AUTH_MODE", AuthModeName::Local)? {
            AuthModeName::Local => AuthMode::Local,
            AuthModeName::BkCi => AuthMode::BkCi(BkCiAuthConfig {
                url: vars
                    .required::<HttpUrl>("BKCI_AUTH_URL", "AUTH_MODE=bkci")?
                    .0,
                token: vars
                    .required::<BkCiToken>("BKCI_AUTH_TOKEN", "AUTH_MODE=bkci")
                    .map_err(ConfigError::redacted)?
                    .0,
                timeout: vars.millis("BKCI_AUTH_TIMEOUT_MS", 3_000)?,
            }),
        };
        // bk-ci answers over the network, so its decisions are kept longer by default.
        let default_ttl = match auth_mode {
            AuthMode::Local => 5,
            AuthMode::BkCi(_) => 30,
        };
        Self {
            database_url: vars
                .raw("DATABASE_URL")
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            database_max_connections: vars.whole(
                "DATABASE_MAX_CONNECTIONS",
                32,
                Unit::Of("connections"),
            )?,
            listen_addr: vars
                .parsed(
                    "LISTEN_ADDR",
                    IpPort(SocketAddr::from(([127, 0, 0, 1], 8080))),
                )?
                .0,
            log_format: vars.parsed("LOG_FORMAT", LogFormat::Text)?,
            service_token: vars.raw("SERVICE_TOKEN").map(Secret::new),
            allowed_cidrs: vars
                .list("CALLBACK_ALLOWED_CIDRS", Vec::new())?
                .into_iter()
                .map(|Cidr(net)| net)
                .collect(),
            allowlist_only: vars.parsed("CALLBACK_ALLOWLIST_ONLY", false)?,
            blocked_ports: vars
                .list(
                    "CALLBACK_BLOCKED_PORTS",
                    DEFAULT_BLOCKED_PORTS.iter().map(|&p| Port(p)).collect(),
                )?
                .into_iter()
                .map(|Port(port)| port)
                .collect(),
            time_zone: vars.parsed("TIME_ZONE", Zone(chrono_tz::Asia::Shanghai))?.0,
            auth_mode,
            auth_cache_ttl: vars.secs("AUTH_CACHE_TTL_SECS", default_ttl)?,
            apigw_public_key_file: vars
                .raw("APIGW_PUBLIC_KEY_FILE")
                .map(|path| parse_value("APIGW_PUBLIC_KEY_FILE", path))
                .transpose()?,
            secret_encryption_key: vars
                .raw("SECRET_ENCRYPTION_KEY")
                .map(|value| parse_value("SECRET_ENCRYPTION_KEY", value))
                .transpose()
                .map_err(ConfigError::redacted)?,
            request_timeout: vars.secs("REQUEST_TIMEOUT_SECS", 30)?,
            header_read_timeout: vars.millis("HEADER_READ_TIMEOUT_MS", 10_000)?,
            max_connections: vars.whole("MAX_CONNECTIONS", 1024, Unit::Of("connections"))?,
            max_body_bytes: vars.whole("MAX_BODY_BYTES", 16 * 1024 * 1024, Unit::Of("bytes"))?,
            max_uri_bytes: vars.whole("MAX_URI_BYTES", 8 * 1024, Unit::Of("bytes"))?,
            max_header_bytes: vars.whole("MAX_HEADER_BYTES", 32 * 1024, Unit::Of("bytes"))?,
            delivery_concurrency: vars.whole("DELIVERY_CONCURRENCY", 64, Unit::Of("attempts"))?,
            delivery_timeout: vars.millis("DELIVERY_TIMEOUT_MS", 10_000)?,
            delivery_success: vars.parsed("DELIVERY_SUCCESS", SuccessRule::Status2xx)?,
            delivery_ca_file: vars
                .raw("DELIVERY_CA_FILE")
                .map(|path| parse_value("DELIVERY_CA_FILE", path))
                .transpose()?,
            delivery_tls_verify: vars.parsed("DELIVERY_TLS_VERIFY", true)?,
            retry_schedule: vars
                .parsed("DELIVERY_RETRY_SCHEDULE", RetryDelays::default())?
                .0,
            delivery_lease: vars.secs("DELIVERY_LEASE_SECS", 60)?,
            delivery_poll: vars.millis("DELIVERY_POLL_MS", 1_000)?,
            shutdown_grace: vars.secs("SHUTDOWN_GRACE_SECS", 20)?,
            max_in_flight_per_host: vars.whole(
                "DELIVERY_MAX_IN_FLIGHT_PER_HOST",
                16,
                Unit::Of("attempts"),
            )?,
            callback_disable_after: vars
                .parsed(
                    "CALLBACK_DISABLE_AFTER",
                    HumanDuration(Duration::from_secs(12 * 3600)),
                )?
                .0,
            history_retention: Duration::from_secs(
                vars.whole::<u64>("HISTORY_RETENTION_DAYS", 30, Unit::Of("days"))?
                    .saturating_mul(86_400),
            ),
            retention_sweep: vars.secs("RETENTION_SWEEP_SECS", 300)?,
            recover_batch_size: vars.whole("RECOVER_BATCH_SIZE", 500, Unit::Of("deliveries"))?,
            bridge: bridge_config(&vars)?,
        }
        .validated()
    }

    /// Rules between variables.
    fn validated(self) -> Result<Self, ConfigError> {
        let bkci_timeout_zero =
            matches!(&self.auth_mode, AuthMode::BkCi(service) if service.timeout.is_zero());
        let zeros = [
            ("DELIVERY_CONCURRENCY", self.delivery_concurrency == 0),
            ("DELIVERY_TIMEOUT_MS", self.delivery_timeout.is_zero()),
            (
                "DELIVERY_MAX_IN_FLIGHT_PER_HOST",
                self.max_in_flight_per_host == 0,
            ),
            ("RETENTION_SWEEP_SECS", self.retention_sweep.is_zero()),
            ("DELIVERY_POLL_MS", self.delivery_poll.is_zero()),
            ("BKCI_AUTH_TIMEOUT_MS", bkci_timeout_zero),
            ("MAX_URI_BYTES", self.max_uri_bytes == 0),
            ("MAX_HEADER_BYTES", self.max_header_bytes == 0),
            ("HEADER_READ_TIMEOUT_MS", self.header_read_timeout.is_zero()),
            ("MAX_CONNECTIONS", self.max_connections == 0),
            ("RECOVER_BATCH_SIZE", self.recover_batch_size == 0),
        ];
        if let Some(&(name, _)) = zeros.iter().find(|(_, zero)| *zero) {
            return Err(ConfigError {
                name,
                value: "0".to_owned(),
                reason: "must be at least 1".to_owned(),
            });
        }
        if self.delivery_lease <= self.delivery_timeout + Duration::from_secs(1) {
            return Err(ConfigError {
                name: "DELIVERY_LEASE_SECS",
                value: self.delivery_lease.as_secs().to_string(),
                reason: "must exceed DELIVERY_TIMEOUT_MS by more than a second, or a slow \
                         attempt could be sent twice"
                    .to_owned(),
            });
        }
        Ok(self)
    }
}

/// The bridge's settings, when `BKCI_AMQP_URL` is set.
fn bridge_config<F: Fn(&str) -> Option<String>>(
    vars: &Vars<'_, F>,
) -> Result<Option<BridgeConfig>, ConfigError> {
    let Some(amqp_url) = vars.raw("BKCI_AMQP_URL") else {
        return Ok(None);
    };
    let amqp_url = parse_value::<AmqpUrl>("BKCI_AMQP_URL", amqp_url)
        .map_err(ConfigError::redacted)?
        .0;
    let queue_prefix: QueuePrefix =
        vars.parsed("BKCI_AMQP_QUEUE_PREFIX", QueuePrefix::default())?;
    let config = BridgeConfig {
        amqp_url,
        queue_prefix: queue_prefix.0,
        declare: vars.parsed("BKCI_AMQP_DECLARE", DeclareMode::Passive)?,
        prefetch: vars.whole("BKCI_AMQP_PREFETCH", 200, Unit::Of("messages"))?,
        service_url: vars
            .required::<HttpUrl>("BKCI_SERVICE_URL", "BKCI_AMQP_URL")?
            .0,
        service_user: vars
            .required::<ServiceUser>("BKCI_SERVICE_USER", "BKCI_AMQP_URL")?
            .0,
        mysql_url: vars.raw("BKCI_MYSQL_URL").map(Secret::new),
        lookup_timeout: vars.millis("BKCI_LOOKUP_TIMEOUT_MS", 5_000)?,
        enrich_attempts: vars.whole("BKCI_ENRICH_ATTEMPTS", 5, Unit::Of("tries"))?,
        enrich_backoff: vars.millis("BKCI_ENRICH_BACKOFF_MS", 1_000)?,
    };
    let zeros = [
        ("BKCI_AMQP_PREFETCH", config.prefetch == 0),
        ("BKCI_LOOKUP_TIMEOUT_MS", config.lookup_timeout.is_zero()),
        ("BKCI_ENRICH_ATTEMPTS", config.enrich_attempts == 0),
    ];
    if let Some(&(name, _)) = zeros.iter().find(|(_, zero)| *zero) {
        return Err(ConfigError {
            name,
            value: "0".to_owned(),
            reason: "must be at least 1".to_owned(),
        });
    }
    Ok(Some(config))
}

/// `BKCI_AMQP_URL`: `amqp://` or `amqps://` with a host.
struct AmqpUrl(Secret);

impl FromStr for AmqpUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = url::Url::parse(s).map_err(|e| e.to_string())?;
        if !matches!(url.scheme(), "amqp" | "amqps") || url.host().is_none() {
            return Err("must be an amqp:// or amqps:// URL with a host, like \
                        amqp://guest:guest@127.0.0.1:5672/%2f"
                .to_owned());
        }
        Ok(Self(Secret::new(s)))
    }
}

/// `BKCI_AMQP_QUEUE_PREFIX`: part of queue names, so letters, digits, `-`, `_` and `.` only.
struct QueuePrefix(String);

impl Default for QueuePrefix {
    fn default() -> Self {
        Self("devops-callbacks".to_owned())
    }
}

impl FromStr for QueuePrefix {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fits = !s.is_empty()
            && s.len() <= 100
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if fits {
            Ok(Self(s.to_owned()))
        } else {
            Err("must be 1 to 100 of letters, digits, '-', '_' and '.'")
        }
    }
}

/// `BKCI_SERVICE_USER` travels as `X-DEVOPS-UID`, so it must be a header value.
struct ServiceUser(String);

impl FromStr for ServiceUser {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match reqwest::header::HeaderValue::from_str(s) {
            Ok(_) if !s.trim().is_empty() => Ok(Self(s.to_owned())),
            _ => Err("must be a user id of visible ASCII (it is sent as X-DEVOPS-UID)"),
        }
    }
}

/// The values `AUTH_MODE` takes.
#[derive(Debug, Clone, Copy)]
enum AuthModeName {
    Local,
    BkCi,
}

impl FromStr for AuthModeName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(Self::Local),
            "bkci" => Ok(Self::BkCi),
            other => Err(format!("`{other}` is not one of: local, bkci")),
        }
    }
}

/// An http(s) base URL with a host.
struct HttpUrl(url::Url);

impl FromStr for HttpUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = url::Url::parse(s).map_err(|e| e.to_string())?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err("must be an http:// or https:// URL with a host".to_owned());
        }
        Ok(Self(url))
    }
}

/// `BKCI_AUTH_TOKEN` travels in a header, so it must be one.
struct BkCiToken(Secret);

impl FromStr for BkCiToken {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match reqwest::header::HeaderValue::from_str(s) {
            Ok(_) => Ok(Self(Secret::new(s))),
            Err(_) => Err("must be visible ASCII (it is sent as a header)"),
        }
    }
}

/// `LISTEN_ADDR`: an IP and a port. A host name is not resolved: which of its addresses would be
/// bound is better said outright.
struct IpPort(SocketAddr);

impl FromStr for IpPort {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self).map_err(|_| {
            "expected IP:port, e.g. 127.0.0.1:8080, 0.0.0.0:8080 or [::]:8080 (a host name such \
             as localhost is not resolved)"
        })
    }
}

/// An entry of `CALLBACK_ALLOWED_CIDRS`: a CIDR, or a bare address meaning only itself (/32, or
/// /128 for IPv6).
struct Cidr(IpNet);

impl FromStr for Cidr {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map(Self)
            .map_err(|_| "expected a CIDR such as 10.0.0.0/8 or an address such as 10.1.2.3")
    }
}

/// An entry of `CALLBACK_BLOCKED_PORTS`.
struct Port(u16);

impl FromStr for Port {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse()
            .map(Self)
            .map_err(|_| "expected a port number from 0 to 65535")
    }
}

/// `TIME_ZONE`.
struct Zone(chrono_tz::Tz);

impl FromStr for Zone {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse()
            .map(Self)
            .map_err(|_| "expected an IANA time zone such as Asia/Shanghai or UTC")
    }
}

/// What a whole-number variable counts, for the message when it is not a whole number.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Millis,
    Secs,
    Of(&'static str),
}

impl Unit {
    /// What was expected instead of `text`; a duration with a unit (`10s` where milliseconds
    /// are meant) gets the number to write instead.
    fn expected(self, text: &str) -> String {
        let (unit, per) = match self {
            Self::Millis => ("milliseconds", Some(1)),
            Self::Secs => ("seconds", Some(1_000)),
            Self::Of(unit) => (unit, None),
        };
        let mut reason = format!("expected a whole number of {unit}");
        if let (Some(per), Ok(duration)) = (per, parse_duration(text)) {
            let millis = duration.as_millis();
            if millis % per == 0 {
                reason.push_str(&format!(" (for {text} write {})", millis / per));
            }
        }
        reason
    }
}

/// `DELIVERY_RETRY_SCHEDULE`: the delays between attempts.
struct RetryDelays(Vec<Duration>);

impl Default for RetryDelays {
    fn default() -> Self {
        DEFAULT_RETRY_SCHEDULE
            .parse()
            .expect("the default schedule parses")
    }
}

impl FromStr for RetryDelays {
    type Err = String;

    /// `"5s,30s,2m"`: comma-separated durations (see `HumanDuration`). `"none"`: no retries.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "none" {
            return Ok(Self(Vec::new()));
        }
        s.split(',')
            .map(|item| parse_duration(item.trim()))
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// A duration written like `500ms`, `5s`, `2m` or `12h`: how duration settings are read, and how
/// a duration is shown back (the reason a callback was disabled quotes `CALLBACK_DISABLE_AFTER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s.trim()).map(Self)
    }
}

impl fmt::Display for HumanDuration {
    /// The largest unit that divides it exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        match millis {
            0 => f.write_str("0s"),
            m if m % 3_600_000 == 0 => write!(f, "{}h", m / 3_600_000),
            m if m % 60_000 == 0 => write!(f, "{}m", m / 60_000),
            m if m % 1_000 == 0 => write!(f, "{}s", m / 1_000),
            m => write!(f, "{m}ms"),
        }
    }
}

/// `"250ms"`, `"5s"`, `"2m"`, `"1h"`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 5s, 2m or 1h"))?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("`{text}` has no unit of ms, s, m or h")),
    };
    Ok(Duration::from_millis(number.saturating_mul(millis)))
}

/// A set variable's value, parsed; the error names the variable.
fn parse_value<T>(name: &'static str, value: String) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| ConfigError {
        name,
        reason: e.to_string(),
        value,
    })
}

struct Vars<'a, F: Fn(&str) -> Option<String>>(&'a F);

impl<F: Fn(&str) -> Option<String>> Vars<'_, F> {
    /// The value, with an empty string treated as unset.
    fn raw(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn parsed<T>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.raw(name)
            .map_or(Ok(default), |value| parse_value(name, value))
    }

    /// A whole number of `unit`.
    fn whole<T: FromStr>(
        &self,
        name: &'static str,
        default: T,
        unit: Unit,
    ) -> Result<T, ConfigError> {
        let Some(value) = self.raw(name) else {
            return Ok(default);
        };
        value.trim().parse().map_err(|_| ConfigError {
            name,
            reason: unit.expected(value.trim()),
            value,
        })
    }

    fn millis(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.whole(name, default, Unit::Millis)
            .map(Duration::from_millis)
    }

    fn secs(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.whole(name, default, Unit::Secs)
            .map(Duration::from_secs)
    }

    /// A variable that `because` makes mandatory.
    fn required<T>(&self, name: &'static str, because: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.raw(name) {
            Some(value) => parse_value(name, value),
            None => Err(ConfigError {
                name,
                value: String::new(),
                reason: format!("must be set when {because}"),
            }),
        }
    }

    /// A comma-separated list; set but empty means an empty list.
    fn list<T>(&self, name: &'static str, default: Vec<T>) -> Result<Vec<T>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let Some(value) = (self.0)(name) else {
            return Ok(default);
        };
        value
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                item.parse().map_err(|e: T::Err| ConfigError {
                    name,
                    reason: format!("`{item}`: {e}"),
                    value: value.clone(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_map(&vars)
    }

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let config = config(&[]).unwrap();
        assert_eq!(config.database_url, DEFAULT_DATABASE_URL);
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:8080");
        assert!(config.blocked_ports.contains(&6379));
        assert!(config.service_token.is_none());
        assert!(config.allowed_cidrs.is_empty());
    }

    #[test]
    fn lists_parse_and_errors_name_the_variable() {
        let config = config(&[
            ("CALLBACK_ALLOWED_CIDRS", "127.0.0.0/8, ::1/128"),
            ("CALLBACK_BLOCKED_PORTS", ""),
        ])
        .unwrap();
        assert_eq!(config.allowed_cidrs.len(), 2);
        assert!(config.blocked_ports.is_empty());

        let err = super::tests::config(&[("LISTEN_ADDR", "nowhere")]).unwrap_err();
        assert!(err.to_string().contains("LISTEN_ADDR"), "{err}");
        let err = super::tests::config(&[("CALLBACK_BLOCKED_PORTS", "22,x")]).unwrap_err();
        assert!(err.to_string().contains("CALLBACK_BLOCKED_PORTS"), "{err}");
        let err = super::tests::config(&[("TIME_ZONE", "Mars/Base")]).unwrap_err();
        assert!(err.to_string().contains("TIME_ZONE"), "{err}");
        let err = super::tests::config(&[("DELIVERY_RETRY_SCHEDULE", "5s,soon")]).unwrap_err();
        assert!(err.to_string().contains("DELIVERY_RETRY_SCHEDULE"), "{err}");
        let err = super::tests::config(&[("DELIVERY_TIMEOUT_MS", "60000")]).unwrap_err();
        assert!(err.to_string().contains("DELIVERY_LEASE_SECS"), "{err}");
        for name in ["DELIVERY_CONCURRENCY", "DELIVERY_POLL_MS", "MAX_URI_BYTES"] {
            let err = super::tests::config(&[(name, "0")]).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn the_bridge_is_off_until_its_url_is_set_and_then_needs_its_lookups() {
        assert!(config(&[]).unwrap().bridge.is_none());
        let url = ("BKCI_AMQP_URL", "amqp://guest:secret@127.0.0.1:5672/%2f");
        let service = ("BKCI_SERVICE_URL", "http://bk-ci.example");
        let user = ("BKCI_SERVICE_USER", "devops-callbacks");
        let bridge = config(&[url, service, user]).unwrap().bridge.unwrap();
        assert_eq!(bridge.queue_prefix, "devops-callbacks");
        assert_eq!(bridge.declare, DeclareMode::Passive);
        assert_eq!(bridge.prefetch, 200);
        assert!(bridge.mysql_url.is_none());
        for (missing, present) in [
            ("BKCI_SERVICE_URL", [url, user]),
            ("BKCI_SERVICE_USER", [url, service]),
        ] {
            let err = config(&present).unwrap_err().to_string();
            assert!(
                err.contains(missing) && err.contains("BKCI_AMQP_URL"),
                "{err}"
            );
        }
        for (name, value, words) in [
            ("BKCI_AMQP_URL", "http://127.0.0.1:5672", "amqp://"),
            ("BKCI_AMQP_DECLARE", "fanout", "passive, topic, delayed"),
            ("BKCI_AMQP_QUEUE_PREFIX", "a b", "letters"),
            ("BKCI_AMQP_PREFETCH", "0", "at least 1"),
            ("BKCI_AMQP_PREFETCH", "70000", "BKCI_AMQP_PREFETCH"),
            ("BKCI_ENRICH_ATTEMPTS", "0", "at least 1"),
            ("BKCI_SERVICE_USER", "a\u{7f}b", "X-DEVOPS-UID"),
        ] {
            let err = config(&[url, service, user, (name, value)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(name) && err.contains(words), "{err}");
        }
        // The broker's password never shows in an error.
        let err = config(&[("BKCI_AMQP_URL", "http://guest:secret@host")]).unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn the_auth_mode_picks_the_cache_default_and_needs_its_service() {
        assert_eq!(config(&[]).unwrap().auth_cache_ttl, Duration::from_secs(5));
        let bkci = [
            ("AUTH_MODE", "bkci"),
            ("BKCI_AUTH_URL", "http://auth.example:8080/prefix/"),
            ("BKCI_AUTH_TOKEN", "bk-token"),
        ];
        let config = super::tests::config(&bkci).unwrap();
        assert_eq!(config.auth_cache_ttl, Duration::from_secs(30));
        let AuthMode::BkCi(service) = &config.auth_mode else {
            panic!("bkci mode")
        };
        assert_eq!(service.timeout, Duration::from_secs(3));
        assert!(!format!("{config:?}").contains("bk-token"));
        let mut ttl = bkci.to_vec();
        ttl.push(("AUTH_CACHE_TTL_SECS", "1"));
        assert_eq!(
            super::tests::config(&ttl).unwrap().auth_cache_ttl,
            Duration::from_secs(1)
        );

        for (missing, name) in [(1, "BKCI_AUTH_URL"), (2, "BKCI_AUTH_TOKEN")] {
            let mut vars = bkci.to_vec();
            vars.remove(missing);
            let err = super::tests::config(&vars).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        let err = super::tests::config(&[("AUTH_MODE", "ldap")]).unwrap_err();
        assert!(err.to_string().contains("AUTH_MODE"), "{err}");
        let mut vars = bkci.to_vec();
        vars[1] = ("BKCI_AUTH_URL", "mailto:auth@example.com");
        let err = super::tests::config(&vars).unwrap_err();
        assert!(err.to_string().contains("BKCI_AUTH_URL"), "{err}");
        let mut vars = bkci.to_vec();
        vars[2] = ("BKCI_AUTH_TOKEN", "tök\nen");
        let err = super::tests::config(&vars).unwrap_err();
        assert!(err.to_string().contains("BKCI_AUTH_TOKEN"), "{err}");
        assert!(!err.to_string().contains("tök"), "{err}");
    }

    #[test]
    fn key_settings_fail_naming_the_variable_without_the_secret() {
        let err = config(&[("SECRET_ENCRYPTION_KEY", "c2hvcnQta2V5")]).unwrap_err();
        assert!(err.to_string().contains("SECRET_ENCRYPTION_KEY"), "{err}");
        assert!(!err.to_string().contains("c2hvcnQta2V5"), "{err}");
        let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let config = super::tests::config(&[("SECRET_ENCRYPTION_KEY", key)]).unwrap();
        assert!(config.secret_encryption_key.is_some());
        assert!(!format!("{config:?}").contains(key));

        // A path only: the file is read and checked where the key is used (auth::gateway).
        let config = super::tests::config(&[("APIGW_PUBLIC_KEY_FILE", " /etc/gw.pem ")]).unwrap();
        assert_eq!(
            config.apigw_public_key_file,
            Some(PathBuf::from("/etc/gw.pem"))
        );
    }

    #[test]
    fn delivery_compatibility_settings_default_to_the_strict_ones() {
        let strict = config(&[]).unwrap();
        assert_eq!(strict.delivery_success, SuccessRule::Status2xx);
        assert_eq!(strict.delivery_ca_file, None);
        assert!(strict.delivery_tls_verify);

        let lenient = config(&[
            ("DELIVERY_SUCCESS", "any-response"),
            ("DELIVERY_CA_FILE", " /etc/receivers-ca.pem "),
            ("DELIVERY_TLS_VERIFY", "false"),
        ])
        .unwrap();
        assert_eq!(lenient.delivery_success, SuccessRule::AnyResponse);
        // A path only: the file is read and checked where it is used (delivery::sender).
        assert_eq!(
            lenient.delivery_ca_file,
            Some(PathBuf::from("/etc/receivers-ca.pem"))
        );
        assert!(!lenient.delivery_tls_verify);

        for (name, bad) in [("DELIVERY_SUCCESS", "any"), ("DELIVERY_TLS_VERIFY", "no")] {
            let err = super::tests::config(&[(name, bad)]).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
    }

    #[test]
    fn the_default_schedule_parses_to_seven_retries() {
        let schedule = config(&[]).unwrap().retry_schedule;
        assert_eq!(schedule.len(), 7);
        assert_eq!(schedule[0], Duration::from_secs(5));
        assert_eq!(schedule[6], Duration::from_secs(3 * 3600));
    }

    #[test]
    fn bad_schedules_are_refused() {
        for bad in ["", "5", "5x", "s", "5s,,1m", "-1s"] {
            assert!(bad.parse::<RetryDelays>().is_err(), "{bad}");
        }
        assert_eq!("none".parse::<RetryDelays>().unwrap().0.len(), 0);
    }

    #[test]
    fn human_durations_round_trip() {
        for text in ["12h", "90m", "5s", "250ms", "0s"] {
            assert_eq!(text.parse::<HumanDuration>().unwrap().to_string(), text);
        }
        assert_eq!("120m".parse::<HumanDuration>().unwrap().to_string(), "2h");
    }

    /// AUTH_MODE=bkci and the bus bridge on, so that every variable is read.
    const BKCI: [(&str, &str); 6] = [
        ("AUTH_MODE", "bkci"),
        ("BKCI_AUTH_URL", "http://auth.example:8080/"),
        ("BKCI_AUTH_TOKEN", "bk-token"),
        ("BKCI_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
        ("BKCI_SERVICE_URL", "http://bk-ci.example"),
        ("BKCI_SERVICE_USER", "devops-callbacks"),
    ];

    fn error_for(name: &str, value: &str) -> String {
        let mut vars = BKCI.to_vec();
        vars.push((name, value));
        config(&vars).unwrap_err().to_string()
    }

    #[test]
    fn every_config_error_says_what_was_expected() {
        let err = error_for("LISTEN_ADDR", "localhost:8080");
        assert!(
            err.contains("LISTEN_ADDR") && err.contains("expected IP:port"),
            "{err}"
        );
        let err = error_for("DELIVERY_TIMEOUT_MS", "10s");
        assert!(err.contains("whole number of milliseconds"), "{err}");
        assert!(err.contains("for 10s write 10000"), "{err}");
        let err = error_for("SHUTDOWN_GRACE_SECS", "2m");
        assert!(err.contains("seconds (for 2m write 120)"), "{err}");
        // Every millisecond and second variable says its unit, and only a duration gets a hint.
        for variable in VARIABLES {
            let unit = match variable.name {
                name if name.ends_with("_MS") => "milliseconds",
                name if name.ends_with("_SECS") => "seconds",
                name if name.ends_with("_BYTES") => "bytes",
                name if name.ends_with("_DAYS") => "days",
                _ => continue,
            };
            for bad in ["10s", "-1", "many"] {
                let err = error_for(variable.name, bad);
                let expected = format!(
                    "{}={bad:?}: expected a whole number of {unit}",
                    variable.name
                );
                assert!(err.contains(&expected), "{err}");
            }
        }
        for (name, bad, expected) in [
            (
                "DATABASE_MAX_CONNECTIONS",
                "lots",
                "whole number of connections",
            ),
            ("DELIVERY_CONCURRENCY", "1.5", "whole number of attempts"),
            (
                "CALLBACK_ALLOWED_CIDRS",
                "10.0.0.0/8,intranet",
                "`intranet`: expected a CIDR",
            ),
            (
                "CALLBACK_BLOCKED_PORTS",
                "22,70000",
                "`70000`: expected a port number",
            ),
            ("TIME_ZONE", "GMT+8", "expected an IANA time zone"),
            ("LOG_FORMAT", "xml", "not one of: text, json"),
            (
                "DELIVERY_RETRY_SCHEDULE",
                "5",
                "has no unit of ms, s, m or h",
            ),
            ("CALLBACK_DISABLE_AFTER", "soon", "duration like 500ms"),
        ] {
            let err = error_for(name, bad);
            assert!(err.contains(name) && err.contains(expected), "{err}");
        }
    }

    #[test]
    fn a_bare_address_is_a_single_host_cidr() {
        let config = config(&[("CALLBACK_ALLOWED_CIDRS", "127.0.0.1, ::1,10.0.0.0/8")]).unwrap();
        let cidrs: Vec<String> = config.allowed_cidrs.iter().map(IpNet::to_string).collect();
        assert_eq!(cidrs, ["127.0.0.1/32", "::1/128", "10.0.0.0/8"]);
        assert!(config.allowed_cidrs[0].contains(&"127.0.0.1".parse::<IpAddr>().unwrap()));
        assert!(!config.allowed_cidrs[0].contains(&"127.0.0.2".parse::<IpAddr>().unwrap()));
    }

    #[test]
    fn the_config_reads_exactly_the_listed_variables() {
        let asked = std::cell::RefCell::new(Vec::new());
        let lookup = |name: &str| {
            asked.borrow_mut().push(name.to_owned());
            BKCI.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.to_string())
        };
        Config::from_lookup(lookup).unwrap();
        let mut asked = asked.into_inner();
        asked.sort();
        asked.dedup();
        // RUST_LOG is read by the log filter, not by Config.
        let mut listed: Vec<&str> = VARIABLES
            .iter()
            .map(|v| v.name)
            .filter(|&name| name != "RUST_LOG")
            .collect();
        listed.sort_unstable();
        assert_eq!(asked, listed);
    }

    #[test]
    fn the_listed_defaults_are_the_real_ones() {
        for variable in VARIABLES {
            let VariableDefault::Value(default) = variable.default else {
                continue;
            };
            if variable.name == "RUST_LOG" {
                continue;
            }
            let unset: Vec<(&str, &str)> = BKCI
                .into_iter()
                .filter(|(name, _)| *name != variable.name)
                .collect();
            let mut set = unset.clone();
            set.push((variable.name, default));
            assert_eq!(
                format!("{:?}", config(&set).unwrap()),
                format!("{:?}", config(&unset).unwrap()),
                "{}",
                variable.name
            );
        }
    }

    /// `NAME=value` lines of a file, commented out (`# NAME=…`) or not.
    fn assignments(text: &str) -> Vec<(bool, &str, &str)> {
        text.lines()
            .filter_map(|line| {
                let (commented, line) = match line.strip_prefix('#') {
                    Some(rest) => (true, rest.trim_start()),
                    None => (false, line),
                };
                let (name, value) = line.split_once('=')?;
                let is_name = name.starts_with(|c: char| c.is_ascii_uppercase())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                is_name.then_some((commented, name, value))
            })
            .collect()
    }

    #[test]
    fn env_example_lists_every_variable_in_order_with_its_default() {
        let text = include_str!("../.env.example");
        let found = assignments(text);
        let names: Vec<&str> = found.iter().map(|(_, name, _)| *name).collect();
        let listed: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
        assert_eq!(names, listed);
        // Copied to .env as it is, it changes nothing.
        for ((commented, name, value), variable) in found.iter().zip(VARIABLES) {
            match variable.default {
                _ if *commented => {}
                VariableDefault::Value(default) => assert_eq!(*value, default, "{name}"),
                VariableDefault::Unset => assert_eq!(*value, "", "{name}"),
                VariableDefault::Described(_) => panic!("{name} is set in .env.example"),
            }
        }
    }

    #[test]
    fn the_readme_table_lists_every_variable() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("\n## Configuration\n")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("a Configuration section");
        let rows: Vec<&str> = section
            .lines()
            .filter_map(|line| line.strip_prefix("| `")?.split('`').next())
            .collect();
        let listed: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
        assert_eq!(rows, listed);
    }

    #[test]
    fn the_help_shows_each_variable_with_its_default() {
        let help = variables_help();
        assert!(help.contains("\n  LISTEN_ADDR=127.0.0.1:8080\n"), "{help}");
        assert!(help.contains("\n  SERVICE_TOKEN (unset)\n"), "{help}");
        assert!(
            help.contains("CALLBACK_BLOCKED_PORTS (default: bk-ci's list"),
            "{help}"
        );
        for variable in VARIABLES {
            assert!(help.contains(variable.meaning), "{}", variable.name);
        }
    }

    #[test]
    fn a_bad_env_line_is_found_by_its_number() {
        let good = "# comment\nA=1\n\nexport B='two words'\nC=\"multi\nline\"\n";
        assert_eq!(first_bad_line(good), None);
        for (text, line, problem) in [
            ("A=1\nnot an assignment\nB=2\n", 2, "expected NAME=value"),
            (
                "A=1\n# c\nSERVICE_TOKEN=two words\nB=2\n",
                3,
                "the value of SERVICE_TOKEN",
            ),
            ("A=\"x\ny\"\nB=1\nC=\\q\n", 4, "the value of C"),
            ("A=1\nB=\"never closed\nC=3\n", 2, "close every quote"),
            ("A=1\nB=2", 0, ""),
        ] {
            let found = first_bad_line(text);
            if line == 0 {
                assert_eq!(found, None, "{text:?}");
                continue;
            }
            let (number, said) = found.unwrap_or_else(|| panic!("{text:?} parsed"));
            assert_eq!(number, line, "{text:?}");
            assert!(said.contains(problem), "{said}");
            assert!(!said.contains("words") && !said.contains("never"), "{said}");
        }
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let config = config(&[("SERVICE_TOKEN", "hunter2")]).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
