//! Row shapes shared by both backends and their conversion into domain types.

use crate::domain::{Callback, Member};

/// Columns of `callbacks` as the list query returns them.
pub const CALLBACK_COLUMNS: &str = "id, project_id, url, event, region, enabled, \
     secret_token IS NOT NULL AS has_secret_token, creator, updater, created_at, updated_at, \
     failure_time, disabled_reason";

#[derive(sqlx::FromRow)]
pub struct CallbackRow {
    id: i64,
    project_id: String,
    url: String,
    event: String,
    region: String,
    enabled: bool,
    has_secret_token: bool,
    creator: String,
    updater: String,
    created_at: i64,
    updated_at: i64,
    failure_time: Option<i64>,
    disabled_reason: Option<String>,
}

#[derive(sqlx::FromRow)]
pub struct MemberRow {
    project_id: String,
    user_id: String,
    role: String,
    created_at: i64,
    updated_at: i64,
}

/// A stored value that no longer parses is corruption, reported as a decode error.
fn decode<T: std::str::FromStr>(column: &str, value: &str) -> Result<T, sqlx::Error>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    value.parse().map_err(|e| sqlx::Error::ColumnDecode {
        index: column.to_owned(),
        source: Box::new(e),
    })
}

impl TryFrom<CallbackRow> for Callback {
    type Error = sqlx::Error;

    fn try_from(row: CallbackRow) -> Result<Self, Self::Error> {
        Ok(Self {
            id: row.id,
            project_id: decode("project_id", &row.project_id)?,
            url: row.url,
            event: decode("event", &row.event)?,
            region: decode("region", &row.region)?,
            enabled: row.enabled,
            has_secret_token: row.has_secret_token,
            creator: decode("creator", &row.creator)?,
            updater: decode("updater", &row.updater)?,
            created_at: row.created_at,
            updated_at: row.updated_at,
            failure_time: row.failure_time,
            disabled_reason: row.disabled_reason,
        })
    }
}

impl TryFrom<MemberRow> for Member {
    type Error = sqlx::Error;

    fn try_from(row: MemberRow) -> Result<Self, Self::Error> {
        Ok(Self {
            project_id: decode("project_id", &row.project_id)?,
            user_id: decode("user_id", &row.user_id)?,
            role: decode("role", &row.role)?,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}
