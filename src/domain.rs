//! Domain types, parsed once at the edge so the rest of the code never sees raw strings.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::secrets::Secret;

/// A closed set of names that travel as strings (query parameters, JSON, database columns).
/// Parsing is case-sensitive, and a bad value is rejected with the list of allowed ones.
macro_rules! string_enum {
    ($(#[$meta:meta])* pub enum $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        value: s.to_owned(),
                        allowed: &[$($text),+],
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_str(FromStrVisitor::<$name>(std::marker::PhantomData))
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

/// Deserializes a `FromStr` type from a string without copying it first.
struct FromStrVisitor<T>(std::marker::PhantomData<T>);

impl<T> serde::de::Visitor<'_> for FromStrVisitor<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<T, E> {
        value.parse().map_err(E::custom)
    }
}

/// A string that is not one of the allowed names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value `{value}`, expected one of: {}", allowed.join(", "))]
pub struct UnknownValue {
    pub value: String,
    pub allowed: &'static [&'static str],
}

string_enum! {
    /// The bk-ci callback event names (`CallBackEvent`).
    pub enum CallbackEvent {
        DeletePipeline => "DELETE_PIPELINE",
        CreatePipeline => "CREATE_PIPELINE",
        UpdatePipeline => "UPDATE_PIPELINE",
        StreamEnabled => "STREAM_ENABLED",
        RestorePipeline => "RESTORE_PIPELINE",
        BuildStart => "BUILD_START",
        BuildEnd => "BUILD_END",
        BuildStageStart => "BUILD_STAGE_START",
        BuildStageEnd => "BUILD_STAGE_END",
        BuildJobStart => "BUILD_JOB_START",
        BuildJobEnd => "BUILD_JOB_END",
        BuildTaskStart => "BUILD_TASK_START",
        BuildTaskEnd => "BUILD_TASK_END",
        BuildTaskPause => "BUILD_TASK_PAUSE",
        ProjectCreate => "PROJECT_CREATE",
        ProjectUpdate => "PROJECT_UPDATE",
        ProjectEnable => "PROJECT_ENABLE",
        ProjectDisable => "PROJECT_DISABLE",
    }
}

string_enum! {
    /// The network region of a callback (`CallBackNetWorkRegionType`). Stored and shown, not routed on.
    pub enum Region {
        Devnet => "DEVNET",
        Oss => "OSS",
        Idc => "IDC",
    }
}

string_enum! {
    /// The gateway flavour in the first path segment.
    pub enum ApigwType {
        User => "apigw-user",
        App => "apigw-app",
        Default => "apigw",
    }
}

