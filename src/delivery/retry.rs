//! When a failed delivery is tried again: `DELIVERY_RETRY_SCHEDULE`, each delay jittered ±20 %
//! so a receiver that comes back is not hit by every retry in the same second.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The delays between attempts: the first attempt is immediate, then one retry per entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

pub const DEFAULT_RETRY_SCHEDULE: &str = "5s,30s,2m,10m,30m,1h,3h";

impl RetrySchedule {
    pub fn delays(&self) -> &[Duration] {
        &self.0
    }

    /// The jittered delay before the next attempt, after `attempts_made` attempts; `None` when
    /// the schedule is used up and the delivery has failed for good.
    pub fn delay_after(&self, attempts_made: u32) -> Option<Duration> {
        let index = usize::try_from(attempts_made).ok()?.checked_sub(1)?;
        let base = *self.0.get(index)?;
        Some(base.mul_f64(rand::random_range(0.8..=1.2)))
    }
}

impl Default for RetrySchedule {
    fn default() -> Self {
        DEFAULT_RETRY_SCHEDULE
            .parse()
            .expect("the default schedule parses")
    }
}

impl FromStr for RetrySchedule {
    type Err = String;

    /// `"5s,30s,2m"`: comma-separated numbers with a unit of ms, s, m or h. `"none"`: no retries.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "none" {
            return Ok(Self(Vec::new()));
        }
        s.split(',')
            .map(|item| parse_duration(item.trim()))
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// A duration written like `500ms`, `5s`, `2m` or `12h`, for settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s.trim()).map(Self)
    }
}

impl fmt::Display for HumanDuration {
    /// The largest unit that divides it exactly.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        match millis {
            0 => f.write_str("0s"),
            m if m % 3_600_000 == 0 => write!(f, "{}h", m / 3_600_000),
            m if m % 60_000 == 0 => write!(f, "{}m", m / 60_000),
            m if m % 1_000 == 0 => write!(f, "{}s", m / 1_000),
            m => write!(f, "{m}ms"),
        }
    }
}

/// `"250ms"`, `"5s"`, `"2m"`, `"1h"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 5s, 2m or 1h"))?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("`{text}` has no unit of ms, s, m or h")),
    };
    Ok(Duration::from_millis(number.saturating_mul(millis)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_schedule_parses_to_seven_retries() {
        let schedule = RetrySchedule::default();
        assert_eq!(schedule.delays().len(), 7);
        assert_eq!(schedule.delays()[0], Duration::from_secs(5));
        assert_eq!(schedule.delays()[6], Duration::from_secs(3 * 3600));
    }

    #[test]
    fn bad_schedules_are_refused() {
        for bad in ["", "5", "5x", "s", "5s,,1m", "-1s"] {
            assert!(bad.parse::<RetrySchedule>().is_err(), "{bad}");
        }
        assert_eq!("none".parse::<RetrySchedule>().unwrap().delays().len(), 0);
    }

    #[test]
    fn human_durations_round_trip() {
        for text in ["12h", "90m", "5s", "250ms", "0s"] {
            assert_eq!(text.parse::<HumanDuration>().unwrap().to_string(), text);
        }
        assert_eq!("120m".parse::<HumanDuration>().unwrap().to_string(), "2h");
    }

    #[test]
    fn delays_are_jittered_within_twenty_percent_and_run_out() {
        let schedule: RetrySchedule = "10s,1m".parse().unwrap();
        for _ in 0..200 {
            let first = schedule.delay_after(1).unwrap();
            assert!(
                first >= Duration::from_secs(8) && first <= Duration::from_secs(12),
                "{first:?}"
            );
            let second = schedule.delay_after(2).unwrap();
            assert!(second >= Duration::from_secs(48) && second <= Duration::from_secs(72));
        }
        assert_eq!(schedule.delay_after(3), None);
        assert_eq!(schedule.delay_after(0), None);
    }
}
