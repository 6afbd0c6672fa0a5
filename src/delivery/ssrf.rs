//! The SSRF rule: callback URLs must not reach any special-purpose address (loopback, private,
//! link-local, CGNAT, ULA, multicast, translation and documentation ranges: the `FORBIDDEN`
//! table) or a cloud-metadata name, unless `CALLBACK_ALLOWED_CIDRS` opens them. Registration
//! checks IP literals and every address a host name resolves to; the sender checks the address
//! it actually dials with the same rule.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;
use std::time::Duration;

use ipnet::{IpNet, Ipv6Net};
use url::Host;

use crate::domain::{CallbackUrl, InvalidUrl};

/// Host names of cloud metadata and cluster-internal services, refused whatever they resolve to.
const BLOCKED_HOST_NAMES: &[&str] = &[
    "metadata",
    "metadata.google.internal",
    "metadata.tencentyun.com",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a URL's target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    #[error("{0} is a {1} address")]
    Address(IpAddr, &'static str),
    #[error("host `{0}` is a metadata or cluster-internal name")]
    HostName(String),
    #[error("host `{0}` cannot be resolved")]
    Unresolvable(String),
}

/// Why a callback URL is refused at registration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusedUrl {
    /// Its shape or port.
    #[error(transparent)]
    Invalid(#[from] InvalidUrl),
    /// Its host's addresses.
    #[error("the callback url {url} points to an address that is not allowed: {reason}")]
    Blocked { url: String, reason: Blocked },
}

#[derive(Debug, Clone, Default)]
pub struct SsrfGuard {
    allowed: Vec<IpNet>,
    /// Only `allowed` may be reached, public addresses too.
    allowlist_only: bool,
}

impl SsrfGuard {
    pub fn new(allowed: Vec<IpNet>, allowlist_only: bool) -> Self {
        Self {
            allowed,
            allowlist_only,
        }
    }

    /// Checks one address, the one that would be dialled.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Blocked> {
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match forbidden_kind(ip) {
            Some(kind) => Err(Blocked::Address(ip, kind)),
            None if self.allowlist_only => Err(Blocked::Address(
                ip,
                "public (outside CALLBACK_ALLOWED_CIDRS)",
            )),
            None => Ok(()),
        }
    }

    /// Refuses the names of metadata and cluster-internal services.
    pub fn check_host_name(&self, name: &str) -> Result<(), Blocked> {
        let normalized = name.trim_end_matches('.').to_ascii_lowercase();
        if BLOCKED_HOST_NAMES.contains(&normalized.as_str()) {
            return Err(Blocked::HostName(name.to_owned()));
        }
        Ok(())
    }

    /// The registration-time URL rule: shape and port, then this guard on its addresses.
    pub async fn vet(
        &self,
        raw: impl Into<String>,
        blocked_ports: &[u16],
    ) -> Result<CallbackUrl, RefusedUrl> {
        let url = CallbackUrl::parse(raw, blocked_ports)?;
        match self.check_url(&url).await {
            Ok(()) => Ok(url),
            Err(reason) => Err(RefusedUrl::Blocked {
                url: url.into_string(),
                reason,
            }),
        }
    }

    /// Checks a URL's host: the literal address, or every address its name resolves to.
    pub async fn check_url(&self, url: &CallbackUrl) -> Result<(), Blocked> {
        match url.host() {
            Host::Ipv4(ip) => self.check_ip(IpAddr::V4(ip)),
            Host::Ipv6(ip) => self.check_ip(IpAddr::V6(ip)),
            Host::Domain(name) => {
                self.check_host_name(name)?;
                let unresolvable = || Blocked::Unresolvable(name.to_owned());
                let addrs = tokio::time::timeout(
                    RESOLVE_TIMEOUT,
                    tokio::net::lookup_host((name, url.port())),
                )
                .await
                .map_err(|_| unresolvable())?
                .map_err(|_| unresolvable())?
                .collect::<Vec<_>>();
                if addrs.is_empty() {
                    return Err(unresolvable());
                }
                addrs.iter().try_for_each(|addr| self.check_ip(addr.ip()))
            }
        }
    }
}

