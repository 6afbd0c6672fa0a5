//! The HTTP side of a delivery: the request headers (with Standard Webhooks signatures), one
//! pooled client that never follows redirects and trusts the roots the configuration names, and
//! the SSRF guard applied to the address that is actually dialled.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use sha2::Sha256;

use crate::config::{Config, ConfigError, SuccessRule};
use crate::delivery::ssrf::{Blocked, SsrfGuard};
use crate::domain::{CustomHeaders, HeaderPair};

pub const USER_AGENT: &str = concat!("devops-callbacks/", env!("CARGO_PKG_VERSION"));
pub const TOKEN_HEADER: &str = "X-DEVOPS-WEBHOOK-TOKEN";
const SIGNATURE_HEADER: &str = "webhook-signature";
/// What history (and the op list) shows in place of a secret value.
pub const MASK: &str = "******";

/// How much of a receiver's answer history keeps.
pub const MAX_RESPONSE_BODY: usize = 16 * 1024;

/// The headers of one attempt: ours, then the callback's custom ones (which cannot take any of
/// our names: `CustomHeaders` refuses them). `unique_id` is stable across retries of a
/// delivery; the trace id and the signature timestamp are new for every attempt.
pub fn delivery_headers(
    unique_id: &str,
    token: Option<&str>,
    custom: &CustomHeaders,
    body: &str,
    unix_seconds: i64,
) -> Vec<HeaderPair> {
    let header = |name: &str, value: String| HeaderPair {
        name: name.to_owned(),
        value,
    };
    let mut headers = vec![
        header("Content-Type", "application/json; charset=utf-8".to_owned()),
        header(TOKEN_HEADER, token.unwrap_or("NONE").to_owned()),
        header("X-DEVOPS-WEBHOOK-UNIQUE-ID", unique_id.to_owned()),
        header(
            "X-DEVOPS-TRACE-BIZ-ID",
            format!("bizId-{}", uuid::Uuid::new_v4()),
        ),
        header("User-Agent", USER_AGENT.to_owned()),
    ];
    if let Some(token) = token {
        headers.push(header("webhook-id", unique_id.to_owned()));
        headers.push(header("webhook-timestamp", unix_seconds.to_string()));
        headers.push(header(
            SIGNATURE_HEADER,
            sign(token, unique_id, unix_seconds, body),
        ));
    }
    headers.extend(custom.pairs().iter().cloned());
    headers
}

/// The headers as history stores and shows them: the token, the signature and every custom
/// header's value replaced by asterisks. A signature next to its id, timestamp and body would
/// let anyone who reads history test guesses of a weak token offline; custom headers carry
/// credentials (`Authorization`) as often as not.
pub fn masked(headers: &[HeaderPair]) -> Vec<HeaderPair> {
    headers
        .iter()
        .map(|h| HeaderPair {
            name: h.name.clone(),
            value: if is_secret_header(h) {
                MASK.to_owned()
            } else {
                h.value.clone()
            },
        })
        .collect()
}

fn is_secret_header(header: &HeaderPair) -> bool {
    (header.name == TOKEN_HEADER && header.value != "NONE")
        || header.name.eq_ignore_ascii_case(SIGNATURE_HEADER)
        || !CustomHeaders::is_reserved(&header.name)
}

/// Standard Webhooks: `v1,` + base64(HMAC-SHA256(key, "id.timestamp.body")). The key is the
/// base64 part of a `whsec_` token, otherwise the token's UTF-8 bytes.
pub fn sign(token: &str, id: &str, unix_seconds: i64, body: &str) -> String {
    let key = token
        .strip_prefix("whsec_")
        .and_then(|encoded| BASE64.decode(encoded).ok())
        .unwrap_or_else(|| token.as_bytes().to_vec());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes keys of any length");
    mac.update(format!("{id}.{unix_seconds}.{body}").as_bytes());
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// What a receiver did with one attempt. What that means (delivered or not) is decided by
/// `outcome::Verdict::of`.
#[derive(Debug, Clone)]
pub struct SendResult {
    pub response_code: Option<u16>,
    pub response_body: Option<String>,
    /// Why no whole answer came back: a transport error, a timeout, an SSRF refusal, or a body
    /// that broke off.
    pub error: Option<String>,
    /// How long the receiver asked us to wait (`Retry-After`, seconds or an HTTP date).
    pub retry_after: Option<Duration>,
}

pub struct Sender {
    client: reqwest::Client,
    guard: Arc<SsrfGuard>,
    /// Which answers count as a delivery (`DELIVERY_SUCCESS`), for whoever judges an attempt.
    pub success: SuccessRule,
}

impl Sender {
    /// The delivery client for `config`: its timeout, its success rule, and the certificates it
    /// trusts — the default roots plus those of `DELIVERY_CA_FILE`, or any certificate with
    /// `DELIVERY_TLS_VERIFY=false`. The CA file is read now, so an unusable one stops the start
    /// with an error naming the variable.
    pub fn new(config: &Config, guard: Arc<SsrfGuard>) -> Result<Self, ConfigError> {
        let timeout = config.delivery_timeout;
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_max_idle_per_host(64)
            .dns_resolver(Arc::new(GuardedResolver {
                guard: guard.clone(),
            }))
            .tls_danger_accept_invalid_certs(!config.delivery_tls_verify);
        if let Some(path) = &config.delivery_ca_file {
            let roots = read_roots(path).map_err(|reason| ca_file_error(path, reason))?;
            builder = builder.tls_certs_merge(roots);
        }
        let client = match (builder.build(), &config.delivery_ca_file) {
            (Ok(client), _) => client,
            // Parsed only now: a PEM block whose certificate is malformed.
            (Err(e), Some(path)) => {
                return Err(ca_file_error(
                    path,
                    format!("its certificates cannot be used: {}", describe(&e)),
                ));
            }
            (Err(e), None) => panic!("the delivery HTTP client builds: {e}"),
        };
        Ok(Self {
            client,
            guard,
            success: config.delivery_success,
        })
    }

    /// POSTs `body` with `headers` and returns what came back; redirects are not followed.
    pub async fn send(&self, url: &str, headers: &[HeaderPair], body: String) -> SendResult {
        let failure = |error: String| SendResult {
            response_code: None,
            response_body: None,
            error: Some(error),
            retry_after: None,
        };
        let parsed = match reqwest::Url::parse(url) {
            Ok(parsed) => parsed,
            Err(e) => return failure(format!("invalid url: {e}")),
        };
        // Host names go through the guarded resolver; an address literal is dialled as is.
        if let Some(ip) = literal_ip(&parsed)
            && let Err(blocked) = self.guard.check_ip(ip)
        {
            return failure(format!("blocked by the SSRF guard: {blocked}"));
        }
        let mut request = self.client.post(parsed).body(body);
        for header in headers {
            request = request.header(&header.name, &header.value);
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => return failure(describe(&e)),
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| parse_retry_after(value.to_str().ok()?));
        let mut kept = Vec::new();
        let mut read_error = None;
        while kept.len() < MAX_RESPONSE_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => kept.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    read_error = Some(describe(&e));
                    break;
                }
            }
        }
        kept.truncate(MAX_RESPONSE_BODY);
        SendResult {
            response_code: Some(status.as_u16()),
            response_body: Some(String::from_utf8_lossy(&kept).into_owned()),
            error: read_error,
            retry_after,
        }
    }
}

