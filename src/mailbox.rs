//! Single-slot latest-value mailbox between the capture and inference threads.
//!
//! `put` never blocks and never queues: a value not yet taken is replaced (and returned to
//! the caller, who counts it as a stale drop). `take` waits for a value, a close, or a
//! timeout.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Slot<T> {
    value: Option<T>,
    closed: bool,
    replaced: u64,
}

/// The mailbox.
#[derive(Debug)]
pub struct Mailbox<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

/// What `take` saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Take<T> {
    Value(T),
    Timeout,
    /// Closed and empty: no value will come.
    Closed,
}

impl<T> Default for Mailbox<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Mailbox<T> {
    pub fn new() -> Self {
        Mailbox {
            slot: Mutex::new(Slot {
                value: None,
                closed: false,
                replaced: 0,
            }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts a value; returns the stale value it replaced, if any.
    pub fn put(&self, v: T) -> Option<T> {
        let mut s = self.lock();
        let old = s.value.replace(v);
        if old.is_some() {
            s.replaced += 1;
        }
        drop(s);
        self.ready.notify_one();
        old
    }

    /// Takes the latest value, waiting up to `timeout`.
    pub fn take(&self, timeout: Duration) -> Take<T> {
        let deadline = Instant::now() + timeout;
        let mut s = self.lock();
        loop {
            if let Some(v) = s.value.take() {
                return Take::Value(v);
            }
            if s.closed {
                return Take::Closed;
            }
            let now = Instant::now();
            if now >= deadline {
                return Take::Timeout;
            }
            s = self
                .ready
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// No more values will be put; a value still there can be taken.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Whether a value waits to be taken.
    pub fn is_full(&self) -> bool {
        self.lock().value.is_some()
    }

    /// Values replaced before being taken (stale drops).
    pub fn replaced(&self) -> u64 {
        self.lock().replaced
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn latest_wins_and_counts_drops() {
        let m = Mailbox::new();
        assert_eq!(m.put(1), None);
        assert_eq!(m.put(2), Some(1));
        assert_eq!(m.put(3), Some(2));
        assert_eq!(m.take(Duration::ZERO), Take::Value(3));
        assert_eq!(m.take(Duration::from_millis(1)), Take::Timeout);
        assert_eq!(m.replaced(), 2);
        m.put(4);
        m.close();
        assert_eq!(m.take(Duration::ZERO), Take::Value(4));
        assert_eq!(m.take(Duration::from_secs(10)), Take::Closed);
    }

    #[test]
    fn wakes_a_waiting_taker() {
        let m = Arc::new(Mailbox::new());
        let m2 = Arc::clone(&m);
        let t = std::thread::spawn(move || m2.take(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        m.put(7u32);
        assert_eq!(t.join().unwrap(), Take::Value(7));
    }
}
