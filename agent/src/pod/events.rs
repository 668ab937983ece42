//! The pod's event log: apps started, exited, failed and OOM-killed, the
//! pod stopping and exited. Bounded, with sequence numbers, so followers
//! can resume after the last event they saw.

use std::collections::VecDeque;
use std::sync::Mutex;

use kvmpod_api::protocol as pb;
use tokio::sync::watch;

use crate::timeline::boottime_ns;

/// Events kept for late readers.
const CAPACITY: usize = 1024;

#[derive(Debug)]
pub struct EventLog {
    events: Mutex<VecDeque<pb::Event>>,
    changed: watch::Sender<u64>,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            events: Mutex::new(VecDeque::new()),
            changed: watch::channel(0).0,
        }
    }
}

impl EventLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<pb::Event>> {
        self.events.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an event; returns its sequence number.
    pub fn push(
        &self,
        kind: pb::EventKind,
        app: &str,
        exit_code: i32,
        signal: i32,
        message: String,
    ) -> u64 {
        let mut events = self.lock();
        let seq = events.back().map_or(1, |e| e.seq + 1);
        let mut e = pb::Event::new();
        e.seq = seq;
        e.boottime_ns = boottime_ns();
        e.kind = kind.into();
        e.app = app.to_string();
        e.exit_code = exit_code;
        e.signal = signal;
        e.message = message;
        if matches!(
            kind,
            pb::EventKind::EVENT_KIND_POD_STOPPING | pb::EventKind::EVENT_KIND_POD_EXITED
        ) {
            e.interfaces = crate::network::counters()
                .iter()
                .map(interface_stats)
                .collect();
        }
        events.push_back(e);
        if events.len() > CAPACITY {
            events.pop_front();
        }
        drop(events);
        self.changed.send_replace(seq);
        seq
    }

    /// Events with a sequence number above `after`.
    pub fn after(&self, after: u64) -> Vec<pb::Event> {
        self.lock()
            .iter()
            .filter(|e| e.seq > after)
            .cloned()
            .collect()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// An interface's counters as the agent API carries them.
pub fn interface_stats(c: &crate::network::Counters) -> pb::InterfaceStats {
    let mut s = pb::InterfaceStats::new();
    s.interface = c.interface.clone();
    s.rx_bytes = c.rx_bytes;
    s.rx_packets = c.rx_packets;
    s.rx_dropped = c.rx_dropped;
    s.tx_bytes = c.tx_bytes;
    s.tx_packets = c.tx_packets;
    s.tx_dropped = c.tx_dropped;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_numbered_bounded_and_resumable() {
        let log = EventLog::default();
        assert_eq!(
            log.push(
                pb::EventKind::EVENT_KIND_APP_STARTED,
                "a",
                0,
                0,
                String::new()
            ),
            1
        );
        assert_eq!(
            log.push(
                pb::EventKind::EVENT_KIND_APP_EXITED,
                "a",
                3,
                0,
                String::new()
            ),
            2
        );
        let after1 = log.after(1);
        assert_eq!(after1.len(), 1);
        assert_eq!(
            (after1[0].kind.enum_value_or_default(), after1[0].exit_code),
            (pb::EventKind::EVENT_KIND_APP_EXITED, 3)
        );
        for _ in 0..CAPACITY + 10 {
            log.push(
                pb::EventKind::EVENT_KIND_POD_STOPPING,
                "",
                0,
                0,
                String::new(),
            );
        }
        let all = log.after(0);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all.last().unwrap().seq, (CAPACITY + 12) as u64);
    }
}
