//! The store as the service uses it: each backend call passes through the fault model
//! (`fault.rs`), which logs outages once and retries idempotent work once on a fresh
//! connection. This file is the retry policy: `retried` for work whose repetition changes
//! neither the data nor the answer, `once` for the rest.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

use super::fault::Faults;
use super::{
    CallbackStore, Claim, ClaimedDelivery, ConsoleStore, DeliveryQueue, DisableRule, HistoryStore,
    ImportStore, Maintenance, MemberStore, PipelineCallbackStore, QueueStats, RecoveryStore,
    SecretTokenCounts, Selection, StoreResult,
};
use crate::domain::{
    AttemptBucket, Callback, CallbackEvent, CallbackId, CallbackName, CallbackSearch,
    DeliveryOutcome, DeliveryRecord, DeliveryState, DeliveryTarget, EpochMillis, EventRoute,
    GlobalCallback, HistoryEntry, HistoryFilter, ImportOutcome, ImportedCallback,
    ImportedPipelineCallback, Member, MemberRole, NewCallback, NewEvent, NewPipelineCallback,
    NewRecovery, PageRequest, PipelineCallback, PipelineId, ProjectId, ProjectSummary, Published,
    RecoverJob, RecoverJobId, RecoveryBatch, RecoveryStart, RegisteredCallback, UserId,
};

pub struct Guarded<S> {
    inner: S,
    faults: Arc<Faults>,
}

impl<S> Guarded<S> {
    /// `faults` must be the state `inner`'s pools consult, so a retry gets a fresh connection.
    pub fn new(inner: S, faults: Arc<Faults>) -> Self {
        Self { inner, faults }
    }
}

#[async_trait]
impl<S: CallbackStore> CallbackStore for Guarded<S> {
    async fn upsert_callbacks(&self, callbacks: &[NewCallback]) -> StoreResult<()> {
        self.faults
            .retried(|| self.inner.upsert_callbacks(callbacks))
            .await
    }

    async fn list_callbacks(
        &self,
        project: &ProjectId,
        page: PageRequest,
    ) -> StoreResult<(u64, Vec<Callback>)> {
        self.faults
            .retried(|| self.inner.list_callbacks(project, page))
            .await
    }

    /// Not retried: had the first try deleted it, the second would answer "not found".
    async fn delete_callback(&self, project: &ProjectId, id: CallbackId) -> StoreResult<bool> {
        self.faults
            .once(self.inner.delete_callback(project, id))
            .await
    }

    async fn set_callback_enabled(
        &self,
        project: &ProjectId,
        id: CallbackId,
        user: &UserId,
        enabled: bool,
        reason: Option<&str>,
    ) -> StoreResult<bool> {
        self.faults
            .retried(|| {
                self.inner
                    .set_callback_enabled(project, id, user, enabled, reason)
            })
            .await
    }

    async fn global_callbacks(&self, event: CallbackEvent) -> StoreResult<Vec<GlobalCallback>> {
        self.faults
            .retried(|| self.inner.global_callbacks(event))
            .await
    }

    /// Setting the same state twice leaves the same rows (and the answer is only a count).
    async fn set_callbacks_enabled(
        &self,
        selection: Selection<'_>,
        enabled: bool,
        reason: Option<&str>,
    ) -> StoreResult<u64> {
        self.faults
            .retried(|| self.inner.set_callbacks_enabled(selection, enabled, reason))
            .await
    }
}

#[async_trait]
impl<S: PipelineCallbackStore> PipelineCallbackStore for Guarded<S> {
    async fn upsert_pipeline_callbacks(
        &self,
        project: &ProjectId,
        pipeline: &PipelineId,
        user: &UserId,
        callbacks: &[NewPipelineCallback],
    ) -> StoreResult<()> {
        self.faults
            .retried(|| {
                self.inner
                    .upsert_pipeline_callbacks(project, pipeline, user, callbacks)
            })
            .await
    }

    async fn list_pipeline_callbacks(
        &self,
        project: &ProjectId,
        pipeline: &PipelineId,
        event: Option<CallbackEvent>,
    ) -> StoreResult<Vec<PipelineCallback>> {
        self.faults
            .retried(|| self.inner.list_pipeline_callbacks(project, pipeline, event))
            .await
    }

    /// Retried, unlike `delete_callback`: it does not say whether a row went, so a second try
    /// changes neither the data nor the answer.
    async fn delete_pipeline_callback(
        &self,
        project: &ProjectId,
        pipeline: &PipelineId,
        name: &CallbackName,
    ) -> StoreResult<()> {
        self.faults
            .retried(|| self.inner.delete_pipeline_callback(project, pipeline, name))
            .await
    }
}