/// The certificates of a PEM file (one or more); a file without any is refused.
fn read_roots(path: &Path) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("not a PEM file of certificates: {e}"))?;
    if roots.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".to_owned());
    }
    Ok(roots)
}

fn ca_file_error(path: &Path, reason: String) -> ConfigError {
    ConfigError {
        name: "DELIVERY_CA_FILE",
        value: path.display().to_string(),
        reason,
    }
}

/// `Retry-After: 120` or `Retry-After: Wed, 21 Oct 2015 07:28:00 GMT`; a date in the past is 0.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(
        date.duration_since(std::time::SystemTime::now())
            .unwrap_or_default(),
    )
}

fn literal_ip(url: &reqwest::Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// The error with its causes, e.g. "error sending request: client error (Connect): tcp connect
/// error: Connection refused", or the SSRF refusal.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else {
        error.to_string()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(blocked) = cause.downcast_ref::<Blocked>() {
            return format!("blocked by the SSRF guard: {blocked}");
        }
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Resolves host names and keeps only the addresses the SSRF guard allows, so the address the
/// connection is made to is always one that was checked (no DNS-rebinding window).
struct GuardedResolver {
    guard: Arc<SsrfGuard>,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.guard.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            guard.check_host_name(&host)?;
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refused = None;
            let allowed: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match guard.check_ip(addr.ip()) {
                    Ok(()) => true,
                    Err(blocked) => {
                        refused = Some(blocked);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let blocked = refused.unwrap_or(Blocked::Unresolvable(host));
                return Err(Box::new(blocked) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_follow_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let signature = sign(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        let in_a_minute = std::time::SystemTime::now() + Duration::from_secs(61);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(in_a_minute)).unwrap();
        assert!(
            parsed > Duration::from_secs(55) && parsed <= Duration::from_secs(61),
            "{parsed:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn headers_carry_token_or_none_and_sign_only_with_a_token() {
        let none = CustomHeaders::default();
        let with = delivery_headers("42", Some("plain"), &none, "{}", 1);
        let names: Vec<&str> = with.iter().map(|h| h.name.as_str()).collect();
        assert!(names.contains(&"webhook-signature"));
        assert_eq!(with[1].value, "plain");
        assert_eq!(masked(&with)[1].value, MASK);

        let without = delivery_headers("42", None, &none, "{}", 1);
        assert_eq!(without[1].value, "NONE");
        assert_eq!(masked(&without)[1].value, "NONE");
        assert!(!without.iter().any(|h| h.name.starts_with("webhook-")));
    }

    #[test]
    fn custom_headers_come_last_and_are_masked_and_ours_are_all_reserved() {
        let custom = CustomHeaders::new([
            ("Authorization".to_owned(), "Bearer abc".to_owned()),
            ("X-Tenant".to_owned(), "t1".to_owned()),
        ])
        .unwrap();
        let headers = delivery_headers("42", Some("plain"), &custom, "{}", 1);
        for ours in &headers[..headers.len() - 2] {
            assert!(
                CustomHeaders::is_reserved(&ours.name),
                "{} is sent by every delivery, so no custom header may take it",
                ours.name
            );
        }
        let tail: Vec<(&str, &str)> = headers[headers.len() - 2..]
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_str()))
            .collect();
        assert_eq!(tail, [("Authorization", "Bearer abc"), ("X-Tenant", "t1")]);
        let shown = masked(&headers);
        assert!(shown[headers.len() - 2..].iter().all(|h| h.value == MASK));
        assert!(!format!("{shown:?}").contains("Bearer abc"));
        assert_eq!(
            shown.iter().find(|h| h.name == "User-Agent").unwrap().value,
            USER_AGENT
        );
    }
}
