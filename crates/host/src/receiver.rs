//! The in-process receiver: transport threads -> bounded queue -> worker.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver as ChanRx, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shapecast_geom::ply::PlyData;
use shapecast_link::serial::{open_port, SerialReceiver};
use shapecast_link::udp::UdpReceiver;
use shapecast_wire::auth::Key;
use shapecast_wire::message::{decode_message, Message};

use crate::convert::message_to_ply;
use crate::stats::{DeviceStats, HostStats};
use crate::{HostError, Sink};

/// Frames reassembled at once over UDP (all devices together).
pub const UDP_SLOTS: usize = 16;
/// Largest UDP frame accepted (bytes).
pub const UDP_MAX_FRAME: usize = 512 * 1024;
/// Largest serial frame body accepted (bytes).
pub const SERIAL_MAX_FRAME: usize = 256 * 1024;
/// Stack of the reader threads: room for building the reassembler before it
/// is boxed (virtual memory; only touched pages count).
const READER_STACK: usize = 3 * UDP_SLOTS * UDP_MAX_FRAME + (4 << 20);

/// A serial port to listen on.
#[derive(Debug, Clone)]
pub struct SerialConfig {
    /// Device path (`/dev/ttyUSB0`, a pty, ...).
    pub path: String,
    /// Baud rate.
    pub baud: u32,
}

/// What to listen on and how.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// UDP address to bind (port 0 picks a free port; see [`Receiver::udp_addr`]).
    pub udp: Option<SocketAddr>,
    /// Serial port.
    pub serial: Option<SerialConfig>,
    /// Pre-shared key: when set, only authenticated frames are accepted.
    pub key: Option<Key>,
    /// Most devices tracked. When the table is full, a message of a new device evicts the
    /// device seen least recently if it has been idle longer than `device_idle_timeout_ms`;
    /// otherwise the message is dropped (counted in `devices_refused`).
    pub max_devices: usize,
    /// How long a device must have sent nothing before a new device may take its place in
    /// a full table (ms). Without a PSK anyone can claim device ids; this keeps spoofed ids
    /// from locking real devices out for the life of the receiver.
    pub device_idle_timeout_ms: u64,
    /// Incomplete UDP frames are dropped after this long (ms).
    pub reassembly_timeout_ms: u64,
    /// Frames waiting for the worker; more are dropped (counted).
    pub queue: usize,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            udp: None,
            serial: None,
            key: None,
            max_devices: 64,
            device_idle_timeout_ms: 30_000,
            reassembly_timeout_ms: 1000,
            queue: 32,
        }
    }
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A UDP sender.
    Udp(SocketAddr),
    /// The serial port.
    Serial,
}

/// One decoded message, as given to a [`Sink`].
#[derive(Debug)]
pub struct Event<'a> {
    /// Transport it arrived on.
    pub source: Source,
    /// The message (borrowing `payload`).
    pub message: &'a Message<'a>,
    /// The encoded message bytes as received.
    pub payload: &'a [u8],
    /// Its geometry: one entry per hypothesis for point clouds, one for
    /// voxels (occupied cell centres) and meshes, none for Hello/Stats.
    pub geometry: &'a [PlyData],
    /// When the payload was complete, µs since the receiver started.
    pub rx_us: u64,
}

struct Job {
    source: Source,
    udp_device: Option<u32>,
    payload: Vec<u8>,
    rx_us: u64,
}

#[derive(Debug, Default)]
struct Shared {
    stats: HostStats,
    devices: BTreeMap<u32, DeviceStats>,
}