#[async_trait]
impl<S: MemberStore> MemberStore for Guarded<S> {
    async fn member_role(
        &self,
        project: &ProjectId,
        user: &UserId,
    ) -> StoreResult<Option<MemberRole>> {
        self.faults
            .retried(|| self.inner.member_role(project, user))
            .await
    }

    async fn set_member(
        &self,
        project: &ProjectId,
        user: &UserId,
        role: MemberRole,
    ) -> StoreResult<()> {
        self.faults
            .retried(|| self.inner.set_member(project, user, role))
            .await
    }

    /// Not retried, for the same reason as `delete_callback`.
    async fn remove_member(&self, project: &ProjectId, user: &UserId) -> StoreResult<bool> {
        self.faults
            .once(self.inner.remove_member(project, user))
            .await
    }

    async fn list_members(&self, project: &ProjectId) -> StoreResult<Vec<Member>> {
        self.faults
            .retried(|| self.inner.list_members(project))
            .await
    }
}

#[async_trait]
impl<S: DeliveryQueue> DeliveryQueue for Guarded<S> {
    /// Every event carries its id (generated before the store when the publisher sent none),
    /// so a retry after a commit whose answer was lost finds the events and answers as before.
    async fn publish(&self, events: &[NewEvent]) -> StoreResult<Vec<Published>> {
        self.faults.retried(|| self.inner.publish(events)).await
    }

    async fn count_targets(&self, routes: &[EventRoute]) -> StoreResult<Vec<u32>> {
        self.faults
            .retried(|| self.inner.count_targets(routes))
            .await
    }

    /// A claim whose answer was lost only holds its deliveries until the lease expires.
    async fn claim_due(&self, claim: &Claim<'_>) -> StoreResult<Vec<ClaimedDelivery>> {
        self.faults.retried(|| self.inner.claim_due(claim)).await
    }

    async fn defer_host(
        &self,
        host: &str,
        now: EpochMillis,
        until: EpochMillis,
    ) -> StoreResult<u64> {
        self.faults
            .retried(|| self.inner.defer_host(host, now, until))
            .await
    }

    async fn next_due_at(&self) -> StoreResult<Option<EpochMillis>> {
        self.faults.retried(|| self.inner.next_due_at()).await
    }

    /// Not retried here: a repeated batch would write its history rows twice. The recorder
    /// tries again itself (see `delivery::worker::record`).
    async fn record_outcomes(
        &self,
        outcomes: &[DeliveryOutcome],
        disable: &DisableRule,
    ) -> StoreResult<()> {
        self.faults
            .once(self.inner.record_outcomes(outcomes, disable))
            .await
    }

    async fn delivery_target(&self, callback: CallbackId) -> StoreResult<Option<DeliveryTarget>> {
        self.faults
            .retried(|| self.inner.delivery_target(callback))
            .await
    }

    async fn watch_new_deliveries(&self, wake: Arc<Notify>) {
        self.inner.watch_new_deliveries(wake).await
    }
}

#[async_trait]
impl<S: HistoryStore> HistoryStore for Guarded<S> {
    async fn find_history(
        &self,
        project: &ProjectId,
        id: i64,
    ) -> StoreResult<Option<HistoryEntry>> {
        self.faults
            .retried(|| self.inner.find_history(project, id))
            .await
    }

    async fn list_history(
        &self,
        project: &ProjectId,
        filter: &HistoryFilter,
        page: PageRequest,
    ) -> StoreResult<(u64, Vec<HistoryEntry>)> {
        self.faults
            .retried(|| self.inner.list_history(project, filter, page))
            .await
    }

    async fn list_deliveries(
        &self,
        project: &ProjectId,
        callback: CallbackId,
        state: Option<DeliveryState>,
        page: PageRequest,
    ) -> StoreResult<Option<(u64, Vec<DeliveryRecord>)>> {
        self.faults
            .retried(|| self.inner.list_deliveries(project, callback, state, page))
            .await
    }
}

#[async_trait]
impl<S: RecoveryStore> RecoveryStore for Guarded<S> {
    /// Not retried: had the first try committed, the second would start a second job.
    async fn start_recovery(&self, recovery: &NewRecovery) -> StoreResult<RecoveryStart> {
        self.faults.once(self.inner.start_recovery(recovery)).await
    }

