//! `import-bkci`: brings bk-ci's registrations over, idempotently. Each row is checked as our
//! own API would check it (ids, event, URL shape, ports and the SSRF rule, token), decrypted
//! where bk-ci encrypted it, and stored under its bk-ci id; a row that cannot be taken is
//! skipped with its reason, and the others still go in.
//!
//! The SQL against bk-ci's database lives in `bkci.rs`: it reads another system's tables and
//! is no part of our store.

pub mod aes;
pub mod bkci;

use chrono::{NaiveDateTime, TimeZone};
use chrono_tz::Tz;

use crate::delivery::ssrf::{RefusedUrl, SsrfGuard};
use crate::domain::{
    CallbackEvent, CustomHeaders, EpochMillis, ImportOutcome, ImportedCallback,
    ImportedPipelineCallback, NewCallback, NewPipelineCallback, ProjectId, Region, UserId,
    now_millis,
};
use crate::http::secret_param_headers;
use crate::secrets::Secret;
use crate::store::{ImportStore, StoreError};
use aes::BkciCipher;
use bkci::{PipelineCallbackRow, ProjectCallbackRow};

/// How to read bk-ci's rows.
pub struct Options {
    /// `project.callback.aes-key`, for the values bk-ci encrypted.
    pub aes_key: Option<String>,
    /// bk-ci's time zone (its JDBC `serverTimezone`): its datetimes carry none.
    pub time_zone: Tz,
    /// What the rows' URLs must pass, as at registration.
    pub blocked_ports: Vec<u16>,
    /// Decide and report everything, write nothing.
    pub dry_run: bool,
}

/// What happened to one row.
#[derive(Debug)]
pub struct Entry {
    /// The row, in bk-ci's terms (`T_PROJECT_PIPELINE_CALLBACK#12`, …).
    pub row: String,
    pub result: Result<ImportOutcome, String>,
}

/// Reads a row of bk-ci's into our terms, or says why it cannot be taken.
struct Reader<'a> {
    options: &'a Options,
    cipher: Option<BkciCipher>,
    guard: &'a SsrfGuard,
}

