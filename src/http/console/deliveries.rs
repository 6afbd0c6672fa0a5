//! One callback's deliveries, one delivery's attempts, a re-send, and "recover since …" with the
//! job's progress. The re-send, the recovery and its cancel call the API routes' own functions
//! (`history::resend_history`, `recovery::launch`, `recovery::halt`); the lists read the store
//! methods the API's views read.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Notice, page, page_with_head};
use super::projects::{actions, callback_path, level};
use super::session::{NoFields, Operator, Posted, Reader};
use super::{Console, PageResult, project_of, scope_name};
use crate::delivery::sender::masked;
use crate::domain::{
    CallbackId, DeliveryProgress, DeliveryRecord, DeliveryState, HistoryEntry, PageRequest,
    ProjectId, RecoverJob, RecoverJobId, RecoverState, RegisteredCallback,
};
use crate::error::{AppError, Result};
use crate::http::envelope::Envelope;
use crate::http::error::public_parts;
use crate::http::extract::{Path, Query};
use crate::http::history::resend_history;
use crate::http::paging::{PageNumber, PageParams};
use crate::http::recovery::{self, RecoverJobView, Window};

pub(super) fn router(project: &str) -> Router<Console> {
    let callback = format!("{project}/callbacks/{{id}}");
    let delivery = format!("{callback}/deliveries/{{delivery}}");
    let job = format!("{project}/recover_jobs/{{job}}");
    Router::new()
        .route(&callback, get(show_callback))
        .route(&format!("{callback}/recover"), post(recover))
        .route(&delivery, get(show_delivery))
        .route(&format!("{delivery}/resend"), post(resend))
        .route(&job, get(job_progress))
        .route(&format!("{job}/cancel"), post(cancel))
}

/// The query of a callback's page: a state to list, the page, and the recovery to follow.
#[derive(Deserialize, Default)]
struct CallbackQuery {
    #[serde(default)]
    status: Option<DeliveryState>,
    #[serde(default)]
    page: Option<PageNumber>,
    #[serde(default)]
    job: Option<RecoverJobId>,
}

impl CallbackQuery {
    fn page(&self) -> PageRequest {
        PageParams {
            page: self.page,
            page_size: None,
        }
        .request()
    }

    fn link(&self, base: &str, page: u32) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if let Some(status) = self.status {
            query.append_pair("status", status.as_str());
        }
        query.append_pair("page", &page.to_string());
        format!("{base}?{}", query.finish())
    }
}

async fn find(
    console: &Console,
    project: &ProjectId,
    id: CallbackId,
) -> Result<RegisteredCallback> {
    console
        .app
        .store
        .find_callback(project, id)
        .await?
        .ok_or(AppError::CallbackNotFound(id))
}

/// The callback, its recovery (with the job asked for), and its deliveries, newest first.
async fn show_callback(
    State(console): State<Console>,
    operator: Operator,
    path: Result<Path<(String, CallbackId)>>,
    query: Result<Query<CallbackQuery>>,
) -> PageResult {
    let (Path((raw, id)), Query(query)) = (path?, query?);
    let project = project_of(&raw)?;
    let registered = find(&console, &project, id).await?;
    let store = &console.app.store;
    let (count, deliveries) = store
        .list_deliveries(&project, id, query.status, query.page())
        .await?
        .ok_or(AppError::CallbackNotFound(id))?;
    let job = match query.job {
        Some(job) => Some(
            store
                .recover_job(&project, job)
                .await?
                .ok_or(AppError::RecoverJobNotFound(job))?,
        ),
        None => None,
    };
    let base = callback_path(&project, id);
    let zone = console.app.config.time_zone;
    let body = html! {
        (facts(&operator, &registered, zone))
        (recovery_section(&operator, &project, id, job.as_ref(), zone))
        section aria-labelledby="deliveries-title" {
            h2 #deliveries-title { "Deliveries" }
            (status_filter(&base, query.status))
            (delivery_table(&base, &deliveries, zone))
            (layout::pager(count, query.page(), |n| query.link(&base, n)))
        }
    };
    let title = format!("Callback {id}");
    let running = job
        .as_ref()
        .is_some_and(|j| j.state == RecoverState::Running);
    // Without JavaScript, a page following a running job reloads itself.
    let head = html! { @if running { noscript { meta http-equiv="refresh" content="2"; } } };
    Ok(page_with_head(&operator, &title, head, body).into_response())
}

