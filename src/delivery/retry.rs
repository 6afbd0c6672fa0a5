//! When a failed delivery is tried again: `DELIVERY_RETRY_SCHEDULE`, each delay jittered ±20 %
//! so a receiver that comes back is not hit by every retry in the same second.

use std::time::Duration;

/// The delays between attempts: the first attempt is immediate, then one retry per entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl RetrySchedule {
    /// From the configured delays (`Config::retry_schedule`); empty: no retries.
    pub fn new(delays: Vec<Duration>) -> Self {
        Self(delays)
    }

    /// The jittered delay before the next attempt, after `attempts_made` attempts; `None` when
    /// the schedule is used up and the delivery has failed for good.
    pub fn delay_after(&self, attempts_made: u32) -> Option<Duration> {
        let index = usize::try_from(attempts_made).ok()?.checked_sub(1)?;
        let base = *self.0.get(index)?;
        Some(base.mul_f64(rand::random_range(0.8..=1.2)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_are_jittered_within_twenty_percent_and_run_out() {
        let schedule = RetrySchedule::new(vec![Duration::from_secs(10), Duration::from_secs(60)]);
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
