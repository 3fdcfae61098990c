//! `shapecast-host`: receives shapecast streams and converts point files.
//!
//! * `listen`: receive over UDP and/or serial, write PLY files, PNG pictures and/or an MCAP
//!   recording,
//!   print live stats.
//! * `encode` / `decode`: PLY/XYZ <-> wire point coding (a point-cloud message).
//! * `flood-bench`: receiver robustness benchmark under a datagram flood.
//!
//! Exit codes: 0 success; 1 error (bad input, a transport that cannot be opened, ...);
//! 2 a command-line usage error (clap) or, for `listen`, fewer frames than `--frames` before
//! it stopped; 3 for `listen`, frames were received but not all written (sink errors: a full
//! disk, an unwritable folder, an MCAP recording that stopped), and for `flood-bench`,
//! valid frames lost. Standard output closing (`| head`) ends a command quietly with the
//! code it would have had.

mod flood;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use shapecast_geom::ply;
use shapecast_host::convert::{encode_points, message_to_ply, MAX_MESSAGE_FILE};
use shapecast_host::receiver::SerialConfig;
use shapecast_host::sink::Tee;
use shapecast_host::{McapSink, PlyDirSink, PngDirSink, Receiver, ReceiverConfig};
use shapecast_wire::auth::Key;
use shapecast_wire::message::{decode_message, Message};
use shapecast_wire::pointcode::Bounds;

/// Exit code of `listen` when frames were received but not all written.
const EXIT_SINK_ERRORS: u8 = 3;

/// Shortest period between live statistics lines, seconds.
const MIN_STATS_PERIOD: f64 = 0.1;

/// Writes one line to standard output. `Ok(false)`: standard output is closed (a broken
/// pipe, e.g. `| head -1`); the caller stops printing and ends with its usual exit code.
pub(crate) fn say_line(args: std::fmt::Arguments<'_>) -> Result<bool> {
    let mut out = std::io::stdout().lock();
    let r = out
        .write_fmt(args)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e).context("writing to standard output"),
    }
}

/// `println!` that returns [`say_line`]'s result instead of panicking on a closed stdout.
macro_rules! say {
    ($($t:tt)*) => {
        $crate::say_line(format_args!($($t)*))
    };
}
pub(crate) use say;

/// A number of seconds: finite and not negative.
pub(crate) fn seconds(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|e| format!("`{s}`: {e}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("`{s}`: need a finite number of seconds >= 0"));
    }
    Ok(v)
}

#[derive(Debug, Parser)]
#[command(
    name = "shapecast-host",
    version,
    about = "Host receiver of shapecast streams"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Receive frames over UDP and/or serial and write them as PLY files.
    Listen(ListenArgs),
    /// Code a PLY/XYZ point file as a wire point-cloud message.
    Encode(EncodeArgs),
    /// Turn a wire point-cloud message (from `encode`) back into PLY/XYZ.
    Decode(DecodeArgs),
    /// Flood a listening receiver with random datagrams while sending valid
    /// frames; report peak memory and valid frames sent vs received.
    FloodBench(flood::FloodArgs),
}

#[derive(Debug, Args)]
struct ListenArgs {
    /// UDP address to listen on, e.g. 0.0.0.0:7878.
    #[arg(long)]
    udp: Option<SocketAddr>,
    /// Serial port to listen on, e.g. /dev/ttyUSB0.
    #[arg(long)]
    serial: Option<String>,
    /// Serial baud rate.
    #[arg(long, default_value_t = 921_600)]
    baud: u32,
    /// Output folder: <out>/<device>/<frame_id>[_h<k>].ply; an existing file is never
    /// replaced (a device restart's frames go to <frame_id>[_h<k>].<n>.ply).
    #[arg(long, short, default_value = "received")]
    out: PathBuf,
    /// Pre-shared key file (64 hex digits); only authenticated frames are accepted.
    #[arg(long)]
    psk: Option<PathBuf>,
    /// Stop after this many frames (all devices).
    #[arg(long)]
    frames: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_parser = seconds)]
    seconds: Option<f64>,
    /// Seconds between stats lines (0 = only at the end; at least 0.1 otherwise).
    #[arg(long, default_value_t = 1.0, value_parser = seconds)]
    stats_every: f64,
    /// Most devices tracked at once.
    #[arg(long, default_value_t = 64)]
    max_devices: usize,
    /// When the device table is full, a new device replaces one that has sent nothing for
    /// this many seconds.
    #[arg(long, default_value_t = 30.0, value_parser = seconds)]
    device_idle_secs: f64,
    /// Do not write PLY files (statistics only, or only the MCAP recording).
    #[arg(long)]
    no_write: bool,
    /// Also draw every frame as a PNG picture beside its PLY files
    /// (<out>/<device>/<frame_id>.png: two views of the first hypothesis, then the others).
    #[arg(long)]
    png: bool,
    /// Also record every frame into this MCAP file (ROS 2 PointCloud2 per hypothesis,
    /// hello and stats as std_msgs/String JSON; opens in Foxglove, CDR only for `ros2 bag`).
    #[arg(long)]
    mcap: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct EncodeArgs {
    /// Input point file (.ply, .xyz, .txt, .pts).
    input: PathBuf,
    /// Output message file (default: input with extension .scpc).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Quantization bits per axis (8..=16).
    #[arg(long, default_value_t = 12)]
    bits: u8,
    /// Quantization bounds "minx,miny,minz,maxx,maxy,maxz" (default: bounding box).
    #[arg(long)]
    bounds: Option<String>,
}

