//! RSA keys for gateway tokens, made once per test binary (aws-lc generates a 2048-bit key in
//! milliseconds even in a debug build), and tokens signed with them.

use std::sync::OnceLock;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub struct GatewayKeys {
    /// The gateway's key pair: the service is given `public_pem`.
    pub private_pem: String,
    pub public_pem: String,
    /// A key the service does not know.
    pub stranger_pem: String,
}

pub fn keys() -> &'static GatewayKeys {
    static KEYS: OnceLock<GatewayKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let gateway = KeyPair::generate(KeySize::Rsa2048).expect("RSA key");
        let stranger = KeyPair::generate(KeySize::Rsa2048).expect("RSA key");
        let public: PublicKeyX509Der = gateway.public_key().as_der().unwrap();
        GatewayKeys {
            private_pem: private_pem(&gateway),
            public_pem: pem("PUBLIC KEY", public.as_ref()),
            stranger_pem: private_pem(&stranger),
        }
    })
}

fn private_pem(pair: &KeyPair) -> String {
    let der: Pkcs8V1Der = pair.as_der().unwrap();
    pem("PRIVATE KEY", der.as_ref())
}

fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// The gateway's public key in a file, for `APIGW_PUBLIC_KEY_FILE`.
pub fn public_key_file() -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &keys().public_pem).unwrap();
    file
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims as the BlueKing gateway writes them, valid for the next ten minutes.
pub fn claims(app: Option<&str>, user: Option<&str>) -> Value {
    let mut claims = json!({"iss": "APIGW", "exp": now() + 600, "nbf": now() - 10});
    if let Some(app) = app {
        claims["app"] = json!({"app_code": app, "verified": true, "version": 1});
    }
    if let Some(user) = user {
        claims["user"] = json!({"username": user, "verified": true, "version": 1});
    }
    claims
}

/// Signs with the gateway's private key (or `key_pem`) using `alg`.
pub fn sign_with(alg: Algorithm, key_pem: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_rsa_pem(key_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

pub fn sign(claims: &Value) -> String {
    sign_with(Algorithm::RS256, &keys().private_pem, claims)
}

/// A token with `{"alg":"none"}` and an empty signature.
pub fn unsigned(claims: &Value) -> String {
    let part = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());
    format!(
        "{}.{}.",
        part(&json!({"alg": "none", "typ": "JWT"})),
        part(claims)
    )
}

/// The classic confusion: HS256 "signed" with the public key's PEM text as the HMAC secret.
pub fn hmac_with_public_key(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(keys().public_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}
