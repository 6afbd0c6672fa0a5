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
use crate::http::extract::{Caller, ProjectScope, Query};
use crate::http::paging::PageParams;

const BASE: &str = "/{apigw_type}/v4/projects/{project_id}/callbacks";

pub fn router() -> Router<AppState> {
    Router::new()
        .route(BASE, post(create))
        .route(&format!("{BASE}/"), post(create))
        .route(&format!("{BASE}/batch"), post(create_batch))
        .route(&format!("{BASE}/callback_list"), get(list))
        .route(&format!("{BASE}/callback"), delete(remove))
        .route(&format!("{BASE}/callback_enable"), put(enable))
        .route(&format!("{BASE}/callback_disable"), put(disable))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreateParams {
    pub event: CallbackEvent,
    pub region: Region,
    pub url: String,
    pub secret_token: Option<String>,
}

/// Longest accepted `secretToken`, in bytes.
const MAX_SECRET_TOKEN_LEN: usize = 1024;

/// `secretToken` as stored: empty means none, and it has a length limit.
pub(super) fn secret_token(param: Option<String>) -> Result<Option<String>> {
    let token = param.filter(|token| !token.is_empty());
    if token
        .as_ref()
        .is_some_and(|t| t.len() > MAX_SECRET_TOKEN_LEN)
    {
        return Err(AppError::BadRequest(format!(
            "query parameter secretToken must be at most {MAX_SECRET_TOKEN_LEN} bytes"
        )));
    }
    Ok(token)
}

/// The seed API: register (or update) one callback. Admin only.
async fn create(
    State(state): State<AppState>,
    scope: ProjectScope,
    Caller(user): Caller,
    Query(params): Query<CreateParams>,
) -> Result<Envelope<bool>> {
    let secret_token = secret_token(params.secret_token)?;
    state.authority.require_admin(&scope.project, &user).await?;
    let url = state.vet_callback_url(params.url).await?;
    state
        .callbacks
        .upsert(NewCallback {
            project_id: scope.project,
            url: url.into_string(),
            event: params.event,
            region: params.region,
            secret_token,
            user,
        })
        .await?;
    Ok(Envelope::ok(true))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BatchParams {
    event: String,
    region: Region,
    url: String,
    secret_token: Option<String>,
}

/// bk-ci's `CreateCallBackResult`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct BatchResult {
    success_events: Vec<CallbackEvent>,
    /// Event name → reason. The events are written in one statement, all or none, so a
    /// failure is an error answer instead and this stays empty.
    failure_events: std::collections::BTreeMap<String, String>,
}

/// Registers one URL for several events (`event=BUILD_START,BUILD_END`). Admin only.
async fn create_batch(
    State(state): State<AppState>,
    scope: ProjectScope,
    Caller(user): Caller,
    Query(params): Query<BatchParams>,
) -> Result<Envelope<BatchResult>> {
    let events = parse_event_list(&params.event)?;
    let secret_token = secret_token(params.secret_token)?;
    state.authority.require_admin(&scope.project, &user).await?;
    let url = state.vet_callback_url(params.url).await?.into_string();
    let rows: Vec<NewCallback> = events
        .iter()
        .map(|&event| NewCallback {
            project_id: scope.project.clone(),
            url: url.clone(),
            event,
            region: params.region,
            secret_token: secret_token.clone(),
            user: user.clone(),
        })
        .collect();
    state.store.upsert_callbacks(&rows).await?;
    Ok(Envelope::ok(BatchResult {
        success_events: events,
        failure_events: Default::default(),
    }))
}

/// `"BUILD_START, BUILD_END,BUILD_START"` → both events once, in first-seen order; any unknown
/// name refuses the whole list.
fn parse_event_list(raw: &str) -> Result<Vec<CallbackEvent>> {
    let mut events = Vec::new();
    for name in raw
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let event: CallbackEvent = name
            .parse()
            .map_err(|e| AppError::BadRequest(format!("invalid query parameter: event: {e}")))?;
        if !events.contains(&event) {
            events.push(event);
        }
    }
    if events.is_empty() {
        return Err(AppError::BadRequest(
            "query parameter event must name at least one event".to_owned(),
        ));
    }
    Ok(events)
}

/// A callback as the API shows it; the token itself never leaves the service.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CallbackRecord {
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
    Caller(user): Caller,
    Query(params): Query<PageParams>,
) -> Result<Envelope<Page<CallbackRecord>>> {
    let request = params.validate()?;
    state
        .authority
        .require_member(&scope.project, &user)
        .await?;
    page_of(&state, &scope.project, request).await
}

pub(super) async fn page_of(
    state: &AppState,
    project: &ProjectId,
    request: crate::domain::PageRequest,
) -> Result<Envelope<Page<CallbackRecord>>> {
    let (count, callbacks) = state.store.list_callbacks(project, request).await?;
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
    Caller(user): Caller,
    Query(IdParams { id }): Query<IdParams>,
) -> Result<Envelope<bool>> {
    state.authority.require_admin(&scope.project, &user).await?;
    if !state.store.delete_callback(&scope.project, id).await? {
        return Err(AppError::CallbackNotFound(id));
    }
    Ok(Envelope::ok(true))
}

/// Enables a callback and clears its failure state. Admin only.
async fn enable(
    State(state): State<AppState>,
    scope: ProjectScope,
    Caller(user): Caller,
    Query(IdParams { id }): Query<IdParams>,
) -> Result<Envelope<bool>> {
    set_enabled(state, scope, user, id, true).await
}

/// Disables a callback: its pending deliveries stop (they are marked cancelled when due). Admin only.
async fn disable(
    State(state): State<AppState>,
    scope: ProjectScope,
    Caller(user): Caller,
    Query(IdParams { id }): Query<IdParams>,
) -> Result<Envelope<bool>> {
    set_enabled(state, scope, user, id, false).await
}

async fn set_enabled(
    state: AppState,
    scope: ProjectScope,
    user: UserId,
    id: CallbackId,
    enabled: bool,
) -> Result<Envelope<bool>> {
    state.authority.require_admin(&scope.project, &user).await?;
    let reason = (!enabled).then(|| format!("disabled by {user}"));
    if !state
        .store
        .set_callback_enabled(&scope.project, id, &user, enabled, reason.as_deref())
        .await?
    {
        return Err(AppError::CallbackNotFound(id));
    }
    Ok(Envelope::ok(true))
}