/// A running receiver. Stop it with [`Receiver::stop`] (or drop it).
#[derive(Debug)]
pub struct Receiver {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    udp_addr: Option<SocketAddr>,
    epoch: Instant,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Receiver {
    /// Binds/opens the transports and starts the threads. Every decoded
    /// message goes to `sink` on the worker thread.
    pub fn start(cfg: ReceiverConfig, sink: impl Sink) -> Result<Self, HostError> {
        if cfg.udp.is_none() && cfg.serial.is_none() {
            return Err(HostError::Config(
                "nothing to listen on: give a UDP address and/or a serial port".into(),
            ));
        }
        if cfg.max_devices == 0 || cfg.queue == 0 {
            return Err(HostError::Config(
                "max_devices and queue must be > 0".into(),
            ));
        }
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let epoch = Instant::now();
        // `me` is declared before the channel so that on an early error
        // return `tx` is dropped first and the worker can end before `me`'s
        // drop joins it.
        let mut me = Receiver {
            shared: Arc::clone(&shared),
            stop: Arc::clone(&stop),
            threads: Vec::new(),
            udp_addr: None,
            epoch,
        };
        let (tx, rx) = mpsc::sync_channel::<Job>(cfg.queue);
        // Worker first, so readers always have somewhere to send.
        {
            let shared = Arc::clone(&shared);
            let table = DeviceTable {
                max: cfg.max_devices,
                idle_us: cfg.device_idle_timeout_ms.saturating_mul(1000),
            };
            let h = std::thread::Builder::new()
                .name("host-worker".into())
                .spawn(move || worker(&rx, sink, &shared, table))?;
            me.threads.push(h);
        }
        if let Some(addr) = cfg.udp {
            let (ready_tx, ready_rx) = mpsc::channel();
            let (shared, stop, tx, key) = (
                Arc::clone(&shared),
                Arc::clone(&stop),
                tx.clone(),
                cfg.key.clone(),
            );
            let timeout = cfg.reassembly_timeout_ms;
            let h = std::thread::Builder::new()
                .name("host-udp".into())
                .stack_size(READER_STACK)
                .spawn(move || {
                    match UdpReceiver::<UDP_SLOTS, UDP_MAX_FRAME>::bind(addr, key, timeout) {
                        Ok(r) => {
                            let _ = ready_tx.send(r.local_addr().map_err(HostError::from));
                            udp_loop(r, &tx, &shared, &stop, epoch);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                        }
                    }
                })?;
            me.threads.push(h);
            match ready_rx.recv() {
                Ok(Ok(a)) => me.udp_addr = Some(a),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(HostError::Config("UDP thread died while binding".into())),
            }
        }
        if let Some(sc) = cfg.serial.clone() {
            // Open once here so that a wrong path fails `start`.
            let port = open_port(&sc.path, sc.baud, Duration::from_millis(50))?;
            let (shared, stop, tx, key) = (
                Arc::clone(&shared),
                Arc::clone(&stop),
                tx.clone(),
                cfg.key.clone(),
            );
            let h = std::thread::Builder::new()
                .name("host-serial".into())
                .stack_size(2 * SERIAL_MAX_FRAME + (4 << 20))
                .spawn(move || serial_loop(port, &sc, key, &tx, &shared, &stop, epoch))?;
            me.threads.push(h);
        }
        drop(tx); // the worker ends when every reader is gone
        Ok(me)
    }

    /// The bound UDP address, if listening on UDP.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp_addr
    }

