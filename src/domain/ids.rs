//! Identifiers: projects, users and events.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
        code_name(s, Self::MAX_LEN)?;
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

/// The rule project and pipeline ids share: 1 to `max` of `A-Z a-z 0-9 _ - .`.
fn code_name(s: &str, max: usize) -> Result<(), InvalidId> {
    if s.is_empty() {
        return Err(InvalidId::Blank);
    }
    if s.len() > max {
        return Err(InvalidId::TooLong { max });
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(InvalidId::BadCharacter {
            allowed: "letters, digits, '_', '-' and '.'",
        });
    }
    Ok(())
}

/// A pipeline's id (bk-ci's are `p-` and 32 hex digits; `T_PIPELINE_CALLBACK.PIPELINE_ID` is
/// `varchar(64)`): 1–64 of `A-Z a-z 0-9 _ - .`, like a project id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PipelineId(Arc<str>);

impl PipelineId {
    pub const MAX_LEN: usize = 64;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PipelineId {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        code_name(s, Self::MAX_LEN)?;
        Ok(Self(s.into()))
    }
}

/// The name that keys a pipeline-level callback (bk-ci's `callbackName`): up to 255
/// characters (`T_PIPELINE_CALLBACK.NAME` is `varchar(255)`), no control characters. As in
/// bk-ci, any other text is a name, the empty string included.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallbackName(Arc<str>);

impl CallbackName {
    pub const MAX_LEN: usize = 255;

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CallbackName {
    type Err = InvalidId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.chars().count() > Self::MAX_LEN {
            return Err(InvalidId::TooLong { max: Self::MAX_LEN });
        }
        if s.chars().any(char::is_control) {
            return Err(InvalidId::BadCharacter {
                allowed: "printable characters",
            });
        }
        Ok(Self(s.into()))
    }
}

impl<'de> Deserialize<'de> for CallbackName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(super::names::FromStrVisitor(std::marker::PhantomData))
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
        const ALLOWED: &str = "printable characters, not starting or ending with white space";
        printable(s, Self::MAX_LEN, ALLOWED)?;
        if s.trim() != s {
            return Err(InvalidId::BadCharacter { allowed: ALLOWED });
        }
        Ok(Self(s.into()))
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
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
        printable(s, Self::MAX_LEN, "printable characters")?;
        Ok(Self(s.to_owned()))
    }
}

/// The rule user and event ids share: not blank, at most `max` characters, none of them a
/// control character (`allowed` describes what is).
fn printable(s: &str, max: usize, allowed: &'static str) -> Result<(), InvalidId> {
    if s.trim().is_empty() {
        return Err(InvalidId::Blank);
    }
    if s.chars().count() > max {
        return Err(InvalidId::TooLong { max });
    }
    if s.chars().any(char::is_control) {
        return Err(InvalidId::BadCharacter { allowed });
    }
    Ok(())
}

/// Project id under which global (all-project) callbacks are stored, as in bk-ci.
pub const ALL_PROJECTS: &str = "DEVOPS_ALL_PROJECT";

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

serialize_as_str!(ProjectId, UserId, PipelineId, CallbackName);

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
string_schema!(
    PipelineId,
    PipelineId::MAX_LEN,
    Some("^[A-Za-z0-9_.-]{1,64}$")
);

impl utoipa::PartialSchema for CallbackName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .max_length(Some(CallbackName::MAX_LEN))
            .pattern(Some(r"^[^\x00-\x1f\x7f-\x9f]*$"))
            .into()
    }
}

impl utoipa::ToSchema for CallbackName {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_are_validated() {
        assert!("demo-project_1.x".parse::<ProjectId>().is_ok());
        assert_eq!("".parse::<ProjectId>(), Err(InvalidId::Blank));
        assert!("a b".parse::<ProjectId>().is_err());
        assert!("x".repeat(65).parse::<ProjectId>().is_err());
    }

    #[test]
    fn pipeline_ids_and_callback_names_are_validated() {
        assert!(
            "p-7e1c2b3a4d5e4f60a1b2c3d4e5f60718"
                .parse::<PipelineId>()
                .is_ok()
        );
        assert_eq!("".parse::<PipelineId>(), Err(InvalidId::Blank));
        assert!("p 1".parse::<PipelineId>().is_err());
        assert!("p".repeat(65).parse::<PipelineId>().is_err());
        assert_eq!("".parse::<CallbackName>().unwrap().as_str(), "");
        assert!("notify end ✓".parse::<CallbackName>().is_ok());
        assert!("é".repeat(255).parse::<CallbackName>().is_ok());
        assert!("é".repeat(256).parse::<CallbackName>().is_err());
        assert!("a\nb".parse::<CallbackName>().is_err());
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
}