    async fn recover_job(
        &self,
        project: &ProjectId,
        id: RecoverJobId,
    ) -> StoreResult<Option<RecoverJob>> {
        self.faults
            .retried(|| self.inner.recover_job(project, id))
            .await
    }

    /// Cancelling twice leaves the job as once, and the answer is the job as it stands.
    async fn cancel_recovery(
        &self,
        project: &ProjectId,
        id: RecoverJobId,
        reason: &str,
    ) -> StoreResult<Option<RecoverJob>> {
        self.faults
            .retried(|| self.inner.cancel_recovery(project, id, reason))
            .await
    }

    /// Not retried here: a second try would do the next batch. The runner tries again itself.
    async fn recover_batch(&self, batch: u32) -> StoreResult<Option<RecoveryBatch>> {
        self.faults.once(self.inner.recover_batch(batch)).await
    }
}

#[async_trait]
impl<S: Maintenance> Maintenance for Guarded<S> {
    async fn migrate(&self) -> StoreResult<()> {
        self.faults.once(self.inner.migrate()).await
    }

    async fn ready(&self) -> StoreResult<()> {
        self.faults.retried(|| self.inner.ready()).await
    }

    async fn prune(&self, before: EpochMillis, batch: u32) -> StoreResult<u64> {
        self.faults
            .retried(|| self.inner.prune(before, batch))
            .await
    }

    async fn secret_key_check(&self, fresh: &str) -> StoreResult<String> {
        self.faults
            .retried(|| self.inner.secret_key_check(fresh))
            .await
    }

    async fn count_secret_tokens(&self) -> StoreResult<SecretTokenCounts> {
        self.faults
            .retried(|| self.inner.count_secret_tokens())
            .await
    }

    /// Only tokens still in plaintext are sealed, so a repeat seals what the first try did not.
    async fn seal_plaintext_secret_tokens(&self) -> StoreResult<u64> {
        self.faults
            .retried(|| self.inner.seal_plaintext_secret_tokens())
            .await
    }

    async fn queue_stats(&self, now: EpochMillis) -> StoreResult<QueueStats> {
        self.faults.retried(|| self.inner.queue_stats(now)).await
    }
}

#[async_trait]
impl<S: ImportStore> ImportStore for Guarded<S> {
    /// Retried: the second try finds what the first committed and answers `Unchanged`, which
    /// is still the truth about the database.
    async fn import_callback(
        &self,
        callback: &ImportedCallback,
        dry_run: bool,
    ) -> StoreResult<ImportOutcome> {
        self.faults
            .retried(|| self.inner.import_callback(callback, dry_run))
            .await
    }

    async fn import_pipeline_callback(
        &self,
        callback: &ImportedPipelineCallback,
        dry_run: bool,
    ) -> StoreResult<ImportOutcome> {
        self.faults
            .retried(|| self.inner.import_pipeline_callback(callback, dry_run))
            .await
    }

    async fn sync_callback_ids(&self) -> StoreResult<()> {
        self.faults.retried(|| self.inner.sync_callback_ids()).await
    }
}

/// Reads only: each is retried.
#[async_trait]
impl<S: ConsoleStore> ConsoleStore for Guarded<S> {
    async fn project_summaries(
        &self,
        page: PageRequest,
    ) -> StoreResult<(u64, Vec<ProjectSummary>)> {
        self.faults
            .retried(|| self.inner.project_summaries(page))
            .await
    }

    async fn search_callbacks(
        &self,
        search: &CallbackSearch,
        page: PageRequest,
    ) -> StoreResult<(u64, Vec<RegisteredCallback>)> {
        self.faults
            .retried(|| self.inner.search_callbacks(search, page))
            .await
    }

    async fn find_callback(
        &self,
        project: &ProjectId,
        id: CallbackId,
    ) -> StoreResult<Option<RegisteredCallback>> {
        self.faults
            .retried(|| self.inner.find_callback(project, id))
            .await
    }

    async fn disabled_callbacks(&self, limit: u32) -> StoreResult<Vec<RegisteredCallback>> {
        self.faults
            .retried(|| self.inner.disabled_callbacks(limit))
            .await
    }

    async fn attempt_buckets(
        &self,
        from: EpochMillis,
        width: EpochMillis,
    ) -> StoreResult<Vec<AttemptBucket>> {
        self.faults
            .retried(|| self.inner.attempt_buckets(from, width))
            .await
    }

    async fn delivery_history(
        &self,
        project: &ProjectId,
        delivery: i64,
    ) -> StoreResult<Vec<HistoryEntry>> {
        self.faults
            .retried(|| self.inner.delivery_history(project, delivery))
            .await
    }
}
