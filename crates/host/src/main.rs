//! `shapecast-host`: receives shapecast streams and converts point files.
//!
//! * `listen`: receive over UDP and/or serial, write PLY files, PNG pictures and/or an MCAP
//!   recording,
//!   print live stats.
//! * `encode` / `decode`: PLY/XYZ <-> wire point coding (a point-cloud message).
//! * `flood-bench`: receiver robustness benchmark under a datagram flood.

mod flood;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use shapecast_geom::ply;
use shapecast_host::convert::{encode_points, message_to_ply};
use shapecast_host::receiver::SerialConfig;
use shapecast_host::sink::Tee;
use shapecast_host::{McapSink, PlyDirSink, PngDirSink, Receiver, ReceiverConfig};
use shapecast_wire::auth::Key;
use shapecast_wire::message::{decode_message, Message};
use shapecast_wire::pointcode::Bounds;

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
    /// Output folder: <out>/<device>/<frame_id>[_h<k>].ply.
    #[arg(long, short, default_value = "received")]
    out: PathBuf,
    /// Pre-shared key file (64 hex digits); only authenticated frames are accepted.
    #[arg(long)]
    psk: Option<PathBuf>,
    /// Stop after this many frames (all devices).
    #[arg(long)]
    frames: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    seconds: Option<f64>,
    /// Seconds between stats lines (0 = only at the end).
    #[arg(long, default_value_t = 1.0)]
    stats_every: f64,
    /// Most devices tracked at once.
    #[arg(long, default_value_t = 64)]
    max_devices: usize,
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
            eprintln!("error: {e:#}");
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
    if let Some(addr) = rx.udp_addr() {
        println!("listening on udp {addr}");
    }
    if let Some(p) = &a.serial {
        println!("listening on serial {p} @ {} baud", a.baud);
    }
    let t0 = Instant::now();
    let mut next_stats = a.stats_every;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let el = t0.elapsed().as_secs_f64();
        if rx.stopping() {
            println!("interrupted");
            break;
        }
        if a.frames.is_some_and(|n| rx.frames() >= n) {
            break;
        }
        if a.seconds.is_some_and(|s| el >= s) {
            break;
        }
        if a.stats_every > 0.0 && el >= next_stats {
            next_stats += a.stats_every;
            println!("[{el:7.1}s] {}", rx.stats().render());
        }
    }
    let el = t0.elapsed().as_secs_f64();
    let s = rx.stop();
    println!("[{el:7.1}s] final: {}", s.render());
    if let Some(n) = a.frames {
        if s.frames < n {
            eprintln!("received {} of {n} frames before stopping", s.frames);
            return Ok(ExitCode::from(2));
        }
    }
    Ok(ExitCode::SUCCESS)
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
    println!(
        "{} points, {} bits: point code {} B ({:.3} B/pt, {:.2} bits/pt), message {} B ({:.3} B/pt) -> {}",
        enc.points,
        a.bits,
        enc.point_code_len,
        enc.point_code_len as f64 / n,
        enc.point_code_len as f64 * 8.0 / n,
        enc.message.len(),
        enc.message.len() as f64 / n,
        out.display()
    );
    println!(
        "bounds min {:?} max {:?}; raw float32 xyz would be {} B (ratio {:.2}x)",
        enc.bounds.min,
        enc.bounds.max,
        enc.points * 12,
        (enc.points * 12) as f64 / enc.point_code_len.max(1) as f64
    );
    Ok(ExitCode::SUCCESS)
}

fn decode(a: &DecodeArgs) -> Result<ExitCode> {
    let bytes =
        std::fs::read(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
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
        println!(
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
        );
    }
    Ok(ExitCode::SUCCESS)
}
