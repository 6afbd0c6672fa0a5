//! The v4 callback resource: `/{apigwType}/v4/projects/{projectId}/callbacks…`.

use axum::Router;
use axum::extract::State;
use axum::routing::{delete, get, post, put};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::domain::{
    Callback, CallbackEvent, CallbackId, EpochMillis, NewCallback, Page, ProjectId, Region, UserId,
};
use crate::error::{AppError, Result};
use crate::http::envelope::Envelope;
use crate::http::extract::{ProjectScope, Query};
use crate::http::paging::PageParams;
use crate::secrets::{SEALED_PREFIX, Sealer, Secret};

const BASE: &str = "/{apigw_type}/v4/projects/{project_id}/callbacks";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(BASE, post(create))
        .route(&format!("{BASE}/"), post(create))
        .route(&format!("{BASE}/callback_list"), get(list))
        .route(&format!("{BASE}/callback"), delete(remove))
        .route(&format!("{BASE}/callback_enable"), put(enable))
        .route(&format!("{BASE}/callback_disable"), put(disable))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateParams {
    event: CallbackEvent,
    region: Region,
    url: String,
    secret_token: Option<String>,
}

/// Longest accepted `secretToken`, in bytes.
const MAX_SECRET_TOKEN_LEN: usize = 1024;

/// The seed API: register (or update) one callback. Admin only.
async fn create(
    State(state): State<AppState>,
    scope: ProjectScope,
    Query(params): Query<CreateParams>,
) -> Result<Envelope<bool>> {
    let secret_token = params.secret_token.filter(|token| !token.is_empty());
    if let Some(token) = &secret_token {
        if token.len() > MAX_SECRET_TOKEN_LEN {
            return Err(AppError::BadRequest(format!(
                "query parameter secretToken must be at most {MAX_SECRET_TOKEN_LEN} bytes"
            )));
        }
        // Stored tokens with this prefix are taken for sealed ones.
        if Sealer::is_sealed(token) {
            return Err(AppError::BadRequest(format!(
                "query parameter secretToken must not start with `{SEALED_PREFIX}`"
            )));
        }
    }
    state
        .authority
        .require_admin(&scope.project, &scope.user)
        .await?;
    let url = state.vet_callback_url(params.url).await?;
    state
        .callbacks
        .upsert(NewCallback {
            project_id: scope.project,
            url: url.into_string(),
            event: params.event,
            region: params.region,
            secret_token: secret_token.map(Secret::new),
            user: scope.user,
        })
        .await?;
    Ok(Envelope::ok(true))
}

/// A callback as the API shows it; the token itself never leaves the service.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CallbackRecord {
    id: CallbackId,
    project_id: ProjectId,
    call_back_url: String,
    events: CallbackEvent,
    region: Region,
    enable: bool,
    creator: UserId,
    updater: UserId,
    created_time: EpochMillis,
    updated_time: EpochMillis,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_time: Option<EpochMillis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disabled_reason: Option<String>,
    has_secret_token: bool,
}

impl From<Callback> for CallbackRecord {
    fn from(c: Callback) -> Self {
        Self {
            id: c.id,
            project_id: c.project_id,
            call_back_url: c.url,
            events: c.event,
            region: c.region,
            enable: c.enabled,
            creator: c.creator,
            updater: c.updater,
            created_time: c.created_at,
            updated_time: c.updated_at,
            failure_time: c.failure_time,
            disabled_reason: c.disabled_reason,
            has_secret_token: c.has_secret_token,
        }
    }
}

/// Every callback of the project, disabled ones included, newest first. Members only.
async fn list(
    State(state): State<AppState>,
    scope: ProjectScope,
    Query(params): Query<PageParams>,
) -> Result<Envelope<Page<CallbackRecord>>> {
    let request = params.validate()?;
    state
        .authority
        .require_member(&scope.project, &scope.user)
        .await?;
    let (count, callbacks) = state.store.list_callbacks(&scope.project, request).await?;
    let records = callbacks.into_iter().map(CallbackRecord::from).collect();
    Ok(Envelope::ok(Page::new(request, count, records)))
}

#[derive(Deserialize)]
struct IdParams {
    id: CallbackId,
}

/// Deletes one callback of the project. Admin only.
async fn remove(
    State(state): State<AppState>,
    scope: ProjectScope,
    Query(IdParams { id }): Query<IdParams>,
) -> Result<Envelope<bool>> {
    state
        .authority
        .require_admin(&scope.project, &scope.user)
        .await?;
    if !state.store.delete_callback(&scope.project, id).await? {
        return Err(AppError::CallbackNotFound(id));
    }
    Ok(Envelope::ok(true))
}

/// Enables a callback and clears its failure state. Admin only.
async fn enable(
    State(state): State<AppState>,
    scope: ProjectScope,
    Query(IdParams { id }): Query<IdParams>,
) -> Result<Envelope<bool>> {
    set_enabled(state, scope, id, true).await
}

/// Disables a callback: its pending deliveries stop (they are marked cancelled when due). Admin only.
async fn disable(
    State(state): State<AppState>,
    scope: ProjectScope,
    Query(IdParams { id }): Query<IdParams>,
) -> Result<Envelope<bool>> {
    set_enabled(state, scope, id, false).await
}

async fn set_enabled(
    state: AppState,
    scope: ProjectScope,
    id: CallbackId,
    enabled: bool,
) -> Result<Envelope<bool>> {
    let ProjectScope { project, user } = scope;
    state.authority.require_admin(&project, &user).await?;
    let reason = (!enabled).then(|| format!("disabled by {user}"));
    if !state
        .store
        .set_callback_enabled(&project, id, &user, enabled, reason.as_deref())
        .await?
    {
        return Err(AppError::CallbackNotFound(id));
    }
    Ok(Envelope::ok(true))
}
