//! The local authority: the `project_members` table, managed by the CLI and the op API.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Permission, Source, Undecided};
use crate::domain::{MemberRole, ProjectId, UserId};
use crate::store::MemberStore;

pub struct LocalMembers {
    store: Arc<dyn MemberStore>,
}

impl LocalMembers {
    pub fn new(store: Arc<dyn MemberStore>) -> Self {
        Self { store }
    }
}

#[async_trait]
impl Source for LocalMembers {
    async fn allows(
        &self,
        project: &ProjectId,
        user: &UserId,
        permission: Permission,
    ) -> Result<bool, Undecided> {
        let role = self.store.member_role(project, user).await?;
        Ok(match permission {
            Permission::Admin => role == Some(MemberRole::Admin),
            Permission::Member => role.is_some(),
        })
    }
}
