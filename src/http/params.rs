//! Query types shared by several routes: the registration of a callback and `?id=`. Each one
//! refuses a bad value while it deserializes (see `Refusal`), so a route's `Query` answers 400
//! before its permission check.

use std::marker::PhantomData;

use serde::{Deserialize, Deserializer};
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Required, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::domain::{CallbackEvent, Region, TimeParam};
use crate::http::extract::{Refusal, checked};
use crate::secrets::Secret;

/// The query of a registration. `E` is what `event` holds: one `CallbackEvent` (create), an
/// [`EventList`] (batch create) or a [`ProjectEvent`] (global create).
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct RegisterParams<E: ToSchema> {
    pub event: E,
    pub region: Region,
    /// An http(s) URL whose host resolves to public addresses only (see the SSRF rule).
    #[param(max_length = 1024)]
    pub url: String,
    /// Sent as `X-DEVOPS-WEBHOOK-TOKEN` and used to sign deliveries; never shown again.
    #[serde(default, deserialize_with = "secret_token")]
    #[param(value_type = Option<String>, max_length = 1024)]
    pub secret_token: Option<Secret>,
}

/// A time parameter `name` (see `TimeParam` for its forms), for the `deserialize_with` of each
/// route that takes times, so every one reads and refuses them alike.
pub fn time_param(name: &str, text: &str) -> Result<TimeParam, Refusal> {
    text.parse()
        .map_err(|e| Refusal(format!("query parameter {name} {e}")))
}

/// `secretToken`: see `Secret::callback_token` for the rule.
fn secret_token<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Secret>, D::Error> {
    let token = checked(deserializer, |token| {
        Secret::callback_token(token)
            .map_err(|e| Refusal(format!("query parameter secretToken {e}")))
    })?;
    Ok(token.flatten())
}

/// `event` of the batch create: `"BUILD_START, BUILD_END,BUILD_START"` → both events once, in
/// first-seen order; an unknown or empty name refuses the whole list.
#[derive(Debug, Deserialize)]
#[serde(try_from = "String")]
pub struct EventList(pub Vec<CallbackEvent>);

impl TryFrom<String> for EventList {
    type Error = Refusal;

    fn try_from(raw: String) -> Result<Self, Refusal> {
        let mut events = Vec::new();
        for name in raw.split(',').map(|name| name.trim_matches([' ', '\t'])) {
            if name.is_empty() {
                return Err(Refusal(
                    "query parameter event must be event names separated by commas, none empty"
                        .to_owned(),
                ));
            }
            let event: CallbackEvent = name
                .parse()
                .map_err(|e| Refusal(format!("invalid query parameter: event: {e}")))?;
            if !events.contains(&event) {
                events.push(event);
            }
        }
        Ok(Self(events))
    }
}

/// Event names separated by commas, with spaces and tabs around them (built from the enum, so
/// it cannot drift).
impl PartialSchema for EventList {
    fn schema() -> RefOr<Schema> {
        let names: Vec<&str> = CallbackEvent::ALL.iter().map(|e| e.as_str()).collect();
        let one = format!("[ \t]*({})[ \t]*", names.join("|"));
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "Comma-separated event names, e.g. `BUILD_START,BUILD_END`.",
            ))
            .pattern(Some(format!("^{one}(,{one})*$")))
            .into()
    }
}

impl ToSchema for EventList {}

/// `event` of a global callback: the PROJECT_* events only.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "CallbackEvent")]
pub struct ProjectEvent(pub CallbackEvent);

impl TryFrom<CallbackEvent> for ProjectEvent {
    type Error = Refusal;

    fn try_from(event: CallbackEvent) -> Result<Self, Refusal> {
        if !event.is_project_event() {
            return Err(Refusal(format!(
                "invalid query parameter: event: global callbacks receive only PROJECT_CREATE, \
                 PROJECT_UPDATE, PROJECT_ENABLE and PROJECT_DISABLE, not {event}"
            )));
        }
        Ok(Self(event))
    }
}

impl From<ProjectEvent> for CallbackEvent {
    fn from(ProjectEvent(event): ProjectEvent) -> Self {
        event
    }
}

impl PartialSchema for ProjectEvent {
    fn schema() -> RefOr<Schema> {
        let names = CallbackEvent::ALL
            .iter()
            .filter(|e| e.is_project_event())
            .map(|e| e.as_str());
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(names))
            .into()
    }
}

impl ToSchema for ProjectEvent {}

/// The records a route's `?id=` names, and how its documentation describes that id.
pub trait Identified {
    const ID: &'static str;
}

/// `?id=`: the id of one `R` of the project.
#[derive(Deserialize)]
#[serde(bound = "")]
pub struct IdParams<R> {
    pub id: i64,
    #[serde(skip)]
    of: PhantomData<R>,
}

impl<R: Identified> IntoParams for IdParams<R> {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("id")
                .parameter_in(ParameterIn::Query)
                .required(Required::True)
                .description(Some(R::ID))
                .schema(Some(i64::schema()))
                .build(),
        ]
    }
}
