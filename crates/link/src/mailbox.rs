//! Latest-frame-wins sender: a single-slot mailbox drained by a writer thread.
//!
//! The pipeline calls [`LinkSender::offer`], which never blocks on the link:
//! the frame is copied into the one pending slot (replacing, and counting as
//! dropped, a frame the writer has not picked up yet) and the call returns.
//! A writer thread takes the pending frame and pushes it through the
//! [`Transport`] at whatever speed the link allows. Memory is bounded: at most
//! one pending and one in-flight frame, each at most `max_payload` bytes, with
//! their buffers recycled.
//!
//! Small control messages (Hello, Stats) go through
//! [`LinkSender::offer_control`] into a separate queue of
//! [`CONTROL_QUEUE`] entries (oldest dropped when full) that the writer
//! drains before the frame slot, so a heartbeat never evicts a frame and a
//! frame never evicts a heartbeat.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::LinkError;

/// Capacity of the control-message queue.
pub const CONTROL_QUEUE: usize = 4;

/// Something that can carry one encoded frame (a whole message) to the host.
pub trait Transport: Send + 'static {
    /// Sends one frame. `frame_id` increases by one per frame offered to the
    /// [`LinkSender`] (dropped frames leave gaps, which lets the host count
    /// them).
    fn send(&mut self, frame_id: u32, payload: &[u8]) -> Result<(), LinkError>;

    /// A short name for logs ("udp 1.2.3.4:5", "serial /dev/ttyUSB0").
    fn describe(&self) -> String;
}

/// Counters of a [`LinkSender`] (monotonic since creation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Frames handed to [`LinkSender::offer`] (accepted or not).
    pub offered: u64,
    /// Frames the transport sent without error.
    pub sent: u64,
    /// Frames replaced in the mailbox by a newer one before being sent.
    pub dropped: u64,
    /// Control messages dropped because the control queue was full.
    pub control_dropped: u64,
    /// Frames refused because they exceed `max_payload`.
    pub oversize: u64,
    /// Frames whose send failed in the transport.
    pub errors: u64,
    /// Payload bytes of frames sent.
    pub bytes_sent: u64,
}

#[derive(Debug, Default)]
struct Counters {
    offered: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    control_dropped: AtomicU64,
    oversize: AtomicU64,
    errors: AtomicU64,
    bytes_sent: AtomicU64,
}

