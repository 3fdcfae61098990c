//! MCAP recording of received frames, for Foxglove and ROS 2 (`ros2 bag info` / `play` with
//! the mcap storage plugin).
//!
//! Every channel is ROS 2 CDR (profile `ros2`, schemas `ros2msg`), as rosbag2 requires one
//! serialization format per bag. Geometry is `sensor_msgs/msg/PointCloud2`, so the 3D panels
//! of Foxglove and RViz show it as is; topic names are valid ROS 2 names (no part starts with
//! a digit):
//!
//! | topic | message |
//! |---|---|
//! | `/shapecast/dev<N>/cloud` | hypothesis 0 of a point-cloud frame (fields `x y z`, plus `confidence` (float32, 0..1) and `label` (uint8) when sent) |
//! | `/shapecast/dev<N>/cloud/h<k>` | hypothesis `k` >= 1 |
//! | `/shapecast/dev<N>/voxels` | occupied cell centres of a voxel frame |
//! | `/shapecast/dev<N>/mesh_vertices` | the vertices of a mesh frame (the triangles are in the PLY files) |
//! | `/shapecast/dev<N>/hello`, `/shapecast/dev<N>/stats` | `std_msgs/msg/String` holding the device's hello or stats message as JSON |
//!
//! Coordinates are the model's frame (`shapecast.frame`: object frame, y up; ROS uses z up,
//! so an RViz view shows the object lying on its side unless a transform turns it). The
//! header's `frame_id` is `shapecast_dev<N>`; no transform is published (set RViz's Fixed
//! Frame to it).
//!
//! Time: `log_time` is the host's wall clock at reception. The header `stamp` is the device's
//! capture time moved onto the host's clock by the smallest (reception - capture) offset seen
//! from that device since it last started (a capture time going backwards means a restart and
//! starts a new estimate): a one-way clock estimate, off by the fastest link latency and the
//! device clock's drift.
//!
//! Messages are written without chunks, straight into the data section: a recording cut short
//! (power loss, a full disk, a killed process) is readable up to its last complete message; a
//! finished one also has the summary and statistics. A write error (a full disk) is returned
//! for that message and the recording stops; later messages are counted as not recorded and
//! reported when the sink closes. `create` replaces an existing file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use shapecast_geom::ply::PlyData;
use shapecast_wire::message::Message;

use crate::sink::Sink;
use crate::{Event, HostError};

/// The ROS 2 message definition of `sensor_msgs/msg/PointCloud2` with its dependencies, in
/// the concatenated form `ros2 bag` writes into MCAP schemas.
pub const POINTCLOUD2_SCHEMA: &str = "\
std_msgs/Header header
uint32 height
uint32 width
PointField[] fields
bool is_bigendian
uint32 point_step
uint32 row_step
uint8[] data
bool is_dense
================================================================================
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
================================================================================
MSG: sensor_msgs/PointField
uint8 INT8    = 1
uint8 UINT8   = 2
uint8 INT16   = 3
uint8 UINT16  = 4
uint8 INT32   = 5
uint8 UINT32  = 6
uint8 FLOAT32 = 7
uint8 FLOAT64 = 8
string name
uint32 offset
uint8  datatype
uint32 count
";

/// `sensor_msgs/PointField` datatypes used here.
const FLOAT32: u8 = 7;
const UINT8: u8 = 2;

/// The ROS 2 message definition of `std_msgs/msg/String`.
pub const STRING_SCHEMA: &str = "string data\n";

/// Most channels one recording opens (devices x topics); messages for more are refused
/// with an error (bounded state whatever the senders do).
pub const MAX_CHANNELS: usize = 1024;

/// CDR (XCDR1, little endian) writer of one message: primitives aligned to their size,
/// counted from the end of the 4-byte encapsulation header.
struct Cdr(Vec<u8>);