#[derive(Debug, Args)]
struct DecodeArgs {
    /// Input message file (from `encode`, or a received payload).
    input: PathBuf,
    /// Output file (.ply or .xyz; default: input with extension .ply).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Listen(a) => listen(&a),
        Cmd::Encode(a) => encode(&a),
        Cmd::Decode(a) => decode(&a),
        Cmd::FloodBench(a) => flood::run(&a),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load_key(path: Option<&Path>) -> Result<Option<Key>> {
    path.map(|p| Key::load(p).with_context(|| format!("reading PSK file {}", p.display())))
        .transpose()
}

fn listen(a: &ListenArgs) -> Result<ExitCode> {
    if a.udp.is_none() && a.serial.is_none() {
        bail!("nothing to listen on: give --udp ADDR and/or --serial PATH");
    }
    let cfg = ReceiverConfig {
        udp: a.udp,
        serial: a.serial.as_ref().map(|p| SerialConfig {
            path: p.clone(),
            baud: a.baud,
        }),
        key: load_key(a.psk.as_deref())?,
        max_devices: a.max_devices,
        // saturating float-to-int cast: 1e30 s is "never"
        device_idle_timeout_ms: (a.device_idle_secs * 1000.0) as u64,
        ..ReceiverConfig::default()
    };
    let ply = if a.no_write {
        None
    } else {
        Some(
            PlyDirSink::new(&a.out)
                .with_context(|| format!("creating output folder {}", a.out.display()))?,
        )
    };
    let png = if a.png {
        Some(
            PngDirSink::new(&a.out)
                .with_context(|| format!("creating output folder {}", a.out.display()))?,
        )
    } else {
        None
    };
    let mcap = match &a.mcap {
        Some(p) => Some(
            McapSink::create(p).with_context(|| format!("creating MCAP file {}", p.display()))?,
        ),
        None => None,
    };
    let rx = Receiver::start(cfg, Tee(Tee(ply, png), mcap)).context("starting the receiver")?;
    let stop = rx.stop_flag();
    ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    // false once standard output is closed (`| head`): the receiver then stops as on Ctrl-C
    let mut stdout_open = true;
    if let Some(addr) = rx.udp_addr() {
        stdout_open = say!("listening on udp {addr}")?;
    }
    if let (Some(p), true) = (&a.serial, stdout_open) {
        stdout_open = say!("listening on serial {p} @ {} baud", a.baud)?;
    }
    let stats_every = if a.stats_every > 0.0 {
        a.stats_every.max(MIN_STATS_PERIOD)
    } else {
        0.0
    };
    let t0 = Instant::now();
    let mut next_stats = stats_every;
    while stdout_open {
        std::thread::sleep(Duration::from_millis(20));
        let el = t0.elapsed().as_secs_f64();
        if rx.stopping() {
            stdout_open = say!("interrupted")?;
            break;
        }
        if a.frames.is_some_and(|n| rx.frames() >= n) {
            break;
        }
        if a.seconds.is_some_and(|s| el >= s) {
            break;
        }
        if stats_every > 0.0 && el >= next_stats {
            // late (a slow machine): the next line one period from now, not a burst
            next_stats = (next_stats + stats_every).max(el);
            stdout_open = say!("[{el:7.1}s] {}", rx.stats().render())?;
        }
    }
    let el = t0.elapsed().as_secs_f64();
    let s = rx.stop();
    if stdout_open {
        say!("[{el:7.1}s] final: {}", s.render())?;
    }
    let mut code = ExitCode::SUCCESS;
    if let Some(n) = a.frames {
        if s.frames < n {
            let _ = writeln!(
                std::io::stderr(),
                "received {} of {n} frames before stopping",
                s.frames
            );
            code = ExitCode::from(2);
        }
    }
    if s.sink_errors > 0 {
        let _ = writeln!(
            std::io::stderr(),
            "{} sink errors: not every received frame was written (see the warnings above)",
            s.sink_errors
        );
        code = ExitCode::from(EXIT_SINK_ERRORS);
    }
    Ok(code)
}

fn parse_bounds(s: &str) -> Result<Bounds> {
    let v: Vec<f32> = s
        .split(',')
        .map(|t| t.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing bounds `{s}`"))?;
    let [a, b, c, d, e, f] = v[..] else {
        bail!("bounds need 6 numbers: minx,miny,minz,maxx,maxy,maxz");
    };
    let bounds = Bounds {
        min: [a, b, c],
        max: [d, e, f],
    };
    if (0..3).any(|i| bounds.min[i].partial_cmp(&bounds.max[i]) != Some(std::cmp::Ordering::Less)) {
        bail!("bounds must have min < max on every axis");
    }
    Ok(bounds)
}

fn encode(a: &EncodeArgs) -> Result<ExitCode> {
    let data = ply::load(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let bounds = a.bounds.as_deref().map(parse_bounds).transpose()?;
    let enc = encode_points(&data, a.bits, bounds, 0, 0)
        .with_context(|| format!("coding {} points at {} bits", data.vertices.len(), a.bits))?;
    let out = a
        .output
        .clone()
        .unwrap_or_else(|| a.input.with_extension("scpc"));
    std::fs::write(&out, &enc.message).with_context(|| format!("writing {}", out.display()))?;
    let n = enc.points.max(1) as f64;
    // a closed stdout (`| head`) ends quietly: the file is written
    let _ = say!(
        "{} points, {} bits: point code {} B ({:.3} B/pt, {:.2} bits/pt), message {} B ({:.3} B/pt) -> {}",
        enc.points,
        a.bits,
        enc.point_code_len,
        enc.point_code_len as f64 / n,
        enc.point_code_len as f64 * 8.0 / n,
        enc.message.len(),
        enc.message.len() as f64 / n,
        out.display()
    )? && say!(
        "bounds min {:?} max {:?}; raw float32 xyz would be {} B (ratio {:.2}x)",
        enc.bounds.min,
        enc.bounds.max,
        enc.points * 12,
        (enc.points * 12) as f64 / enc.point_code_len.max(1) as f64
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Reads a message file of at most [`MAX_MESSAGE_FILE`] bytes.
fn read_message_file(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let too_big = || {
        anyhow::anyhow!(
            "{} is larger than {} MiB: not a shapecast message (see MAX_MESSAGE_FILE)",
            path.display(),
            MAX_MESSAGE_FILE >> 20
        )
    };
    let f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let len = f
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if len > MAX_MESSAGE_FILE {
        return Err(too_big());
    }
    let mut bytes = Vec::new();
    // bounded also when the size was unknown or grows (a pipe, a file being written)
    f.take(MAX_MESSAGE_FILE + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    if bytes.len() as u64 > MAX_MESSAGE_FILE {
        return Err(too_big());
    }
    Ok(bytes)
}

fn decode(a: &DecodeArgs) -> Result<ExitCode> {
    let bytes = read_message_file(&a.input)?;
    let msg = decode_message(&bytes).with_context(|| format!("decoding {}", a.input.display()))?;
    let Message::PointCloud(p) = &msg else {
        // Voxels and meshes decode too; Hello/Stats have no geometry.
        if msg.frame_id().is_none() {
            bail!(
                "{} holds a control message, not geometry",
                a.input.display()
            );
        }
        return write_geometry(a, &msg, 0);
    };
    let bits = p.bits;
    write_geometry(a, &msg, bits)
}

fn write_geometry(a: &DecodeArgs, msg: &Message<'_>, bits: u8) -> Result<ExitCode> {
    let geo = message_to_ply(msg).context("decoding the geometry")?;
    let out = a
        .output
        .clone()
        .unwrap_or_else(|| a.input.with_extension("ply"));
    let xyz = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("xyz") || e.eq_ignore_ascii_case("txt"));
    let mut stdout_open = true;
    for (k, g) in geo.iter().enumerate() {
        let path = if k == 0 {
            out.clone()
        } else {
            let stem = out
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let ext = out
                .extension()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.with_file_name(format!("{stem}_h{k}.{ext}"))
        };
        if xyz {
            let f = std::fs::File::create(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            ply::write_xyz(f, &g.vertices)
                .with_context(|| format!("writing {}", path.display()))?;
        } else {
            ply::save_ply(&path, g).with_context(|| format!("writing {}", path.display()))?;
        }
        // a closed stdout (`| head`): quiet from here on, every file still written
        stdout_open = stdout_open
            && say!(
                "hypothesis {k}: {} points{}{} -> {}",
                g.vertices.len(),
                if g.faces.is_empty() {
                    String::new()
                } else {
                    format!(", {} faces", g.faces.len())
                },
                if bits > 0 {
                    format!(" ({bits} bits)")
                } else {
                    String::new()
                },
                path.display()
            )?;
    }
    Ok(ExitCode::SUCCESS)
}
