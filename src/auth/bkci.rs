//! The bk-ci authority: `GET {BKCI_AUTH_URL}/service/auth/projects/{projectId}/users/{userId}/
//! checkProjectManager` (admin) or `…/isProjectUsers` (member) with `X-DEVOPS-BK-TOKEN`, answered
//! with the envelope `{"status":0,"data":true|false}`. Anything else — no connection, a timeout,
//! a non-2xx, a body that is not that envelope — is `Undecided`, which the caller answers 503.

use async_trait::async_trait;
use reqwest::header::HeaderValue;
use serde::Deserialize;

use super::{Permission, Source, Undecided};
use crate::config::BkCiAuthConfig;
use crate::domain::{ProjectId, UserId};

/// Longest answer read; the real one is a few dozen bytes.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

pub struct BkCiAuth {
    client: reqwest::Client,
    base: url::Url,
    token: HeaderValue,
}

#[derive(Deserialize)]
struct Answer {
    status: i64,
    data: bool,
}

impl BkCiAuth {
    pub fn new(config: &BkCiAuthConfig) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // An internal service: never route its token through a proxy from the environment.
            .no_proxy()
            .build()
            .expect("the auth service HTTP client builds");
        let mut token =
            HeaderValue::from_str(config.token.expose()).expect("checked when the config was read");
        token.set_sensitive(true);
        Self {
            client,
            base: config.url.clone(),
            token,
        }
    }

    /// Each part is its own percent-encoded path segment: a user id may hold `/`, `?` or `#`.
    fn url(&self, project: &ProjectId, user: &UserId, permission: Permission) -> url::Url {
        let question = match permission {
            Permission::Admin => "checkProjectManager",
            Permission::Member => "isProjectUsers",
        };
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) URL, checked when the config was read")
            .pop_if_empty()
            .extend([
                "service",
                "auth",
                "projects",
                project.as_str(),
                "users",
                user.as_str(),
                question,
            ]);
        url
    }
}

#[async_trait]
impl Source for BkCiAuth {
    async fn allows(
        &self,
        project: &ProjectId,
        user: &UserId,
        permission: Permission,
    ) -> Result<bool, Undecided> {
        let unusable = |why: String| Undecided::Service(why);
        let mut response = self
            .client
            .get(self.url(project, user, permission))
            .header("X-DEVOPS-BK-TOKEN", self.token.clone())
            .send()
            .await
            .map_err(|e| {
                unusable(if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    format!("is unreachable: {e}")
                })
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(unusable(format!("answered HTTP {status}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unusable(format!("broke off its answer: {e}")))?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_ANSWER_BYTES {
                return Err(unusable("answered with an oversized body".to_owned()));
            }
        }
        let answer: Answer = serde_json::from_slice(&body).map_err(|e| {
            unusable(format!(
                "answered something other than {{\"status\":0,\"data\":<bool>}}: {e}"
            ))
        })?;
        if answer.status != 0 {
            return Err(unusable(format!(
                "answered with error status {}",
                answer.status
            )));
        }
        Ok(answer.data)
    }
}
