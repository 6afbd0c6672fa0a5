//! Closed sets of names that travel as strings (query parameters, JSON, database columns).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

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
pub(super) struct FromStrVisitor<T>(pub(super) std::marker::PhantomData<T>);

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

impl CallbackEvent {
    /// PROJECT_* events also go to the global callbacks.
    pub fn is_project_event(self) -> bool {
        self.as_str().starts_with("PROJECT_")
    }

    /// BUILD_* events also go to the pipeline-level callbacks of their build's pipeline.
    pub fn is_build_event(self) -> bool {
        self.as_str().starts_with("BUILD_")
    }
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
    /// Where a delivery stands, as the API shows it: a `PENDING` delivery is `RETRYING` once an
    /// attempt of its current run failed (a recovery starts a new run).
    pub enum DeliveryState {
        Pending => "PENDING",
        Retrying => "RETRYING",
        Success => "SUCCESS",
        Failed => "FAILED",
        Cancelled => "CANCELLED",
    }
}

string_enum! {
    /// Where a recovery job stands.
    pub enum RecoverState {
        Running => "RUNNING",
        Done => "DONE",
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
}
