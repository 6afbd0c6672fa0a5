//! Intake's routing: which callbacks each event of a batch goes to, and the answers. The
//! statements themselves are in `queue.rs` (`DeliveryQueue::publish`).

use std::collections::HashMap;

use super::json_rows;
use crate::domain::{ALL_PROJECTS, NewEvent, Published};
use crate::store::{StoreError, StoreResult};

/// An enabled callback an event may go to: (id, project, event, url).
pub(super) type CallbackTarget = (i64, String, String, String);

/// Where each event of a batch goes, worked out from the enabled callbacks of its projects.
pub(super) struct Routing<'a> {
    events: &'a [NewEvent],
    /// Each event's (callback id, host) targets, in input order.
    targets: Vec<Vec<(i64, String)>>,
    /// Where each (project, event id) first stands in the batch, to match RETURNING rows.
    position: HashMap<(&'a str, &'a str), usize>,
}

/// The projects whose callbacks the events may reach (the global scope too for PROJECT_*
/// events), as rows for `Backend::JSON_ROWS`.
pub(super) fn project_rows(events: &[NewEvent]) -> String {
    let mut projects: Vec<&str> = events.iter().map(|e| e.project_id.as_str()).collect();
    if events.iter().any(|e| e.event.is_project_event()) {
        projects.push(ALL_PROJECTS);
    }
    projects.sort_unstable();
    projects.dedup();
    json_rows(projects.iter().map(|p| serde_json::json!({ "p": p })))
}

impl<'a> Routing<'a> {
    pub(super) fn new(events: &'a [NewEvent], callbacks: &[CallbackTarget]) -> Self {
        let mut by_target: HashMap<(&str, &str), Vec<(i64, String)>> = HashMap::new();
        for (id, project, event, url) in callbacks {
            let host = url::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default();
            by_target
                .entry((project.as_str(), event.as_str()))
                .or_default()
                .push((*id, host));
        }
        let targets = events
            .iter()
            .map(|event| {
                let name = event.event.as_str();
                let mut ids = by_target
                    .get(&(event.project_id.as_str(), name))
                    .cloned()
                    .unwrap_or_default();
                if event.event.is_project_event() && event.project_id.as_str() != ALL_PROJECTS {
                    ids.extend(
                        by_target
                            .get(&(ALL_PROJECTS, name))
                            .into_iter()
                            .flatten()
                            .cloned(),
                    );
                }
                ids
            })
            .collect();
        let mut position = HashMap::new();
        for (index, event) in events.iter().enumerate() {
            position
                .entry((event.project_id.as_str(), event.event_id.as_str()))
                .or_insert(index);
        }
        Self {
            events,
            targets,
            position,
        }
    }

    /// The events as rows for the insert, each with how many deliveries it gets.
    pub(super) fn event_rows(&self) -> String {
        json_rows(self.events.iter().zip(&self.targets).map(|(e, ids)| {
            serde_json::json!({
                "p": e.project_id.as_str(),
                "i": e.event_id.as_str(),
                "e": e.event.as_str(),
                "b": e.body,
                "n": ids.len(),
            })
        }))
    }

    /// The deliveries of the events the insert returned (as (pk, project, event id)), as rows,
    /// and the answer of each.
    pub(super) fn deliveries_of(
        &self,
        inserted: Vec<(i64, String, String)>,
    ) -> (Vec<serde_json::Value>, Answers) {
        let mut answers = Answers::new();
        let mut rows = Vec::new();
        for (pk, project, event_id) in inserted {
            let ids = &self.targets[self.position[&(project.as_str(), event_id.as_str())]];
            answers.insert(
                (project, event_id),
                u32::try_from(ids.len()).unwrap_or(u32::MAX),
            );
            rows.extend(
                ids.iter()
                    .map(|(id, host)| serde_json::json!({ "v": pk, "c": id, "h": host })),
            );
        }
        (rows, answers)
    }

    /// Event ids seen before (or twice in this batch), as rows, to answer what was answered then.
    pub(super) fn repeated_rows(&self, answers: &Answers) -> Option<String> {
        let repeated: Vec<serde_json::Value> = self
            .events
            .iter()
            .filter(|e| !answers.contains_key(&key(e)))
            .map(|e| serde_json::json!({ "p": e.project_id.as_str(), "i": e.event_id.as_str() }))
            .collect();
        (!repeated.is_empty()).then(|| json_rows(repeated))
    }

    /// The answers in input order.
    pub(super) fn published(&self, answers: &Answers) -> StoreResult<Vec<Published>> {
        self.events
            .iter()
            .map(|e| {
                let deliveries = answers.get(&key(e)).copied().ok_or_else(|| {
                    StoreError::Invariant(format!(
                        "event {} vanished during intake",
                        e.event_id.as_str()
                    ))
                })?;
                Ok(Published {
                    event_id: e.event_id.clone(),
                    deliveries,
                })
            })
            .collect()
    }
}

/// How many deliveries each (project, event id) got.
pub(super) type Answers = HashMap<(String, String), u32>;

fn key(event: &NewEvent) -> (String, String) {
    (
        event.project_id.as_str().to_owned(),
        event.event_id.as_str().to_owned(),
    )
}
