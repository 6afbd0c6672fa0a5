//! bk-ci's bus messages (bkci-dropin §5.2) and what each means for callbacks (§5.3), decided
//! from the message alone: dropped as bk-ci drops it, or an event of some route that still needs
//! a lookup (or none) to build its body. Messages are read tolerantly: fields bk-ci leaves out
//! when null may be absent, and unknown fields are ignored.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::body::{self, ProjectCallbackEvent, StreamEnabledEvent};
use super::topology::Family;
use crate::domain::{CallbackEvent, EventId, EventRoute, PipelineId, ProjectId};

/// What a message comes to.
#[derive(Debug)]
pub enum Mapped {
    /// bk-ci sends nothing for it; the reason labels the metric.
    Dropped(&'static str),
    Wanted(Wanted),
}

/// An event some callback may want, before its lookups.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub route: EventRoute,
    pub event_id: EventId,
    pub need: Need,
}

/// What building the body still needs.
#[derive(Debug, Clone)]
pub enum Need {
    /// BUILD_*: the build record.
    Build(BuildRef),
    /// CREATE/UPDATE/RESTORE/DELETE_PIPELINE: the pipeline's row (`deleted`: soft-deleted, so
    /// read from bk-ci's database, which no service API answers for).
    Pipeline(PipelineRef),
    /// PROJECT_ENABLE/DISABLE: the project's current name.
    ProjectName {
        english_name: String,
        user_id: String,
        enable: bool,
    },
    /// Nothing: the body is complete.
    Nothing(String),
}

/// The build a BUILD_* message is about, and the ids bk-ci copies into the body verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BuildRef {
    pub project: String,
    pub pipeline: String,
    pub build: String,
    pub execute_count: Option<i64>,
    pub stage_id: Option<String>,
    pub task_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PipelineRef {
    pub project: String,
    pub pipeline: String,
    pub deleted: bool,
}

/// A message that is not what its exchange carries.
#[derive(Debug, thiserror::Error)]
#[error("not a {what} message: {reason}")]
pub struct Malformed {
    what: &'static str,
    reason: String,
}

/// Tasks bk-ci adds to start and stop build machines; their events never reach callbacks
/// (`VmOperateTaskGenerator.isVmAtom`, a prefix test).
const VM_ATOMS: [&str; 4] = [
    "dispatchVMStartupTaskAtom",
    "dispatchVMShutdownTaskAtom",
    "dispatchBuildLessDockerStartupTaskAtom",
    "dispatchBuildLessDockerShutdownTaskAtom",
];

/// Decides what a message from an exchange of `family` (named `exchange`) comes to.
pub fn map(family: Family, exchange: &str, payload: &[u8]) -> Result<Mapped, Malformed> {
    let key = Idempotency { exchange, payload };
    match family {
        Family::Build => build(decode(payload, "build status")?, &key),
        Family::PipelineCreate => pipeline(payload, CallbackEvent::CreatePipeline, &key),
        Family::PipelineUpdate => pipeline(payload, CallbackEvent::UpdatePipeline, &key),
        Family::PipelineDelete => pipeline(payload, CallbackEvent::DeletePipeline, &key),
        Family::PipelineRestore => pipeline(payload, CallbackEvent::RestorePipeline, &key),
        Family::StreamEnabled => stream_enabled(decode(payload, "stream enabled")?, &key),
        Family::ProjectCreate => project_info(payload, CallbackEvent::ProjectCreate, &key),
        Family::ProjectUpdate => project_info(payload, CallbackEvent::ProjectUpdate, &key),
        Family::ProjectEnable => project_enable(decode(payload, "project enable")?, &key),
    }
}

fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8], what: &'static str) -> Result<T, Malformed> {
    serde_json::from_slice(payload).map_err(|e| Malformed {
        what,
        reason: e.to_string(),
    })
}

/// What makes an event's id: the exchange and the exact message. A redelivered message has the
/// same id, so it is stored once; two different messages never share one, even when they are
/// about the same subject (two jobs of one stage ending, say), since bk-ci's messages carry
/// their source, time and trace id.
struct Idempotency<'a> {
    exchange: &'a str,
    payload: &'a [u8],
}

impl Idempotency<'_> {
    /// `<subject>:<EVENT>:<16 hex digits of SHA-256 over exchange and message>`.
    fn event_id(&self, subject: &str, event: CallbackEvent) -> Result<EventId, Malformed> {
        let digest = Sha256::new()
            .chain_update(self.exchange.as_bytes())
            .chain_update(b"\n")
            .chain_update(self.payload)
            .finalize();
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("{subject}:{}:{hex}", event.as_str())
            .parse()
            .map_err(|e| Malformed {
                what: "bus",
                reason: format!("its subject `{subject}` makes no event id: {e}"),
            })
    }
}

