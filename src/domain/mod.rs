//! Domain types, parsed once at the edge so the rest of the code never sees raw strings. They
//! depend on nothing else in the crate but `secrets::Secret`.

mod callback;
mod console;
mod delivery;
mod headers;
mod ids;
mod names;
mod recovery;
mod time;
mod url;

pub use callback::{
    Callback, GlobalCallback, ImportOutcome, ImportedCallback, ImportedPipelineCallback, Member,
    NewCallback, NewPipelineCallback, PipelineCallback,
};
pub use console::{AttemptBucket, CallbackSearch, ProjectSummary, RegisteredCallback};
pub use delivery::{
    Attempt, CANCELLED_DELETED, CANCELLED_DISABLED, CallbackEffect, DeliveryOutcome,
    DeliveryProgress, DeliveryRecord, DeliveryTarget, EventRoute, HeaderPair, HistoryEntry,
    HistoryFilter, NewEvent, Published, StoredProgress,
};
pub use headers::{CustomHeaders, InvalidHeader, RESERVED_HEADERS, StoredHeadersError};
pub use ids::{ALL_PROJECTS, CallbackName, EventId, InvalidId, PipelineId, ProjectId, UserId};
pub use names::{
    ApigwType, AttemptStatus, CallbackEvent, DeliveryState, DeliveryStatus, MemberRole,
    RecoverState, Region, UnknownValue,
};
pub use recovery::{NewRecovery, RecoverJob, RecoverJobId, RecoveryBatch, RecoveryStart};
pub use time::{InvalidTime, TIME_FORMS, TIME_PATTERN, TimeParam, local_date_time, local_millis};
pub use url::{CallbackUrl, InvalidUrl};

/// The numeric id of a callback registration.
pub type CallbackId = i64;

/// Milliseconds since the Unix epoch, the time unit of the API and of both databases.
pub type EpochMillis = i64;

/// A duration in the unit of `EpochMillis` (saturating).
pub fn millis(duration: std::time::Duration) -> EpochMillis {
    EpochMillis::try_from(duration.as_millis()).unwrap_or(EpochMillis::MAX)
}

pub fn now_millis() -> EpochMillis {
    chrono::Utc::now().timestamp_millis()
}

/// A validated page request: `page` ≥ 1, `page_size` in 1..=MAX_PAGE_SIZE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u32,
    pub page_size: u32,
}

impl PageRequest {
    pub const DEFAULT_PAGE_SIZE: u32 = 20;
    pub const MAX_PAGE_SIZE: u32 = 100;

    pub fn offset(self) -> i64 {
        i64::from(self.page - 1) * i64::from(self.page_size)
    }

    pub fn limit(self) -> i64 {
        i64::from(self.page_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_offsets() {
        let request = PageRequest {
            page: 3,
            page_size: 20,
        };
        assert_eq!(request.offset(), 40);
        assert_eq!(request.limit(), 20);
    }
}