/// Every range a callback may not reach, most specific first where ranges nest. One line per
/// range, with the RFC that sets it aside; reviewed against the IANA special-purpose address
/// registries. Addresses that carry an IPv4 address inside an IPv6 one are judged by the IPv4
/// address they lead to (see `EMBEDDED_V4`).
const FORBIDDEN: &[(&str, &str)] = &[
    // IPv4
    ("0.0.0.0/8", "unspecified (\"this network\", RFC 1122)"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "carrier-grade NAT (RFC 6598)"),
    ("127.0.0.0/8", "loopback (RFC 1122)"),
    ("169.254.0.0/16", "link-local (RFC 3927)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    (
        "192.0.0.0/24",
        "special-purpose (IETF protocol assignments, RFC 6890)",
    ),
    ("192.0.2.0/24", "documentation (TEST-NET-1, RFC 5737)"),
    ("192.88.99.0/24", "6to4 relay anycast (RFC 7526)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation (TEST-NET-2, RFC 5737)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3, RFC 5737)"),
    ("224.0.0.0/4", "multicast (RFC 5771)"),
    (
        "240.0.0.0/4",
        "reserved (RFC 1112; includes broadcast, RFC 919)",
    ),
    // IPv6
    ("::/128", "unspecified (RFC 4291)"),
    ("::1/128", "loopback (RFC 4291)"),
    ("::ffff:0:0:0/96", "IPv4-translated (SIIT, RFC 2765)"),
    ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
    ("100::/64", "discard-only (RFC 6666)"),
    ("2001::/32", "Teredo tunnel (RFC 4380)"),
    (
        "2001::/23",
        "special-purpose (IETF protocol assignments, RFC 2928)",
    ),
    ("2001:db8::/32", "documentation (RFC 3849)"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("5f00::/16", "segment routing SIDs (RFC 9602)"),
    ("fc00::/7", "unique local (ULA, RFC 4193)"),
    ("fe80::/10", "link-local (RFC 4291)"),
    ("fec0::/10", "site-local (deprecated, RFC 3879)"),
    ("ff00::/8", "multicast (RFC 4291)"),
];

/// IPv6 ranges that carry an IPv4 address, where it sits (bit offset), and the RFC.
const EMBEDDED_V4: &[(&str, u32, &str)] = &[
    ("::ffff:0:0/96", 96, "IPv4-mapped (RFC 4291)"),
    ("::/96", 96, "IPv4-compatible (deprecated, RFC 4291)"),
    ("64:ff9b::/96", 96, "NAT64 well-known prefix (RFC 6052)"),
    ("2002::/16", 16, "6to4 (RFC 3056)"),
];

/// `FORBIDDEN` and `EMBEDDED_V4`, parsed once.
fn forbidden_table() -> &'static [(IpNet, &'static str)] {
    static TABLE: OnceLock<Vec<(IpNet, &'static str)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        FORBIDDEN
            .iter()
            .map(|&(net, kind)| (net.parse().expect("a valid range in FORBIDDEN"), kind))
            .collect()
    })
}

fn embedded_table() -> &'static [(Ipv6Net, u32)] {
    static TABLE: OnceLock<Vec<(Ipv6Net, u32)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        EMBEDDED_V4
            .iter()
            .map(|&(net, offset, _)| (net.parse().expect("a valid range in EMBEDDED_V4"), offset))
            .collect()
    })
}

/// The kind of non-public address `ip` is, if it is one.
fn forbidden_kind(ip: IpAddr) -> Option<&'static str> {
    if let Some((_, kind)) = forbidden_table().iter().find(|(net, _)| net.contains(&ip)) {
        return Some(kind);
    }
    match ip {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => embedded_v4(v6).and_then(|v4| forbidden_kind(IpAddr::V4(v4))),
    }
}

