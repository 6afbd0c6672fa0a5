//! The webhook bodies, field for field as bk-ci writes them (bkci-dropin §4): `{"event","data"}`,
//! compact, keys in declaration order, null fields written as `null`. serde keeps struct field
//! order and writes `None` as `null`, so each struct below is bk-ci's class in order.

use serde::{Deserialize, Serialize};

use crate::domain::CallbackEvent;

#[derive(Serialize)]
struct Envelope<'a, D> {
    event: &'a str,
    data: &'a D,
}

/// The body every target of the event receives.
pub fn envelope<D: Serialize>(event: CallbackEvent, data: &D) -> String {
    serde_json::to_string(&Envelope {
        event: event.as_str(),
        data,
    })
    // Structs of strings, numbers and booleans always serialize.
    .expect("a webhook body serializes")
}

/// `PipelineEvent`: CREATE_/UPDATE_/DELETE_/RESTORE_PIPELINE.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineEvent {
    pub pipeline_id: String,
    pub pipeline_name: String,
    pub user_id: String,
    pub update_time: i64,
    pub project_id: String,
}

/// `ProjectCallbackEvent`: PROJECT_*.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectCallbackEvent {
    pub project_id: String,
    pub project_name: String,
    pub enable: bool,
    pub user_id: String,
}

/// `StreamEnabledEvent`: STREAM_ENABLED.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamEnabledEvent {
    pub user_id: String,
    pub git_project_id: i64,
    pub git_project_url: String,
    pub enable: bool,
}

