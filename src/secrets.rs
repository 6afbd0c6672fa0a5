//! Secrets: values that must never be printed, and the sealing of callback tokens at rest.
//!
//! With `SECRET_ENCRYPTION_KEY` set, every stored `secretToken` is sealed with
//! XChaCha20-Poly1305 under a random 192-bit nonce and kept as `enc:v1:<base64(nonce‖ciphertext)>`.
//! The associated data binds a sealed token to its callback's project and URL, so a token moved
//! to another row, or a row whose URL was changed in the database, no longer opens.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// A secret that never shows up in `Debug` output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Longest accepted callback secret token, in bytes.
pub const MAX_TOKEN_LEN: usize = 1024;

/// Why a callback secret token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    #[error("must be at most {MAX_TOKEN_LEN} bytes")]
    TooLong,
    #[error("may only contain visible ASCII characters (no spaces or control characters)")]
    NotVisibleAscii,
    #[error("must not start with `{SEALED_PREFIX}`")]
    LooksSealed,
}

impl Secret {
    /// A callback's secret token as stored: empty means none, it has a length limit, visible
    /// ASCII only (it travels as a header value and keys the signature: nothing that could
    /// break a header or read differently on the receiver's side), and it must not look sealed
    /// (stored tokens with that prefix are taken for sealed ones).
    pub fn callback_token(token: String) -> Result<Option<Self>, InvalidToken> {
        if token.is_empty() {
            return Ok(None);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(InvalidToken::TooLong);
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidToken::NotVisibleAscii);
        }
        if Sealer::is_sealed(&token) {
            return Err(InvalidToken::LooksSealed);
        }
        Ok(Some(Self(token)))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// `SECRET_ENCRYPTION_KEY`: 32 bytes, base64.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl FromStr for SecretKey {
    type Err = String;

    /// The message never repeats the value.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = BASE64
            .decode(s.trim())
            .map_err(|_| "is not base64 (generate a key with: openssl rand -base64 32)")?;
        let key = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            format!(
                "must decode to 32 bytes, not {} (generate a key with: openssl rand -base64 32)",
                bytes.len()
            )
        })?;
        Ok(Self(key))
    }
}

/// Prefix of a sealed value; a plaintext token may not start with it (the API refuses one).
pub const SEALED_PREFIX: &str = "enc:v1:";

/// The known text whose sealed form, stored once, proves at start that the key is the right one.
const KEY_CHECK_TEXT: &str = "devops-callbacks secret key check";
const KEY_CHECK_CONTEXT: &str = "key-check";
const NONCE_LEN: usize = 24;

/// A stored value that cannot be opened. The message never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unsealable {
    #[error("it is encrypted but SECRET_ENCRYPTION_KEY is not set")]
    NoKey,
    #[error("it does not decrypt with SECRET_ENCRYPTION_KEY (another key, or altered data)")]
    WrongKeyOrAltered,
}

/// Seals and opens stored tokens; without a key it stores plaintext and opens only plaintext.
#[derive(Clone)]
pub struct Sealer {
    cipher: Option<XChaCha20Poly1305>,
}

impl Sealer {
    pub fn new(key: Option<&SecretKey>) -> Self {
        Self {
            cipher: key.map(|key| XChaCha20Poly1305::new(&key.0.into())),
        }
    }

    pub fn has_key(&self) -> bool {
        self.cipher.is_some()
    }

    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(SEALED_PREFIX)
    }

    /// The form a callback's token is stored in.
    pub fn seal_token(&self, token: &str, project: &str, url: &str) -> String {
        self.seal(token, &row_context(Column::Token, project, url))
    }

    /// The token of a stored value (sealed or, from before encryption was turned on, plaintext).
    pub fn open_token(&self, stored: &str, project: &str, url: &str) -> Result<String, Unsealable> {
        self.open(stored, &row_context(Column::Token, project, url))
    }

    /// The form a callback's custom headers (their JSON) are stored in: sealed like its token,
    /// bound to the same row, under a context of their own (a sealed token moved into the
    /// headers column does not open, nor the reverse).
    pub fn seal_headers(&self, json: &str, project: &str, url: &str) -> String {
        self.seal(json, &row_context(Column::Headers, project, url))
    }

    /// The headers JSON of a stored value (see `seal_headers`).
    pub fn open_headers(
        &self,
        stored: &str,
        project: &str,
        url: &str,
    ) -> Result<String, Unsealable> {
        self.open(stored, &row_context(Column::Headers, project, url))
    }

    /// The value stored to recognise this key later; `None` without a key.
    pub fn key_check(&self) -> Option<String> {
        self.has_key()
            .then(|| self.seal(KEY_CHECK_TEXT, KEY_CHECK_CONTEXT))
    }

    /// Whether `stored` (a value `key_check` made) was sealed with this key.
    pub fn matches_key_check(&self, stored: &str) -> bool {
        Self::is_sealed(stored)
            && self
                .open(stored, KEY_CHECK_CONTEXT)
                .is_ok_and(|text| text == KEY_CHECK_TEXT)
    }

    fn seal(&self, text: &str, context: &str) -> String {
        let Some(cipher) = &self.cipher else {
            return text.to_owned();
        };
        let nonce = XNonce::generate();
        let payload = Payload {
            msg: text.as_bytes(),
            aad: context.as_bytes(),
        };
        let sealed = cipher
            .encrypt(&nonce, payload)
            .expect("XChaCha20-Poly1305 encrypts any text a request can carry");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{SEALED_PREFIX}{}", BASE64.encode(bytes))
    }

    fn open(&self, stored: &str, context: &str) -> Result<String, Unsealable> {
        let Some(encoded) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(stored.to_owned());
        };
        let cipher = self.cipher.as_ref().ok_or(Unsealable::NoKey)?;
        let bytes = BASE64
            .decode(encoded)
            .map_err(|_| Unsealable::WrongKeyOrAltered)?;
        if bytes.len() < NONCE_LEN {
            return Err(Unsealable::WrongKeyOrAltered);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| Unsealable::WrongKeyOrAltered)?;
        let payload = Payload {
            msg: sealed,
            aad: context.as_bytes(),
        };
        let text = cipher
            .decrypt(&nonce, payload)
            .map_err(|_| Unsealable::WrongKeyOrAltered)?;
        String::from_utf8(text).map_err(|_| Unsealable::WrongKeyOrAltered)
    }
}

