//! Configuration from the environment, read once at start into one typed struct.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use crate::delivery::retry::{HumanDuration, RetrySchedule};

/// bk-ci's default list of "high-risk" ports (`project.callback.black-ports`).
pub const DEFAULT_BLOCKED_PORTS: &[u16] = &[
    21, 22, 23, 25, 69, 135, 137, 138, 139, 161, 162, 389, 465, 514, 587, 636, 873, 1099, 2181,
    2375, 2376, 3306, 3389, 4848, 5432, 5900, 5901, 6379, 7001, 7002, 9200, 9300, 10050, 10051,
    10250, 10255, 11211, 27017, 36000, 50070, 50075, 56000,
];

pub const DEFAULT_DATABASE_URL: &str = "sqlite://devops-callbacks.db";

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

/// A secret that never shows up in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
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
    /// How long a permission decision may be reused (0 disables the cache).
    pub auth_cache_ttl: Duration,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// Attempts in flight at once in this process.
    pub delivery_concurrency: usize,
    pub delivery_timeout: Duration,
    pub retry_schedule: RetrySchedule,
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
}

/// A variable that is set but cannot be used; the message names it.
#[derive(Debug, thiserror::Error)]
#[error("invalid environment variable {name}={value:?}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: String,
}

impl Config {
    /// Reads the process environment (call `dotenvy::dotenv()` first in development).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads from an explicit map, for tests and embedding.
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Self, ConfigError> {
        Self::from_lookup(|name| vars.get(name).cloned())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(&lookup);
        Self {
            database_url: vars
                .raw("DATABASE_URL")
                .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
            database_max_connections: vars.parsed("DATABASE_MAX_CONNECTIONS", 32)?,
            listen_addr: vars.parsed("LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?,
            log_format: vars.parsed("LOG_FORMAT", LogFormat::Text)?,
            service_token: vars.raw("SERVICE_TOKEN").map(Secret),
            allowed_cidrs: vars.list("CALLBACK_ALLOWED_CIDRS", Vec::new())?,
            allowlist_only: vars.parsed("CALLBACK_ALLOWLIST_ONLY", false)?,
            blocked_ports: vars.list("CALLBACK_BLOCKED_PORTS", DEFAULT_BLOCKED_PORTS.to_vec())?,
            time_zone: vars.parsed("TIME_ZONE", chrono_tz::Asia::Shanghai)?,
            auth_cache_ttl: Duration::from_secs(vars.parsed("AUTH_CACHE_TTL_SECS", 5)?),
            request_timeout: Duration::from_secs(vars.parsed("REQUEST_TIMEOUT_SECS", 30)?),
            max_body_bytes: vars.parsed("MAX_BODY_BYTES", 16 * 1024 * 1024)?,
            delivery_concurrency: vars.parsed("DELIVERY_CONCURRENCY", 64)?,
            delivery_timeout: Duration::from_millis(vars.parsed("DELIVERY_TIMEOUT_MS", 10_000)?),
            retry_schedule: vars.parsed("DELIVERY_RETRY_SCHEDULE", RetrySchedule::default())?,
            delivery_lease: Duration::from_secs(vars.parsed("DELIVERY_LEASE_SECS", 60)?),
            delivery_poll: Duration::from_millis(vars.parsed("DELIVERY_POLL_MS", 1_000)?),
            shutdown_grace: Duration::from_secs(vars.parsed("SHUTDOWN_GRACE_SECS", 20)?),
            max_in_flight_per_host: vars.parsed("DELIVERY_MAX_IN_FLIGHT_PER_HOST", 16)?,
            callback_disable_after: vars
                .parsed(
                    "CALLBACK_DISABLE_AFTER",
                    HumanDuration(Duration::from_secs(12 * 3600)),
                )?
                .0,
            history_retention: Duration::from_secs(
                vars.parsed::<u64>("HISTORY_RETENTION_DAYS", 30)?
                    .saturating_mul(86_400),
            ),
            retention_sweep: Duration::from_secs(vars.parsed("RETENTION_SWEEP_SECS", 300)?),
        }
        .validated()
    }

    /// Rules between variables.
    fn validated(self) -> Result<Self, ConfigError> {
        let invalid = |name: &'static str, value: String, reason: &str| ConfigError {
            name,
            value,
            reason: reason.to_owned(),
        };
        if self.delivery_concurrency == 0 {
            return Err(invalid(
                "DELIVERY_CONCURRENCY",
                "0".to_owned(),
                "must be at least 1",
            ));
        }
        if self.delivery_timeout.is_zero() {
            return Err(invalid(
                "DELIVERY_TIMEOUT_MS",
                "0".to_owned(),
                "must be at least 1",
            ));
        }
        if self.delivery_lease <= self.delivery_timeout + Duration::from_secs(1) {
            return Err(invalid(
                "DELIVERY_LEASE_SECS",
                self.delivery_lease.as_secs().to_string(),
                "must exceed DELIVERY_TIMEOUT_MS by more than a second, or a slow attempt could be sent twice",
            ));
        }
        if self.max_in_flight_per_host == 0 {
            return Err(invalid(
                "DELIVERY_MAX_IN_FLIGHT_PER_HOST",
                "0".to_owned(),
                "must be at least 1",
            ));
        }
        if self.retention_sweep.is_zero() {
            return Err(invalid(
                "RETENTION_SWEEP_SECS",
                "0".to_owned(),
                "must be at least 1",
            ));
        }
        if self.delivery_poll.is_zero() {
            return Err(invalid(
                "DELIVERY_POLL_MS",
                "0".to_owned(),
                "must be at least 1",
            ));
        }
        Ok(self)
    }
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
        match self.raw(name) {
            None => Ok(default),
            Some(value) => value.trim().parse().map_err(|e: T::Err| ConfigError {
                name,
                reason: e.to_string(),
                value,
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
    }

    #[test]
    fn secrets_do_not_debug_print() {
        let config = config(&[("SERVICE_TOKEN", "hunter2")]).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