string_enum! {
    /// A user's role in a project under the local authority.
    pub enum MemberRole {
        Admin => "admin",
        Member => "member",
    }
}

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidId {
    #[error("must not be blank")]
    Blank,
    #[error("must be at most {max} characters")]
    TooLong { max: usize },
    #[error("may only contain {allowed}")]
    BadCharacter { allowed: &'static str },
    #[error("`{0}` is reserved for global callbacks (use the op API)")]
    Reserved(&'static str),
}

/// A project's English name: 1–64 of `A-Z a-z 0-9 _ - .`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProjectId(Arc<str>);

impl ProjectId {
    pub const MAX_LEN: usize = 64;

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The scope global callbacks are stored under. It never parses from input, so no member,
    /// v4 route or event can name it.
    pub fn global() -> Self {
        Self(ALL_PROJECTS.into())
    }

    /// A project id read back from the database, where the global scope is legitimate.
    pub fn from_stored(s: &str) -> Result<Self, InvalidId> {
        if s == ALL_PROJECTS {
            Ok(Self::global())
        } else {
            s.parse()
        }
    }
}

impl FromStr for ProjectId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(InvalidId::Blank);
        }
        if s.len() > Self::MAX_LEN {
            return Err(InvalidId::TooLong { max: Self::MAX_LEN });
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(InvalidId::BadCharacter {
                allowed: "letters, digits, '_', '-' and '.'",
            });
        }
        if s == ALL_PROJECTS {
            return Err(InvalidId::Reserved(ALL_PROJECTS));
        }
        Ok(Self(s.into()))
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The acting user: 1–64 characters, no control characters, no surrounding white space (the
/// `X-DEVOPS-UID` header is trimmed before it is parsed).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserId(Arc<str>);

impl UserId {
    pub const MAX_LEN: usize = 64;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for UserId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err(InvalidId::Blank);
        }
        if s.chars().count() > Self::MAX_LEN {
            return Err(InvalidId::TooLong { max: Self::MAX_LEN });
        }
        if s.chars().any(char::is_control) || s.trim() != s {
            return Err(InvalidId::BadCharacter {
                allowed: "printable characters, not starting or ending with white space",
            });
        }
        Ok(Self(s.into()))
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a callback URL was refused before any address was looked at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidUrl {
    #[error("the callback url is illegal: {0}")]
    Malformed(String),
    #[error("there is a high-risk port number [{0}] in the callback url")]
    BlockedPort(u16),
}

/// A callback URL that parsed as http(s) with a host, fits in 1024 bytes and avoids blocked ports.
/// The text is kept exactly as given (bk-ci compatible), the parsed form is used to connect.
#[derive(Debug, Clone)]
pub struct CallbackUrl {
    raw: String,
    parsed: url::Url,
}

impl CallbackUrl {
    pub const MAX_LEN: usize = 1024;

    pub fn parse(raw: impl Into<String>, blocked_ports: &[u16]) -> Result<Self, InvalidUrl> {
        let raw = raw.into();
        if raw.len() > Self::MAX_LEN {
            return Err(InvalidUrl::Malformed(format!(
                "longer than {} bytes",
                Self::MAX_LEN
            )));
        }
        // The URL parser would drop tabs and newlines and escape the rest, but the text is
        // stored and shown as given, so control characters are refused outright.
        if let Some(bad) = raw.chars().find(|c| c.is_control()) {
            return Err(InvalidUrl::Malformed(format!(
                "contains the control character {}",
                bad.escape_unicode()
            )));
        }
        let parsed = url::Url::parse(&raw).map_err(|e| InvalidUrl::Malformed(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(InvalidUrl::Malformed(format!(
                "scheme `{}` is not http or https",
                parsed.scheme()
            )));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(InvalidUrl::Malformed("no host".to_owned()));
        }
        let port = parsed.port_or_known_default().unwrap_or_default();
        if blocked_ports.contains(&port) {
            return Err(InvalidUrl::BlockedPort(port));
        }
        Ok(Self { raw, parsed })
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn into_string(self) -> String {
        self.raw
    }

    pub fn host(&self) -> url::Host<&str> {
        self.parsed.host().expect("checked in parse")
    }

    pub fn port(&self) -> u16 {
        self.parsed.port_or_known_default().unwrap_or_default()
    }
}

/// Identifiers serialize as their text.
macro_rules! serialize_as_str {
    ($($name:ty),+) => {$(
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    )+};
}

serialize_as_str!(ProjectId, UserId);

/// Identifiers are strings in the OpenAPI document, with their rules.
macro_rules! string_schema {
    ($name:ty, $max:expr, $pattern:expr) => {
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                let builder = utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .min_length(Some(1))
                    .max_length(Some($max));
                let pattern: Option<&str> = $pattern;
                builder.pattern(pattern).into()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

string_schema!(
    ProjectId,
    ProjectId::MAX_LEN,
    Some("^[A-Za-z0-9_.-]{1,64}$")
);
string_schema!(
    UserId,
    UserId::MAX_LEN,
    Some(r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$")
);
string_schema!(EventId, EventId::MAX_LEN, None);

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

/// A registered callback, as stored.
#[derive(Debug, Clone)]
pub struct Callback {
    pub id: CallbackId,
    pub project_id: ProjectId,
    pub url: String,
    pub event: CallbackEvent,
    pub region: Region,
    pub enabled: bool,
    pub has_secret_token: bool,
    pub creator: UserId,
    pub updater: UserId,
    pub created_at: EpochMillis,
    pub updated_at: EpochMillis,
    pub failure_time: Option<EpochMillis>,
    pub disabled_reason: Option<String>,
}

/// What a create (upsert) writes.
#[derive(Debug, Clone)]
pub struct NewCallback {
    pub project_id: ProjectId,
    pub url: String,
    pub event: CallbackEvent,
    pub region: Region,
    pub secret_token: Option<Secret>,
    pub user: UserId,
}

/// A member of a project under the local authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub project_id: ProjectId,
    pub user_id: UserId,
    pub role: MemberRole,
    pub created_at: EpochMillis,
    pub updated_at: EpochMillis,
}

/// The publisher-chosen (or generated) id of an event: 1–128 printable characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    pub const MAX_LEN: usize = 128;

    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for EventId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err(InvalidId::Blank);
        }
        if s.chars().count() > Self::MAX_LEN {
            return Err(InvalidId::TooLong { max: Self::MAX_LEN });
        }
        if s.chars().any(char::is_control) {
            return Err(InvalidId::BadCharacter {
                allowed: "printable characters",
            });
        }
        Ok(Self(s.to_owned()))
    }
}

/// Project id under which global (all-project) callbacks are stored, as in bk-ci.
pub const ALL_PROJECTS: &str = "DEVOPS_ALL_PROJECT";

impl CallbackEvent {
    /// PROJECT_* events also go to the global callbacks.
    pub fn is_project_event(self) -> bool {
        self.as_str().starts_with("PROJECT_")
    }
}

/// An event accepted for delivery; `body` is the exact JSON every matching callback receives.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub project_id: ProjectId,
    pub event_id: EventId,
    pub event: CallbackEvent,
    pub body: String,
}

/// What the intake answers for one event (the original answer when the event id was seen before).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    pub event_id: EventId,
    pub deliveries: u32,
}

string_enum! {
    /// Where a delivery stands.
    pub enum DeliveryStatus {
        Pending => "PENDING",
        Success => "SUCCESS",
        Failed => "FAILED",
        Cancelled => "CANCELLED",
    }
}

string_enum! {
    /// The outcome of one attempt, as history shows it.
    pub enum AttemptStatus {
        Success => "SUCCESS",
        Failed => "FAILED",
    }
}

/// A leased delivery with what is needed to send it. `callback` is `None` when the callback
/// was deleted or disabled after the event was accepted.
#[derive(Debug, Clone)]
pub struct ClaimedDelivery {
    pub id: i64,
    pub claim_token: String,
    /// The callback URL's host, for the per-host cap.
    pub host: String,
    /// Attempts already made before this one.
    pub attempts: u32,
    pub callback_id: CallbackId,
    pub event: CallbackEvent,
    pub body: String,
    pub target: Option<DeliveryTarget>,
}

#[derive(Debug, Clone)]
pub struct DeliveryTarget {
    pub project_id: ProjectId,
    pub url: String,
    pub secret_token: Option<Secret>,
}

/// One request header as history keeps it (secrets masked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HeaderPair {
    pub name: String,
    pub value: String,
}