fn facts(operator: &Operator, registered: &RegisteredCallback, zone: chrono_tz::Tz) -> Markup {
    let c = &registered.callback;
    html! {
        dl.facts {
            dt { "URL" } dd #callback-url { (c.url) }
            dt { "Project" } dd { a href={ "/console/projects/" (c.project_id) } { (scope_name(&c.project_id)) } }
            dt { "Level" } dd { (level(registered)) }
            dt { "Event" } dd { (c.event) }
            dt { "Region" } dd { (c.region) }
            dt { "Signed" } dd { @if c.has_secret_token { "yes (a secret token is set)" } @else { "no token" } }
            dt { "State" } dd #callback-state {
                @if c.enabled { "enabled" } @else { "disabled: " (c.disabled_reason.as_deref().unwrap_or("no reason recorded")) }
            }
            @if let Some(since) = c.failure_time {
                dt { "Failing since" } dd { (layout::at(since, zone)) }
            }
        }
        div.actions { (actions(operator, c)) }
    }
}

/// How far a job got: `(done + failed) / total` while it runs (the API documents the same),
/// all of it once it is done.
fn percent(job: &RecoverJob) -> u64 {
    match job.state {
        RecoverState::Done => 100,
        _ if job.total == 0 => 0,
        _ => ((job.done + job.failed) * 100 / job.total).min(100),
    }
}

fn recovery_section(
    operator: &Operator,
    project: &ProjectId,
    id: CallbackId,
    job: Option<&RecoverJob>,
    zone: chrono_tz::Tz,
) -> Markup {
    let since = chrono::Utc::now().with_timezone(&zone) - chrono::Duration::days(1);
    html! {
        section #recovery aria-labelledby="recovery-title"
            data-state=[job.map(|j| j.state.as_str())] {
            h2 #recovery-title { "Recover" }
            @if let Some(job) = job {
                @let share = percent(job);
                p { "Recovery job " (job.id) ", started by " (job.creator) " at " (layout::at(job.created_at, zone)) }
                label for="recovery-progress" { "Progress" }
                progress #recovery-progress max="100" value=(share)
                    data-poll={ "/console/projects/" (project) "/recover_jobs/" (job.id) } {
                    (share) " %"
                }
                p #recovery-text aria-live="polite" {
                    (share) " % · " (job.done) " of " (job.total) " re-queued, " (job.failed)
                    " no longer waiting · " (job.state)
                    @if let Some(reason) = &job.reason { " (" (reason) ")" }
                }
                @if job.state == RecoverState::Running {
                    form.inline method="post" action={ "/console/projects/" (project) "/recover_jobs/" (job.id) "/cancel" } {
                        (layout::guard(operator))
                        button.secondary type="submit" { "Cancel the recovery" }
                    }
                }
            }
            p {
                "Re-queues every delivery of this callback that ended FAILED, or CANCELLED by a \
                 disable, in the window; the workers then send each one again. Times are in "
                (zone.name()) "."
            }
            form.inline #recover method="post" action={ (callback_path(project, id)) "/recover" } {
                (layout::guard(operator))
                div {
                    label for="since" { "Since" }
                    input #since type="datetime-local" name="since" step="1" required
                        value=(since.format("%Y-%m-%dT%H:%M:%S"));
                }
                div {
                    label for="until" { "Until (empty: now)" }
                    input #until type="datetime-local" name="until" step="1";
                }
                button type="submit" { "Recover since then" }
            }
        }
    }
}

fn status_filter(base: &str, chosen: Option<DeliveryState>) -> Markup {
    let states = [
        DeliveryState::Pending,
        DeliveryState::Retrying,
        DeliveryState::Success,
        DeliveryState::Failed,
        DeliveryState::Cancelled,
    ];
    html! {
        form.inline method="get" action=(base) {
            div {
                label for="status" { "Status" }
                select #status name="status" {
                    option value="" selected[chosen.is_none()] { "any" }
                    @for state in states {
                        option value=(state.as_str()) selected[chosen == Some(state)] { (state.as_str()) }
                    }
                }
            }
            button.secondary type="submit" { "Show" }
        }
    }
}

fn delivery_table(base: &str, deliveries: &[DeliveryRecord], zone: chrono_tz::Tz) -> Markup {
    html! {
        @if deliveries.is_empty() {
            p #no-deliveries { "No deliveries." }
        } @else {
            div.scroll { table.cards #deliveries {
                thead { tr {
                    th scope="col" { "Delivery" }
                    th scope="col" { "Event" }
                    th scope="col" { "Status" }
                    th scope="col" { "Attempts" }
                    th scope="col" { "Last response" }
                    th scope="col" { "Created" }
                    th scope="col" { "Last change" }
                } }
                tbody { @for d in deliveries { tr {
                    td data-label="Delivery" { a href={ (base) "/deliveries/" (d.id) } { "#" (d.id) } }
                    td data-label="Event" { (d.event) br; small { (d.event_id.as_str()) } }
                    td data-label="Status" { (progress(&d.progress, zone)) }
                    td data-label="Attempts" { (d.attempts) }
                    td data-label="Last response" {
                        @match d.last_response_code { Some(code) => (code), None => "—" }
                        @if let Some(error) = &d.last_error { br; small { (error) } }
                    }
                    td data-label="Created" { (layout::at(d.created_at, zone)) }
                    td data-label="Last change" { (layout::at(d.updated_at, zone)) }
                } } }
            } }
        }
    }
}

