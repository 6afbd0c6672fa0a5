//! The repository: one trait per user of the store (`CallbackStore`, `PipelineCallbackStore`,
//! `MemberStore`, `DeliveryQueue`, `HistoryStore`, `RecoveryStore`, `ConsoleStore`,
//! `Maintenance`; `Store` is all of them), implemented once in `sql/` for PostgreSQL and SQLite
//! alike. All SQL lives below here.

mod error;
mod fault;
mod guarded;
mod postgres;
mod sql;
mod sqlite;
mod writer;

use std::sync::Arc;

use anyhow::anyhow;
use async_trait::async_trait;

pub use error::{StoreError, StoreResult, warn_unless_unavailable};
use fault::Faults;
use guarded::Guarded;
pub use writer::CallbackWriter;

use crate::config::Config;
use crate::secrets::Sealer;
use tokio::sync::Notify;

use crate::domain::{
    AttemptBucket, Callback, CallbackEvent, CallbackId, CallbackName, CallbackSearch,
    DeliveryOutcome, DeliveryRecord, DeliveryState, DeliveryTarget, EpochMillis, EventRoute,
    GlobalCallback, HistoryEntry, HistoryFilter, ImportOutcome, ImportedCallback,
    ImportedPipelineCallback, Member, MemberRole, NewCallback, NewEvent, NewPipelineCallback,
    NewRecovery, PageRequest, PipelineCallback, PipelineId, ProjectId, ProjectSummary, Published,
    RecoverJob, RecoverJobId, RecoveryBatch, RecoveryStart, RegisteredCallback, UserId,
};

/// A leased delivery with what is needed to send it. `target` is why it is not to be sent when
/// the callback was deleted or disabled after the event was accepted.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub claim_token: String,
    /// The callback URL's host, for the per-host cap.
    pub host: String,
    /// Attempts already made before this one.
    pub attempts: u32,
    /// Attempts made before its current run: the retry schedule counts from here.
    pub retry_base: u32,
    /// The recovery job that re-queued it, if one did.
    pub recover_job: Option<RecoverJobId>,
    pub callback_id: CallbackId,
    pub event: CallbackEvent,
    pub body: String,
    pub target: Result<DeliveryTarget, String>,
}

/// Which due deliveries a claim takes: first attempts and retries are claimed separately, so a
/// backlog of retries cannot make fresh events wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    First,
    Retry,
}

/// What `DeliveryQueue::claim_due` takes.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub now: EpochMillis,
    pub lease_until: EpochMillis,
    pub limit: u32,
    pub lane: Lane,
    /// Hosts already at their cap of attempts in flight in this process.
    pub busy_hosts: &'a [String],
}

/// How many secret values (tokens and custom headers of callbacks) are stored sealed or in
/// plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretTokenCounts {
    pub sealed: u64,
    pub plaintext: u64,
}

/// A snapshot for the metrics.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct QueueStats {
    pub due: i64,
    pub leased: i64,
    pub retrying: i64,
    pub disabled_callbacks: i64,
}

/// When failing callbacks are disabled.
#[derive(Debug, Clone)]
pub struct DisableRule {
    /// Failing without a success since before this time disables a callback.
    pub cutoff: EpochMillis,
    pub reason: String,
}

/// The callbacks a bulk enable or disable of the op API touches.
#[derive(Debug, Clone, Copy)]
pub enum Selection<'a> {
    /// These ids, in this project (the global scope is one too); other ids are left alone.
    Ids {
        project: &'a ProjectId,
        ids: &'a [CallbackId],
    },
    /// Every callback whose URL is exactly `url`, in `project` or, when `None`, in any.
    Url {
        project: Option<&'a ProjectId>,
        url: &'a str,
    },
}

/// Project-level (and global) registrations, as the callback routes and the registration writer
/// use them; pipeline-level rows are `PipelineCallbackStore`'s, and none of these methods sees
/// one (an id of one is "not found" here).
#[async_trait]
pub trait CallbackStore: Send + Sync {
    /// In one statement, creates each callback or, when (project, url, event) exists, updates it
    /// in place: same id, new region/token/updater, re-enabled with its failure state cleared.
    /// No two items may share (project, url, event).
    async fn upsert_callbacks(&self, callbacks: &[NewCallback]) -> StoreResult<()>;

