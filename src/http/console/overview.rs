//! The overview: queue depth, the last hour's attempts by outcome, disabled callbacks, and the
//! bus bridge.

use axum::extract::State;
use axum::response::IntoResponse;
use maud::{Markup, html};

use super::layout::{self, page};
use super::projects::{callback_link, level};
use super::session::Operator;
use super::{Console, PageResult};
use crate::bridge::QueueState;
use crate::domain::{AttemptBucket, EpochMillis, RegisteredCallback, now_millis};
use crate::store::QueueStats;

/// The chart's slices: twelve of five minutes.
const SLICE: EpochMillis = 5 * 60 * 1000;
const SLICES: i64 = 12;
/// Most disabled callbacks listed.
const DISABLED_SHOWN: u32 = 50;

pub(super) async fn show(State(console): State<Console>, operator: Operator) -> PageResult {
    let store = &console.app.store;
    let now = now_millis();
    // Whole slices, so a slice means the same minutes from one load to the next.
    let from = (now - SLICE * SLICES) / SLICE * SLICE + SLICE;
    let stats = store.queue_stats(now).await?;
    let buckets = store.attempt_buckets(from, SLICE).await?;
    let disabled = store.disabled_callbacks(DISABLED_SHOWN).await?;
    let bridge = console.app.bridge.as_ref().map(|bridge| bridge.status());
    let zone = console.app.config.time_zone;
    let body = html! {
        (queue(&stats))
        (outcomes(from, &buckets, zone))
        (disabled_list(&disabled, zone))
        (bridge_state(bridge.as_deref()))
    };
    Ok(page(&operator, "Overview", body).into_response())
}

