//! Times as the API reads and writes them. Every query parameter that names a time (the history
//! window's `startTime`/`endTime`, …) is read by [`TimeParam`]; times are answered as
//! [`EpochMillis`], except bk-ci's `failureTime`, a local date-time in `TIME_ZONE`.

use std::fmt;
use std::str::FromStr;

use chrono::{NaiveDateTime, TimeDelta, TimeZone};

use super::EpochMillis;

/// A time given as a query parameter, in one of these forms:
/// - `2024-05-01 13:45:00` (bk-ci's `yyyy-MM-dd HH:mm:ss`) or ISO-8601 without an offset,
///   `2024-05-01T13:45:00`: a wall-clock time, read in `TIME_ZONE`;
/// - ISO-8601 with an offset, `2024-05-01T13:45:00+08:00` or `2024-05-01T05:45:00Z`;
/// - epoch milliseconds, `1714542300000`.
///
/// Seconds may carry a fraction (`13:45:00.250`). Exactly these shapes are accepted, and
/// [`TIME_PATTERN`] describes exactly them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeParam {
    Instant(EpochMillis),
    Local(NaiveDateTime),
}

/// The shapes [`TimeParam`] accepts, for the OpenAPI document (some of them, like month 13,
/// still fail to parse).
pub const TIME_PATTERN: &str = r"^([0-9]{1,15}|[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})?)$";

/// What a time parameter must look like, for messages (they read "… must be {this}, got …").
pub const TIME_FORMS: &str = "yyyy-MM-dd HH:mm:ss (2024-05-01 13:45:00, in TIME_ZONE), \
     ISO-8601 (2024-05-01T13:45:00+08:00, or without an offset in TIME_ZONE) \
     or epoch milliseconds (1714542300000)";

/// A text that is none of [`TimeParam`]'s forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTime(String);

impl fmt::Display for InvalidTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "must be {TIME_FORMS}, got {:?}", self.0)?;
        // A `+` in a query string reads as a space.
        if self.0.get(19..).is_some_and(|tail| tail.contains(' ')) {
            f.write_str(" (send the + of an offset as %2B)")?;
        }
        Ok(())
    }
}

impl std::error::Error for InvalidTime {}

impl FromStr for TimeParam {
    type Err = InvalidTime;

    fn from_str(text: &str) -> Result<Self, InvalidTime> {
        let invalid = || InvalidTime(text.to_owned());
        if (1..=15).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit()) {
            return text.parse().map(Self::Instant).map_err(|_| invalid());
        }
        let (wall, rest) = text.split_at_checked(19).ok_or_else(invalid)?;
        let (fraction, offset) = split_fraction(rest).ok_or_else(invalid)?;
        let naive = wall_clock(wall)
            .and_then(|naive| naive.checked_add_signed(fraction))
            .ok_or_else(invalid)?;
        match offset {
            "" => Ok(Self::Local(naive)),
            offset => {
                let offset = offset_seconds(offset).ok_or_else(invalid)?;
                let utc = naive.checked_sub_signed(TimeDelta::seconds(offset.into()));
                utc.map(|utc| Self::Instant(utc.and_utc().timestamp_millis()))
                    .ok_or_else(invalid)
            }
        }
    }
}

impl TimeParam {
    /// The instant meant, a wall-clock time read in `zone`.
    pub fn millis(self, zone: chrono_tz::Tz) -> EpochMillis {
        match self {
            Self::Instant(at) => at,
            Self::Local(naive) => local_millis(naive, zone),
        }
    }
}

impl utoipa::PartialSchema for TimeParam {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(TIME_PATTERN))
            .description(Some(format!("A time: {TIME_FORMS}.")))
            .into()
    }
}

impl utoipa::ToSchema for TimeParam {}

/// `2024-05-01 13:45:00` or `2024-05-01T13:45:00`, zero-padded.
fn wall_clock(text: &str) -> Option<NaiveDateTime> {
    let shaped = text.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 => b == b'-',
        10 => b == b' ' || b == b'T',
        13 | 16 => b == b':',
        _ => b.is_ascii_digit(),
    });
    let text = text.replacen('T', " ", 1);
    shaped
        .then(|| NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S").ok())
        .flatten()
}

/// `.250Z` → (250 ms, "Z"): an optional fraction of a second (1–9 digits) and what follows.
fn split_fraction(rest: &str) -> Option<(TimeDelta, &str)> {
    let Some(after_dot) = rest.strip_prefix('.') else {
        return Some((TimeDelta::zero(), rest));
    };
    let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
    if !(1..=9).contains(&digits) {
        return None;
    }
    let (fraction, offset) = after_dot.split_at(digits);
    let nanos: i64 = format!("{fraction:0<9}").parse().ok()?;
    Some((TimeDelta::nanoseconds(nanos), offset))
}