    /// The total count and one page of a project's callbacks, newest first.
    async fn list_callbacks(
        &self,
        project: &ProjectId,
        page: PageRequest,
    ) -> StoreResult<(u64, Vec<Callback>)>;

    /// Deletes a project's callback; false when it did not exist in that project.
    async fn delete_callback(&self, project: &ProjectId, id: CallbackId) -> StoreResult<bool>;

    /// Enables (clearing the failure state) or disables one of the project's callbacks; false
    /// when it does not exist in that project. Disabling cancels its pending deliveries that no
    /// worker holds, with `reason`.
    async fn set_callback_enabled(
        &self,
        project: &ProjectId,
        id: CallbackId,
        user: &UserId,
        enabled: bool,
        reason: Option<&str>,
    ) -> StoreResult<bool>;

    /// The enabled global callbacks of `event`, oldest first, with their custom headers opened.
    async fn global_callbacks(&self, event: CallbackEvent) -> StoreResult<Vec<GlobalCallback>>;

    /// In one transaction, enables (clearing the failure state) or disables (recording
    /// `reason`, cancelling pending deliveries as `set_callback_enabled` does) the selected
    /// callbacks; returns how many it touched.
    async fn set_callbacks_enabled(
        &self,
        selection: Selection<'_>,
        enabled: bool,
        reason: Option<&str>,
    ) -> StoreResult<u64>;
}

/// Pipeline-level registrations, as the pipeline callback routes use them. They are callbacks
/// like the others for delivery; the methods of `CallbackStore` never see them.
#[async_trait]
pub trait PipelineCallbackStore: Send + Sync {
    /// In one statement, creates each of the pipeline's callbacks or, when its name exists,
    /// updates it in place: same id, new url/event/region/token/updater, re-enabled with its
    /// failure state cleared. No two items may share a name.
    async fn upsert_pipeline_callbacks(
        &self,
        project: &ProjectId,
        pipeline: &PipelineId,
        user: &UserId,
        callbacks: &[NewPipelineCallback],
    ) -> StoreResult<()>;

    /// The pipeline's callbacks (of one event, if given), by name.
    async fn list_pipeline_callbacks(
        &self,
        project: &ProjectId,
        pipeline: &PipelineId,
        event: Option<CallbackEvent>,
    ) -> StoreResult<Vec<PipelineCallback>>;

    /// Deletes the pipeline's callback of that name, if there is one.
    async fn delete_pipeline_callback(
        &self,
        project: &ProjectId,
        pipeline: &PipelineId,
        name: &CallbackName,
    ) -> StoreResult<()>;
}

/// Local project membership, as the permission check and the op member routes use it.
#[async_trait]
pub trait MemberStore: Send + Sync {
    async fn member_role(
        &self,
        project: &ProjectId,
        user: &UserId,
    ) -> StoreResult<Option<MemberRole>>;

    async fn set_member(
        &self,
        project: &ProjectId,
        user: &UserId,
        role: MemberRole,
    ) -> StoreResult<()>;

    /// False when the user was not a member.
    async fn remove_member(&self, project: &ProjectId, user: &UserId) -> StoreResult<bool>;

    async fn list_members(&self, project: &ProjectId) -> StoreResult<Vec<Member>>;
}

/// Events in, deliveries out: intake, the workers' lease queue and the outcomes they record.
#[async_trait]
pub trait DeliveryQueue: Send + Sync {
    /// In one transaction: stores the events (skipping event ids already seen in their project)
    /// and one PENDING delivery per enabled matching callback. Answers in input order, with the
    /// original answer for repeated event ids.
    async fn publish(&self, events: &[NewEvent]) -> StoreResult<Vec<Published>>;

    /// How many enabled callbacks each route would deliver to now, in input order: what
    /// `publish` would make of events with these routes.
    async fn count_targets(&self, routes: &[EventRoute]) -> StoreResult<Vec<u32>>;

