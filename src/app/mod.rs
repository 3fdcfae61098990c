//! The command-line application: argument definitions and the commands. `main.rs` only
//! parses, sets up logging and maps errors to exit codes.

pub mod bench;
pub mod demo;
pub mod doctor;
pub mod info;
pub mod link;
pub mod replay;
pub mod run;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{LinkKind, Overrides, Precision, SourceKind};

/// Exit codes of the binary.
pub mod exit {
    /// Everything went well.
    pub const OK: u8 = 0;
    /// An error not covered below.
    pub const FAILURE: u8 = 1;
    /// Bad command line or configuration.
    pub const CONFIG: u8 = 2;
    /// The model is missing or breaks the contract.
    pub const MODEL: u8 = 3;
    /// The frame source could not be opened, or stopped on an error (not at its end).
    pub const SOURCE: u8 = 4;
    /// The link could not be opened.
    pub const LINK: u8 = 5;
    /// `doctor` found problems.
    pub const DOCTOR: u8 = 6;
}

/// An error with the exit code it should end the process with.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn new(code: u8, error: anyhow::Error) -> Self {
        Failure { code, error }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Self {
        Failure {
            code: exit::FAILURE,
            error,
        }
    }
}

/// Tags a result's error with an exit code.
pub trait ExitCode<T> {
    fn code(self, code: u8) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> ExitCode<T> for Result<T, E> {
    fn code(self, code: u8) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(code, e.into()))
    }
}

/// shapecast: single-view 3D reconstruction on the robot, streamed to a host.
#[derive(Debug, Parser)]
#[command(name = "shapecast", version, about, long_about = None)]
pub struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    pub log: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline from the configuration (camera or files -> model -> link).
    Run(RunArgs),
    /// Shipped model on shipped samples, over loopback UDP to an in-process receiver:
    /// writes PLY files and a contact sheet.
    Demo(DemoArgs),
    /// Print what the runtime reads from a model; refuse a model that breaks the contract.
    Info {
        /// The model (.onnx; for implicit models the encoder file).
        model: PathBuf,
    },
    /// Per-stage latency of the frame path on this machine.
    Bench(BenchCli),
    /// Check cameras, the model, the link and the CPU features tract will use.
    Doctor(ConfigArgs),
    /// Re-send a recorded serial stream (COBS frames) on the configured link.
    Replay(ReplayArgs),
}

/// Configuration layers and overrides shared by run, doctor and replay.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Folder with base.toml and the board overlays.
    #[arg(long, default_value = "firmware-config")]
    pub config_dir: PathBuf,
    /// Board overlay (<config-dir>/<board>.toml).
    #[arg(long)]
    pub board: Option<String>,
    /// Model file (model.path).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Frame source kind (source.kind).
    #[arg(long, value_parser = parse_source_kind)]
    pub source: Option<SourceKind>,
    /// Picture file/folder, raw dump or recording (source.path).
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Plays of a file source, 0 = forever (source.loops).
    #[arg(long)]
    pub loops: Option<u32>,
    /// Camera device (camera.device).
    #[arg(long)]
    pub camera: Option<String>,
    /// Precision expected of the model (model.precision).
    #[arg(long, value_parser = parse_precision)]
    pub precision: Option<Precision>,
    /// Inference threads (model.threads).
    #[arg(long)]
    pub threads: Option<u32>,
    /// Link kind (link.kind).
    #[arg(long, value_parser = parse_link_kind)]
    pub link: Option<LinkKind>,
    /// UDP receiver host:port (link.address).
    #[arg(long)]
    pub address: Option<String>,
    /// Serial device (link.serial_device).
    #[arg(long)]
    pub serial_device: Option<String>,
    /// Serial baud rate (link.baud).
    #[arg(long)]
    pub baud: Option<u32>,
    /// Pre-shared key file (link.psk_file).
    #[arg(long)]
    pub psk_file: Option<PathBuf>,
    /// Frames per second at most (limits.max_fps).
    #[arg(long)]
    pub max_fps: Option<f64>,
    /// Also save results as PLY here (output.save_dir).
    #[arg(long)]
    pub save_dir: Option<PathBuf>,
    /// Any key: --set wire.point_bits=12 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
}

impl ConfigArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            source_kind: self.source,
            source_path: self.path.clone(),
            loops: self.loops,
            camera_device: self.camera.clone(),
            model: self.model.clone(),
            precision: self.precision,
            threads: self.threads,
            link: self.link,
            address: self.address.clone(),
            serial_device: self.serial_device.clone(),
            baud: self.baud,
            psk_file: self.psk_file.clone(),
            max_fps: self.max_fps,
            save_dir: self.save_dir.clone(),
            set: self.set.clone(),
        }
    }
}