/// One attempt, as recorded in history.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub delivery_id: Option<i64>,
    pub callback_id: CallbackId,
    pub project_id: ProjectId,
    pub url: String,
    pub event: CallbackEvent,
    pub status: AttemptStatus,
    pub attempt: u32,
    pub error_msg: Option<String>,
    pub request_headers: Vec<HeaderPair>,
    pub request_body: String,
    pub response_code: Option<u16>,
    pub response_body: Option<String>,
    pub start_time: EpochMillis,
    pub end_time: EpochMillis,
}

/// What a worker writes back: the delivery's new state (when it held the delivery's lease), the
/// attempt if one was made, and what the attempt means for its callback.
#[derive(Debug, Clone)]
pub struct DeliveryOutcome {
    pub delivery_id: i64,
    /// The lease the new state is written under; `None` for a manual re-send, which leaves the
    /// delivery's own state alone.
    pub claim_token: Option<String>,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: EpochMillis,
    pub last_error: Option<String>,
    pub attempt: Option<Attempt>,
    pub effect: Option<CallbackEffect>,
}

impl DeliveryOutcome {
    /// The same outcome with what the receiver sent (its answer's body, and error texts that may
    /// quote it) replaced by `note`, for when the database refuses the outcome as it is.
    pub fn without_receiver_text(&self, note: &str) -> Self {
        let mut stripped = self.clone();
        stripped.last_error = stripped.last_error.map(|_| note.to_owned());
        if let Some(attempt) = &mut stripped.attempt {
            attempt.response_body = None;
            attempt.error_msg = Some(note.to_owned());
        }
        stripped
    }
}