/// The secret columns of a callback row.
#[derive(Clone, Copy)]
enum Column {
    Token,
    Headers,
}

/// Project ids cannot contain a newline, so the triple is unambiguous.
fn row_context(column: Column, project: &str, url: &str) -> String {
    let column = match column {
        Column::Token => "token",
        Column::Headers => "headers",
    };
    format!("{column}\n{project}\n{url}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SecretKey {
        BASE64.encode([byte; 32]).parse().unwrap()
    }

    #[test]
    fn tokens_round_trip_and_differ_every_time() {
        let sealer = Sealer::new(Some(&key(1)));
        let a = sealer.seal_token("hunter2", "demo", "https://x.example/");
        let b = sealer.seal_token("hunter2", "demo", "https://x.example/");
        assert!(a.starts_with(SEALED_PREFIX) && !a.contains("hunter2"));
        assert_ne!(a, b, "a fresh nonce per value");
        assert_eq!(
            sealer.open_token(&a, "demo", "https://x.example/").unwrap(),
            "hunter2"
        );
    }

    #[test]
    fn a_token_is_bound_to_its_callback_and_key() {
        let sealer = Sealer::new(Some(&key(1)));
        let sealed = sealer.seal_token("t", "demo", "https://x.example/");
        assert_eq!(
            sealer.open_token(&sealed, "demo", "https://evil.example/"),
            Err(Unsealable::WrongKeyOrAltered)
        );
        assert_eq!(
            sealer.open_token(&sealed, "other", "https://x.example/"),
            Err(Unsealable::WrongKeyOrAltered),
            "bound to its project"
        );
        let other = Sealer::new(Some(&key(2)));
        assert_eq!(
            other.open_token(&sealed, "demo", "https://x.example/"),
            Err(Unsealable::WrongKeyOrAltered)
        );
        assert_eq!(
            Sealer::new(None).open_token(&sealed, "demo", "https://x.example/"),
            Err(Unsealable::NoKey)
        );
        assert_eq!(
            sealer.open_headers(&sealed, "demo", "https://x.example/"),
            Err(Unsealable::WrongKeyOrAltered),
            "a token does not open as headers"
        );
        let headers = sealer.seal_headers("[]", "demo", "https://x.example/");
        assert_eq!(
            sealer.open_headers(&headers, "demo", "https://x.example/"),
            Ok("[]".to_owned())
        );
        assert!(
            sealer
                .open_token(&headers, "demo", "https://x.example/")
                .is_err()
        );
        let garbage = format!("{SEALED_PREFIX}AAAA");
        assert!(sealer.open_token(&garbage, "demo", "u").is_err());
    }

    #[test]
    fn plaintext_passes_through_and_no_key_stores_plaintext() {
        let sealer = Sealer::new(Some(&key(1)));
        assert_eq!(
            sealer.open_token("old-plain", "p", "u").unwrap(),
            "old-plain"
        );
        let plain = Sealer::new(None);
        assert_eq!(plain.seal_token("t", "p", "u"), "t");
        assert_eq!(plain.key_check(), None);
    }

    #[test]
    fn the_key_check_recognises_only_its_key() {
        let sealer = Sealer::new(Some(&key(1)));
        let check = sealer.key_check().unwrap();
        assert!(sealer.matches_key_check(&check));
        assert!(!Sealer::new(Some(&key(2))).matches_key_check(&check));
        assert!(!sealer.matches_key_check("plain"));
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64_and_never_print() {
        assert!("not base64!".parse::<SecretKey>().is_err());
        let short = BASE64.encode([0u8; 16]).parse::<SecretKey>().unwrap_err();
        assert!(short.contains("32 bytes"), "{short}");
        assert_eq!(format!("{:?}", key(7)), "SecretKey(***)");
    }
}