/// Where a delivery stands, with what goes with its state.
fn progress(progress: &DeliveryProgress, zone: chrono_tz::Tz) -> Markup {
    let state = progress.state.as_str();
    html! {
        span class={ "state " (state) } { (state) }
        @if let Some(next) = progress.next_attempt_at { br; small { "next attempt " (layout::at(next, zone)) } }
        @if let Some(reason) = &progress.cancel_reason { br; small { (reason) } }
        @if let Some(job) = progress.recover_job { br; small { "recovered by job " (job) } }
    }
}

/// The attempts of one delivery of the callback, newest first (none when the delivery is not
/// the callback's, or has had no attempt yet).
async fn attempts(
    console: &Console,
    project: &ProjectId,
    id: CallbackId,
    delivery: i64,
) -> Result<Vec<HistoryEntry>> {
    let mut entries = console
        .app
        .store
        .delivery_history(project, delivery)
        .await?;
    entries.retain(|entry| entry.attempt.callback_id == id);
    Ok(entries)
}

/// One delivery: where it stands, a re-send, and each attempt's request and response.
async fn show_delivery(
    State(console): State<Console>,
    operator: Operator,
    path: Result<Path<(String, CallbackId, i64)>>,
) -> PageResult {
    let Path((raw, id, delivery)) = path?;
    let project = project_of(&raw)?;
    let registered = find(&console, &project, id).await?;
    let entries = attempts(&console, &project, id, delivery).await?;
    let zone = console.app.config.time_zone;
    let base = callback_path(&project, id);
    let body = html! {
        p { "Of " a #to-callback href=(base) { "callback " (id) } ": " (registered.callback.url) }
        @match entries.first() {
            None => p #no-attempts {
                "No attempt of this delivery is recorded for this callback: it waits for its \
                 first attempt, or retention removed its history."
            },
            Some(latest) => {
                @if let Some(state) = &latest.delivery {
                    p #delivery-state { "Status: " (progress(state, zone)) }
                }
                form.inline method="post" action={ (base) "/deliveries/" (delivery) "/resend" } {
                    (layout::guard(&operator))
                    button #resend type="submit" { "Re-send now" }
                    small { " Sends the last attempt's body again, once, with the callback's current token." }
                }
                @for entry in &entries { (attempt(entry, zone)) }
            }
        }
    };
    let title = format!("Delivery {delivery}");
    Ok(page(&operator, &title, body).into_response())
}

fn attempt(entry: &HistoryEntry, zone: chrono_tz::Tz) -> Markup {
    let a = &entry.attempt;
    let state = a.status.as_str();
    html! {
        article.attempt aria-labelledby={ "attempt-" (entry.id) } {
            h2 #{ "attempt-" (entry.id) } {
                "Attempt " (a.attempt) " · " span class={ "state " (state) } { (state) }
                @if a.manual { " · manual re-send" }
                @if let Some(job) = a.recover_job { " · recovered by job " (job) }
            }
            dl.facts {
                dt { "Started" } dd { (layout::at(a.start_time, zone)) }
                dt { "Took" } dd { (a.end_time - a.start_time) " ms" }
                dt { "Response code" } dd { @match a.response_code { Some(code) => (code), None => "none" } }
                @if let Some(error) = &a.error_msg { dt { "Error" } dd { (error) } }
            }
            h3 { "Request" }
            div.scroll { table {
                caption { "Headers (the token and the signature masked)" }
                thead { tr { th scope="col" { "Name" } th scope="col" { "Value" } } }
                tbody { @for header in masked(&a.request_headers) {
                    tr { td { (header.name) } td { (header.value) } }
                } }
            } }
            pre aria-label="Request body" { (a.request_body) }
            h3 { "Response" }
            @match &a.response_body {
                Some(body) => pre aria-label="Response body" { (body) },
                None => p { "No response body." },
            }
        }
    }
}

/// Re-sends the delivery's last attempt, as `callback_retry` does with its history row.
async fn resend(
    State(console): State<Console>,
    path: Result<Path<(String, CallbackId, i64)>>,
    posted: Posted<NoFields>,
) -> Response {
    let done = async {
        let Path((raw, id, delivery)) = path?;
        let project = project_of(&raw)?;
        let latest = attempts(&console, &project, id, delivery)
            .await?
            .into_iter()
            .next()
            .ok_or(AppError::HistoryNotFound(delivery))?;
        resend_history(&console.app, &project, latest.id).await
    };
    posted.operator.session.tell(match done.await {
        Ok(None) => Notice::Done("Delivered: the receiver accepted the re-send.".to_owned()),
        Ok(Some(reason)) => Notice::Failed(format!("The re-send failed: {reason}")),
        Err(e) => Notice::Failed(public_parts(&e).1),
    });
    Redirect::to(&posted.back).into_response()
}

