//! A source that reopens its device when it vanishes, with exponential back-off.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{ErrorKind, Frame, FrameSource, SourceError};

/// Exponential back-off: `initial`, 2x, 4x, ... capped at `max`; reset after a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        let max = max.max(initial);
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The wait before the next attempt; doubles the one after it (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

type Sleeper = Box<dyn FnMut(Duration) + Send>;

/// Wraps a source opened by `opener`. When opening fails or the open source fails with a
/// transient error ([`ErrorKind::Transient`]: no camera, camera lost), it logs the error, drops
/// the source, waits (exponential back-off) and opens again, for as long as it takes: the
/// process does not exit because a camera was unplugged. Frames are renumbered so `seq` keeps
/// increasing across reopenings. Fatal errors, bad frames and the end of stream are passed
/// through. A stop flag ([`Reconnecting::with_stop`]) ends the waiting with
/// [`SourceError::Stopped`].
pub struct Reconnecting<S, F> {
    opener: F,
    current: Option<S>,
    backoff: Backoff,
    sleep: Sleeper,
    stop: Option<Arc<AtomicBool>>,
    seq: u64,
    reconnects: u64,
    failed_opens: u64,
    ever_opened: bool,
    last_error: Option<String>,
    label: String,
}

impl<S, F> fmt::Debug for Reconnecting<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reconnecting")
            .field("label", &self.label)
            .field("open", &self.current.is_some())
            .field("backoff", &self.backoff)
            .field("reconnects", &self.reconnects)
            .finish_non_exhaustive()
    }
}

impl<S, F> Reconnecting<S, F>
where
    S: FrameSource,
    F: FnMut() -> Result<S, SourceError> + Send,
{
    /// Nothing is opened until the first [`FrameSource::next_frame`].
    pub fn new(opener: F, backoff: Backoff) -> Self {
        Reconnecting {
            opener,
            current: None,
            backoff,
            sleep: Box::new(std::thread::sleep),
            stop: None,
            seq: 0,
            reconnects: 0,
            failed_opens: 0,
            ever_opened: false,
            last_error: None,
            label: "camera".to_owned(),
        }
    }

    /// Checks `stop` before each attempt and every 50 ms while waiting.
    pub fn with_stop(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Replaces the sleep function (tests record the delays instead of waiting).
    pub fn with_sleeper(mut self, sleep: impl FnMut(Duration) + Send + 'static) -> Self {
        self.sleep = Box::new(sleep);
        self
    }

    /// How many times the source was reopened after losing it.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// How many opening attempts failed.
    pub fn failed_opens(&self) -> u64 {
        self.failed_opens
    }

    fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }

    fn wait(&mut self) -> Result<(), SourceError> {
        let mut left = self.backoff.next_delay();
        if self.stop.is_none() {
            (self.sleep)(left);
            return Ok(());
        }
        let step = Duration::from_millis(50);
        while !left.is_zero() {
            if self.stopped() {
                return Err(SourceError::Stopped);
            }
            let d = left.min(step);
            (self.sleep)(d);
            left -= d;
        }
        Ok(())
    }
}