impl Cdr {
    fn new(mut buf: Vec<u8>) -> Cdr {
        buf.clear();
        buf.extend_from_slice(&[0, 1, 0, 0]); // CDR_LE
        Cdr(buf)
    }
    fn align(&mut self, n: usize) {
        while (self.0.len() - 4) % n != 0 {
            self.0.push(0);
        }
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.align(4);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.align(4);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn string(&mut self, s: &str) {
        self.u32(s.len() as u32 + 1);
        self.0.extend_from_slice(s.as_bytes());
        self.0.push(0);
    }
}

/// Encodes `g` as a CDR `sensor_msgs/msg/PointCloud2` into `buf` (cleared first).
pub fn encode_pointcloud2(g: &PlyData, stamp_ns: u64, frame_id: &str, buf: Vec<u8>) -> Vec<u8> {
    let n = g.vertices.len();
    let conf = g.confidence.as_deref().filter(|c| c.len() == n);
    let labels = g.labels.as_deref().filter(|l| l.len() == n);
    let mut fields: Vec<(&str, u32, u8)> =
        vec![("x", 0, FLOAT32), ("y", 4, FLOAT32), ("z", 8, FLOAT32)];
    let mut step = 12u32;
    if conf.is_some() {
        fields.push(("confidence", step, FLOAT32));
        step += 4;
    }
    let label_at = step;
    if labels.is_some() {
        fields.push(("label", step, UINT8));
        step += 1;
    }
    let step = step.next_multiple_of(4);
    let mut c = Cdr::new(buf);
    // header
    c.i32((stamp_ns / 1_000_000_000).min(i32::MAX as u64) as i32);
    c.u32((stamp_ns % 1_000_000_000) as u32);
    c.string(frame_id);
    c.u32(1); // height: unordered cloud
    c.u32(n as u32);
    c.u32(fields.len() as u32);
    for (name, offset, datatype) in &fields {
        c.string(name);
        c.u32(*offset);
        c.u8(*datatype);
        c.u32(1);
    }
    c.u8(0); // is_bigendian
    c.u32(step);
    c.u32(step * n as u32);
    c.u32(step * n as u32);
    let start = c.0.len();
    c.0.resize(start + step as usize * n, 0);
    for (i, p) in g.vertices.iter().enumerate() {
        let o = &mut c.0[start + i * step as usize..start + (i + 1) * step as usize];
        for (k, v) in p.iter().enumerate() {
            o[4 * k..4 * k + 4].copy_from_slice(&v.to_le_bytes());
        }
        if let Some(conf) = conf {
            o[12..16].copy_from_slice(&conf[i].to_le_bytes());
        }
        if let Some(labels) = labels {
            o[label_at as usize] = labels[i];
        }
    }
    c.u8(1); // is_dense: no invalid points
    c.0
}

/// Writes every received frame into one MCAP file (see the module documentation), or into
/// any seekable writer.
pub struct McapSink<W: Write + Seek = BufWriter<File>> {
    path: PathBuf,
    writer: Option<mcap::Writer<W>>,
    cloud_schema: u16,
    string_schema: u16,
    channels: BTreeMap<(u32, String), u16>,
    /// Per device: smallest (host wall clock - capture time) µs since the device last
    /// started, and its last capture time.
    clocks: BTreeMap<u32, (i128, u64)>,
    sequence: u32,
    buf: Vec<u8>,
    messages: u64,
    /// Messages not recorded because the recording had stopped after an error.
    lost: u64,
}

impl<W: Write + Seek> std::fmt::Debug for McapSink<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McapSink")
            .field("path", &self.path)
            .field("open", &self.writer.is_some())
            .field("channels", &self.channels.len())
            .field("messages", &self.messages)
            .finish()
    }
}

fn mcap_err(path: &Path, e: mcap::McapError) -> HostError {
    HostError::Io(std::io::Error::other(format!(
        "MCAP {}: {}",
        path.display(),
        crate::error_chain(&e)
    )))
}

fn wall_us() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i128)
}

impl McapSink {
    /// Creates (truncates) the MCAP file at `path`.
    pub fn create(path: impl Into<PathBuf>) -> Result<Self, HostError> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = File::create(&path)?;
        McapSink::from_writer(BufWriter::new(file), path)
    }
}

impl<W: Write + Seek> McapSink<W> {
    /// Records into `w`; `name` names it in errors.
    pub fn from_writer(w: W, name: impl Into<PathBuf>) -> Result<Self, HostError> {
        let path = name.into();
        let mut w = mcap::WriteOptions::new()
            .compression(None)
            .use_chunks(false)
            .profile("ros2")
            .library(concat!("shapecast-host ", env!("CARGO_PKG_VERSION")))
            .create(w)
            .map_err(|e| mcap_err(&path, e))?;
        let cloud_schema = w
            .add_schema(
                "sensor_msgs/msg/PointCloud2",
                "ros2msg",
                POINTCLOUD2_SCHEMA.as_bytes(),
            )
            .map_err(|e| mcap_err(&path, e))?;
        let string_schema = w
            .add_schema("std_msgs/msg/String", "ros2msg", STRING_SCHEMA.as_bytes())
            .map_err(|e| mcap_err(&path, e))?;
        // the header on disk now: an unwritable file fails here, not at the first frame
        w.flush().map_err(|e| mcap_err(&path, e))?;
        Ok(McapSink {
            path,
            writer: Some(w),
            cloud_schema,
            string_schema,
            channels: BTreeMap::new(),
            clocks: BTreeMap::new(),
            sequence: 0,
            buf: Vec::new(),
            messages: 0,
            lost: 0,
        })
    }

