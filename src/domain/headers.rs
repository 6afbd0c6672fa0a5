//! Custom headers of a global callback (bk-ci's `HeaderSecretParam`): sent with every delivery,
//! kept as secret as a token, and never one of the headers a delivery sets itself.

use std::fmt;

use super::HeaderPair;

/// Names a custom header may not take (compared without case): every header a delivery sets
/// itself — content type, token, ids, trace id, user agent and the Standard Webhooks signature
/// headers — and the ones of HTTP framing and routing. (`delivery::sender` tests that every
/// header it sends is in this list.)
pub const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "user-agent",
    "x-devops-webhook-token",
    "x-devops-webhook-unique-id",
    "x-devops-trace-biz-id",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// Most custom headers of one callback.
pub const MAX_CUSTOM_HEADERS: usize = 32;
/// Longest header name, in bytes.
pub const MAX_HEADER_NAME_LEN: usize = 128;
/// Longest header value, in bytes.
pub const MAX_HEADER_VALUE_LEN: usize = 4096;
/// Most bytes of names and values together.
pub const MAX_CUSTOM_HEADER_BYTES: usize = 8192;

/// Why a set of custom headers is refused; the message names the header, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidHeader {
    #[error("header {0} is set by every delivery itself and cannot be given")]
    Reserved(String),
    #[error(
        "{0:?} is not a valid header name (1 to {MAX_HEADER_NAME_LEN} of letters, digits and !#$%&'*+-.^_`|~)"
    )]
    Name(String),
    #[error(
        "the value of header {0} must be at most {MAX_HEADER_VALUE_LEN} bytes of visible ASCII \
         and inner spaces (no control characters, no leading or trailing space)"
    )]
    Value(String),
    #[error("header {0} is given twice (header names ignore case)")]
    Repeated(String),
    #[error("at most {MAX_CUSTOM_HEADERS} headers may be given")]
    TooMany,
    #[error("the headers may take at most {MAX_CUSTOM_HEADER_BYTES} bytes in all")]
    TooLarge,
}

/// Validated custom headers, in the order given. `Debug` shows the names only.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct CustomHeaders(Vec<HeaderPair>);

impl CustomHeaders {
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Result<Self, InvalidHeader> {
        let mut headers: Vec<HeaderPair> = Vec::new();
        let mut bytes = 0;
        for (name, value) in pairs {
            if name.is_empty()
                || name.len() > MAX_HEADER_NAME_LEN
                || !name.bytes().all(is_token_byte)
            {
                return Err(InvalidHeader::Name(name));
            }
            if Self::is_reserved(&name) {
                return Err(InvalidHeader::Reserved(name));
            }
            if value.len() > MAX_HEADER_VALUE_LEN
                || !value.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
                || value.starts_with(' ')
                || value.ends_with(' ')
            {
                return Err(InvalidHeader::Value(name));
            }
            if headers.iter().any(|h| h.name.eq_ignore_ascii_case(&name)) {
                return Err(InvalidHeader::Repeated(name));
            }
            if headers.len() == MAX_CUSTOM_HEADERS {
                return Err(InvalidHeader::TooMany);
            }
            bytes += name.len() + value.len();
            if bytes > MAX_CUSTOM_HEADER_BYTES {
                return Err(InvalidHeader::TooLarge);
            }
            headers.push(HeaderPair { name, value });
        }
        Ok(Self(headers))
    }

    /// Whether `name` is one a delivery sets itself (see [`RESERVED_HEADERS`]).
    pub fn is_reserved(name: &str) -> bool {
        RESERVED_HEADERS
            .iter()
            .any(|reserved| reserved.eq_ignore_ascii_case(name))
    }

    pub fn pairs(&self) -> &[HeaderPair] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The stored form before sealing: a JSON array of `[name, value]` pairs, in order.
    pub fn to_json(&self) -> String {
        let pairs: Vec<[&str; 2]> = self
            .0
            .iter()
            .map(|h| [h.name.as_str(), h.value.as_str()])
            .collect();
        serde_json::to_string(&pairs).expect("string pairs serialize")
    }

    /// The headers of a stored form `to_json` made (checked again, as any stored value is).
    pub fn from_json(text: &str) -> Result<Self, StoredHeadersError> {
        let pairs: Vec<(String, String)> =
            serde_json::from_str(text).map_err(|_| StoredHeadersError::NotJson)?;
        Self::new(pairs).map_err(StoredHeadersError::Invalid)
    }
}

/// A stored value that is not headers `CustomHeaders::to_json` could have written. The message
/// never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoredHeadersError {
    #[error("it is not a JSON array of [name, value] pairs")]
    NotJson,
    #[error(transparent)]
    Invalid(InvalidHeader),
}

impl fmt::Debug for CustomHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|h| (&h.name, "***")))
            .finish()
    }
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Result<CustomHeaders, InvalidHeader> {
        CustomHeaders::new(
            pairs
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
        )
    }

    #[test]
    fn valid_headers_keep_their_order_and_round_trip() {
        let given = headers(&[("X-Tenant", "t1"), ("Authorization", "Bearer abc")]).unwrap();
        let names: Vec<&str> = given.pairs().iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["X-Tenant", "Authorization"]);
        assert_eq!(CustomHeaders::from_json(&given.to_json()).unwrap(), given);
        assert_eq!(
            format!("{given:?}"),
            r#"{"X-Tenant": "***", "Authorization": "***"}"#
        );
    }

    #[test]
    fn reserved_bad_and_repeated_headers_are_refused() {
        for name in [
            "content-type",
            "Webhook-Signature",
            "HOST",
            "X-DEVOPS-WEBHOOK-TOKEN",
        ] {
            assert_eq!(
                headers(&[(name, "v")]),
                Err(InvalidHeader::Reserved(name.to_owned()))
            );
        }
        for name in ["", "Bad Name", "a:b", "x\r\ny", "é"] {
            assert_eq!(
                headers(&[(name, "v")]),
                Err(InvalidHeader::Name(name.to_owned()))
            );
        }
        for value in ["a\r\nb", "nul\0", " lead", "trail ", "é"] {
            assert!(matches!(
                headers(&[("X-A", value)]),
                Err(InvalidHeader::Value(_))
            ));
        }
        assert_eq!(
            headers(&[("X-A", "1"), ("x-a", "2")]),
            Err(InvalidHeader::Repeated("x-a".to_owned()))
        );
        let many: Vec<(String, String)> = (0..=MAX_CUSTOM_HEADERS)
            .map(|i| (format!("X-{i}"), "v".to_owned()))
            .collect();
        assert_eq!(CustomHeaders::new(many), Err(InvalidHeader::TooMany));
        let big = "v".repeat(MAX_HEADER_VALUE_LEN);
        assert_eq!(
            headers(&[("X-1", &big), ("X-2", &big), ("X-3", &big)]),
            Err(InvalidHeader::TooLarge)
        );
        assert!(headers(&[("X-Empty", "")]).is_ok());
        assert!(CustomHeaders::from_json("{}").is_err());
    }
}
