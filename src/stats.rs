//! Per-stage latency windows and percentiles (bounded memory).

use std::fmt;
use std::time::Duration;

use shapecast_wire::message::{Percentiles, StageLatency};

/// The last `cap` samples of one stage, µs.
#[derive(Debug, Clone)]
pub struct Window {
    buf: Vec<u32>,
    next: usize,
    cap: usize,
    /// Samples ever recorded.
    pub total: u64,
}

impl Window {
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Window {
            buf: Vec::with_capacity(cap),
            next: 0,
            cap,
            total: 0,
        }
    }

    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u32::MAX as u128) as u32;
        if self.buf.len() < self.cap {
            self.buf.push(us);
        } else {
            self.buf[self.next] = us;
        }
        self.next = (self.next + 1) % self.cap;
        self.total += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// p50/p90/p99/max of the window (nearest-rank); zeros when empty.
    pub fn percentiles(&self) -> Percentiles {
        if self.buf.is_empty() {
            return Percentiles::default();
        }
        let mut v = self.buf.clone();
        v.sort_unstable();
        let at = |p: f64| {
            let rank = (p * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1]
        };
        Percentiles {
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            max_us: *v.last().unwrap_or(&0),
        }
    }
}

/// Pipeline stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Capture,
    Convert,
    Preprocess,
    Inference,
    Decode,
    Encode,
    Send,
    /// From the frame's capture time to the message handed to the link.
    FrameToWire,
}

impl Stage {
    pub const ALL: [Stage; 8] = [
        Stage::Capture,
        Stage::Convert,
        Stage::Preprocess,
        Stage::Inference,
        Stage::Decode,
        Stage::Encode,
        Stage::Send,
        Stage::FrameToWire,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Stage::Capture => "capture",
            Stage::Convert => "convert",
            Stage::Preprocess => "preprocess",
            Stage::Inference => "inference",
            Stage::Decode => "decode",
            Stage::Encode => "encode",
            Stage::Send => "send",
            Stage::FrameToWire => "frame-to-wire",
        }
    }
}

/// One window per stage.
#[derive(Debug, Clone)]
pub struct Latencies {
    w: Vec<Window>,
}

impl Latencies {
    pub fn new(cap: usize) -> Self {
        Latencies {
            w: Stage::ALL.iter().map(|_| Window::new(cap)).collect(),
        }
    }

    pub fn record(&mut self, s: Stage, d: Duration) {
        self.w[s as usize].record(d);
    }

    /// Replaces one stage's window (samples recorded on another thread).
    pub fn set_window(&mut self, s: Stage, w: Window) {
        self.w[s as usize] = w;
    }

    pub fn window(&self, s: Stage) -> &Window {
        &self.w[s as usize]
    }

    /// The wire form (the seven pipeline stages).
    pub fn stage_latency(&self) -> StageLatency {
        let p = |s: Stage| self.window(s).percentiles();
        StageLatency {
            capture: p(Stage::Capture),
            convert: p(Stage::Convert),
            preprocess: p(Stage::Preprocess),
            inference: p(Stage::Inference),
            decode: p(Stage::Decode),
            encode: p(Stage::Encode),
            send: p(Stage::Send),
        }
    }
}

/// A latency table: one line per stage, ms.
#[derive(Debug)]
pub struct Table<'a>(pub &'a Latencies);

impl fmt::Display for Table<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<14} {:>7} {:>9} {:>9} {:>9} {:>9}",
            "stage", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"
        )?;
        for s in Stage::ALL {
            let w = self.0.window(s);
            let p = w.percentiles();
            let ms = |us: u32| us as f64 / 1000.0;
            writeln!(
                f,
                "{:<14} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
                s.name(),
                w.len(),
                ms(p.p50_us),
                ms(p.p90_us),
                ms(p.p99_us),
                ms(p.max_us)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let mut w = Window::new(1000);
        for i in 1..=100 {
            w.record(Duration::from_micros(i));
        }
        let p = w.percentiles();
        assert_eq!((p.p50_us, p.p90_us, p.p99_us, p.max_us), (50, 90, 99, 100));
        assert_eq!(Window::new(4).percentiles(), Percentiles::default());
    }

    #[test]
    fn window_is_bounded_and_keeps_the_latest() {
        let mut w = Window::new(10);
        for i in 0..1000 {
            w.record(Duration::from_micros(i));
        }
        assert_eq!(w.len(), 10);
        assert_eq!(w.total, 1000);
        assert_eq!(w.percentiles().p50_us, 994);
        assert_eq!(w.percentiles().max_us, 999);
    }
}