#[derive(Debug)]
struct Pending {
    frame_id: u32,
    buf: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    pending: Option<Pending>,
    control: VecDeque<Pending>,
    /// Recycled buffers (at most two exist in steady state).
    spare: Vec<Vec<u8>>,
    busy: bool,
    closed: bool,
    next_id: u32,
    last_error: Option<String>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    idle: Condvar,
    counters: Counters,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a transport panicked mid-send; the state
        // itself is always consistent, so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Non-blocking, latest-frame-wins sender over any [`Transport`].
#[derive(Debug)]
pub struct LinkSender {
    shared: Arc<Shared>,
    max_payload: usize,
    describe: String,
    thread: Option<JoinHandle<()>>,
}

impl LinkSender {
    /// Starts the writer thread. Frames larger than `max_payload` are refused.
    pub fn new<T: Transport>(mut transport: T, max_payload: usize) -> Result<Self, LinkError> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            idle: Condvar::new(),
            counters: Counters::default(),
        });
        let describe = transport.describe();
        let sh = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("shapecast-link".into())
            .spawn(move || writer(&sh, &mut transport))
            .map_err(LinkError::Io)?;
        Ok(Self {
            shared,
            max_payload,
            describe,
            thread: Some(thread),
        })
    }

    /// Offers a frame; returns at once. Returns the frame id it was given, or
    /// an error if it is larger than `max_payload` or the sender is closed. A
    /// frame still waiting in the mailbox is replaced (and counted dropped).
    pub fn offer(&self, payload: &[u8]) -> Result<u32, LinkError> {
        self.put(payload, false)
    }

    /// Queues a control message (Hello, Stats); returns at once. If
    /// [`CONTROL_QUEUE`] messages are already waiting the oldest is dropped.
    pub fn offer_control(&self, payload: &[u8]) -> Result<u32, LinkError> {
        self.put(payload, true)
    }

    fn put(&self, payload: &[u8], control: bool) -> Result<u32, LinkError> {
        let c = &self.shared.counters;
        c.offered.fetch_add(1, Ordering::Relaxed);
        if payload.len() > self.max_payload {
            c.oversize.fetch_add(1, Ordering::Relaxed);
            return Err(LinkError::TooLarge {
                len: payload.len(),
                max: self.max_payload,
            });
        }
        let mut st = self.shared.lock();
        if st.closed {
            return Err(LinkError::Closed);
        }
        let frame_id = st.next_id;
        st.next_id = st.next_id.wrapping_add(1);
        let mut buf = if control {
            if st.control.len() >= CONTROL_QUEUE {
                c.control_dropped.fetch_add(1, Ordering::Relaxed);
                st.control.pop_front().map(|p| p.buf).unwrap_or_default()
            } else {
                Vec::new()
            }
        } else {
            match st.pending.take() {
                Some(old) => {
                    c.dropped.fetch_add(1, Ordering::Relaxed);
                    old.buf
                }
                None => st.spare.pop().unwrap_or_default(),
            }
        };
        buf.clear();
        buf.extend_from_slice(payload);
        let p = Pending { frame_id, buf };
        if control {
            st.control.push_back(p);
        } else {
            st.pending = Some(p);
        }
        drop(st);
        self.shared.wake.notify_one();
        Ok(frame_id)
    }

    /// Snapshot of the counters.
    pub fn counters(&self) -> LinkCounters {
        let c = &self.shared.counters;
        LinkCounters {
            offered: c.offered.load(Ordering::Relaxed),
            sent: c.sent.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            control_dropped: c.control_dropped.load(Ordering::Relaxed),
            oversize: c.oversize.load(Ordering::Relaxed),
            errors: c.errors.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
        }
    }

    /// The last transport error, if any (as text).
    pub fn last_error(&self) -> Option<String> {
        self.shared.lock().last_error.clone()
    }

    /// What the transport is.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Waits until the mailbox is empty and the writer idle, or `timeout`
    /// passes. Returns whether everything offered so far was handled.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        while st.pending.is_some() || !st.control.is_empty() || st.busy {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .shared
                .idle
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Stops the writer after the frame it is sending (a pending frame is
    /// still sent) and joins it.
    pub fn close(mut self) -> LinkCounters {
        self.shutdown();
        self.counters()
    }

    fn shutdown(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LinkSender {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Buffers larger than this are freed instead of recycled.
const MAX_SPARE_CAPACITY: usize = 4 << 20;

fn writer<T: Transport>(sh: &Shared, transport: &mut T) {
    loop {
        let job = {
            let mut st = sh.lock();
            loop {
                if let Some(p) = st.control.pop_front().or_else(|| st.pending.take()) {
                    st.busy = true;
                    break Some(p);
                }
                if st.closed {
                    break None;
                }
                st = sh.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            }
        };
        let Some(job) = job else {
            sh.idle.notify_all();
            return;
        };
        let res = transport.send(job.frame_id, &job.buf);
        let c = &sh.counters;
        let mut st = sh.lock();
        match res {
            Ok(()) => {
                c.sent.fetch_add(1, Ordering::Relaxed);
                c.bytes_sent
                    .fetch_add(job.buf.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                c.errors.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "{}: send of frame {} failed: {e}",
                    transport.describe(),
                    job.frame_id
                );
                st.last_error = Some(e.to_string());
            }
        }
        st.busy = false;
        if st.spare.len() < 2 && job.buf.capacity() <= MAX_SPARE_CAPACITY {
            st.spare.push(job.buf);
        }
        drop(st);
        sh.idle.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A transport that blocks until the test lets each send through.
    struct Gated {
        gate: mpsc::Receiver<()>,
        out: mpsc::Sender<(u32, Vec<u8>)>,
    }

    impl Transport for Gated {
        fn send(&mut self, id: u32, p: &[u8]) -> Result<(), LinkError> {
            self.gate.recv().map_err(|_| LinkError::Closed)?;
            self.out
                .send((id, p.to_vec()))
                .map_err(|_| LinkError::Closed)?;
            Ok(())
        }
        fn describe(&self) -> String {
            "gated".into()
        }
    }

    /// A sender of 16-byte frames over [`Gated`]: the gate (one send lets one frame
    /// through) and the frames written.
    #[allow(clippy::type_complexity)]
    fn gated_sender() -> (LinkSender, mpsc::Sender<()>, mpsc::Receiver<(u32, Vec<u8>)>) {
        let (gtx, grx) = mpsc::channel();
        let (otx, orx) = mpsc::channel();
        let s = LinkSender::new(
            Gated {
                gate: grx,
                out: otx,
            },
            16,
        )
        .unwrap();
        (s, gtx, orx)
    }

    /// Waits until the writer holds a frame (and blocks in the gate).
    fn wait_busy(s: &LinkSender) {
        while !s.shared.lock().busy {
            std::thread::yield_now();
        }
    }

    #[test]
    fn latest_wins_and_offer_never_blocks() {
        let (s, gtx, orx) = gated_sender();
        // First frame is taken by the writer, which then blocks in the gate.
        assert_eq!(s.offer(b"f0").unwrap(), 0);
        wait_busy(&s);
        // Writer is stuck: these all land in the mailbox, each replacing the last.
        for i in 1..=100u32 {
            assert_eq!(s.offer(format!("f{i}").as_bytes()).unwrap(), i);
        }
        assert!(matches!(
            s.offer(&[0; 17]),
            Err(LinkError::TooLarge { len: 17, max: 16 })
        ));
        gtx.send(()).unwrap();
        gtx.send(()).unwrap();
        assert_eq!(orx.recv().unwrap(), (0, b"f0".to_vec()));
        assert_eq!(orx.recv().unwrap(), (100, b"f100".to_vec()));
        assert!(s.flush(Duration::from_secs(5)));
        let c = s.counters();
        assert_eq!(c.offered, 102);
        assert_eq!(c.sent, 2);
        assert_eq!(c.dropped, 99);
        assert_eq!(c.oversize, 1);
        assert_eq!(c.bytes_sent, 6);
        drop(gtx);
        let c = s.close();
        assert_eq!(c.errors, 0);
    }

    #[test]
    fn control_queue_is_separate_and_bounded() {
        let (s, gtx, orx) = gated_sender();
        s.offer(b"busy").unwrap();
        wait_busy(&s);
        s.offer(b"frame-a").unwrap();
        for i in 0..6u8 {
            s.offer_control(&[b'c', b'0' + i]).unwrap();
        }
        s.offer(b"frame-b").unwrap();
        for _ in 0..6 {
            gtx.send(()).unwrap();
        }
        let got: Vec<Vec<u8>> = (0..6).map(|_| orx.recv().unwrap().1).collect();
        assert_eq!(
            got,
            vec![
                b"busy".to_vec(),
                b"c2".to_vec(),
                b"c3".to_vec(),
                b"c4".to_vec(),
                b"c5".to_vec(),
                b"frame-b".to_vec()
            ]
        );
        assert!(s.flush(Duration::from_secs(5)));
        let c = s.counters();
        assert_eq!((c.dropped, c.control_dropped, c.sent), (1, 2, 6));
        drop(gtx);
    }

    struct Failing;
    impl Transport for Failing {
        fn send(&mut self, _: u32, _: &[u8]) -> Result<(), LinkError> {
            Err(LinkError::Closed)
        }
        fn describe(&self) -> String {
            "failing".into()
        }
    }

    #[test]
    fn errors_are_counted_not_fatal() {
        let s = LinkSender::new(Failing, 8).unwrap();
        for _ in 0..3 {
            s.offer(b"x").unwrap();
            assert!(s.flush(Duration::from_secs(5)));
        }
        let c = s.counters();
        assert_eq!(c.errors, 3);
        assert_eq!(c.sent, 0);
        assert!(s.last_error().is_some());
    }
}
