//! The SSRF rule: callback URLs must not reach loopback, private, link-local, CGNAT, ULA,
//! multicast, unspecified or cloud-metadata addresses unless `CALLBACK_ALLOWED_CIDRS` opens them.
//! Registration checks IP literals and every address a host name resolves to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnet::IpNet;
use url::Host;

use crate::domain::CallbackUrl;

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

/// The kind of non-public address `ip` is, if it is one.
fn forbidden_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private (RFC 1918)")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        Some("carrier-grade NAT")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if ip.is_broadcast() || a >= 240 {
        Some("reserved")
    } else if (a, b, c) == (192, 0, 0) || (a == 198 && (b == 18 || b == 19)) {
        Some("special-purpose (IETF protocol or benchmarking)")
    } else if matches!((a, b, c), (192, 0, 2) | (198, 51, 100) | (203, 0, 113)) {
        Some("documentation")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    // An IPv4 address wearing IPv6 clothes is judged as IPv4: mapped (::ffff:a.b.c.d),
    // compatible (::a.b.c.d) and NAT64 (64:ff9b::a.b.c.d).
    let segments = ip.segments();
    let embedded = || Ipv4Addr::from((u32::from(segments[6]) << 16) | u32::from(segments[7]));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    if segments[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        return forbidden_v4(embedded());
    }
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(embedded());
    }
    let first = segments[0];
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if first & 0xfe00 == 0xfc00 {
        Some("unique local (ULA)")
    } else if first & 0xffc0 == 0xfe80 || first & 0xffc0 == 0xfec0 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if first == 0x2001 && segments[1] == 0 {
        // Teredo hides the client's IPv4 address; nothing legitimate needs it as a target.
        Some("Teredo tunnel")
    } else if first == 0x2001 && segments[1] == 0xdb8 {
        Some("documentation")
    } else if first == 0x2002 {
        // 6to4 carries an IPv4 address in bits 16..48.
        let [_, hi, lo, ..] = ip.segments();
        let embedded = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
        forbidden_v4(embedded)
    } else {
        None
    }
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
        ] {
            assert!(!blocked(ip), "{ip} should pass");
        }
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
            Err(Blocked::Address(_, "loopback"))
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