/// `Z`, `+08:00` or `-05:30`, in seconds east of UTC.
fn offset_seconds(text: &str) -> Option<i32> {
    if text == "Z" {
        return Some(0);
    }
    let sign = match text.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (hours, minutes) = text[1..].split_once(':')?;
    let shaped = |part: &str| part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit());
    if !shaped(hours) || !shaped(minutes) {
        return None;
    }
    let (hours, minutes): (i32, i32) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours <= 23 && minutes <= 59).then_some(sign * (hours * 3600 + minutes * 60))
}

/// A wall-clock time in `zone` as an instant. A time a clock change skips is read as the same
/// wall time an hour later; one it repeats, as the earlier of the two.
pub fn local_millis(naive: NaiveDateTime, zone: chrono_tz::Tz) -> EpochMillis {
    zone.from_local_datetime(&naive)
        .earliest()
        .or_else(|| {
            zone.from_local_datetime(&(naive + TimeDelta::hours(1)))
                .earliest()
        })
        .unwrap_or_else(|| zone.from_utc_datetime(&naive))
        .timestamp_millis()
}

/// bk-ci's JSON of a `LocalDateTime` read from a MySQL `datetime`: `2026-08-21T10:00:00`.
pub fn local_date_time(at: EpochMillis, zone: chrono_tz::Tz) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .unwrap_or_default()
        .with_timezone(&zone)
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHANGHAI: chrono_tz::Tz = chrono_tz::Asia::Shanghai;
    /// 2024-05-01T05:45:00Z.
    const AT: EpochMillis = 1_714_542_300_000;

    fn millis(text: &str) -> EpochMillis {
        text.parse::<TimeParam>()
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .millis(SHANGHAI)
    }

    #[test]
    fn every_form_names_the_same_instant() {
        for text in [
            "2024-05-01 13:45:00",
            "2024-05-01T13:45:00",
            "2024-05-01T13:45:00+08:00",
            "2024-05-01 13:45:00+08:00",
            "2024-05-01T05:45:00Z",
            "2024-05-01T00:15:00-05:30",
            "1714542300000",
        ] {
            assert_eq!(millis(text), AT, "{text}");
        }
        assert_eq!(millis("2024-05-01T05:45:00.25Z"), AT + 250);
        assert_eq!(millis("2024-05-01 13:45:00.000000001"), AT);
        assert_eq!(millis("0"), 0);
    }

    #[test]
    fn local_forms_are_read_in_the_zone_and_instants_are_not() {
        let local: TimeParam = "2024-05-01T13:45:00".parse().unwrap();
        assert_eq!(local.millis(chrono_tz::UTC), AT + 8 * 3_600_000);
        let instant: TimeParam = "2024-05-01T13:45:00+08:00".parse().unwrap();
        assert_eq!(instant.millis(chrono_tz::UTC), AT);
    }

    #[test]
    fn anything_else_is_refused_with_every_form_named() {
        for bad in [
            "",
            "2024-05-01",
            "2024-5-01 13:45:00",
            "2024-13-01 13:45:00",
            "2024-05-01t13:45:00",
            "2024-05-01T13:45",
            "2024-05-01T13:45:00.",
            "2024-05-01T13:45:00.1234567890",
            "2024-05-01T13:45:00z",
            "2024-05-01T13:45:00+0800",
            "2024-05-01T13:45:00+24:00",
            "2024-05-01T13:45:00+08:00 ",
            "-1714542300000",
            "1714542300000.5",
            "1234567890123456",
            "yesterday",
            "２０２４-05-01 13:45:00",
            "2024-05-01T13:45:0０",
            "2024-05-01T13:45:00 é",
        ] {
            let err = bad.parse::<TimeParam>().unwrap_err().to_string();
            assert!(err.contains("yyyy-MM-dd HH:mm:ss"), "{bad}: {err}");
            assert!(err.contains("epoch milliseconds"), "{bad}: {err}");
        }
        let plus_as_space = "2024-05-01T13:45:00 08:00".parse::<TimeParam>();
        assert!(plus_as_space.unwrap_err().to_string().contains("%2B"));
    }

    #[test]
    fn a_skipped_local_time_is_read_an_hour_later() {
        // 2024-03-10 02:30 does not exist in New York (clocks went 02:00 → 03:00 EDT).
        let skipped = NaiveDateTime::parse_from_str("2024-03-10 02:30:00", "%Y-%m-%d %H:%M:%S");
        let at = local_millis(skipped.unwrap(), chrono_tz::America::New_York);
        assert_eq!(local_date_time(at, chrono_tz::UTC), "2024-03-10T07:30:00");
    }

    #[test]
    fn failure_time_is_a_local_date_time_to_the_second() {
        let at = 1_787_277_600_999; // 2026-08-21T02:00:00.999Z
        assert_eq!(local_date_time(at, SHANGHAI), "2026-08-21T10:00:00");
        assert_eq!(local_date_time(at, chrono_tz::UTC), "2026-08-21T02:00:00");
    }
}
