//! Per-device and receiver-wide statistics.

use std::collections::VecDeque;

use shapecast_wire::message::Stats as DeviceReport;

/// Samples kept for latency percentiles (per device).
const LATENCY_SAMPLES: usize = 256;

/// Frames remembered per device to recognise a copy of a frame already delivered.
pub const RECENT_FRAMES: usize = 64;

/// What the host knows about one device.
#[derive(Debug, Clone, Default)]
pub struct DeviceStats {
    /// Device id.
    pub device_id: u32,
    /// Model announced in the last Hello, if any.
    pub model_id: Option<String>,
    /// Frame messages (points, voxels, mesh) received.
    pub frames: u64,
    /// Control messages (Hello, Stats) received.
    pub control: u64,
    /// Payload bytes of frame messages.
    pub frame_bytes: u64,
    /// Points (first hypothesis), occupied voxels or mesh vertices decoded.
    pub points: u64,
    /// Lowest and highest frame id seen.
    pub first_frame_id: Option<u32>,
    /// Highest frame id seen.
    pub last_frame_id: u32,
    /// Messages that failed to decode or convert.
    pub bad: u64,
    /// Files written by the sink.
    pub files: u64,
    /// Copies of a frame already delivered (same frame id, capture time and bytes as one of
    /// the device's last [`RECENT_FRAMES`] frames), dropped before the sinks.
    pub duplicates: u64,
    /// The last Stats message of the device.
    pub last_report: Option<DeviceReport>,
    /// When the receiver last accepted a message of this device, µs since it started
    /// (devices idle for long are evicted when the device table is full).
    pub last_seen_us: u64,
    /// Smallest `host_rx_us - capture_ts_us` seen (clock offset + best delay).
    min_offset_us: Option<i64>,
    lat: VecDeque<u64>,
    /// (frame id, capture time, hash of the payload) of the last frames delivered.
    recent: VecDeque<(u32, u64, u64)>,
}

impl DeviceStats {
    pub(crate) fn new(device_id: u32) -> Self {
        Self {
            device_id,
            ..Self::default()
        }
    }

    /// True (and counted) when the frame `(frame_id, capture_us, payload)` is a copy of one of
    /// the device's last [`RECENT_FRAMES`] frames; otherwise remembers it. A network path that
    /// duplicates datagrams (UDP without a PSK has no replay window) completes a frame twice;
    /// a device restart gives new capture times, so its frames are not taken for copies.
    pub(crate) fn is_copy(&mut self, frame_id: u32, capture_us: u64, payload: &[u8]) -> bool {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        payload.hash(&mut h);
        let key = (frame_id, capture_us, h.finish());
        if self.recent.contains(&key) {
            self.duplicates += 1;
            return true;
        }
        if self.recent.len() == RECENT_FRAMES {
            self.recent.pop_front();
        }
        self.recent.push_back(key);
        false
    }

    pub(crate) fn on_frame(&mut self, frame_id: u32, bytes: usize, host_us: u64, capture_us: u64) {
        self.frames += 1;
        self.frame_bytes += bytes as u64;
        match self.first_frame_id {
            None => {
                self.first_frame_id = Some(frame_id);
                self.last_frame_id = frame_id;
            }
            Some(first) => {
                if frame_id.wrapping_sub(first) > self.last_frame_id.wrapping_sub(first)
                    && frame_id.wrapping_sub(self.last_frame_id) < 1 << 30
                {
                    self.last_frame_id = frame_id;
                }
            }
        }
        // i128: the capture time is any u64 the device sent (`as i64` and `-` could wrap)
        let off = (i128::from(host_us) - i128::from(capture_us))
            .clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        let min = self.min_offset_us.map_or(off, |m| m.min(off));
        self.min_offset_us = Some(min);
        if self.lat.len() == LATENCY_SAMPLES {
            self.lat.pop_front();
        }
        self.lat
            .push_back(u64::try_from(i128::from(off) - i128::from(min)).unwrap_or(0));
    }