impl Reader<'_> {
    fn time(&self, column: &str, text: &str) -> Result<EpochMillis, String> {
        let naive = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
            .map_err(|e| format!("{column} `{text}` is not a date-time: {e}"))?;
        self.options
            .time_zone
            .from_local_datetime(&naive)
            .earliest()
            .map(|t| t.timestamp_millis())
            .ok_or_else(|| {
                format!(
                    "{column} `{text}` does not exist in {}",
                    self.options.time_zone
                )
            })
    }

    async fn url(&self, raw: &str) -> Result<String, String> {
        match self.guard.vet(raw, &self.options.blocked_ports).await {
            Ok(url) => Ok(url.into_string()),
            Err(RefusedUrl::Blocked { reason, .. }) => Err(format!("url refused: {reason}")),
            Err(invalid) => Err(format!("url refused: {invalid}")),
        }
    }

    /// A project-level or global registration. Those bk-ci never delivers (global rows of
    /// other than PROJECT_* events, PROJECT_CREATE and STREAM_ENABLED, which nothing produces
    /// there) come over disabled, with the reason, rather than suddenly firing.
    async fn project_callback(&self, row: &ProjectCallbackRow) -> Result<ImportedCallback, String> {
        let project = ProjectId::from_stored(&row.project_id)
            .map_err(|e| format!("PROJECT_ID `{}` {e}", row.project_id))?;
        let event: CallbackEvent = row
            .event
            .as_deref()
            .ok_or("EVENTS is empty")?
            .parse()
            .map_err(|e| format!("EVENTS: {e}"))?;
        let user = |column: &str, raw: &str| {
            raw.parse::<UserId>()
                .map_err(|e| format!("{column} `{raw}` {e}"))
        };
        let secret_token = match &row.secret_token {
            Some(token) => {
                Secret::callback_token(token.clone()).map_err(|e| format!("SECRET_TOKEN {e}"))?
            }
            None => None,
        };
        let headers = match &row.secret_param {
            Some(encrypted) => {
                let json = self.decrypt("SECRET_PARAM", encrypted)?;
                let pairs = secret_param_headers(&json)
                    .map_err(|e| format!("SECRET_PARAM is not a header ISecretParam: {e}"))?;
                CustomHeaders::new(pairs).map_err(|e| format!("SECRET_PARAM: {e}"))?
            }
            None => CustomHeaders::default(),
        };
        let inert = inert_reason(&project, event);
        Ok(ImportedCallback {
            id: row.id,
            callback: NewCallback {
                url: self.url(&row.url).await?,
                project_id: project,
                event,
                // bk-ci keeps no region for these rows; IDC is what it stores for none.
                region: Region::Idc,
                secret_token,
                headers,
                user: user("CREATOR", &row.creator)?,
            },
            updater: user("UPDATOR", &row.updater)?,
            created_at: self.time("CREATED_TIME", &row.created_time)?,
            updated_at: self.time("UPDATED_TIME", &row.updated_time)?,
            enabled: row.enabled != 0 && inert.is_none(),
            failure_time: row
                .failure_time
                .as_deref()
                .map(|text| self.time("FAILURE_TIME", text))
                .transpose()?,
            disabled_reason: inert.map(str::to_owned),
        })
    }

    /// A value bk-ci encrypted, opened with `--aes-key`.
    fn decrypt(&self, column: &str, encrypted: &str) -> Result<String, String> {
        let cipher = self.cipher.as_ref().ok_or_else(|| {
            format!("{column} is encrypted: pass --aes-key (bk-ci's project.callback.aes-key)")
        })?;
        cipher
            .decrypt(encrypted)
            .map_err(|e| format!("{column} {e}"))
    }

    /// A pipeline-level registration. bk-ci only ever delivers BUILD_* events at this level;
    /// a row of another event is skipped with that reason rather than suddenly firing.
    async fn pipeline_callback(
        &self,
        row: &PipelineCallbackRow,
    ) -> Result<ImportedPipelineCallback, String> {
        let event: CallbackEvent = row.event.parse().map_err(|e| format!("EVENT_TYPE: {e}"))?;
        if !event.as_str().starts_with("BUILD_") {
            return Err(format!(
                "bk-ci never delivers {event} to a pipeline-level callback; register it at project level if it is wanted"
            ));
        }
        let region = match row.region.as_deref() {
            None | Some("") => Region::Idc,
            Some(raw) => raw.parse().map_err(|e| format!("REGION: {e}"))?,
        };
        let secret_token = match &row.secret_token {
            Some(encrypted) => Secret::callback_token(self.decrypt("SECRET_TOKEN", encrypted)?)
                .map_err(|e| format!("SECRET_TOKEN {e}"))?,
            None => None,
        };
        // bk-ci may leave the user and the times empty.
        let user = row.user_id.as_deref().unwrap_or(IMPORTING_USER);
        let time = |column: &str, text: &Option<String>| {
            text.as_deref()
                .map_or(Ok(now_millis()), |text| self.time(column, text))
        };
        Ok(ImportedPipelineCallback {
            project_id: row
                .project_id
                .parse()
                .map_err(|e| format!("PROJECT_ID `{}` {e}", row.project_id))?,
            pipeline_id: row
                .pipeline_id
                .parse()
                .map_err(|e| format!("PIPELINE_ID `{}` {e}", row.pipeline_id))?,
            callback: NewPipelineCallback {
                name: row.name.parse().map_err(|e| format!("NAME {e}"))?,
                url: self.url(&row.url).await?,
                event,
                region,
                secret_token,
            },
            user: user.parse().map_err(|e| format!("USER_ID `{user}` {e}"))?,
            created_at: time("CREATE_TIME", &row.create_time)?,
            updated_at: time("UPDATE_TIME", &row.update_time)?,
        })
    }
}

/// Who created a pipeline-level row whose `USER_ID` bk-ci left empty.
const IMPORTING_USER: &str = "bk-ci";