fn queue(stats: &QueueStats) -> Markup {
    html! {
        section aria-labelledby="queue-title" {
            h2 #queue-title { "Delivery queue" }
            dl.figures {
                div { dt { "Due now" } dd #queue-due { (stats.due) } }
                div { dt { "Being sent (leased)" } dd #queue-leased { (stats.leased) } }
                div { dt { "Waiting to retry" } dd #queue-retrying { (stats.retrying) } }
                div { dt { "Disabled callbacks" } dd #queue-disabled { (stats.disabled_callbacks) } }
            }
        }
    }
}

/// The slices from `from` on, with the empty ones filled in.
fn slices(from: EpochMillis, buckets: &[AttemptBucket]) -> Vec<AttemptBucket> {
    (0..SLICES)
        .map(|i| {
            let start = from + i * SLICE;
            buckets
                .iter()
                .find(|b| b.start == start)
                .copied()
                .unwrap_or(AttemptBucket {
                    start,
                    ..AttemptBucket::default()
                })
        })
        .collect()
}

fn outcomes(from: EpochMillis, buckets: &[AttemptBucket], zone: chrono_tz::Tz) -> Markup {
    let slices = slices(from, buckets);
    let succeeded: u64 = slices.iter().map(|s| s.succeeded).sum();
    let failed: u64 = slices.iter().map(|s| s.failed).sum();
    html! {
        section aria-labelledby="outcomes-title" {
            h2 #outcomes-title { "Delivery attempts in the last hour" }
            (chart(&slices, zone))
            p { "From " (layout::at(from, zone)) " to now, in five-minute bars." }
            table.totals {
                caption { "Totals" }
                thead { tr { th scope="col" { "Outcome" } th scope="col" { "Attempts" } } }
                tbody {
                    tr { th scope="row" { span.key.ok {} "Delivered" } td #attempts-succeeded { (succeeded) } }
                    tr { th scope="row" { span.key.bad {} "Failed" } td #attempts-failed { (failed) } }
                }
            }
        }
    }
}

/// Geometry of the chart, in SVG units.
const WIDTH: u32 = 480;
const HEIGHT: u32 = 120;
const BAR: u32 = WIDTH / SLICES as u32;

/// One stacked bar per slice: delivered below, failed above, scaled to the busiest slice.
fn chart(slices: &[AttemptBucket], zone: chrono_tz::Tz) -> Markup {
    let busiest = slices
        .iter()
        .map(|s| s.succeeded + s.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = |count: u64| -> u32 {
        u32::try_from(count * u64::from(HEIGHT) / busiest).unwrap_or(HEIGHT)
    };
    html! {
        svg.chart viewBox={ "0 0 " (WIDTH) " " (HEIGHT + 16) } role="img"
            aria-labelledby="chart-title" {
            title #chart-title {
                "Delivery attempts per five minutes over the last hour, delivered and failed"
            }
            @for (i, slice) in slices.iter().enumerate() {
                @let x = u32::try_from(i).unwrap_or(0) * BAR + 2;
                @let ok = scale(slice.succeeded);
                @let bad = scale(slice.failed);
                g {
                    title {
                        (label_time(slice.start, zone)) ": " (slice.succeeded) " delivered, "
                        (slice.failed) " failed"
                    }
                    rect.ok x=(x) y=(HEIGHT - ok) width=(BAR - 4) height=(ok) {}
                    rect.bad x=(x) y=(HEIGHT - ok - bad) width=(BAR - 4) height=(bad) {}
                }
            }
            line.axis x1="0" y1=(HEIGHT) x2=(WIDTH) y2=(HEIGHT) {}
            text x="0" y=(HEIGHT + 14) { "−60 min" }
            text x=(WIDTH) y=(HEIGHT + 14) text-anchor="end" { "now" }
        }
    }
}

fn label_time(at: EpochMillis, zone: chrono_tz::Tz) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .map(|utc| utc.with_timezone(&zone).format("%H:%M").to_string())
        .unwrap_or_default()
}

fn disabled_list(disabled: &[RegisteredCallback], zone: chrono_tz::Tz) -> Markup {
    html! {
        section aria-labelledby="disabled-title" {
            h2 #disabled-title { "Disabled callbacks" }
            @if disabled.is_empty() {
                p { "None: every callback is enabled." }
            } @else {
                div.scroll {
                    table.cards #disabled {
                        thead { tr {
                            th scope="col" { "Callback" }
                            th scope="col" { "Project" }
                            th scope="col" { "Level" }
                            th scope="col" { "Event" }
                            th scope="col" { "Reason" }
                            th scope="col" { "Changed" }
                        } }
                        tbody {
                            @for registered in disabled {
                                @let c = &registered.callback;
                                tr {
                                    td data-label="Callback" { (callback_link(c)) }
                                    td data-label="Project" { (c.project_id) }
                                    td data-label="Level" { (level(registered)) }
                                    td data-label="Event" { (c.event) }
                                    td data-label="Reason" { (c.disabled_reason.as_deref().unwrap_or("—")) }
                                    td data-label="Changed" { (layout::at(c.updated_at, zone)) }
                                }
                            }
                        }
                    }
                }
                @if disabled.len() >= DISABLED_SHOWN as usize {
                    p { "The " (DISABLED_SHOWN) " changed last; search the projects for the rest." }
                }
            }
        }
    }
}

fn bridge_state(bridge: Option<&[QueueState]>) -> Markup {
    html! {
        section aria-labelledby="bridge-title" {
            h2 #bridge-title { "bk-ci bus bridge" }
            @match bridge {
                None => p #bridge-off { "Not configured (BKCI_AMQP_URL is not set)." },
                Some(queues) => div.scroll {
                    table.cards #bridge {
                        thead { tr {
                            th scope="col" { "Queue" }
                            th scope="col" { "bk-ci exchange" }
                            th scope="col" { "Consumed" }
                            th scope="col" { "Waiting" }
                            th scope="col" { "Last error" }
                        } }
                        tbody {
                            @for q in queues {
                                tr {
                                    td data-label="Queue" { (q.queue) }
                                    td data-label="bk-ci exchange" { (q.exchange.unwrap_or("— (parked messages)")) }
                                    td data-label="Consumed" { @if q.consuming { "yes" } @else { "no" } }
                                    td data-label="Waiting" { @match q.depth { Some(depth) => (depth), None => "—" } }
                                    td data-label="Last error" { (q.last_error.as_deref().unwrap_or("—")) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_slices_are_filled_in_order() {
        let from = 1_000_000 * SLICE;
        let busy = AttemptBucket {
            start: from + 3 * SLICE,
            succeeded: 4,
            failed: 1,
        };
        let all = slices(from, &[busy]);
        assert_eq!(all.len(), SLICES as usize);
        assert_eq!(all[3], busy);
        assert_eq!(all[0].start, from);
        assert_eq!(all[0].succeeded + all[0].failed, 0);
        assert_eq!(all[11].start, from + 11 * SLICE);
    }

    #[test]
    fn the_chart_scales_to_the_busiest_slice() {
        let from = 0;
        let mut buckets = slices(from, &[]);
        buckets[0].succeeded = 30;
        buckets[0].failed = 10;
        buckets[1].failed = 20;
        let svg = chart(&buckets, chrono_tz::UTC).into_string();
        // The busiest slice (40) fills the height: 30 delivered (90 units), 10 failed (30).
        assert!(svg.contains(r#"y="30" width="36" height="90""#), "{svg}");
        assert!(svg.contains(r#"y="0" width="36" height="30""#), "{svg}");
        assert!(svg.contains("00:00: 30 delivered, 10 failed"), "{svg}");
    }
}
