//! Registrations and project members.

use super::{
    CallbackEvent, CallbackId, CustomHeaders, EpochMillis, MemberRole, ProjectId, Region, UserId,
};
use crate::secrets::Secret;

/// A registered callback, as stored.
#[derive(Debug, Clone)]
pub struct Callback {
    pub id: CallbackId,
    pub project_id: ProjectId,
    pub url: String,
    pub event: CallbackEvent,
    pub region: Region,
    pub enabled: bool,
    pub has_secret_token: bool,
    pub creator: UserId,
    pub updater: UserId,
    pub created_at: EpochMillis,
    pub updated_at: EpochMillis,
    pub failure_time: Option<EpochMillis>,
    pub disabled_reason: Option<String>,
}

/// What a create (upsert) writes.
#[derive(Debug, Clone)]
pub struct NewCallback {
    pub project_id: ProjectId,
    pub url: String,
    pub event: CallbackEvent,
    pub region: Region,
    pub secret_token: Option<Secret>,
    /// Replaces the stored custom headers (none: removes them).
    pub headers: CustomHeaders,
    pub user: UserId,
}

/// An enabled global callback as bk-ci's op list shows it, with its custom headers opened.
#[derive(Debug, Clone)]
pub struct GlobalCallback {
    pub callback: Callback,
    pub headers: CustomHeaders,
}

/// A member of a project under the local authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub project_id: ProjectId,
    pub user_id: UserId,
    pub role: MemberRole,
    pub created_at: EpochMillis,
    pub updated_at: EpochMillis,
}