    /// Leases up to `claim.limit` due deliveries of the lane until `claim.lease_until`, oldest
    /// first, skipping `claim.busy_hosts`. Rows leased by someone else and not yet expired are
    /// skipped, so concurrent workers never share a delivery.
    async fn claim_due(&self, claim: &Claim<'_>) -> StoreResult<Vec<ClaimedDelivery>>;

    /// Moves the due, unleased deliveries of `host` to `until`, so that while the host is stalled
    /// claims do not walk past them again and again; returns how many moved.
    async fn defer_host(
        &self,
        host: &str,
        now: EpochMillis,
        until: EpochMillis,
    ) -> StoreResult<u64>;

    /// When the earliest unleased pending delivery falls due.
    async fn next_due_at(&self) -> StoreResult<Option<EpochMillis>>;

    /// Writes attempts to history, the deliveries' new states and the callbacks' failure states,
    /// in one transaction. A delivery whose lease was lost meanwhile keeps the state its new
    /// holder gives it; a delivered manual re-send marks its delivery SUCCESS unless a worker
    /// holds it. A callback failing without a success since before `disable.cutoff` is
    /// disabled with `disable.reason`, and its pending deliveries that no worker holds are
    /// cancelled with that reason.
    async fn record_outcomes(
        &self,
        outcomes: &[DeliveryOutcome],
        disable: &DisableRule,
    ) -> StoreResult<()>;

    /// Where a callback delivers now (enabled or not); `None` when it was deleted.
    async fn delivery_target(&self, callback: CallbackId) -> StoreResult<Option<DeliveryTarget>>;

    /// Wakes `wake` whenever another process commits new deliveries; runs until the process
    /// ends. Backends without cross-process notifications return at once (the poll covers them).
    async fn watch_new_deliveries(&self, wake: Arc<Notify>);
}

/// The delivery history, as the history routes read it.
#[async_trait]
pub trait HistoryStore: Send + Sync {
    /// One attempt of the project's history.
    async fn find_history(&self, project: &ProjectId, id: i64)
    -> StoreResult<Option<HistoryEntry>>;

    /// The total count and one page of a project's attempts in the window, newest first.
    async fn list_history(
        &self,
        project: &ProjectId,
        filter: &HistoryFilter,
        page: PageRequest,
    ) -> StoreResult<(u64, Vec<HistoryEntry>)>;

    /// The total count and one page of the deliveries of one of the project's callbacks
    /// (project-level or pipeline-level; for the global scope, a global one), newest first, of
    /// one state if given; `None` when the project has no such callback.
    async fn list_deliveries(
        &self,
        project: &ProjectId,
        callback: CallbackId,
        state: Option<DeliveryState>,
        page: PageRequest,
    ) -> StoreResult<Option<(u64, Vec<DeliveryRecord>)>>;
}

/// Bulk recovery jobs, as the recovery routes and the runners use them.
#[async_trait]
pub trait RecoveryStore: Send + Sync {
    /// Counts the deliveries of the recovery's window and stores the job, RUNNING, in one
    /// transaction; refused when the project has no such callback or it is disabled.
    async fn start_recovery(&self, recovery: &NewRecovery) -> StoreResult<RecoveryStart>;

    /// One of the project's jobs.
    async fn recover_job(
        &self,
        project: &ProjectId,
        id: RecoverJobId,
    ) -> StoreResult<Option<RecoverJob>>;

    /// Cancels one of the project's jobs if it is running (a finished one stays as it is);
    /// answers the job as it then stands. Deliveries already re-queued stay queued.
    async fn cancel_recovery(
        &self,
        project: &ProjectId,
        id: RecoverJobId,
        reason: &str,
    ) -> StoreResult<Option<RecoverJob>>;

