//! The op API for the local authority: `/op/projects/{projectId}/members…`, service token only.
//! Under `AUTH_MODE=bkci` the bk-ci auth service decides and the local table is not read, so
//! these routes answer 409 rather than accept changes that would have no effect.

use axum::extract::State;
use serde::{Deserialize, Serialize};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::MEMBERS_MANAGED_IN_BKCI;
use crate::config::AuthMode;
use crate::domain::{EpochMillis, Member, MemberRole, ProjectId, UserId};
use crate::error::{AppError, Result};
use crate::http::envelope::{Envelope, ErrorResponse};
use crate::http::extract::{Path, Query, ServiceCaller, ServiceTokenHeader, parse_project_id};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(set, remove))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
struct MemberPath {
    #[param(value_type = ProjectId)]
    project_id: String,
    #[param(value_type = UserId)]
    user_id: String,
}

impl MemberPath {
    fn parse(self) -> Result<(ProjectId, UserId)> {
        let user = self
            .user_id
            .parse()
            .map_err(|e| AppError::BadRequest(format!("path parameter userId {e}")))?;
        Ok((parse_project_id(&self.project_id)?, user))
    }
}

fn local_authority(state: &AppState) -> Result<()> {
    match state.config.auth_mode {
        AuthMode::Local => Ok(()),
        AuthMode::BkCi(_) => Err(AppError::Conflict(MEMBERS_MANAGED_IN_BKCI.to_owned())),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct RoleParams {
    role: MemberRole,
}

/// Adds the user to the project, or changes their role.
#[utoipa::path(
    put,
    path = "/op/projects/{project_id}/members/{user_id}",
    operation_id = "member_set",
    tag = "op",
    params(MemberPath, ServiceTokenHeader, RoleParams),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn set(
    State(state): State<AppState>,
    _: ServiceCaller,
    Path(path): Path<MemberPath>,
    Query(RoleParams { role }): Query<RoleParams>,
) -> Result<Envelope<bool>> {
    local_authority(&state)?;
    let (project, user) = path.parse()?;
    state.store.set_member(&project, &user, role).await?;
    state.authority.forget(&project, &user).await;
    Ok(Envelope::ok(true))
}

/// Removes the user; `data` is false when they were not a member.
#[utoipa::path(
    delete,
    path = "/op/projects/{project_id}/members/{user_id}",
    operation_id = "member_remove",
    tag = "op",
    params(MemberPath, ServiceTokenHeader),
    responses((status = 200, description = "Success envelope", body = Envelope<bool>), ErrorResponse)
)]
async fn remove(
    State(state): State<AppState>,
    _: ServiceCaller,
    Path(path): Path<MemberPath>,
) -> Result<Envelope<bool>> {
    local_authority(&state)?;
    let (project, user) = path.parse()?;
    let removed = state.store.remove_member(&project, &user).await?;
    state.authority.forget(&project, &user).await;
    Ok(Envelope::ok(removed))
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct MemberRecord {
    project_id: ProjectId,
    user_id: UserId,
    role: MemberRole,
    created_time: EpochMillis,
    updated_time: EpochMillis,
}

impl From<Member> for MemberRecord {
    fn from(m: Member) -> Self {
        Self {
            project_id: m.project_id,
            user_id: m.user_id,
            role: m.role,
            created_time: m.created_at,
            updated_time: m.updated_at,
        }
    }
}

/// The project's members, by user id.
#[utoipa::path(
    get,
    path = "/op/projects/{project_id}/members",
    operation_id = "member_list",
    tag = "op",
    params(("project_id" = ProjectId, Path, description = "The project's English name"), ServiceTokenHeader),
    responses((status = 200, description = "Success envelope", body = Envelope<Vec<MemberRecord>>), ErrorResponse)
)]
async fn list(
    State(state): State<AppState>,
    _: ServiceCaller,
    Path(project_id): Path<String>,
) -> Result<Envelope<Vec<MemberRecord>>> {
    local_authority(&state)?;
    let project = parse_project_id(&project_id)?;
    let members = state.store.list_members(&project).await?;
    Ok(Envelope::ok(
        members.into_iter().map(MemberRecord::from).collect(),
    ))
}
