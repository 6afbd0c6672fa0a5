//! One channel's acknowledgements, several messages to one `basic.ack` (`multiple`): each ack is
//! a wake-up of the AMQP client's I/O thread and a frame for the broker, and per message they
//! cost as much as the rest of the bridge's work. A ready message is acked once every earlier
//! message of the channel is settled, so one ack with `multiple` covers exactly the ready ones;
//! behind a straggler (a message still retrying its lookups) the ready ones are acked alone
//! instead, so they do not hold the prefetch window.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lapin::Acker;
use lapin::options::BasicAckOptions;
use parking_lot::Mutex;

/// How long an unsettled message may hold back the acks of later ones.
const STRAGGLER: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(super) struct Acks {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Received and not yet settled, with when they were received.
    unsettled: BTreeMap<u64, Instant>,
    /// Settled as acked, the ack not yet sent.
    ready: BTreeMap<u64, Acker>,
}

impl Acks {
    pub fn received(&self, tag: u64) {
        self.state.lock().unsettled.insert(tag, Instant::now());
    }

    /// The message is handled and may be acked (by the next `flush`).
    pub fn ready(&self, tag: u64, acker: &Acker) {
        let mut state = self.state.lock();
        state.unsettled.remove(&tag);
        state.ready.insert(tag, acker.clone());
    }

    /// The message was settled otherwise (nacked, or acked alone once parked).
    pub fn forget(&self, tag: u64) {
        self.state.lock().unsettled.remove(&tag);
    }

    /// Sends the acks that may go now; answers how many messages they covered. A failed ack
    /// (the channel broke) leaves its messages to be redelivered, and their event ids make the
    /// second commit a no-op.
    pub async fn flush(&self) -> usize {
        let (covered, alone) = self.take_sendable();
        let mut acked = 0;
        if let Some((count, last)) = covered {
            let multiple = BasicAckOptions { multiple: true };
            if last.ack(multiple).await.is_ok() {
                acked += count;
            }
        }
        for acker in alone {
            if acker.ack(BasicAckOptions::default()).await.is_ok() {
                acked += 1;
            }
        }
        acked
    }

    /// The ready messages below the oldest unsettled one (how many, and the last one's acker,
    /// whose ack with `multiple` covers them), and those to ack alone behind a straggler.
    fn take_sendable(&self) -> (Option<(usize, Acker)>, Vec<Acker>) {
        let mut state = self.state.lock();
        let oldest = state
            .unsettled
            .first_key_value()
            .map(|(tag, at)| (*tag, *at));
        let below = match oldest {
            Some((tag, _)) => {
                let rest = state.ready.split_off(&tag);
                std::mem::replace(&mut state.ready, rest)
            }
            None => std::mem::take(&mut state.ready),
        };
        let count = below.len();
        let covered = below.into_values().next_back().map(|last| (count, last));
        let alone = if oldest.is_some_and(|(_, at)| at.elapsed() > STRAGGLER) {
            std::mem::take(&mut state.ready).into_values().collect()
        } else {
            Vec::new()
        };
        (covered, alone)
    }
}

#[cfg(test)]
mod tests {
    use lapin::message::Delivery;

    use super::*;

    fn ready(acks: &Acks, tag: u64) {
        let delivery = Delivery::mock(tag, "".into(), "".into(), false, Vec::new());
        acks.ready(tag, &delivery.acker);
    }

    #[tokio::test]
    async fn a_ready_message_waits_for_every_earlier_one() {
        let acks = Acks::default();
        for tag in 1..=7 {
            acks.received(tag);
        }
        ready(&acks, 2);
        ready(&acks, 3);
        assert_eq!(acks.flush().await, 0, "1 is not settled yet");
        ready(&acks, 1);
        assert_eq!(acks.flush().await, 3, "one ack covers 1 to 3");
        ready(&acks, 5);
        assert_eq!(acks.flush().await, 0, "4 is not settled yet");
        acks.forget(4);
        assert_eq!(acks.flush().await, 1, "4 was nacked or parked: 5 goes");
        // 6 is a straggler (its lookups are retrying): 7 is acked alone after a while.
        ready(&acks, 7);
        assert_eq!(acks.flush().await, 0);
        std::thread::sleep(STRAGGLER + Duration::from_millis(50));
        assert_eq!(acks.flush().await, 1);
        ready(&acks, 6);
        assert_eq!(acks.flush().await, 1);
        assert_eq!(acks.flush().await, 0);
    }
}