    /// In one transaction that holds the job's row (no other runner can take the same batch,
    /// and a runner killed mid-batch leaves nothing half done): re-queues the next `batch`
    /// deliveries of a running job that has fewer than `batch` re-queued deliveries still
    /// waiting for their attempt, from where the job stands. A job whose callback was disabled
    /// or deleted is cancelled instead; a job with nothing left is done. `None` when no job has
    /// work or room.
    async fn recover_batch(&self, batch: u32) -> StoreResult<Option<RecoveryBatch>>;
}

/// What the operators' console reads besides what the API reads (its actions go through the
/// API's own methods).
#[async_trait]
pub trait ConsoleStore: Send + Sync {
    /// The total count and one page of the projects (the global scope among them) that have
    /// callbacks, by id, with how many they have and how many of those are disabled.
    async fn project_summaries(&self, page: PageRequest)
    -> StoreResult<(u64, Vec<ProjectSummary>)>;

    /// The total count and one page of the callbacks of every level that `search` finds, by
    /// project, newest first.
    async fn search_callbacks(
        &self,
        search: &CallbackSearch,
        page: PageRequest,
    ) -> StoreResult<(u64, Vec<RegisteredCallback>)>;

    /// One callback of the project, of any level.
    async fn find_callback(
        &self,
        project: &ProjectId,
        id: CallbackId,
    ) -> StoreResult<Option<RegisteredCallback>>;

    /// The disabled callbacks of every project, last changed first, at most `limit`.
    async fn disabled_callbacks(&self, limit: u32) -> StoreResult<Vec<RegisteredCallback>>;

    /// The attempts recorded since `from`, counted by outcome in slices of `width` ms; slices
    /// without attempts are left out.
    async fn attempt_buckets(
        &self,
        from: EpochMillis,
        width: EpochMillis,
    ) -> StoreResult<Vec<AttemptBucket>>;

    /// Every attempt of one of the project's deliveries, newest first.
    async fn delivery_history(
        &self,
        project: &ProjectId,
        delivery: i64,
    ) -> StoreResult<Vec<HistoryEntry>>;
}

/// Start-up, readiness, retention, metrics and the key operations of the CLI.
#[async_trait]
pub trait Maintenance: Send + Sync {
    /// Applies the embedded migrations of this backend.
    async fn migrate(&self) -> StoreResult<()>;

    /// Readiness: whether the database takes writes now (a read-only PostgreSQL session or
    /// server, or a SQLite file that cannot be written, is not ready). One round trip.
    async fn ready(&self) -> StoreResult<()>;

    /// Deletes up to `batch` rows older than `before` from each of history, finished deliveries,
    /// events left without deliveries and finished recovery jobs; returns how many went. Small
    /// batches keep locks short.
    async fn prune(&self, before: EpochMillis, batch: u32) -> StoreResult<u64>;

    /// The stored key check value (see `Sealer::key_check`), storing `fresh` first when there is
    /// none yet.
    async fn secret_key_check(&self, fresh: &str) -> StoreResult<String>;

    async fn count_secret_tokens(&self) -> StoreResult<SecretTokenCounts>;

    /// Seals every plaintext secret token and custom-header set with the store's key (none: does
    /// nothing); returns how many it sealed.
    async fn seal_plaintext_secret_tokens(&self) -> StoreResult<u64>;

    /// How many deliveries are due, leased and waiting to be retried, and how many callbacks are
    /// disabled, for the metrics.
    async fn queue_stats(&self, now: EpochMillis) -> StoreResult<QueueStats>;
}

/// Registrations brought over from bk-ci (`devops-callbacks import-bkci`).
#[async_trait]
pub trait ImportStore: Send + Sync {
    /// Stores `callback` under its own id, in one transaction: inserted when neither its id nor
    /// its (project, url, event) is taken here, brought up to date when its id holds the same
    /// registration, and refused (`Conflict`) when another registration holds either. With
    /// `dry_run` the transaction is rolled back, so the answer says what a real run would do.
    async fn import_callback(
        &self,
        callback: &ImportedCallback,
        dry_run: bool,
    ) -> StoreResult<ImportOutcome>;

