//! Getting events to callback URLs. For now: the SSRF guard that registration shares with delivery.

pub mod ssrf;