/// The route of an event in `project`; `None` when no project here can have that name (so no
/// callback can want it).
fn route(project: &str, event: CallbackEvent, pipeline: Option<&str>) -> Option<EventRoute> {
    Some(EventRoute {
        project_id: project.parse::<ProjectId>().ok()?,
        event,
        pipeline_id: pipeline.and_then(|p| p.parse::<PipelineId>().ok()),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct BuildStatusMessage {
    project_id: String,
    pipeline_id: String,
    build_id: String,
    stage_id: Option<String>,
    task_id: Option<String>,
    execute_count: Option<i64>,
    atom_code: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

fn build(message: BuildStatusMessage, key: &Idempotency<'_>) -> Result<Mapped, Malformed> {
    let vm_atom = message
        .atom_code
        .as_deref()
        .is_some_and(|code| VM_ATOMS.iter().any(|vm| code.starts_with(vm)));
    if vm_atom {
        return Ok(Mapped::Dropped("vm_atom"));
    }
    // The 9 BUILD_* callback events; BUILD_QUEUE, BUILD_QUALITY, BUILD_AGENT_* and the rest
    // have no callback.
    let Some(event) = message
        .kind
        .as_deref()
        .and_then(|kind| kind.parse::<CallbackEvent>().ok())
        .filter(|event| event.is_build_event())
    else {
        return Ok(Mapped::Dropped("type"));
    };
    let Some(route) = route(&message.project_id, event, Some(&message.pipeline_id)) else {
        return Ok(Mapped::Dropped("no_target"));
    };
    Ok(Mapped::Wanted(Wanted {
        event_id: key.event_id(&message.build_id, event)?,
        route,
        need: Need::Build(BuildRef {
            project: message.project_id,
            pipeline: message.pipeline_id,
            build: message.build_id,
            execute_count: message.execute_count,
            stage_id: message.stage_id,
            task_id: message.task_id,
        }),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PipelineMessage {
    project_id: String,
    pipeline_id: String,
    /// Delete messages only: `true` is a physical delete, which sends nothing.
    #[serde(default)]
    clear_up_model: bool,
}

fn pipeline(
    payload: &[u8],
    event: CallbackEvent,
    key: &Idempotency<'_>,
) -> Result<Mapped, Malformed> {
    let message: PipelineMessage = decode(payload, "pipeline")?;
    let deleted = event == CallbackEvent::DeletePipeline;
    if deleted && message.clear_up_model {
        return Ok(Mapped::Dropped("physical_delete"));
    }
    let Some(route) = route(&message.project_id, event, None) else {
        return Ok(Mapped::Dropped("no_target"));
    };
    Ok(Mapped::Wanted(Wanted {
        event_id: key.event_id(&message.pipeline_id, event)?,
        route,
        need: Need::Pipeline(PipelineRef {
            project: message.project_id,
            pipeline: message.pipeline_id,
            deleted,
        }),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamEnabledMessage {
    project_id: String,
    #[serde(default)]
    user_id: String,
    git_project_id: i64,
    git_project_url: String,
    enable: bool,
}

fn stream_enabled(
    message: StreamEnabledMessage,
    key: &Idempotency<'_>,
) -> Result<Mapped, Malformed> {
    let event = CallbackEvent::StreamEnabled;
    let Some(route) = route(&message.project_id, event, None) else {
        return Ok(Mapped::Dropped("no_target"));
    };
    let body = body::envelope(
        event,
        &StreamEnabledEvent {
            user_id: message.user_id,
            git_project_id: message.git_project_id,
            git_project_url: message.git_project_url,
            enable: message.enable,
        },
    );
    Ok(Mapped::Wanted(Wanted {
        event_id: key.event_id(&message.project_id, event)?,
        route,
        need: Need::Nothing(body),
    }))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProjectInfoMessage {
    #[serde(default)]
    user_id: String,
    project_info: ProjectInfo,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProjectInfo {
    /// Left out of an update that did not change it; bk-ci then sends `""`.
    #[serde(default)]
    english_name: String,
    project_name: String,
}

/// PROJECT_CREATE and PROJECT_UPDATE, whose bodies come from the message's `projectInfo`. The
/// update message's top-level `projectId` is bk-ci's internal id, not the English name, so it
/// is never used.
fn project_info(
    payload: &[u8],
    event: CallbackEvent,
    key: &Idempotency<'_>,
) -> Result<Mapped, Malformed> {
    let message: ProjectInfoMessage = decode(payload, "project")?;
    let info = message.project_info;
    let body = body::envelope(
        event,
        &ProjectCallbackEvent {
            project_id: info.english_name.clone(),
            project_name: info.project_name,
            enable: true,
            user_id: message.user_id,
        },
    );
    Ok(Mapped::Wanted(Wanted {
        event_id: key.event_id(&info.english_name, event)?,
        route: global_route(event),
        need: Need::Nothing(body),
    }))
}

/// bk-ci sends PROJECT_* events only to the global (`DEVOPS_ALL_PROJECT`) registrations.
fn global_route(event: CallbackEvent) -> EventRoute {
    EventRoute {
        project_id: ProjectId::global(),
        event,
        pipeline_id: None,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProjectEnableMessage {
    #[serde(default)]
    user_id: String,
    /// The English name, unlike the update message's.
    project_id: String,
    enabled: bool,
}

fn project_enable(
    message: ProjectEnableMessage,
    key: &Idempotency<'_>,
) -> Result<Mapped, Malformed> {
    let event = if message.enabled {
        CallbackEvent::ProjectEnable
    } else {
        CallbackEvent::ProjectDisable
    };
    Ok(Mapped::Wanted(Wanted {
        event_id: key.event_id(&message.project_id, event)?,
        route: global_route(event),
        need: Need::ProjectName {
            english_name: message.project_id,
            user_id: message.user_id,
            enable: message.enabled,
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUILD: &str = "engine.pipeline.build.callback.fanout";

    fn mapped(family: Family, json: &str) -> Mapped {
        map(family, BUILD, json.as_bytes()).unwrap()
    }

    fn wanted(family: Family, json: &str) -> Wanted {
        match mapped(family, json) {
            Mapped::Wanted(wanted) => wanted,
            Mapped::Dropped(reason) => panic!("dropped: {reason}"),
        }
    }

    fn dropped(family: Family, json: &str) -> &'static str {
        match mapped(family, json) {
            Mapped::Dropped(reason) => reason,
            Mapped::Wanted(wanted) => panic!("wanted: {wanted:?}"),
        }
    }

    fn task_end(atom: &str, kind: &str) -> String {
        format!(
            r#"{{"source":"task-end-e-1","projectId":"demo","pipelineId":"p-1","userId":"alice","buildId":"b-1","stageId":"stage-2","taskId":"e-1","executeCount":1,"atomCode":"{atom}","type":"{kind}","actionType":"END","delayMills":0,"retryTime":1,"unknownField":[1]}}"#
        )
    }

    #[test]
    fn build_messages_become_their_events_with_the_ids_bkci_copies() {
        let wanted = wanted(Family::Build, &task_end("linuxScript", "BUILD_TASK_END"));
        assert_eq!(wanted.route.event, CallbackEvent::BuildTaskEnd);
        assert_eq!(wanted.route.project_id.as_str(), "demo");
        assert_eq!(wanted.route.pipeline_id.unwrap().as_str(), "p-1");
        let Need::Build(build) = wanted.need else {
            panic!("needs the build record")
        };
        assert_eq!(build.build, "b-1");
        assert_eq!(build.stage_id.as_deref(), Some("stage-2"));
        assert_eq!(build.task_id.as_deref(), Some("e-1"));
        assert_eq!(build.execute_count, Some(1));
        assert!(wanted.event_id.as_str().starts_with("b-1:BUILD_TASK_END:"));
    }

    #[test]
    fn vm_atoms_and_types_without_a_callback_are_dropped() {
        for atom in [
            "dispatchVMStartupTaskAtom-DOCKER-LINUX",
            "dispatchVMShutdownTaskAtom",
            "dispatchBuildLessDockerStartupTaskAtom-x",
            "dispatchBuildLessDockerShutdownTaskAtom",
        ] {
            assert_eq!(
                dropped(Family::Build, &task_end(atom, "BUILD_TASK_END")),
                "vm_atom"
            );
        }
        for kind in [
            "BUILD_QUEUE",
            "BUILD_QUALITY",
            "BUILD_STAGE_PAUSE",
            "BUILD_JOB_QUEUE",
            "BUILD_AGENT_START",
            "BUILD_AGENT_END",
            "CREATE_PIPELINE",
            "nonsense",
        ] {
            assert_eq!(
                dropped(Family::Build, &task_end("linuxScript", kind)),
                "type"
            );
        }
        let untyped = r#"{"projectId":"demo","pipelineId":"p-1","buildId":"b-1"}"#;
        assert_eq!(dropped(Family::Build, untyped), "type");
    }

    #[test]
    fn the_same_message_has_the_same_id_and_another_message_another() {
        let one = task_end("linuxScript", "BUILD_TASK_END");
        let first = wanted(Family::Build, &one).event_id;
        assert_eq!(wanted(Family::Build, &one).event_id, first);
        let other = one.replace("task-end-e-1", "task-end-e-2");
        assert_ne!(wanted(Family::Build, &other).event_id, first);
        let elsewhere = map(Family::Build, "other", one.as_bytes()).unwrap();
        let Mapped::Wanted(elsewhere) = elsewhere else {
            panic!()
        };
        assert_ne!(elsewhere.event_id, first);
    }

    #[test]
    fn a_physical_delete_sends_nothing_and_a_soft_delete_reads_the_deleted_row() {
        let soft = r#"{"source":"delete_pipeline","projectId":"demo","pipelineId":"p-1","userId":"alice","clearUpModel":false}"#;
        let Need::Pipeline(pipeline) = wanted(Family::PipelineDelete, soft).need else {
            panic!()
        };
        assert!(pipeline.deleted);
        let hard = soft.replace("false", "true");
        assert_eq!(dropped(Family::PipelineDelete, &hard), "physical_delete");
        let update = r#"{"projectId":"demo","pipelineId":"p-1","userId":"alice","version":3}"#;
        let update = wanted(Family::PipelineUpdate, update);
        assert_eq!(update.route.event, CallbackEvent::UpdatePipeline);
        assert!(update.route.pipeline_id.is_none());
    }

    #[test]
    fn project_update_uses_the_english_name_not_the_internal_id() {
        let message = r#"{"userId":"alice","projectId":"7f3e0c2a9b","retryCount":0,"delayMills":0,"projectInfo":{"englishName":"demo","projectName":"Demo Project","description":null}}"#;
        let wanted = wanted(Family::ProjectUpdate, message);
        assert_eq!(wanted.route.project_id.as_str(), "DEVOPS_ALL_PROJECT");
        let Need::Nothing(body) = wanted.need else {
            panic!()
        };
        assert_eq!(
            body,
            r#"{"event":"PROJECT_UPDATE","data":{"projectId":"demo","projectName":"Demo Project","enable":true,"userId":"alice"}}"#
        );
        let unnamed = r#"{"userId":"","projectId":"7f3e","projectInfo":{"projectName":"Renamed"}}"#;
        let Need::Nothing(body) = self::wanted(Family::ProjectUpdate, unnamed).need else {
            panic!()
        };
        assert!(
            body.contains(r#""projectId":"","projectName":"Renamed""#),
            "{body}"
        );
    }

    #[test]
    fn project_enable_status_picks_the_event() {
        let enable = |on: bool| {
            format!(r#"{{"userId":"","projectId":"demo","retryCount":0,"enabled":{on}}}"#)
        };
        assert_eq!(
            wanted(Family::ProjectEnable, &enable(true)).route.event,
            CallbackEvent::ProjectEnable
        );
        assert_eq!(
            wanted(Family::ProjectEnable, &enable(false)).route.event,
            CallbackEvent::ProjectDisable
        );
    }

    #[test]
    fn malformed_messages_are_refused_with_the_reason() {
        for (family, json) in [
            (Family::Build, "not json"),
            (Family::Build, r#"{"projectId":"demo"}"#),
            (Family::PipelineUpdate, r#"{"pipelineId":"p-1"}"#),
            (Family::ProjectUpdate, r#"{"userId":"a"}"#),
            (
                Family::ProjectEnable,
                r#"{"projectId":"demo","enabled":"no"}"#,
            ),
            (Family::StreamEnabled, r#"{"projectId":"demo"}"#),
        ] {
            let error = map(family, BUILD, json.as_bytes()).unwrap_err();
            assert!(error.to_string().starts_with("not a"), "{error}");
        }
    }

    #[test]
    fn stream_enabled_is_built_from_the_message() {
        let message = r#"{"projectId":"demo","pipelineId":"","userId":"alice","gitProjectId":12345,"gitProjectUrl":"https://git.example.com/team/repo.git","enable":true}"#;
        let Need::Nothing(body) = wanted(Family::StreamEnabled, message).need else {
            panic!()
        };
        assert_eq!(
            body,
            r#"{"event":"STREAM_ENABLED","data":{"userId":"alice","gitProjectId":12345,"gitProjectUrl":"https://git.example.com/team/repo.git","enable":true}}"#
        );
    }
}