/// The recovery form: `datetime-local` values, read in `TIME_ZONE`.
#[derive(Deserialize)]
struct RecoverForm {
    since: String,
    #[serde(default)]
    until: String,
}

/// `2024-05-01T13:45` or `2024-05-01T13:45:07` (what a `datetime-local` input sends) in the
/// history API's format, `2024-05-01 13:45:07`; other text is passed on for its check to refuse.
fn history_time(value: &str) -> String {
    let text = value.trim().replacen('T', " ", 1);
    if text.len() == 16 {
        format!("{text}:00")
    } else {
        text
    }
}

/// Starts a recovery of the callback and shows its progress on the callback's page.
async fn recover(
    State(console): State<Console>,
    path: Result<Path<(String, CallbackId)>>,
    posted: Posted<RecoverForm>,
) -> Response {
    let session = &posted.operator.session;
    let started = async {
        let Path((raw, id)) = path?;
        let project = project_of(&raw)?;
        let until = Some(posted.form.until.as_str())
            .filter(|until| !until.trim().is_empty())
            .map(history_time);
        let window = Window::parse(
            &history_time(&posted.form.since),
            until.as_deref(),
            console.app.config.time_zone,
        )?;
        let job = recovery::launch(
            &console.app,
            project.clone(),
            id,
            window,
            session.user.clone(),
        )
        .await?;
        Ok::<_, AppError>((project, id, job))
    };
    match started.await {
        Ok((project, id, job)) => {
            session.tell(Notice::Done(format!(
                "Recovery job {} started: {} deliveries to re-queue.",
                job.id, job.total
            )));
            let to = format!("{}?job={}#recovery", callback_path(&project, id), job.id);
            Redirect::to(&to).into_response()
        }
        Err(e) => {
            session.tell(Notice::Failed(public_parts(&e).1));
            Redirect::to(&posted.back).into_response()
        }
    }
}

/// A job as the API shows it (`GET …/recover_jobs/{jobId}`), for the page's script.
async fn job_progress(
    State(console): State<Console>,
    _: Reader,
    path: Result<Path<(String, RecoverJobId)>>,
) -> Result<Envelope<RecoverJobView>> {
    let Path((raw, job)) = path?;
    recovery::job_of(&console.app, &project_of(&raw)?, job).await
}

/// Cancels a running job, as `DELETE …/recover_jobs/{jobId}` does.
async fn cancel(
    State(console): State<Console>,
    path: Result<Path<(String, RecoverJobId)>>,
    posted: Posted<NoFields>,
) -> Response {
    let session = &posted.operator.session;
    let done = async {
        let Path((raw, job)) = path?;
        recovery::halt(&console.app, &project_of(&raw)?, job, &session.user).await
    };
    session.tell(match done.await {
        Ok(job) if job.state == RecoverState::Cancelled => {
            Notice::Done(format!("Recovery job {} cancelled.", job.id))
        }
        Ok(job) => Notice::Failed(format!(
            "Recovery job {} had already ended: {}.",
            job.id, job.state
        )),
        Err(e) => Notice::Failed(public_parts(&e).1),
    });
    Redirect::to(&posted.back).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::now_millis;

    #[test]
    fn datetime_local_values_become_history_times() {
        assert_eq!(history_time("2024-05-01T13:45"), "2024-05-01 13:45:00");
        assert_eq!(history_time(" 2024-05-01T13:45:07 "), "2024-05-01 13:45:07");
        assert_eq!(history_time("yesterday"), "yesterday");
    }

    #[test]
    fn progress_counts_what_is_handled_and_is_whole_when_done() {
        let job = |state, total, done, failed| RecoverJob {
            id: 1,
            project_id: "demo".parse().unwrap(),
            callback_id: 1,
            state,
            reason: None,
            from: 0,
            to: now_millis(),
            total,
            done,
            failed,
            creator: "ops".parse().unwrap(),
            created_at: 0,
            updated_at: 0,
        };
        assert_eq!(percent(&job(RecoverState::Running, 8, 3, 1)), 50);
        assert_eq!(percent(&job(RecoverState::Running, 0, 0, 0)), 0);
        assert_eq!(percent(&job(RecoverState::Done, 0, 0, 0)), 100);
        assert_eq!(percent(&job(RecoverState::Cancelled, 4, 1, 0)), 25);
    }
}