    /// Frames the device numbered between the first and last seen that did
    /// not arrive, as a fraction of them (link loss plus frames the device
    /// skipped).
    pub fn loss(&self) -> f64 {
        let Some(first) = self.first_frame_id else {
            return 0.0;
        };
        let span = u64::from(self.last_frame_id.wrapping_sub(first)) + 1;
        if span == 0 || self.frames >= span {
            0.0
        } else {
            1.0 - self.frames as f64 / span as f64
        }
    }

    /// Payload bytes per point (first hypothesis) over all frames.
    pub fn bytes_per_point(&self) -> f64 {
        if self.points == 0 {
            0.0
        } else {
            self.frame_bytes as f64 / self.points as f64
        }
    }

    /// Percentile `p` (0..=100) of the recent latency above the best seen,
    /// µs. Without a shared clock the absolute one-way delay is unknown; this
    /// is the queueing/jitter part of it (exact when the best frame had no
    /// queueing).
    pub fn latency_above_min_us(&self, p: f64) -> Option<u64> {
        if self.lat.is_empty() {
            return None;
        }
        let mut v: Vec<u64> = self.lat.iter().copied().collect();
        v.sort_unstable();
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        v.get(i.min(v.len() - 1)).copied()
    }

    /// One line for the live display.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "dev {:>5}: {:>6} frames, {:>6.2} B/pt, loss {:>5.1}%",
            self.device_id,
            self.frames,
            self.bytes_per_point(),
            self.loss() * 100.0
        );
        if let (Some(p50), Some(p90)) = (
            self.latency_above_min_us(50.0),
            self.latency_above_min_us(90.0),
        ) {
            s.push_str(&format!(
                ", link jitter p50 {:.1} ms p90 {:.1} ms",
                p50 as f64 / 1e3,
                p90 as f64 / 1e3
            ));
        }
        if let Some(r) = &self.last_report {
            // Device-sent u32 values: summed as u64 (seven or three of them cannot overflow
            // it), never as u32 (an overflow panic in a debug build, garbage in a release one).
            let l = &r.latency;
            let e2e_us: u64 = [
                l.capture,
                l.convert,
                l.preprocess,
                l.inference,
                l.decode,
                l.encode,
                l.send,
            ]
            .iter()
            .map(|p| u64::from(p.p50_us))
            .sum();
            let drops: u64 = [r.drops.stale_frames, r.drops.link_busy, r.drops.send_errors]
                .iter()
                .map(|&d| u64::from(d))
                .sum();
            s.push_str(&format!(
                ", device {:.1} fps, infer p50 {:.1} ms, e2e(capture..send) p50 {:.1} ms, drops {}",
                f64::from(r.fps_x100) / 100.0,
                f64::from(r.latency.inference.p50_us) / 1e3,
                e2e_us as f64 / 1e3,
                drops
            ));
        }
        if self.bad > 0 {
            s.push_str(&format!(", {} bad", self.bad));
        }
        s
    }
}

/// Receiver-wide counters.
#[derive(Debug, Clone, Default)]
pub struct HostStats {
    /// Messages decoded (all kinds, all devices).
    pub messages: u64,
    /// Frame messages (points, voxels, mesh).
    pub frames: u64,
    /// Payloads that did not decode as a message.
    pub undecodable: u64,
    /// Payloads dropped because the worker queue was full.
    pub queue_full: u64,
    /// Messages from devices beyond the device limit (dropped).
    pub devices_refused: u64,
    /// UDP frames whose datagram device id differs from the message's.
    pub device_mismatch: u64,
    /// Devices dropped from the full device table because they were idle longer than
    /// the idle timeout (to make room for a new one).
    pub devices_evicted: u64,
    /// Sink failures (e.g. a file could not be written).
    pub sink_errors: u64,
    /// Copies of frames already delivered, dropped (see [`DeviceStats::duplicates`]).
    pub duplicates: u64,
    /// UDP datagrams read / refused by the reassembler.
    pub udp_datagrams: u64,
    /// UDP datagrams refused (malformed, bad tag, too large, ...).
    pub udp_rejected: u64,
    /// UDP frames completed by the reassembler.
    pub udp_frames: u64,
    /// Serial bytes read.
    pub serial_bytes: u64,
    /// Serial frames delivered / dropped by the frame reader.
    pub serial_frames: u64,
    /// Serial frames dropped (CRC, COBS, overflow, tag).
    pub serial_bad: u64,
    /// Per-device statistics, by device id.
    pub devices: Vec<DeviceStats>,
}

