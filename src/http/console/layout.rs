//! The frame of every console page and the small pieces pages share. maud escapes every value
//! spliced into the markup; nothing here builds HTML from strings.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};

use super::session::{Operator, SIGN_IN};
use super::{ROOT, SCRIPT, STYLESHEET};
use crate::domain::{EpochMillis, PageRequest};

/// What an action did, shown once at the top of the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Notice {
    Done(String),
    Failed(String),
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · devops-callbacks console" }
            link rel="stylesheet" href=(STYLESHEET);
            script src=(SCRIPT) defer {}
        }
    }
}

/// A page of the signed-in console: navigation, the pending notice, then `body` under an `h1`.
pub(super) fn page(operator: &Operator, title: &str, body: Markup) -> Markup {
    page_with_head(operator, title, html! {}, body)
}

/// [`page`] with more in the head (a refresh for readers without JavaScript).
pub(super) fn page_with_head(
    operator: &Operator,
    title: &str,
    extra_head: Markup,
    body: Markup,
) -> Markup {
    let notice = operator.session.take_notice();
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            (extra_head)
            body {
                a.skip href="#main" { "Skip to the content" }
                header.top {
                    a.brand href=(ROOT) { "devops-callbacks" }
                    nav aria-label="Console" {
                        ul {
                            li { a href=(ROOT) { "Overview" } }
                            li { a href="/console/projects" { "Projects" } }
                        }
                    }
                    form.signout method="post" action="/console/sign-out" {
                        (guard(operator))
                        span { "Signed in as " strong { (operator.session.user) } }
                        " "
                        button type="submit" { "Sign out" }
                    }
                }
                main #main {
                    h1 { (title) }
                    @match notice {
                        Some(Notice::Done(text)) => p.notice.done role="status" { (text) },
                        Some(Notice::Failed(text)) => p.notice.failed role="alert" { (text) },
                        None => {},
                    }
                    (body)
                }
            }
        }
    }
}

/// The hidden fields every form of the console carries: the session's CSRF token, and the page
/// to come back to.
pub(super) fn guard(operator: &Operator) -> Markup {
    html! {
        input type="hidden" name="csrf" value=(operator.session.csrf);
        input type="hidden" name="back" value=(operator.here);
    }
}

/// The sign-in form (`enabled` is false without `SERVICE_TOKEN`).
pub(super) fn sign_in(enabled: bool, problem: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body {
                main #main .narrow {
                    h1 { "Sign in to the devops-callbacks console" }
                    @if let Some(problem) = problem {
                        p.notice.failed role="alert" #sign-in-problem { (problem) }
                    }
                    @if enabled {
                        form method="post" action=(SIGN_IN) {
                            p {
                                label for="user" { "Your name" }
                                input #user name="user" type="text" required autocomplete="username"
                                    maxlength="64" aria-describedby="user-help";
                                small #user-help { "Recorded with your changes." }
                            }
                            p {
                                label for="token" { "Service token" }
                                input #token name="token" type="password" required
                                    autocomplete="current-password" aria-describedby="token-help";
                                small #token-help { "The service's SERVICE_TOKEN." }
                            }
                            button type="submit" { "Sign in" }
                        }
                    } @else {
                        p.notice.failed role="alert" {
                            "The console is off: the service has no SERVICE_TOKEN to sign in with."
                        }
                    }
                }
            }
        }
    }
}

/// A page refusing a request (no session, a forged form, bad input), with a way back.
pub(super) fn refusal(status: StatusCode, title: &str, text: &str) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                main #main .narrow {
                    h1 { (title) }
                    p role="alert" { (text) }
                    p { a href=(ROOT) { "Back to the console" } " · " a href=(SIGN_IN) { "Sign in" } }
                }
            }
        }
    };
    (status, markup).into_response()
}

/// An instant as a `<time>`, written in `zone` to the second.
pub(super) fn at(millis: EpochMillis, zone: chrono_tz::Tz) -> Markup {
    let Some(utc) = chrono::DateTime::from_timestamp_millis(millis) else {
        return html! { "—" };
    };
    let local = utc.with_timezone(&zone);
    html! {
        time datetime=(utc.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)) {
            (local.format("%Y-%m-%d %H:%M:%S"))
        }
    }
}

/// Links to the previous and next pages of a list of `count` items; `link` makes a page's URL.
pub(super) fn pager(count: u64, page: PageRequest, link: impl Fn(u32) -> String) -> Markup {
    let pages = count.div_ceil(u64::from(page.page_size)).max(1);
    html! {
        @if pages > 1 {
            nav.pager aria-label="Pages" {
                @if page.page > 1 {
                    a rel="prev" href=(link(page.page - 1)) { "← Previous" }
                }
                span { "Page " (page.page) " of " (pages) }
                @if u64::from(page.page) < pages {
                    a rel="next" href=(link(page.page + 1)) { "Next →" }
                }
            }
        }
    }
}
