//! Who may do what. One `Authority` answers "is this user an admin / a member of the project?"
//! from one of two sources — the local `project_members` table (`AUTH_MODE=local`) or the bk-ci
//! auth service (`AUTH_MODE=bkci`) — through a bounded decision cache, so a burst of requests
//! costs one lookup while a revoked admin still loses access within `AUTH_CACHE_TTL_SECS`.
//! Refusals are kept for a fifth of that, so a newly granted user waits less. A source that
//! cannot answer is a 503, never an allow, and is not cached.

mod bkci;
pub mod gateway;
mod local;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::Expiry;
use moka::future::Cache;

use crate::config::{AuthMode, Config};
use crate::domain::{ProjectId, UserId};
use crate::error::{AppError, Result};
use crate::store::{MemberStore, StoreError};

/// Why the local member table cannot be managed under `AUTH_MODE=bkci`.
pub const MEMBERS_MANAGED_IN_BKCI: &str =
    "AUTH_MODE=bkci: project members are managed in bk-ci; the local member table is not used";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// May create, batch-create, delete, retry, enable and disable.
    Admin,
    /// May list and read history (admins are members too).
    Member,
}

/// Why a source could not answer; shared by every request that waited for the same lookup.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Undecided {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the bk-ci auth service {0}")]
    Service(String),
}

impl From<Undecided> for AppError {
    fn from(undecided: Undecided) -> Self {
        match undecided {
            Undecided::Store(error) => error.into(),
            Undecided::Service(detail) => AppError::AuthServiceUnavailable(detail),
        }
    }
}

/// Where decisions come from.
#[async_trait]
trait Source: Send + Sync {
    async fn allows(
        &self,
        project: &ProjectId,
        user: &UserId,
        permission: Permission,
    ) -> Result<bool, Undecided>;
}

type DecisionCache = Cache<(ProjectId, UserId, Permission), bool>;

pub struct Authority {
    source: Box<dyn Source>,
    cache: Option<DecisionCache>,
}

impl Authority {
    const CACHE_CAPACITY: u64 = 100_000;

    /// The authority `AUTH_MODE` names.
    pub fn new(config: &Config, store: Arc<dyn MemberStore>) -> Self {
        let source: Box<dyn Source> = match &config.auth_mode {
            AuthMode::Local => Box::new(local::LocalMembers::new(store)),
            AuthMode::BkCi(service) => Box::new(bkci::BkCiAuth::new(service)),
        };
        let ttl = config.auth_cache_ttl;
        let cache = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(Self::CACHE_CAPACITY)
                .expire_after(DecisionExpiry {
                    allowed: ttl,
                    refused: ttl / 5,
                })
                .build()
        });
        Self { source, cache }
    }

    /// `Ok` if the user holds `permission` in the project, else the 403 that says which.
    pub async fn require(
        &self,
        permission: Permission,
        project: &ProjectId,
        user: &UserId,
    ) -> Result<()> {
        if self.allows(project, user, permission).await? {
            return Ok(());
        }
        let (user, project) = (user.clone(), project.clone());
        Err(match permission {
            Permission::Admin => AppError::NotProjectAdmin { user, project },
            Permission::Member => AppError::NotProjectMember { user, project },
        })
    }

    /// Drops cached decisions after this process changed the membership.
    pub async fn forget(&self, project: &ProjectId, user: &UserId) {
        if let Some(cache) = &self.cache {
            for permission in [Permission::Admin, Permission::Member] {
                cache
                    .invalidate(&(project.clone(), user.clone(), permission))
                    .await;
            }
        }
    }

    /// Concurrent lookups of the same decision share one call to the source.
    async fn allows(
        &self,
        project: &ProjectId,
        user: &UserId,
        permission: Permission,
    ) -> Result<bool> {
        let Some(cache) = &self.cache else {
            return Ok(self.source.allows(project, user, permission).await?);
        };
        cache
            .try_get_with(
                (project.clone(), user.clone(), permission),
                self.source.allows(project, user, permission),
            )
            .await
            .map_err(|shared| AppError::from((*shared).clone()))
    }
}

/// Allowed decisions live for the TTL, refusals for less.
struct DecisionExpiry {
    allowed: Duration,
    refused: Duration,
}

impl Expiry<(ProjectId, UserId, Permission), bool> for DecisionExpiry {
    fn expire_after_create(
        &self,
        _key: &(ProjectId, UserId, Permission),
        allowed: &bool,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(if *allowed { self.allowed } else { self.refused })
    }
}