impl HostStats {
    /// Multi-line display.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} frames, {} msgs | udp {} dgrams ({} refused) -> {} frames | serial {} B -> {} frames ({} bad) | undecodable {}, queue-full {}, sink errors {}, duplicates {} | devices: {} refused (table full), {} id mismatch, {} evicted (idle)",
            self.frames,
            self.messages,
            self.udp_datagrams,
            self.udp_rejected,
            self.udp_frames,
            self.serial_bytes,
            self.serial_frames,
            self.serial_bad,
            self.undecodable,
            self.queue_full,
            self.sink_errors,
            self.duplicates,
            self.devices_refused,
            self.device_mismatch,
            self.devices_evicted
        );
        for d in &self.devices {
            s.push_str("\n  ");
            s.push_str(&d.summary());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_capture_times_give_bounded_latencies() {
        // Capture times are whatever a device sends: 2^63 and u64::MAX wrapped `as i64`
        // subtraction (a panic in a debug build, garbage in a release one).
        let mut d = DeviceStats::new(1);
        let caps = [0, u64::MAX, 1 << 63, 5, u64::MAX - 1, 7, (1 << 63) + 1];
        for (i, &c) in caps.iter().enumerate() {
            d.on_frame(i as u32, 10, 1_000 + i as u64, c);
        }
        assert_eq!(d.frames, caps.len() as u64);
        assert!(d.latency_above_min_us(100.0).is_some());
        assert_eq!(d.latency_above_min_us(0.0), Some(0));
        let _ = d.summary();
    }

    #[test]
    fn device_reports_are_summed_without_overflow() {
        // Every per-stage p50 and drop counter at u32::MAX: the u32 sums overflowed (a panic
        // in a debug build, a wrapped number in a release one).
        let p = shapecast_wire::message::Percentiles {
            p50_us: u32::MAX,
            ..Default::default()
        };
        let l = shapecast_wire::message::StageLatency {
            capture: p,
            convert: p,
            preprocess: p,
            inference: p,
            decode: p,
            encode: p,
            send: p,
        };
        let mut d = DeviceStats::new(3);
        d.last_report = Some(DeviceReport {
            device_id: 3,
            uptime_ms: u64::MAX,
            fps_x100: u32::MAX,
            counters: Default::default(),
            drops: shapecast_wire::message::Drops {
                stale_frames: u32::MAX,
                link_busy: u32::MAX,
                send_errors: u32::MAX,
                camera_errors: u32::MAX,
            },
            latency: l,
        });
        let s = d.summary();
        let e2e = 7.0 * f64::from(u32::MAX) / 1e3;
        assert!(
            s.contains(&format!("e2e(capture..send) p50 {e2e:.1} ms")),
            "{s}"
        );
        assert!(
            s.contains(&format!("drops {}", 3 * u64::from(u32::MAX))),
            "{s}"
        );
    }

    #[test]
    fn render_shows_refused_and_mismatched_devices() {
        let s = HostStats {
            devices_refused: 17,
            device_mismatch: 5,
            devices_evicted: 2,
            ..HostStats::default()
        }
        .render();
        assert!(s.contains("17 refused (table full)"), "{s}");
        assert!(s.contains("5 id mismatch"), "{s}");
        assert!(s.contains("2 evicted"), "{s}");
    }
}