    /// Time since start.
    pub fn elapsed(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Snapshot of the statistics.
    pub fn stats(&self) -> HostStats {
        let sh = lock(&self.shared);
        let mut s = sh.stats.clone();
        s.devices = sh.devices.values().cloned().collect();
        s
    }

    /// Frame messages processed so far (all devices).
    pub fn frames(&self) -> u64 {
        lock(&self.shared).stats.frames
    }

    /// Waits until `n` frame messages were processed or `timeout` passed;
    /// returns whether they were.
    pub fn wait_frames(&self, n: u64, timeout: Duration) -> bool {
        let t0 = Instant::now();
        while self.frames() < n {
            if t0.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// Whether [`stop`](Self::stop) was requested (e.g. by a signal handler
    /// holding [`stop_flag`](Self::stop_flag)).
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The flag that stops the receiver when set.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// Stops the threads (queued frames are still processed) and returns
    /// the final statistics.
    pub fn stop(mut self) -> HostStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn enqueue(tx: &SyncSender<Job>, shared: &Mutex<Shared>, job: Job) {
    match tx.try_send(job) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => lock(shared).stats.queue_full += 1,
        Err(TrySendError::Disconnected(_)) => {}
    }
}

fn udp_loop(
    mut r: UdpReceiver<UDP_SLOTS, UDP_MAX_FRAME>,
    tx: &SyncSender<Job>,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
    epoch: Instant,
) {
    let mut last_publish = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let res = r.poll(4096, |f, from| {
            let job = Job {
                source: Source::Udp(from),
                udp_device: Some(f.device_id),
                payload: f.payload.to_vec(),
                rx_us: epoch.elapsed().as_micros() as u64,
            };
            enqueue(tx, shared, job);
        });
        if let Err(e) = res {
            log::warn!("UDP receive failed: {e}");
            std::thread::sleep(Duration::from_millis(20));
        }
        if last_publish.elapsed() >= Duration::from_millis(100) {
            publish_udp(&r, shared);
            last_publish = Instant::now();
        }
    }
    publish_udp(&r, shared);
}

fn publish_udp(r: &UdpReceiver<UDP_SLOTS, UDP_MAX_FRAME>, shared: &Mutex<Shared>) {
    let s = r.stats();
    let mut sh = lock(shared);
    sh.stats.udp_datagrams = s.datagrams;
    sh.stats.udp_rejected = s.rejected + s.oversize;
    sh.stats.udp_frames = s.reassembler.complete;
}

fn serial_loop(
    port: Box<dyn serialport::SerialPort>,
    sc: &SerialConfig,
    key: Option<Key>,
    tx: &SyncSender<Job>,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
    epoch: Instant,
) {
    let mut port = Some(port);
    let (mut base_bytes, mut base_ok, mut base_bad) = (0u64, 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let p = match port.take() {
            Some(p) => p,
            None => match open_port(&sc.path, sc.baud, Duration::from_millis(50)) {
                Ok(p) => p,
                Err(e) => {
                    log::warn!("reopening {}: {e}", sc.path);
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
            },
        };
        let mut rx: SerialReceiver<_, { SERIAL_MAX_FRAME + 64 }> =
            SerialReceiver::new(p, key.clone());
        let mut last_publish = Instant::now();
        let publish = |rx: &SerialReceiver<_, { SERIAL_MAX_FRAME + 64 }>| {
            let s = rx.stats();
            let mut sh = lock(shared);
            sh.stats.serial_bytes = base_bytes + rx.bytes_read();
            sh.stats.serial_frames = base_ok + s.frames_ok;
            sh.stats.serial_bad =
                base_bad + s.crc_errors + s.cobs_errors + s.overflows + s.bad_tags + s.replays;
        };
        while !stop.load(Ordering::Relaxed) {
            let res = rx.poll(|r| {
                if let Ok(payload) = r {
                    let job = Job {
                        source: Source::Serial,
                        udp_device: None,
                        payload: payload.to_vec(),
                        rx_us: epoch.elapsed().as_micros() as u64,
                    };
                    enqueue(tx, shared, job);
                }
            });
            if last_publish.elapsed() >= Duration::from_millis(100) {
                publish(&rx);
                last_publish = Instant::now();
            }
            if let Err(e) = res {
                log::warn!("serial {} read failed: {e}; reopening", sc.path);
                std::thread::sleep(Duration::from_millis(200));
                break;
            }
        }
        publish(&rx);
        let s = rx.stats();
        base_bytes += rx.bytes_read();
        base_ok += s.frames_ok;
        base_bad += s.crc_errors + s.cobs_errors + s.overflows + s.bad_tags + s.replays;
    }
}

/// Bounds of the device table.
#[derive(Debug, Clone, Copy)]
struct DeviceTable {
    max: usize,
    idle_us: u64,
}

impl Shared {
    /// Makes sure `dev` has an entry, seen at `now_us`; false when the table is full of
    /// devices seen within the idle timeout (the message is then refused, counted).
    fn admit(&mut self, dev: u32, now_us: u64, table: DeviceTable) -> bool {
        if let Some(d) = self.devices.get_mut(&dev) {
            d.last_seen_us = d.last_seen_us.max(now_us);
            return true;
        }
        if self.devices.len() >= table.max {
            // the least recently seen device, if idle for longer than the timeout
            let idle = self
                .devices
                .values()
                .min_by_key(|d| d.last_seen_us)
                .filter(|d| now_us.saturating_sub(d.last_seen_us) > table.idle_us)
                .map(|d| d.device_id);
            let Some(old) = idle else {
                self.stats.devices_refused += 1;
                return false;
            };
            log::info!("device {old} idle, evicted from the full device table for device {dev}");
            self.devices.remove(&old);
            self.stats.devices_evicted += 1;
        }
        let mut d = DeviceStats::new(dev);
        d.last_seen_us = now_us;
        self.devices.insert(dev, d);
        true
    }
}

fn worker(rx: &ChanRx<Job>, mut sink: impl Sink, shared: &Mutex<Shared>, table: DeviceTable) {
    while let Ok(job) = rx.recv() {
        let msg = match decode_message(&job.payload) {
            Ok(m) => m,
            Err(e) => {
                log::debug!("undecodable payload ({} bytes): {e}", job.payload.len());
                lock(shared).stats.undecodable += 1;
                continue;
            }
        };
        let dev = msg.device_id();
        if job.udp_device.is_some_and(|d| d != dev) {
            lock(shared).stats.device_mismatch += 1;
            continue;
        }
        if !lock(shared).admit(dev, job.rx_us, table) {
            continue;
        }
        if let (Some(fid), Some(ts)) = (msg.frame_id(), msg.capture_ts_us()) {
            let mut sh = lock(shared);
            let copy = sh
                .devices
                .get_mut(&dev)
                .is_some_and(|d| d.is_copy(fid, ts, &job.payload));
            if copy {
                sh.stats.duplicates += 1;
                log::debug!("device {dev}: frame {fid} delivered again, dropped");
                continue;
            }
        }
        let geometry = match message_to_ply(&msg) {
            Ok(g) => g,
            Err(e) => {
                log::warn!("device {dev}: bad frame contents: {e}");
                let mut sh = lock(shared);
                if let Some(d) = sh.devices.get_mut(&dev) {
                    d.bad += 1;
                }
                continue;
            }
        };
        let ev = Event {
            source: job.source,
            message: &msg,
            payload: &job.payload,
            geometry: &geometry,
            rx_us: job.rx_us,
        };
        let written = sink.on_message(&ev);
        let mut sh = lock(shared);
        sh.stats.messages += 1;
        let is_frame = msg.frame_id().is_some();
        if is_frame {
            sh.stats.frames += 1;
        }
        if written.is_err() {
            sh.stats.sink_errors += 1;
        }
        let Some(d) = sh.devices.get_mut(&dev) else {
            continue;
        };
        match &written {
            Ok(n) => d.files += *n as u64,
            Err(e) => log::warn!("device {dev}: sink failed: {}", crate::error_chain(e)),
        }
        match &msg {
            Message::Hello(h) => {
                d.control += 1;
                d.model_id = Some(h.model_id.to_string());
            }
            Message::Stats(s) => {
                d.control += 1;
                d.last_report = Some(*s);
            }
            Message::PointCloud(p) => {
                d.points += geometry.first().map_or(0, |g| g.vertices.len() as u64);
                d.on_frame(p.frame_id, job.payload.len(), job.rx_us, p.capture_ts_us);
            }
            Message::Voxels(v) => {
                d.points += geometry.first().map_or(0, |g| g.vertices.len() as u64);
                d.on_frame(v.frame_id, job.payload.len(), job.rx_us, v.capture_ts_us);
            }
            Message::Mesh(m) => {
                d.points += geometry.first().map_or(0, |g| g.vertices.len() as u64);
                d.on_frame(m.frame_id, job.payload.len(), job.rx_us, m.capture_ts_us);
            }
        }
    }
    if let Err(e) = sink.close() {
        log::warn!("closing the sink: {}", crate::error_chain(&e));
        lock(shared).stats.sink_errors += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_evicts_only_the_longest_idle_device_past_the_timeout() {
        let table = DeviceTable {
            max: 2,
            idle_us: 1_000,
        };
        let mut sh = Shared::default();
        assert!(sh.admit(10, 0, table));
        assert!(sh.admit(11, 500, table));
        // full, nobody idle for more than 1 ms: refused
        assert!(!sh.admit(12, 900, table));
        assert_eq!(sh.stats.devices_refused, 1);
        // device 10 seen again: now 11 is the least recently seen
        assert!(sh.admit(10, 1_200, table));
        assert!(!sh.admit(12, 1_500, table), "11 idle 1.0 ms, not more");
        assert!(sh.admit(12, 1_501, table));
        assert_eq!(sh.stats.devices_evicted, 1);
        assert_eq!(sh.devices.keys().copied().collect::<Vec<_>>(), [10, 12]);
        // an older timestamp (another transport's job) never moves last_seen back
        assert!(sh.admit(12, 100, table));
        assert_eq!(sh.devices[&12].last_seen_us, 1_501);
    }
}