/// The IPv4 address an IPv6 address leads to through mapping, compatibility, NAT64 or 6to4.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    embedded_table().iter().find_map(|&(net, offset)| {
        // The 32 bits that follow the first `offset` bits (the cast keeps exactly those).
        net.contains(&ip)
            .then(|| Ipv4Addr::from((bits >> (96 - offset)) as u32))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(ip: &str) -> bool {
        SsrfGuard::default().check_ip(ip.parse().unwrap()).is_err()
    }

    #[test]
    fn private_and_special_ranges_are_blocked() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.100.100.200",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "2002:7f00:1::",
            // The gaps a black-box test found: local-use NAT64, IPv4-translated, discard-only,
            // the 6to4 relay.
            "64:ff9b:1::7f00:1",
            "64:ff9b:1:ffff::808:808",
            "::ffff:0:7f00:1",
            "::ffff:0:808:808",
            "100::1",
            "100::ffff:ffff:ffff:ffff",
            "192.88.99.1",
            // Embedded forms of private targets.
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a00:1::",
            "2002:c0a8:101::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:db8::1",
            "3fff::1",
            "5f00::1",
            "fec0::1",
            "198.18.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "240.0.0.1",
        ] {
            assert!(blocked(ip), "{ip} should be blocked");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "93.184.215.14",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "2002:5db8:d70e::",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "64:ff9b:2::1",
            "101::1",
            "192.88.100.1",
            "2001:4860:4860::8888",
        ] {
            assert!(!blocked(ip), "{ip} should pass");
        }
    }

    #[test]
    fn every_table_range_blocks_its_first_and_last_address() {
        for (net, kind) in forbidden_table() {
            for ip in [net.network(), net.broadcast()] {
                assert!(blocked(&ip.to_string()), "{ip} ({kind}) should be blocked");
            }
        }
    }

    #[test]
    fn embedded_ipv4_is_judged_by_the_ipv4_address() {
        let cases = [
            ("::ffff:127.0.0.1", "127.0.0.1"),
            ("::10.1.2.3", "10.1.2.3"),
            ("64:ff9b::c0a8:101", "192.168.1.1"),
            ("2002:a9fe:a9fe::", "169.254.169.254"),
        ];
        for (v6, v4) in cases {
            let v6: Ipv6Addr = v6.parse().unwrap();
            assert_eq!(embedded_v4(v6), Some(v4.parse().unwrap()), "{v6}");
        }
        assert_eq!(embedded_v4("2606:4700::1111".parse().unwrap()), None);
    }

    #[test]
    fn allowlist_opens_ranges() {
        let guard = SsrfGuard::new(vec!["127.0.0.0/8".parse().unwrap()], false);
        assert!(guard.check_ip("127.0.0.1".parse().unwrap()).is_ok());
        assert!(guard.check_ip("10.0.0.1".parse().unwrap()).is_err());
        assert!(guard.check_ip("8.8.8.8".parse().unwrap()).is_ok());
        let closed = SsrfGuard::new(vec!["127.0.0.0/8".parse().unwrap()], true);
        assert!(closed.check_ip("127.0.0.1".parse().unwrap()).is_ok());
        assert!(closed.check_ip("8.8.8.8".parse().unwrap()).is_err());
    }

    #[tokio::test]
    async fn names_are_resolved_and_metadata_names_refused() {
        let guard = SsrfGuard::default();
        let url = |raw: &str| CallbackUrl::parse(raw, &[]).unwrap();
        assert!(matches!(
            guard.check_url(&url("http://localhost:9000/")).await,
            Err(Blocked::Address(_, kind)) if kind.starts_with("loopback")
        ));
        assert!(matches!(
            guard
                .check_url(&url("http://Metadata.Google.Internal./"))
                .await,
            Err(Blocked::HostName(_))
        ));
        assert!(matches!(
            guard.check_url(&url("http://no-such-host.invalid/")).await,
            Err(Blocked::Unresolvable(_))
        ));
        let open = SsrfGuard::new(
            vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            false,
        );
        assert!(open.check_url(&url("http://localhost:9000/")).await.is_ok());
    }
}