    /// Stores a pipeline-level registration under its name, in one transaction: inserted,
    /// brought up to date (and enabled), or left alone when it already says the same. With
    /// `dry_run` the transaction is rolled back.
    async fn import_pipeline_callback(
        &self,
        callback: &ImportedPipelineCallback,
        dry_run: bool,
    ) -> StoreResult<ImportOutcome>;

    /// Moves id generation past every stored id, after ids were written explicitly.
    async fn sync_callback_ids(&self) -> StoreResult<()>;
}

/// The whole store, as the service holds it; each part takes only the piece it uses.
pub trait Store:
    CallbackStore
    + PipelineCallbackStore
    + MemberStore
    + DeliveryQueue
    + HistoryStore
    + RecoveryStore
    + ConsoleStore
    + Maintenance
    + ImportStore
    + 'static
{
}

impl<S> Store for S where
    S: CallbackStore
        + PipelineCallbackStore
        + MemberStore
        + DeliveryQueue
        + HistoryStore
        + RecoveryStore
        + ConsoleStore
        + Maintenance
        + ImportStore
        + 'static
{
}

/// Opens the database named by `DATABASE_URL` (creating a SQLite file if needed), migrates it,
/// and checks that `SECRET_ENCRYPTION_KEY` opens the secrets stored in it.
pub async fn open(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let sealer = Sealer::new(config.secret_encryption_key.as_ref());
    let (url, max) = (&config.database_url, config.database_max_connections);
    let faults = Arc::new(Faults::default());
    let store: Arc<dyn Store> = if is_postgres_url(url) {
        // sqlx's message already holds its cause's: the chain would say it twice.
        let backend = postgres::connect(url, max, sealer.clone(), faults.clone())
            .await
            .map_err(|e| anyhow!("cannot connect to PostgreSQL at {}: {e}", redact_url(url)))?;
        Arc::new(Guarded::new(backend, faults))
    } else if url.starts_with("sqlite:") {
        let backend = sqlite::connect(url, max, sealer.clone(), faults.clone())
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot open the SQLite database {}: {e}",
                    database_label(url)
                )
            })?;
        Arc::new(Guarded::new(backend, faults))
    } else {
        anyhow::bail!(
            "DATABASE_URL must start with postgres://, postgresql:// or sqlite: (got {:?})",
            redact_url(&config.database_url)
        );
    };
    store.migrate().await?;
    check_secret_key(store.as_ref(), &sealer).await?;
    Ok(store)
}

/// A wrong or missing key stops the start, instead of failing every delivery later.
async fn check_secret_key(store: &dyn Store, sealer: &Sealer) -> anyhow::Result<()> {
    let counts = store.count_secret_tokens().await?;
    let Some(fresh) = sealer.key_check() else {
        if counts.sealed > 0 {
            anyhow::bail!(
                "{} callback secrets (tokens, custom headers) are stored encrypted, but SECRET_ENCRYPTION_KEY is not set; \
                 set the key they were encrypted with",
                counts.sealed
            );
        }
        return Ok(());
    };
    if !sealer.matches_key_check(&store.secret_key_check(&fresh).await?) {
        anyhow::bail!(
            "SECRET_ENCRYPTION_KEY is not the key this database's secret tokens were encrypted \
             with (its key check, table secret_key_check, does not decrypt); set the original key"
        );
    }
    if counts.plaintext > 0 {
        tracing::warn!(
            plaintext = counts.plaintext,
            "callback secrets (tokens, custom headers) are stored unencrypted; run `devops-callbacks migrate` to encrypt them"
        );
    }
    Ok(())
}

pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The URL without its password (in the user part or a `password` query parameter), for
/// messages and logs.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(raw) else {
        return raw.to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query_pairs().any(|(name, _)| name == "password") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if name == "password" {
                    "***".into()
                } else {
                    value
                };
                (name.into_owned(), value.into_owned())
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// The database `DATABASE_URL` names, as the start line and errors show it: a PostgreSQL URL
/// without its password, or the absolute path of a SQLite file.
pub fn database_label(url: &str) -> String {
    if url.starts_with("sqlite:") {
        sqlite::file_label(url)
    } else {
        redact_url(url)
    }
}
