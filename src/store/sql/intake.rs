//! Intake's routing: which callbacks each event of a batch goes to, and the answers. The
//! statements themselves are in `queue.rs` (`DeliveryQueue::publish`).

use std::collections::HashMap;

use super::json_rows;
use crate::domain::{ALL_PROJECTS, EventRoute, NewEvent, Published};
use crate::store::{StoreError, StoreResult};

/// An enabled callback an event may go to: (id, project, pipeline, event, url); `pipeline` is
/// `None` for project-level and global callbacks.
pub(super) type CallbackTarget = (i64, String, Option<String>, String, String);

/// Callbacks grouped by where they listen: (project, pipeline, event).
type Scope<'a> = (&'a str, Option<&'a str>, &'a str);

/// Where each event of a batch goes, worked out from the enabled callbacks of its projects and
/// of its build events' pipelines.
pub(super) struct Routing<'a> {
    events: &'a [NewEvent],
    /// Each event's (callback id, host) targets, in input order.
    targets: Vec<Vec<(i64, String)>>,
    /// Where each (project, event id) first stands in the batch, to match RETURNING rows.
    position: HashMap<(&'a str, &'a str), usize>,
}

/// Whose callbacks the routes may reach, as rows for `Backend::JSON_ROWS`: `{"p"}` for each
/// project (the global scope too for PROJECT_* events), and `{"p","l"}` for each (project,
/// pipeline) of a build event.
pub(super) fn scope_rows<'r>(routes: impl Iterator<Item = &'r EventRoute> + Clone) -> String {
    let mut scopes: Vec<(&str, Option<&str>)> = routes
        .clone()
        .flat_map(|r| {
            let project = r.project_id.as_str();
            let pipeline = r.pipeline_id.as_ref().map(|p| (project, Some(p.as_str())));
            std::iter::once((project, None)).chain(pipeline)
        })
        .collect();
    if routes.into_iter().any(|r| r.event.is_project_event()) {
        scopes.push((ALL_PROJECTS, None));
    }
    scopes.sort_unstable();
    scopes.dedup();
    json_rows(scopes.iter().map(|(project, pipeline)| match pipeline {
        None => serde_json::json!({ "p": project }),
        Some(pipeline) => serde_json::json!({ "p": project, "l": pipeline }),
    }))
}

/// Each route's (callback id, host) targets among `callbacks`, in input order: the project's
/// callbacks first, then the global ones (PROJECT_* events) or the pipeline's (build events), as
/// bk-ci orders them; a URL registered at two levels is sent to twice, as in bk-ci.
pub(super) fn targets_of<'r>(
    routes: impl Iterator<Item = &'r EventRoute>,
    callbacks: &[CallbackTarget],
) -> Vec<Vec<(i64, String)>> {
    let mut by_target: HashMap<Scope<'_>, Vec<(i64, String)>> = HashMap::new();
    for (id, project, pipeline, event, url) in callbacks {
        let host = url::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        by_target
            .entry((project.as_str(), pipeline.as_deref(), event.as_str()))
            .or_default()
            .push((*id, host));
    }
    routes
        .map(|route| {
            let project = route.project_id.as_str();
            let also = if route.event.is_project_event() && project != ALL_PROJECTS {
                Some((ALL_PROJECTS, None))
            } else {
                route
                    .pipeline_id
                    .as_ref()
                    .map(|pipeline| (project, Some(pipeline.as_str())))
            };
            std::iter::once((project, None))
                .chain(also)
                .filter_map(|(project, pipeline)| {
                    by_target.get(&(project, pipeline, route.event.as_str()))
                })
                .flatten()
                .cloned()
                .collect()
        })
        .collect()
}

impl<'a> Routing<'a> {
    pub(super) fn new(events: &'a [NewEvent], callbacks: &[CallbackTarget]) -> Self {
        let targets = targets_of(events.iter().map(|e| &e.route), callbacks);
        let mut position = HashMap::new();
        for (index, event) in events.iter().enumerate() {
            position
                .entry((event.route.project_id.as_str(), event.event_id.as_str()))
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
                "p": e.route.project_id.as_str(),
                "i": e.event_id.as_str(),
                "e": e.route.event.as_str(),
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
            .map(|e| {
                serde_json::json!({ "p": e.route.project_id.as_str(), "i": e.event_id.as_str() })
            })
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
        event.route.project_id.as_str().to_owned(),
        event.event_id.as_str().to_owned(),
    )
}
