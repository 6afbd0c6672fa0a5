//! Callback URLs as registration accepts them.

/// Why a callback URL was refused before any address was looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUrl {
    #[error("the callback url is illegal: {0}")]
    Malformed(String),
    #[error("there is a high-risk port number [{0}] in the callback url")]
    BlockedPort(u16),
}

/// A callback URL that parsed as http(s) with a host, fits in 1024 bytes and avoids blocked ports.
/// The text is kept exactly as given (bk-ci compatible), the parsed form is used to connect.
#[derive(Debug, Clone)]
pub struct CallbackUrl {
    raw: String,
    parsed: url::Url,
}

impl CallbackUrl {
    pub const MAX_LEN: usize = 1024;

    pub fn parse(raw: impl Into<String>, blocked_ports: &[u16]) -> Result<Self, InvalidUrl> {
        let raw = raw.into();
        if raw.len() > Self::MAX_LEN {
            return Err(InvalidUrl::Malformed(format!(
                "longer than {} bytes",
                Self::MAX_LEN
            )));
        }
        // The URL parser would drop tabs and newlines and escape the rest, but the text is
        // stored and shown as given, so control characters are refused outright.
        if let Some(bad) = raw.chars().find(|c| c.is_control()) {
            return Err(InvalidUrl::Malformed(format!(
                "contains the control character {}",
                bad.escape_unicode()
            )));
        }
        let parsed = url::Url::parse(&raw).map_err(|e| InvalidUrl::Malformed(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(InvalidUrl::Malformed(format!(
                "scheme `{}` is not http or https",
                parsed.scheme()
            )));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(InvalidUrl::Malformed("no host".to_owned()));
        }
        let port = parsed.port_or_known_default().unwrap_or_default();
        if blocked_ports.contains(&port) {
            return Err(InvalidUrl::BlockedPort(port));
        }
        Ok(Self { raw, parsed })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn into_string(self) -> String {
        self.raw
    }

    pub fn host(&self) -> url::Host<&str> {
        self.parsed.host().expect("checked in parse")
    }

    pub fn port(&self) -> u16 {
        self.parsed.port_or_known_default().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_for_shape_and_port() {
        let blocked = [22, 6379];
        assert!(CallbackUrl::parse("https://ci.example.com/hook?a=1", &blocked).is_ok());
        for bad in [
            "ftp://x.example/",
            "not a url",
            "http://",
            "mailto:a@b.c",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(
                    CallbackUrl::parse(bad, &blocked),
                    Err(InvalidUrl::Malformed(_))
                ),
                "{bad}"
            );
        }
        let long = format!("https://x.example/{}", "a".repeat(1024));
        assert!(matches!(
            CallbackUrl::parse(&long, &blocked),
            Err(InvalidUrl::Malformed(_))
        ));
        assert_eq!(
            CallbackUrl::parse("http://x.example:6379/", &blocked).unwrap_err(),
            InvalidUrl::BlockedPort(6379)
        );
        let kept = CallbackUrl::parse("HTTP://X.example/Path", &blocked).unwrap();
        assert_eq!(kept.as_str(), "HTTP://X.example/Path");
    }
}
