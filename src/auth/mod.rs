//! Who may do what: the local authority (`project_members`), with a short decision cache so a
//! burst of requests costs one lookup while a revoked admin still loses access within the TTL.

use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;

use crate::domain::{MemberRole, ProjectId, UserId};
use crate::error::{AppError, Result};
use crate::store::Store;

pub struct Authority {
    store: Arc<dyn Store>,
    cache: Option<Cache<(ProjectId, UserId), Option<MemberRole>>>,
}

impl Authority {
    const CACHE_CAPACITY: u64 = 100_000;

    pub fn local(store: Arc<dyn Store>, ttl: Duration) -> Self {
        let cache = (!ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(Self::CACHE_CAPACITY)
                .time_to_live(ttl)
                .build()
        });
        Self { store, cache }
    }

    /// Admins may create, batch-create, delete, retry, enable and disable.
    pub async fn require_admin(&self, project: &ProjectId, user: &UserId) -> Result<()> {
        match self.role(project, user).await? {
            Some(MemberRole::Admin) => Ok(()),
            _ => Err(AppError::NotProjectAdmin {
                user: user.clone(),
                project: project.clone(),
            }),
        }
    }

    /// Members (admins included) may list and read history.
    pub async fn require_member(&self, project: &ProjectId, user: &UserId) -> Result<()> {
        match self.role(project, user).await? {
            Some(_) => Ok(()),
            None => Err(AppError::NotProjectMember {
                user: user.clone(),
                project: project.clone(),
            }),
        }
    }

    /// Drops a cached decision after this process changed the membership.
    pub async fn forget(&self, project: &ProjectId, user: &UserId) {
        if let Some(cache) = &self.cache {
            cache.invalidate(&(project.clone(), user.clone())).await;
        }
    }

    async fn role(&self, project: &ProjectId, user: &UserId) -> Result<Option<MemberRole>> {
        let Some(cache) = &self.cache else {
            return Ok(self.store.member_role(project, user).await?);
        };
        let key = (project.clone(), user.clone());
        if let Some(role) = cache.get(&key).await {
            return Ok(role);
        }
        let role = self.store.member_role(project, user).await?;
        cache.insert(key, role).await;
        Ok(role)
    }
}
