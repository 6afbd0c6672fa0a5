//! Registrations and project members.

use super::{
    CallbackEvent, CallbackId, CallbackName, CustomHeaders, EpochMillis, MemberRole, PipelineId,
    ProjectId, Region, UserId,
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

/// A pipeline-level callback as stored: one of a pipeline's callbacks, keyed by its name.
#[derive(Debug, Clone)]
pub struct PipelineCallback {
    pub name: CallbackName,
    pub url: String,
    pub event: CallbackEvent,
    pub region: Region,
    pub has_secret_token: bool,
    /// False once failures disabled it (see the delivery's auto-disable); a re-POST enables it.
    pub enabled: bool,
    pub disabled_reason: Option<String>,
}

/// What a pipeline-level create (upsert by name) writes for one name.
#[derive(Debug, Clone)]
pub struct NewPipelineCallback {
    pub name: CallbackName,
    /// Vetted by the SSRF rule.
    pub url: String,
    pub event: CallbackEvent,
    pub region: Region,
    pub secret_token: Option<Secret>,
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

/// A registration brought over from another system (bk-ci) with its whole state: its id there,
/// which the other system's clients keep using, whether it is enabled and since when it fails.
#[derive(Debug, Clone)]
pub struct ImportedCallback {
    pub id: CallbackId,
    pub callback: NewCallback,
    /// The last one to change it there (`callback.user` created it).
    pub updater: UserId,
    pub created_at: EpochMillis,
    pub updated_at: EpochMillis,
    pub enabled: bool,
    pub failure_time: Option<EpochMillis>,
    pub disabled_reason: Option<String>,
}

/// A pipeline-level registration brought over from another system (bk-ci), keyed by its name.
#[derive(Debug, Clone)]
pub struct ImportedPipelineCallback {
    pub project_id: ProjectId,
    pub pipeline_id: PipelineId,
    pub callback: NewPipelineCallback,
    pub user: UserId,
    pub created_at: EpochMillis,
    pub updated_at: EpochMillis,
}

/// What importing one registration did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportOutcome {
    Imported,
    Updated,
    Unchanged,
    /// Not written: a different registration here holds its id or its key.
    Conflict(String),
}