    /// Messages written so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Messages not recorded because the recording had stopped after a write error.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// Writes the summary and closes the file (also done on drop, errors then only logged).
    pub fn finish(&mut self) -> Result<(), HostError> {
        if self.lost > 0 {
            log::warn!(
                "MCAP {}: {} messages not recorded after the write error",
                self.path.display(),
                self.lost
            );
            self.lost = 0;
        }
        if let Some(mut w) = self.writer.take() {
            w.finish().map_err(|e| mcap_err(&self.path, e))?;
            w.into_inner().flush()?;
        }
        Ok(())
    }

    fn write(
        &mut self,
        device: u32,
        topic: String,
        cloud: bool,
        log_ns: u64,
        data: &[u8],
    ) -> Result<(), HostError> {
        let Some(w) = self.writer.as_mut() else {
            // stopped after a write error (already reported): count, do not repeat it
            self.lost += 1;
            return Ok(());
        };
        let key = (device, topic);
        let id = match self.channels.get(&key) {
            Some(&id) => id,
            None => {
                if self.channels.len() >= MAX_CHANNELS {
                    return Err(HostError::Config(format!(
                        "MCAP recording: more than {MAX_CHANNELS} topics"
                    )));
                }
                let schema = if cloud {
                    self.cloud_schema
                } else {
                    self.string_schema
                };
                let id = w
                    .add_channel(schema, &key.1, "cdr", &BTreeMap::new())
                    .map_err(|e| mcap_err(&self.path, e));
                let id = match id {
                    Ok(id) => id,
                    Err(e) => {
                        self.writer = None;
                        return Err(e);
                    }
                };
                self.channels.insert(key, id);
                id
            }
        };
        self.sequence = self.sequence.wrapping_add(1);
        let header = mcap::records::MessageHeader {
            channel_id: id,
            sequence: self.sequence,
            log_time: log_ns,
            publish_time: log_ns,
        };
        if let Err(e) = w.write_to_known_channel(&header, data) {
            // the writer's state is unknown after a failed write: stop recording
            self.writer = None;
            return Err(mcap_err(&self.path, e));
        }
        self.messages += 1;
        Ok(())
    }
}

impl<W: Write + Seek + Send + 'static> Sink for McapSink<W> {
    fn on_message(&mut self, ev: &Event<'_>) -> Result<usize, HostError> {
        let now = wall_us();
        let log_ns = (now.max(0) as u64).saturating_mul(1000);
        let dev = ev.message.device_id();
        let Some(capture) = ev.message.capture_ts_us() else {
            let (name, json) = match ev.message {
                Message::Hello(h) => ("hello", serde_json::to_string(h)),
                Message::Stats(s) => ("stats", serde_json::to_string(s)),
                _ => return Ok(0),
            };
            let json = json.map_err(|e| HostError::Io(std::io::Error::other(e)))?;
            let mut c = Cdr::new(std::mem::take(&mut self.buf));
            c.string(&json);
            let r = self.write(
                dev,
                format!("/shapecast/dev{dev}/{name}"),
                false,
                log_ns,
                &c.0,
            );
            self.buf = c.0;
            r?;
            return Ok(0);
        };
        let clock = self.clocks.entry(dev).or_insert((i128::MAX, 0));
        if capture < clock.1 {
            // the device restarted (its capture clock went back): a new offset estimate
            clock.0 = i128::MAX;
        }
        clock.1 = capture;
        clock.0 = clock.0.min(now - i128::from(capture));
        // saturating: a device may send any capture time (u64::MAX µs overflows ns)
        let stamp_us = (i128::from(capture) + clock.0).clamp(0, i128::from(u64::MAX)) as u64;
        let stamp_ns = stamp_us.saturating_mul(1000);
        let frame = format!("shapecast_dev{dev}");
        for (k, g) in ev.geometry.iter().enumerate() {
            let topic = match ev.message {
                Message::PointCloud(_) if k == 0 => format!("/shapecast/dev{dev}/cloud"),
                Message::PointCloud(_) => format!("/shapecast/dev{dev}/cloud/h{k}"),
                Message::Voxels(_) => format!("/shapecast/dev{dev}/voxels"),
                _ => format!("/shapecast/dev{dev}/mesh_vertices"),
            };
            let data = encode_pointcloud2(g, stamp_ns, &frame, std::mem::take(&mut self.buf));
            let r = self.write(dev, topic, true, log_ns, &data);
            self.buf = data;
            r?;
        }
        Ok(0)
    }

    fn close(&mut self) -> Result<(), HostError> {
        self.finish()
    }
}

impl<W: Write + Seek> Drop for McapSink<W> {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            log::error!("closing {}: {e}", self.path.display());
        }
    }
}