/// How an attempt changes its callback's failure state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackEffect {
    /// Any success clears the failure state.
    Succeeded,
    /// A failure starts the failure clock (if not running) at `since`; a clock older than
    /// `CALLBACK_DISABLE_AFTER` disables the callback.
    Failed { since: EpochMillis },
    /// The receiver answered 410 Gone: disable at once.
    Gone,
}

/// Which due deliveries a claim takes: first attempts and retries are claimed separately, so a
/// backlog of retries cannot make fresh events wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    First,
    Retry,
}

/// A stored attempt with its id and creation time.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub id: i64,
    pub created_at: EpochMillis,
    pub attempt: Attempt,
}

/// Filters of the history API; the window is inclusive, in epoch ms.
#[derive(Debug, Clone)]
pub struct HistoryFilter {
    pub url: Option<String>,
    pub event: Option<CallbackEvent>,
    pub from: EpochMillis,
    pub to: EpochMillis,
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

/// One page of results, in bk-ci's `Page` shape.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub count: u64,
    pub page: u32,
    pub page_size: u32,
    pub total_pages: u64,
    pub records: Vec<T>,
}

impl<T> Page<T> {
    pub fn new(request: PageRequest, count: u64, records: Vec<T>) -> Self {
        Self {
            count,
            page: request.page,
            page_size: request.page_size,
            total_pages: count.div_ceil(u64::from(request.page_size)),
            records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_reject_other_case() {
        for event in CallbackEvent::ALL {
            assert_eq!(event.as_str().parse::<CallbackEvent>(), Ok(*event));
        }
        let err = "build_end".parse::<CallbackEvent>().unwrap_err();
        assert!(err.to_string().contains("BUILD_END"), "{err}");
    }

    #[test]
    fn project_ids_are_validated() {
        assert!("demo-project_1.x".parse::<ProjectId>().is_ok());
        assert_eq!("".parse::<ProjectId>(), Err(InvalidId::Blank));
        assert!("a b".parse::<ProjectId>().is_err());
        assert!("x".repeat(65).parse::<ProjectId>().is_err());
    }

    #[test]
    fn user_ids_are_bounded_and_printable() {
        assert_eq!("alice".parse::<UserId>().unwrap().as_str(), "alice");
        assert!(" alice".parse::<UserId>().is_err());
        assert_eq!("   ".parse::<UserId>(), Err(InvalidId::Blank));
        assert!("é".repeat(64).parse::<UserId>().is_ok());
        assert!("é".repeat(65).parse::<UserId>().is_err());
        assert!("a\u{7}b".parse::<UserId>().is_err());
    }

    #[test]
    fn urls_are_checked_for_shape_and_port() {
        let blocked = [22, 6379];
        assert!(CallbackUrl::parse("https://ci.example.com/hook?a=1", &blocked).is_ok());
        for bad in [
            "ftp://x.example/",
            "not a url",
            "http://",
            "mailto:a@b.c",
            "file:///etc/passwd",
        ] {
            assert!(
                matches!(
                    CallbackUrl::parse(bad, &blocked),
                    Err(InvalidUrl::Malformed(_))
                ),
                "{bad}"
            );
        }
        let long = format!("https://x.example/{}", "a".repeat(1024));
        assert!(matches!(
            CallbackUrl::parse(&long, &blocked),
            Err(InvalidUrl::Malformed(_))
        ));
        assert_eq!(
            CallbackUrl::parse("http://x.example:6379/", &blocked).unwrap_err(),
            InvalidUrl::BlockedPort(6379)
        );
        let kept = CallbackUrl::parse("HTTP://X.example/Path", &blocked).unwrap();
        assert_eq!(kept.as_str(), "HTTP://X.example/Path");
    }

    #[test]
    fn page_maths() {
        let request = PageRequest {
            page: 3,
            page_size: 20,
        };
        assert_eq!(request.offset(), 40);
        let page = Page::new(request, 41, Vec::<()>::new());
        assert_eq!(page.total_pages, 3);
        assert_eq!(Page::new(request, 0, Vec::<()>::new()).total_pages, 0);
        assert_eq!(Page::new(request, 40, Vec::<()>::new()).total_pages, 2);
    }
}
