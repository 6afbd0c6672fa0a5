//! Reading bk-ci's registration tables (`devops_ci_process`) from MySQL/MariaDB.

use sqlx::mysql::MySqlPool;

/// A row of `T_PROJECT_PIPELINE_CALLBACK`: a project-level registration, or a global one when
/// `project_id` is `DEVOPS_ALL_PROJECT`.
#[derive(Debug, sqlx::FromRow)]
pub struct ProjectCallbackRow {
    pub id: i64,
    pub project_id: String,
    pub event: Option<String>,
    pub url: String,
    pub creator: String,
    pub updater: String,
    /// `yyyy-MM-dd HH:mm:ss`, bk-ci's local time.
    pub created_time: String,
    pub updated_time: String,
    /// Plaintext in bk-ci.
    pub secret_token: Option<String>,
    pub enabled: i64,
    pub failure_time: Option<String>,
    /// Base64 AES of the `ISecretParam` JSON.
    pub secret_param: Option<String>,
}

/// A row of `T_PIPELINE_CALLBACK`: a pipeline-level registration, keyed by its name.
#[derive(Debug, sqlx::FromRow)]
pub struct PipelineCallbackRow {
    pub project_id: String,
    pub pipeline_id: String,
    pub name: String,
    pub event: String,
    pub region: Option<String>,
    pub url: String,
    /// Base64 AES of the token.
    pub secret_token: Option<String>,
    pub user_id: Option<String>,
    pub create_time: Option<String>,
    pub update_time: Option<String>,
}

const DATETIME: &str = "'%Y-%m-%d %H:%i:%s'";

pub async fn project_callbacks(pool: &MySqlPool) -> Result<Vec<ProjectCallbackRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT ID AS id, PROJECT_ID AS project_id, EVENTS AS event, CALLBACK_URL AS url, \
             CREATOR AS creator, UPDATOR AS updater, \
             DATE_FORMAT(CREATED_TIME, {DATETIME}) AS created_time, \
             DATE_FORMAT(UPDATED_TIME, {DATETIME}) AS updated_time, \
             SECRET_TOKEN AS secret_token, CAST(ENABLE + 0 AS SIGNED) AS enabled, \
             DATE_FORMAT(FAILURE_TIME, {DATETIME}) AS failure_time, SECRET_PARAM AS secret_param \
         FROM T_PROJECT_PIPELINE_CALLBACK ORDER BY ID"
    ))
    .fetch_all(pool)
    .await
}

pub async fn pipeline_callbacks(pool: &MySqlPool) -> Result<Vec<PipelineCallbackRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT PROJECT_ID AS project_id, PIPELINE_ID AS pipeline_id, NAME AS name, \
             EVENT_TYPE AS event, REGION AS region, URL AS url, SECRET_TOKEN AS secret_token, \
             USER_ID AS user_id, DATE_FORMAT(CREATE_TIME, {DATETIME}) AS create_time, \
             DATE_FORMAT(UPDATE_TIME, {DATETIME}) AS update_time \
         FROM T_PIPELINE_CALLBACK ORDER BY PROJECT_ID, PIPELINE_ID, NAME"
    ))
    .fetch_all(pool)
    .await
}

/// A pipeline's `T_PIPELINE_INFO` row, soft-deleted or not, as the bus bridge reads it for
/// DELETE_PIPELINE (no bk-ci service API answers for a deleted pipeline).
#[derive(Debug, sqlx::FromRow)]
pub struct PipelineInfoRow {
    pub name: String,
    pub last_modify_user: String,
    /// `UPDATE_TIME` in epoch ms (a `timestamp`, so the session's zone does not matter).
    pub update_time: i64,
}

pub async fn pipeline_row(
    pool: &MySqlPool,
    project: &str,
    pipeline: &str,
) -> Result<Option<PipelineInfoRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT PIPELINE_NAME AS name, LAST_MODIFY_USER AS last_modify_user, \
             CAST(UNIX_TIMESTAMP(UPDATE_TIME) * 1000 AS SIGNED) AS update_time \
         FROM T_PIPELINE_INFO WHERE PROJECT_ID = ? AND PIPELINE_ID = ?",
    )
    .bind(project)
    .bind(pipeline)
    .fetch_optional(pool)
    .await
}