impl<S, F> FrameSource for Reconnecting<S, F>
where
    S: FrameSource,
    F: FnMut() -> Result<S, SourceError> + Send,
{
    fn next_frame(&mut self) -> Result<Frame, SourceError> {
        loop {
            if self.stopped() {
                return Err(SourceError::Stopped);
            }
            let src = match &mut self.current {
                Some(s) => s,
                None => match (self.opener)() {
                    Ok(s) => {
                        if self.last_error.take().is_some() {
                            log::info!("{}: opened {}", self.label, s.describe());
                            if self.ever_opened {
                                self.reconnects += 1;
                            }
                        }
                        self.ever_opened = true;
                        self.label = s.describe();
                        self.current.insert(s)
                    }
                    Err(e) if e.kind() == ErrorKind::Transient => {
                        self.failed_opens += 1;
                        let msg = e.to_string();
                        if self.last_error.as_deref() != Some(msg.as_str()) {
                            log::warn!("{}: {msg}; retrying with back-off", self.label);
                        }
                        self.last_error = Some(msg);
                        self.wait()?;
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            match src.next_frame() {
                Ok(mut f) => {
                    self.backoff.reset();
                    f.seq = self.seq;
                    self.seq += 1;
                    return Ok(f);
                }
                Err(e) if e.kind() == ErrorKind::Transient => {
                    log::warn!("{}: {e}; reopening", self.label);
                    self.current = None;
                    self.last_error = Some(e.to_string());
                    self.wait()?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} (reopened on loss, {} reconnects)",
            self.label, self.reconnects
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::PixelFormat;
    use std::sync::Mutex;
    use std::time::Instant;

    /// A camera that gives `frames` frames and then vanishes (or ends).
    struct Fake {
        frames: u32,
        vanish: bool,
        id: u32,
    }

    impl FrameSource for Fake {
        fn next_frame(&mut self) -> Result<Frame, SourceError> {
            if self.frames == 0 {
                return Err(if self.vanish {
                    SourceError::Disconnected {
                        device: "/dev/fake".into(),
                        reason: "No such device (os error 19)".into(),
                    }
                } else {
                    SourceError::EndOfStream
                });
            }
            self.frames -= 1;
            Ok(Frame {
                width: 2,
                height: 1,
                format: PixelFormat::Grey,
                data: vec![self.id as u8, 0],
                capture_ts: Instant::now(),
                seq: 1000,
            })
        }

        fn describe(&self) -> String {
            format!("fake#{}", self.id)
        }
    }

    /// `opener` behind a back-off from `initial` to `max` whose waits are recorded instead
    /// of slept; the source and the waits so far (ms).
    fn recorded<S, F>(
        opener: F,
        initial: Duration,
        max: Duration,
    ) -> (Reconnecting<S, F>, impl Fn() -> Vec<u128>)
    where
        S: FrameSource,
        F: FnMut() -> Result<S, SourceError> + Send,
    {
        let log = Arc::new(Mutex::new(Vec::<Duration>::new()));
        let l = log.clone();
        let r = Reconnecting::new(opener, Backoff::new(initial, max))
            .with_sleeper(move |d| l.lock().unwrap().push(d));
        let waits = move || {
            log.lock()
                .unwrap()
                .iter()
                .map(Duration::as_millis)
                .collect()
        };
        (r, waits)
    }

    #[test]
    fn backoff_doubles_up_to_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(700));
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 700, 700]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn opener_failing_n_times_is_retried_with_growing_delays() {
        let mut attempts = 0u32;
        let opener = move || {
            attempts += 1;
            if attempts <= 4 {
                Err(SourceError::NoCamera(format!(
                    "/dev/video9 absent (attempt {attempts})"
                )))
            } else {
                Ok(Fake {
                    frames: 2,
                    vanish: false,
                    id: attempts,
                })
            }
        };
        let (mut r, waits) = recorded(opener, Duration::from_millis(10), Duration::from_millis(50));
        let f = r.next_frame().unwrap();
        assert_eq!((f.seq, f.data[0]), (0, 5));
        assert_eq!(r.next_frame().unwrap().seq, 1);
        assert!(
            r.next_frame().unwrap_err().is_end(),
            "end of stream passes through"
        );
        assert_eq!(waits(), [10, 20, 40, 50]);
        assert_eq!(
            (r.failed_opens(), r.reconnects()),
            (4, 0),
            "a first opening is no reconnection"
        );
    }

    #[test]
    fn camera_vanishing_mid_stream_is_reopened_and_seq_continues() {
        // Each opened fake gives 3 frames then vanishes; openings 2 and 3 fail.
        let mut opened = 0u32;
        let opener = move || {
            opened += 1;
            match opened {
                2 | 3 => Err(SourceError::NoCamera("unplugged".into())),
                _ => Ok(Fake {
                    frames: 3,
                    vanish: true,
                    id: opened,
                }),
            }
        };
        let (mut r, waits) = recorded(opener, Duration::from_millis(100), Duration::from_secs(5));
        let frames: Vec<Frame> = (0..9).map(|_| r.next_frame().unwrap()).collect();
        let seqs: Vec<u64> = frames.iter().map(|f| f.seq).collect();
        assert_eq!(seqs, (0..9).collect::<Vec<_>>());
        let ids: Vec<u8> = frames.iter().map(|f| f.data[0]).collect();
        assert_eq!(ids, [1, 1, 1, 4, 4, 4, 5, 5, 5]);
        // Lost (100), open fails (200), fails (400), opened; frames reset the back-off;
        // lost again (100), reopened at once.
        assert_eq!(waits(), [100, 200, 400, 100]);
        assert_eq!(r.reconnects(), 2);
    }

    #[test]
    fn fatal_errors_pass_through() {
        let opener = || -> Result<Fake, SourceError> {
            Err(SourceError::Invalid("format not supported".into()))
        };
        let mut r = Reconnecting::new(
            opener,
            Backoff::new(Duration::from_millis(1), Duration::from_millis(1)),
        )
        .with_sleeper(|_| panic!("must not wait on a fatal error"));
        assert_eq!(r.next_frame().unwrap_err().kind(), ErrorKind::Fatal);
    }

    #[test]
    fn stop_flag_ends_waiting() {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let opener = || -> Result<Fake, SourceError> { Err(SourceError::NoCamera("none".into())) };
        let mut waited = Duration::ZERO;
        let mut r = Reconnecting::new(
            opener,
            Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
        )
        .with_stop(stop)
        .with_sleeper(move |d| {
            waited += d;
            // Ctrl-C arrives after 3 s of waiting.
            if waited >= Duration::from_secs(3) {
                s2.store(true, Ordering::Relaxed);
            }
        });
        assert!(matches!(r.next_frame(), Err(SourceError::Stopped)));
        assert!(r.failed_opens() >= 2);
    }
}