/// `BuildEvent`: the 9 BUILD_* events.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildEvent {
    pub build_id: String,
    pub pipeline_id: String,
    pub pipeline_name: String,
    pub user_id: String,
    pub trigger_user: Option<String>,
    pub cancel_user_id: Option<String>,
    pub status: String,
    pub start_time: i64,
    pub end_time: i64,
    pub model: SimpleModel,
    pub project_id: String,
    pub trigger: String,
    pub stage_id: Option<String>,
    pub task_id: Option<String>,
    pub build_no: i64,
    pub debug: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct SimpleModel {
    pub stages: Vec<SimpleStage>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimpleStage {
    pub stage_name: String,
    pub name: String,
    pub status: &'static str,
    pub start_time: i64,
    pub end_time: i64,
    pub jobs: Vec<SimpleJob>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimpleJob {
    pub job_name: String,
    pub status: &'static str,
    pub start_time: i64,
    pub end_time: i64,
    pub tasks: Vec<SimpleTask>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimpleTask {
    pub task_id: String,
    pub task_name: String,
    pub atom_code: String,
    pub status: &'static str,
    pub start_time: i64,
    pub end_time: i64,
}

/// A build record (`ModelRecord`) as bk-ci's service API answers it; only what the body uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildRecord {
    pub pipeline_id: String,
    pub pipeline_name: String,
    pub user_id: String,
    pub trigger_user: Option<String>,
    pub cancel_user_id: Option<String>,
    pub status: String,
    pub start_time: Option<i64>,
    pub end_time: Option<i64>,
    pub model: RecordModel,
    pub trigger: String,
    pub build_num: i64,
    pub debug: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RecordModel {
    #[serde(default)]
    stages: Vec<RecordStage>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordStage {
    name: Option<String>,
    start_epoch: Option<i64>,
    #[serde(default)]
    containers: Vec<RecordContainer>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordContainer {
    #[serde(default)]
    name: String,
    status: Option<String>,
    start_epoch: Option<i64>,
    element_elapsed: Option<i64>,
    system_elapsed: Option<i64>,
    #[serde(default)]
    elements: Vec<RecordElement>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordElement {
    id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(rename = "@type", default)]
    kind: String,
    atom_code: Option<String>,
    origin_atom_code: Option<String>,
    status: Option<String>,
    start_epoch: Option<i64>,
    elapsed: Option<i64>,
}

/// A record bk-ci itself could not turn into a body.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the build record has a task without an id (stage {stage}, job `{job}`)")]
pub struct TaskWithoutId {
    stage: usize,
    job: String,
}

impl BuildRecord {
    /// The BUILD_* body: the record's fields around the ids bk-ci copies from the message.
    pub fn body(
        &self,
        event: CallbackEvent,
        build_id: &str,
        project_id: &str,
        stage_id: Option<&str>,
        task_id: Option<&str>,
    ) -> Result<String, TaskWithoutId> {
        let data = BuildEvent {
            build_id: build_id.to_owned(),
            pipeline_id: self.pipeline_id.clone(),
            pipeline_name: self.pipeline_name.clone(),
            user_id: self.user_id.clone(),
            trigger_user: self.trigger_user.clone(),
            cancel_user_id: self.cancel_user_id.clone(),
            status: self.status.clone(),
            start_time: self.start_time.unwrap_or(0),
            end_time: self.end_time.unwrap_or(0),
            model: self.model.simple()?,
            project_id: project_id.to_owned(),
            trigger: self.trigger.clone(),
            stage_id: stage_id.map(str::to_owned),
            task_id: task_id.map(str::to_owned),
            build_no: self.build_num,
            debug: self.debug,
        };
        Ok(envelope(event, &data))
    }
}

impl RecordModel {
    /// bk-ci's `parseModel`: every stage (the trigger stage too), its top-level containers as
    /// jobs, their elements as tasks, with the stage's status and times aggregated from its jobs.
    fn simple(&self) -> Result<SimpleModel, TaskWithoutId> {
        let stages = self
            .stages
            .iter()
            .enumerate()
            .map(|(index, stage)| stage.simple(index))
            .collect::<Result<_, _>>()?;
        Ok(SimpleModel { stages })
    }
}

impl RecordStage {
    fn simple(&self, index: usize) -> Result<SimpleStage, TaskWithoutId> {
        let jobs: Vec<SimpleJob> = self
            .containers
            .iter()
            .map(|container| container.simple(index))
            .collect::<Result<_, _>>()?;
        let (mut start, mut end, mut status) = (i64::MAX, 1_i64, "QUEUE");
        for job in &jobs {
            start = start.min(job.start_time);
            if job.end_time == 0 {
                // An unfinished job (a skipped one without a start too) makes the stage its own.
                status = job.status;
                end = 0;
            } else if 1 <= end && end < job.end_time {
                end = job.end_time;
                if build_status::is_failure(job.status) {
                    status = job.status;
                }
            }
        }
        if end > 0 && !build_status::is_finished(status) {
            status = "SUCCEED";
        }
        let start_time = match self.start_epoch {
            Some(epoch) if epoch != 0 => epoch,
            _ if start > 0 => start,
            _ => 0,
        };
        Ok(SimpleStage {
            stage_name: format!("Stage-{}", index + 1),
            name: self.name.clone().unwrap_or_default(),
            status,
            start_time,
            end_time: end.max(0),
            jobs,
        })
    }
}

impl RecordContainer {
    fn simple(&self, stage: usize) -> Result<SimpleJob, TaskWithoutId> {
        let status = build_status::parse(self.status.as_deref());
        let start = self.start_epoch.unwrap_or(0);
        let end = if build_status::is_finished(status) {
            start
                .saturating_add(self.element_elapsed.unwrap_or(0))
                .saturating_add(self.system_elapsed.unwrap_or(0))
        } else {
            0
        };
        let tasks = self
            .elements
            .iter()
            .map(|element| {
                element.simple().ok_or_else(|| TaskWithoutId {
                    stage: stage + 1,
                    job: self.name.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(SimpleJob {
            job_name: self.name.clone(),
            status,
            start_time: start,
            end_time: end,
            tasks,
        })
    }
}

impl RecordElement {
    /// `None` when the element has no id, which aborts the whole event in bk-ci.
    fn simple(&self) -> Option<SimpleTask> {
        let status = build_status::parse(self.status.as_deref());
        let start = self.start_epoch.unwrap_or(0);
        let end = if build_status::is_finished(status) {
            start.saturating_add(self.elapsed.unwrap_or(0))
        } else {
            0
        };
        // bk-ci's `getAtomCode()`: the API's model carries it as `atomCode`; without it, the
        // matrix status element's origin, else the element's type.
        let atom_code = self.atom_code.clone().unwrap_or_else(|| {
            if self.kind == "matrixStatus" {
                self.origin_atom_code.clone().unwrap_or_default()
            } else {
                self.kind.clone()
            }
        });
        Some(SimpleTask {
            task_id: self.id.clone()?,
            task_name: self.name.clone(),
            atom_code,
            status,
            start_time: start,
            end_time: end,
        })
    }
}

/// bk-ci's `BuildStatus`: names, and which of them are finished or failed.
mod build_status {
    const NAMES: [&str; 29] = [
        "SUCCEED",
        "FAILED",
        "CANCELED",
        "RUNNING",
        "TERMINATE",
        "REVIEWING",
        "REVIEW_ABORT",
        "REVIEW_PROCESSED",
        "HEARTBEAT_TIMEOUT",
        "PREPARE_ENV",
        "UNEXEC",
        "SKIP",
        "QUALITY_CHECK_FAIL",
        "QUEUE",
        "LOOP_WAITING",
        "CALL_WAITING",
        "TRY_FINALLY",
        "QUEUE_TIMEOUT",
        "EXEC_TIMEOUT",
        "QUEUE_CACHE",
        "RETRY",
        "PAUSE",
        "STAGE_SUCCESS",
        "QUOTA_FAILED",
        "DEPENDENT_WAITING",
        "QUALITY_CHECK_PASS",
        "QUALITY_CHECK_WAIT",
        "TRIGGER_REVIEWING",
        "UNKNOWN",
    ];

    /// `BuildStatus.parse`: a known name, else `UNKNOWN` (a missing one too).
    pub fn parse(name: Option<&str>) -> &'static str {
        name.and_then(|name| NAMES.iter().copied().find(|known| *known == name))
            .unwrap_or("UNKNOWN")
    }

    /// `isFailure`: failed, passively stopped, timed out, or out of quota.
    pub fn is_failure(status: &str) -> bool {
        matches!(
            status,
            "FAILED"
                | "TERMINATE"
                | "REVIEW_ABORT"
                | "QUALITY_CHECK_FAIL"
                | "QUEUE_TIMEOUT"
                | "EXEC_TIMEOUT"
                | "HEARTBEAT_TIMEOUT"
                | "QUOTA_FAILED"
        )
    }

    /// `isFinish`: a failure, a success (skipped and passed reviews and checks included) or
    /// cancelled.
    pub fn is_finished(status: &str) -> bool {
        is_failure(status)
            || matches!(
                status,
                "SUCCEED" | "SKIP" | "REVIEW_PROCESSED" | "QUALITY_CHECK_PASS" | "CANCELED"
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stages: serde_json::Value) -> BuildRecord {
        serde_json::from_value(serde_json::json!({
            "pipelineId": "p-1", "pipelineName": "demo-build", "userId": "alice",
            "triggerUser": "alice", "status": "RUNNING", "startTime": 5, "model": {"stages": stages},
            "trigger": "手动", "buildNum": 42, "debug": false
        }))
        .unwrap()
    }

    fn stage(record: &BuildRecord) -> serde_json::Value {
        let body = record
            .body(CallbackEvent::BuildEnd, "b-1", "demo", None, None)
            .unwrap();
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        body["data"]["model"]["stages"][0].clone()
    }

    #[test]
    fn an_unfinished_job_makes_the_stage_report_its_status_with_no_end() {
        let record = record(serde_json::json!([{"name": "s", "containers": [
            {"name": "a", "status": "SUCCEED", "startEpoch": 10, "elementElapsed": 5, "systemElapsed": 1, "elements": []},
            {"name": "b", "status": "SKIP", "elements": []},
            {"name": "c", "status": "FAILED", "startEpoch": 12, "elementElapsed": 100, "elements": []}
        ]}]));
        let stage = stage(&record);
        // b is SKIP (finished) with start 0: its end is 0, so it counts as unfinished.
        assert_eq!(stage["status"], "SKIP");
        assert_eq!(stage["endTime"], 0);
        assert_eq!(stage["startTime"], 0);
        assert_eq!(stage["jobs"][0]["endTime"], 16);
    }

    #[test]
    fn a_failed_job_counts_only_when_it_raises_the_latest_end() {
        // Two finished jobs in this order, each with its status and elapsed time.
        let jobs = |first: (&str, i64), second: (&str, i64)| {
            record(serde_json::json!([{"containers": [
                {"name": "x", "status": first.0, "startEpoch": 10, "elementElapsed": first.1, "elements": []},
                {"name": "y", "status": second.0, "startEpoch": 10, "elementElapsed": second.1, "elements": []}
            ]}]))
        };
        let stage_of = |first, second| stage(&jobs(first, second));
        assert_eq!(stage_of(("SUCCEED", 5), ("FAILED", 50))["status"], "FAILED");
        // The failed job ended before one already seen: ignored.
        assert_eq!(
            stage_of(("SUCCEED", 50), ("FAILED", 5))["status"],
            "SUCCEED"
        );
        assert_eq!(
            stage_of(("CANCELED", 50), ("SUCCEED", 5))["status"],
            "SUCCEED"
        );
        assert_eq!(stage_of(("FAILED", 5), ("SUCCEED", 50))["status"], "FAILED");
        let stage = stage_of(("SUCCEED", 50), ("FAILED", 5));
        assert_eq!(
            (&stage["startTime"], &stage["endTime"]),
            (&serde_json::json!(10), &serde_json::json!(60))
        );
    }

    #[test]
    fn a_stage_without_jobs_reports_what_bkci_reports() {
        let stage = stage(&record(serde_json::json!([{"name": "empty"}])));
        assert_eq!(stage["startTime"], i64::MAX);
        assert_eq!(stage["endTime"], 1);
        assert_eq!(stage["status"], "SUCCEED");
    }

    #[test]
    fn atom_codes_and_unknown_statuses_follow_bkci() {
        let record = record(
            serde_json::json!([{"containers": [{"name": "j", "status": "odd", "elements": [
                {"id": "e-1", "name": "a", "@type": "marketBuild", "atomCode": "checkout", "status": "SUCCEED", "startEpoch": 3, "elapsed": 4},
                {"id": "e-2", "name": "b", "@type": "matrixStatus", "originAtomCode": "linuxScript"},
                {"id": "e-3", "name": "c", "@type": "matrixStatus"},
                {"id": "e-4", "name": "d", "@type": "manualTrigger", "status": "RUNNING", "startEpoch": 9, "elapsed": 4}
            ]}]}]),
        );
        let stage = stage(&record);
        let tasks = &stage["jobs"][0]["tasks"];
        assert_eq!(stage["jobs"][0]["status"], "UNKNOWN");
        assert_eq!(tasks[0]["atomCode"], "checkout");
        assert_eq!(tasks[0]["endTime"], 7);
        assert_eq!(tasks[1]["atomCode"], "linuxScript");
        assert_eq!(tasks[1]["status"], "UNKNOWN");
        assert_eq!(tasks[2]["atomCode"], "");
        assert_eq!(tasks[3]["atomCode"], "manualTrigger");
        assert_eq!(tasks[3]["endTime"], 0);
    }

    #[test]
    fn a_task_without_an_id_aborts_the_event() {
        let record = record(
            serde_json::json!([{"containers": [{"name": "j", "elements": [{"name": "x"}]}]}]),
        );
        let error = record
            .body(CallbackEvent::BuildEnd, "b-1", "demo", None, None)
            .unwrap_err();
        assert!(error.to_string().contains("without an id"), "{error}");
    }
}
