//! Getting events to callback URLs.
//!
//! - `intake`: an accepted event and its deliveries are committed in one transaction (the
//!   deliveries table is the outbox), then the workers are woken.
//! - `worker`: leases due deliveries, sends them outside any transaction, records every attempt.
//! - `outcome`: what an attempt's result means (delivered, gone, failed) and the outcome it
//!   records, for the worker and the manual re-send alike.
//! - `resend`: the manual re-send of one history row.
//! - `recovery`: re-queues the deliveries of bulk recovery jobs, a batch at a time.
//! - `sender`: the HTTP request, its headers and signature, and the connect-time SSRF check.
//! - `retry`: the schedule of later attempts.
//! - `retention`: deletes old history and finished deliveries.
//! - `ssrf`: which addresses callbacks may reach.

pub mod intake;
pub(crate) mod outcome;
pub(crate) mod recovery;
pub(crate) mod resend;
pub(crate) mod retention;
pub(crate) mod retry;
pub(crate) mod sender;
pub mod ssrf;
pub(crate) mod worker;
