//! The outbox's memory lane: alarms about the disk itself
//! ([`crate::diskwatch`]), which must reach HQ while the disk they report
//! holds every write — the outbox's own file included.
//!
//! Invariants: a push neither writes nor waits on anything but this
//! lane's own mutex, which is never held across I/O; the link sends the
//! lane's messages in their order, ahead of the outbox's queue, one at a
//! time, and lets one go only on the broker's PUBACK for it. Bounded by
//! [`LANE_MAX`]: when full, the oldest is dropped (and logged). Kept in
//! memory only: an agent that stops before they are delivered loses them
//! (a stall that outlasts the agent is reported again by the next run's
//! watcher, if the disk still stalls).

use std::collections::VecDeque;
use std::sync::Mutex;

/// Messages the lane keeps at most.
pub const LANE_MAX: usize = 256;

/// The lane of messages `M` (the outbox's entries).
pub struct Lane<M> {
    queue: Mutex<VecDeque<M>>,
}

impl<M> Default for Lane<M> {
    fn default() -> Lane<M> {
        Lane {
            queue: Mutex::new(VecDeque::new()),
        }
    }
}

impl<M: Clone> Lane<M> {
    /// Queues `messages` after those already in the lane.
    pub fn push(&self, messages: Vec<M>) {
        let mut q = crate::sync::lock(&self.queue);
        q.extend(messages);
        while q.len() > LANE_MAX {
            q.pop_front();
            tracing::error!("outbox lane full: dropped its oldest alarm");
        }
    }

    /// The oldest message not yet acknowledged.
    pub fn front(&self) -> Option<M> {
        crate::sync::lock(&self.queue).front().cloned()
    }

    /// The broker acknowledged the front message.
    pub fn ack(&self) {
        crate::sync::lock(&self.queue).pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lane_keeps_order_and_its_bound() {
        let lane = Lane::default();
        lane.push((0..LANE_MAX + 2).map(|n| n.to_string()).collect());
        let mut out = Vec::new();
        while let Some(m) = lane.front() {
            out.push(m);
            lane.ack();
        }
        let want: Vec<String> = (2..LANE_MAX + 2).map(|n| n.to_string()).collect();
        assert_eq!(out, want, "the oldest dropped, the rest in order");
    }
}
