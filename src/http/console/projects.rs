//! Projects and their callbacks of every level, searched by URL or event; enable, disable and
//! delete, each through the function of the API route that does it.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Notice, page};
use super::session::{NoFields, Operator, Posted};
use super::{Console, Listing, PageResult, project_of, scope_name};
use crate::domain::{Callback, CallbackId, CallbackSearch, ProjectId, RegisteredCallback};
use crate::error::{AppError, Result};
use crate::http::extract::{Path, Query};
use crate::http::{bkci_op, callbacks, error::public_parts, pipelines};
use crate::store::Selection;

/// A link to a callback's page (its deliveries), named by its URL.
pub(super) fn callback_link(c: &Callback) -> Markup {
    html! {
        a href=(callback_path(&c.project_id, c.id)) { (c.url) }
    }
}

pub(super) fn callback_path(project: &ProjectId, id: CallbackId) -> String {
    format!("/console/projects/{project}/callbacks/{id}")
}

/// Which kind of registration it is.
pub(super) fn level(registered: &RegisteredCallback) -> Markup {
    html! {
        @match &registered.pipeline {
            Some((pipeline, name)) => {
                "pipeline " code { (pipeline.as_str()) } " “" (name.as_str()) "”"
            },
            None if registered.callback.project_id == ProjectId::global() => "global",
            None => "project",
        }
    }
}

/// The projects (and the global scope) with callbacks; with `q`, the callbacks of every project
/// whose URL contains it or whose event it names.
pub(super) async fn list(
    State(console): State<Console>,
    operator: Operator,
    query: Result<Query<Listing>>,
) -> PageResult {
    let Query(listing) = query?;
    let store = &console.app.store;
    let body = match listing.text() {
        Some(text) => {
            let search = CallbackSearch {
                project: None,
                text: Some(text),
            };
            let found = store.search_callbacks(&search, listing.page()).await?;
            html! {
                (search_form("/console/projects", &listing, "Find a callback in any project"))
                (callback_table(&operator, found.1, found.0, &listing, "/console/projects", &console))
            }
        }
        None => {
            let (count, projects) = store.project_summaries(listing.page()).await?;
            html! {
                (search_form("/console/projects", &listing, "Find a callback in any project"))
                @if projects.is_empty() {
                    p { "No callbacks are registered yet." }
                } @else {
                    div.scroll { table.cards #projects {
                        thead { tr {
                            th scope="col" { "Project" }
                            th scope="col" { "Callbacks" }
                            th scope="col" { "Disabled" }
                        } }
                        tbody { @for p in &projects { tr {
                            td data-label="Project" { a href={ "/console/projects/" (p.project_id) } { (scope_name(&p.project_id)) } }
                            td data-label="Callbacks" { (p.callbacks) }
                            td data-label="Disabled" { (p.disabled) }
                        } } }
                    } }
                    (layout::pager(count, listing.page(), |n| listing.link("/console/projects", n)))
                }
            }
        }
    };
    Ok(page(&operator, "Projects", body).into_response())
}

/// One project's callbacks (project-level and pipeline-level, or the global ones), searchable.
pub(super) async fn callbacks(
    State(console): State<Console>,
    operator: Operator,
    path: Result<Path<String>>,
    query: Result<Query<Listing>>,
) -> PageResult {
    let (Path(raw), Query(listing)) = (path?, query?);
    let project = project_of(&raw)?;
    let search = CallbackSearch {
        project: Some(project.clone()),
        text: listing.text(),
    };
    let (count, found) = console
        .app
        .store
        .search_callbacks(&search, listing.page())
        .await?;
    let here = format!("/console/projects/{project}");
    let body = html! {
        (search_form(&here, &listing, "Find a callback by URL or event"))
        (callback_table(&operator, found, count, &listing, &here, &console))
    };
    Ok(page(&operator, &scope_name(&project), body).into_response())
}

fn search_form(action: &str, listing: &Listing, label: &str) -> Markup {
    html! {
        form.search method="get" action=(action) role="search" {
            label for="q" { (label) }
            input #q type="search" name="q" value=[listing.text()]
                placeholder="part of a URL, or an event such as BUILD_END";
            button type="submit" { "Search" }
        }
    }
}