fn parse_source_kind(s: &str) -> Result<SourceKind, String> {
    match s {
        "camera" => Ok(SourceKind::Camera),
        "images" => Ok(SourceKind::Images),
        "raw" => Ok(SourceKind::Raw),
        "replay" => Ok(SourceKind::Replay),
        _ => Err(format!("`{s}`: expected camera | images | raw | replay")),
    }
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    match s {
        "auto" => Ok(Precision::Auto),
        "f32" => Ok(Precision::F32),
        "int8" => Ok(Precision::Int8),
        "f16" => Ok(Precision::F16),
        _ => Err(format!("`{s}`: expected auto | f32 | int8 | f16")),
    }
}

fn parse_link_kind(s: &str) -> Result<LinkKind, String> {
    match s {
        "udp" => Ok(LinkKind::Udp),
        "serial" => Ok(LinkKind::Serial),
        _ => Err(format!("`{s}`: expected udp | serial")),
    }
}

/// Options of the implicit head on the command line.
#[derive(Debug, Clone, Args)]
pub struct ImplicitArgs {
    /// Implicit head: cells per axis of the first level (power of two).
    #[arg(long, default_value_t = 16)]
    pub coarse: u32,
    /// Implicit head: cells per axis of the last level (power of two).
    #[arg(long, default_value_t = 64)]
    pub fine: u32,
}

impl ImplicitArgs {
    pub fn options(&self) -> crate::implicit::ImplicitOptions {
        crate::implicit::ImplicitOptions {
            coarse: self.coarse,
            fine: self.fine,
            ..crate::implicit::ImplicitOptions::default()
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Stop after this many frames.
    #[arg(long)]
    pub max_frames: Option<u64>,
    /// Device id sent in every message.
    #[arg(long, default_value_t = 1)]
    pub device_id: u32,
    #[command(flatten)]
    pub implicit: ImplicitArgs,
    /// Most points in a cloud for voxel/implicit heads.
    #[arg(long, default_value_t = 8192)]
    pub max_points: usize,
    /// Fusion models: reset the fused state after this many seconds without a frame.
    #[arg(long, default_value_t = 2.0)]
    pub state_timeout: f64,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// The model (default: the shipped models/default.onnx).
    #[arg(long, default_value = "models/default.onnx")]
    pub model: PathBuf,
    /// Folder of sample pictures.
    #[arg(long, default_value = "models/samples")]
    pub samples: PathBuf,
    /// Output folder for PLY files and the contact sheet.
    #[arg(long, default_value = "out/demo")]
    pub out: PathBuf,
    /// Bits per coordinate on the wire.
    #[arg(long, default_value_t = 12)]
    pub bits: u8,
    /// At most this many samples.
    #[arg(long, default_value_t = 16)]
    pub max_samples: usize,
    #[command(flatten)]
    pub implicit: ImplicitArgs,
}

#[derive(Debug, Clone, Args)]
pub struct BenchCli {
    /// The model.
    pub model: PathBuf,
    /// Frames measured.
    #[arg(long, default_value_t = 200)]
    pub frames: usize,
    /// Frames run before measuring.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Inference threads (tract multithreaded matrix products when > 1).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Folder of pictures (default models/samples; synthetic if absent).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Bits per coordinate on the wire.
    #[arg(long, default_value_t = 10)]
    pub bits: u8,
    /// Deliver the pictures in this camera pixel format (yuyv, uyvy, nv12, yuv420, rgb24,
    /// bgr24, grey, mjpeg), so the convert stage costs what that camera's frames cost.
    #[arg(long, default_value = "rgb24")]
    pub pixel_format: crate::source::PixelFormat,
    #[command(flatten)]
    pub implicit: ImplicitArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// The recording (the bytes a serial link carried: COBS frames, 0x00-delimited).
    pub recording: PathBuf,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Messages per second re-sent (0 = as fast as the link takes them).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
}

/// Runs a parsed command line.
pub fn dispatch(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Run(a) => run::run(&a),
        Command::Demo(a) => demo::demo(&a),
        Command::Info { model } => info::info(&model).code(exit::MODEL),
        Command::Bench(a) => bench::bench(&bench::BenchArgs {
            model: a.model,
            frames: a.frames,
            warmup: a.warmup,
            threads: a.threads,
            images: a.images,
            bits: a.bits,
            pixel_format: a.pixel_format,
            implicit: a.implicit.options(),
        })
        .code(exit::FAILURE),
        Command::Doctor(a) => doctor::doctor(&a),
        Command::Replay(a) => replay::replay(&a),
    }
}