/// Why bk-ci never delivers a registration of `event` in `project`, if it does not.
fn inert_reason(project: &ProjectId, event: CallbackEvent) -> Option<&'static str> {
    match event {
        CallbackEvent::ProjectCreate | CallbackEvent::StreamEnabled => Some(
            "imported from bk-ci disabled: nothing produces this event there; enable it to receive it here",
        ),
        _ if *project == ProjectId::global() && !event.is_project_event() => {
            Some("imported from bk-ci disabled: global registrations only receive PROJECT_* events")
        }
        _ => None,
    }
}

/// Imports every registration `pool` holds, row by row: a row that cannot be taken, or that the
/// database refuses, is skipped with its reason; a failure of the database itself (it is
/// unavailable) stops the import, and a second run picks up where it stopped.
pub async fn import(
    pool: &sqlx::MySqlPool,
    store: &dyn ImportStore,
    guard: &SsrfGuard,
    options: &Options,
) -> anyhow::Result<Vec<Entry>> {
    let reader = Reader {
        options,
        cipher: options.aes_key.as_deref().map(BkciCipher::new),
        guard,
    };
    let projects = bkci::project_callbacks(pool).await?;
    let pipelines = bkci::pipeline_callbacks(pool).await?;
    let progress = indicatif::ProgressBar::new((projects.len() + pipelines.len()) as u64);
    let mut entries = Vec::with_capacity(projects.len() + pipelines.len());
    for row in &projects {
        let result = match reader.project_callback(row).await {
            Ok(callback) => stored(store.import_callback(&callback, options.dry_run).await)?,
            Err(reason) => Err(reason),
        };
        entries.push(Entry {
            row: format!("T_PROJECT_PIPELINE_CALLBACK#{}", row.id),
            result,
        });
        progress.inc(1);
    }
    for row in &pipelines {
        let result = match reader.pipeline_callback(row).await {
            Ok(callback) => stored(
                store
                    .import_pipeline_callback(&callback, options.dry_run)
                    .await,
            )?,
            Err(reason) => Err(reason),
        };
        entries.push(Entry {
            row: format!(
                "T_PIPELINE_CALLBACK {}/{}/{}",
                row.project_id, row.pipeline_id, row.name
            ),
            result,
        });
        progress.inc(1);
    }
    progress.finish_and_clear();
    if !options.dry_run {
        store.sync_callback_ids().await?;
    }
    Ok(entries)
}

/// The database refusing one row is that row's result (it is skipped with the reason);
/// anything else stops the import.
fn stored(
    result: Result<ImportOutcome, StoreError>,
) -> anyhow::Result<Result<ImportOutcome, String>> {
    match result {
        Ok(outcome) => Ok(Ok(outcome)),
        Err(e @ (StoreError::BadValue(_) | StoreError::Constraint(_))) => {
            Ok(Err(format!("the database refused it: {}", e.reason())))
        }
        Err(e) => Err(e.into()),
    }
}

/// The table `import-bkci` prints: how many rows went which way, then every row that was not
/// simply imported or already here, with its reason.
pub fn summary(entries: &[Entry], dry_run: bool) -> String {
    let count = |wanted: fn(&Result<ImportOutcome, String>) -> bool| {
        entries.iter().filter(|e| wanted(&e.result)).count()
    };
    let mut out = String::new();
    if dry_run {
        out.push_str("dry run: nothing was written; a real run would do this\n");
    }
    for (label, n) in [
        (
            "imported",
            count(|r| matches!(r, Ok(ImportOutcome::Imported))),
        ),
        (
            "updated",
            count(|r| matches!(r, Ok(ImportOutcome::Updated))),
        ),
        (
            "unchanged",
            count(|r| matches!(r, Ok(ImportOutcome::Unchanged))),
        ),
        (
            "skipped",
            count(|r| matches!(r, Err(_) | Ok(ImportOutcome::Conflict(_)))),
        ),
    ] {
        out.push_str(&format!("{label:<10} {n:>6}\n"));
    }
    for entry in entries {
        let line = match &entry.result {
            Ok(ImportOutcome::Updated) => "updated".to_owned(),
            Ok(ImportOutcome::Conflict(reason)) | Err(reason) => format!("skipped: {reason}"),
            Ok(ImportOutcome::Imported | ImportOutcome::Unchanged) => continue,
        };
        out.push_str(&format!("{}  {line}\n", entry.row));
    }
    out
}