fn callback_table(
    operator: &Operator,
    found: Vec<RegisteredCallback>,
    count: u64,
    listing: &Listing,
    here: &str,
    console: &Console,
) -> Markup {
    let zone = console.app.config.time_zone;
    html! {
        @if found.is_empty() {
            p #no-callbacks { "No callback matches." }
        } @else {
            p { (count) " callbacks" }
            div.scroll { table.cards #callbacks {
                thead { tr {
                    th scope="col" { "URL" }
                    th scope="col" { "Project" }
                    th scope="col" { "Level" }
                    th scope="col" { "Event" }
                    th scope="col" { "State" }
                    th scope="col" { "Actions" }
                } }
                tbody { @for registered in &found {
                    @let c = &registered.callback;
                    tr {
                        td data-label="URL" { (callback_link(c)) }
                        td data-label="Project" { (c.project_id) }
                        td data-label="Level" { (level(registered)) }
                        td data-label="Event" { (c.event) }
                        td data-label="State" { (state(c, zone)) }
                        td.actions data-label="Actions" { (actions(operator, c)) }
                    }
                } }
            } }
            (layout::pager(count, listing.page(), |n| listing.link(here, n)))
        }
    }
}

fn state(c: &Callback, zone: chrono_tz::Tz) -> Markup {
    html! {
        @if c.enabled {
            "enabled"
            @if let Some(since) = c.failure_time {
                br; small { "failing since " (layout::at(since, zone)) }
            }
        } @else {
            strong { "disabled" }
            @if let Some(reason) = &c.disabled_reason { br; small { (reason) } }
        }
    }
}

pub(super) fn actions(operator: &Operator, c: &Callback) -> Markup {
    let base = callback_path(&c.project_id, c.id);
    let (change, label) = if c.enabled {
        ("disable", "Disable")
    } else {
        ("enable", "Enable")
    };
    html! {
        form method="post" action={ (base) "/" (change) } {
            (layout::guard(operator))
            button type="submit" aria-label={ (label) " callback " (c.id) } { (label) }
        }
        form method="post" action={ (base) "/delete" }
            data-confirm={ "Delete the callback to " (c.url) " (" (c.event) ")?" } {
            (layout::guard(operator))
            button.danger type="submit" aria-label={ "Delete callback " (c.id) } { "Delete" }
        }
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub(super) enum Change {
    Enable,
    Disable,
    Delete,
}

/// Enables, disables or deletes one callback, then goes back to the page the form was on.
pub(super) async fn change(
    State(console): State<Console>,
    path: Result<Path<(String, CallbackId, Change)>>,
    posted: Posted<NoFields>,
) -> Response {
    let session = &posted.operator.session;
    let done = match path {
        Ok(Path((project, id, change))) => apply(&console, &project, id, change, session).await,
        Err(e) => Err(e),
    };
    session.tell(match done {
        Ok(text) => Notice::Done(text),
        Err(e) => Notice::Failed(public_parts(&e).1),
    });
    Redirect::to(&posted.back).into_response()
}

async fn apply(
    console: &Console,
    project: &str,
    id: CallbackId,
    change: Change,
    session: &super::session::Session,
) -> Result<String> {
    let project = project_of(project)?;
    let app = &console.app;
    let registered = app
        .store
        .find_callback(&project, id)
        .await?
        .ok_or(AppError::CallbackNotFound(id))?;
    let selection = Selection::Ids {
        project: &project,
        ids: &[id],
    };
    let reason = format!("disabled by {} in the console", session.user);
    match (change, &registered.pipeline) {
        (Change::Enable | Change::Disable, _) => {
            let enable = matches!(change, Change::Enable);
            if bkci_op::set_enabled(app, selection, enable, &reason).await? == 0 {
                return Err(AppError::CallbackNotFound(id));
            }
            let word = if enable { "enabled" } else { "disabled" };
            Ok(format!(
                "Callback {id} ({}) {word}.",
                registered.callback.url
            ))
        }
        (Change::Delete, Some((pipeline, name))) => {
            pipelines::delete(app, &project, pipeline, name).await?;
            Ok(format!(
                "Pipeline callback “{}” of {} deleted.",
                name.as_str(),
                pipeline.as_str()
            ))
        }
        (Change::Delete, None) => {
            callbacks::delete(app, &project, id).await?;
            Ok(format!(
                "Callback {id} ({}) deleted.",
                registered.callback.url
            ))
        }
    }
}
