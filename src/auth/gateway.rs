//! Gateway trust: the BlueKing API gateway signs every request it forwards with a JWT in
//! `X-Bkapi-JWT` (RS256 or RS512). With its public key configured, the identity of a
//! `/{apigwType}/…` request comes from that verified token, not from headers anyone can set.

use std::fmt;
use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{Config, ConfigError};
use crate::domain::{ApigwType, UserId};
use crate::error::AppError;

pub const BKAPI_JWT: &str = "x-bkapi-jwt";

/// Seconds of clock difference tolerated on `exp` and `nbf`.
const LEEWAY_SECS: u64 = 30;

/// The gateway's RSA public key, read from `APIGW_PUBLIC_KEY_FILE` at start.
#[derive(Clone)]
pub struct GatewayKey {
    path: PathBuf,
    key: DecodingKey,
}

impl fmt::Debug for GatewayKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl GatewayKey {
    /// Reads a PEM RSA public key (`PUBLIC KEY` or `RSA PUBLIC KEY`); the error says why not.
    pub fn load(path: &Path) -> Result<Self, String> {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?;
        // A private key would "work" as a verifying key and sit in the service's config.
        if pem.windows(11).any(|w| w == b"PRIVATE KEY") {
            return Err("is a private key; configure the gateway's public key".to_owned());
        }
        let key = DecodingKey::from_rsa_pem(&pem)
            .map_err(|e| format!("is not a PEM RSA public key: {e}"))?;
        Ok(Self {
            path: path.to_owned(),
            key,
        })
    }
}

/// Verifies gateway tokens: only RS256 and RS512 against the RSA key, so `alg: none` and an HMAC
/// "signed" with the public key are refused; `exp` is required, `exp` and `nbf` are enforced.
pub struct GatewayVerifier {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    app: Option<AppClaim>,
    user: Option<UserClaim>,
}

#[derive(Deserialize)]
struct AppClaim {
    app_code: Option<String>,
    bk_app_code: Option<String>,
    #[serde(default)]
    verified: bool,
}

#[derive(Deserialize)]
struct UserClaim {
    username: Option<String>,
    bk_username: Option<String>,
    #[serde(default)]
    verified: bool,
}

impl GatewayVerifier {
    /// The verifier for `APIGW_PUBLIC_KEY_FILE`, if set. The key is read and checked now, so an
    /// unusable file stops the start with an error naming the variable.
    pub fn from_config(config: &Config) -> Result<Option<Self>, ConfigError> {
        let Some(path) = &config.apigw_public_key_file else {
            return Ok(None);
        };
        let key = GatewayKey::load(path).map_err(|reason| ConfigError {
            name: "APIGW_PUBLIC_KEY_FILE",
            value: path.display().to_string(),
            reason,
        })?;
        Ok(Some(Self::new(&key)))
    }

    pub fn new(key: &GatewayKey) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.algorithms = vec![Algorithm::RS256, Algorithm::RS512];
        validation.validate_nbf = true;
        validation.validate_aud = false;
        validation.leeway = LEEWAY_SECS;
        Self {
            key: key.key.clone(),
            validation,
        }
    }

    /// Verifies the request's token and says who acts: `Some(user)` when the token names the
    /// user (it replaces `X-DEVOPS-UID`), `None` when the header names them.
    /// - `apigw-user`: a verified user claim is required and is the user;
    /// - `apigw-app`: a verified app claim is required; the app says who acts in the header;
    /// - `apigw`: a verified user claim (which is the user) or a verified app claim (the header
    ///   names the user) is required.
    pub fn caller(
        &self,
        apigw: ApigwType,
        token: Option<&[u8]>,
    ) -> Result<Option<UserId>, AppError> {
        let token = token.ok_or_else(|| refused("header X-Bkapi-JWT is required"))?;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| refused(&format!("the X-Bkapi-JWT token is not valid: {e}")))?
            .claims;
        let verified_user = claims
            .user
            .filter(|user| user.verified)
            .and_then(|user| user.username.or(user.bk_username));
        match apigw {
            ApigwType::User => {
                let name = verified_user.ok_or_else(|| {
                    refused("the X-Bkapi-JWT token carries no verified user (user.username)")
                })?;
                parse_user(&name).map(Some)
            }
            ApigwType::App if verified_app(claims.app.as_ref()) => Ok(None),
            ApigwType::App => Err(refused(
                "the X-Bkapi-JWT token carries no verified app (app.app_code)",
            )),
            // A token that vouches for no one must not let the header name anyone.
            ApigwType::Default => match verified_user {
                Some(name) => parse_user(&name).map(Some),
                None if verified_app(claims.app.as_ref()) => Ok(None),
                None => Err(refused(
                    "the X-Bkapi-JWT token carries neither a verified user (user.username) nor \
                     a verified app (app.app_code)",
                )),
            },
        }
    }
}

/// Whether the token names an app the gateway verified.
fn verified_app(app: Option<&AppClaim>) -> bool {
    app.filter(|app| app.verified)
        .and_then(|app| app.app_code.as_ref().or(app.bk_app_code.as_ref()))
        .is_some_and(|code| !code.trim().is_empty())
}

/// The token's user name, trimmed as `X-DEVOPS-UID` is.
fn parse_user(name: &str) -> Result<UserId, AppError> {
    name.trim()
        .parse()
        .map_err(|e| refused(&format!("the X-Bkapi-JWT token's user name {e}")))
}

fn refused(reason: &str) -> AppError {
    AppError::GatewayToken(reason.to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from_file(path: &Path) -> Result<Option<GatewayVerifier>, ConfigError> {
        let vars = HashMap::from([(
            "APIGW_PUBLIC_KEY_FILE".to_owned(),
            path.to_str().unwrap().to_owned(),
        )]);
        GatewayVerifier::from_config(&Config::from_map(&vars).unwrap())
    }

    #[test]
    fn unusable_key_files_fail_naming_the_variable() {
        let unset = Config::from_map(&HashMap::new()).unwrap();
        assert!(GatewayVerifier::from_config(&unset).unwrap().is_none());

        let err = from_file("/nonexistent/key.pem".as_ref()).err().unwrap();
        assert!(err.to_string().contains("APIGW_PUBLIC_KEY_FILE"), "{err}");
        assert!(err.to_string().contains("cannot read the file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let not_a_key = dir.path().join("not-a-key.pem");
        std::fs::write(&not_a_key, "hello").unwrap();
        let err = from_file(&not_a_key).err().unwrap();
        assert!(
            err.to_string().contains("not a PEM RSA public key"),
            "{err}"
        );
        let private = dir.path().join("private.pem");
        std::fs::write(
            &private,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = from_file(&private).err().unwrap();
        assert!(err.to_string().contains("private key"), "{err}");
    }
}
