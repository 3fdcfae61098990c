//! Runtime configuration: firmware-config/base.toml plus a per-board overlay, CLI overrides.
//!
//! Layers, lowest first:
//! 1. `base.toml`: every key, with the pipeline defaults;
//! 2. `<board>.toml` (optional): only the keys that differ on that board, deep-merged over 1;
//! 3. [`Overrides`] from the command line: typed flags, then `--set key=value` items.
//!
//! The merged TOML is then deserialized into [`Config`] (unknown keys are errors) and
//! [`Config::validate`]d. Every error names the key and the layer (file or `command line`)
//! that set it. [`Effective`] keeps the result with its provenance and prints it at start-up.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::source::PixelFormat;

/// The base file compiled into the binary: [`Config::builtin`] parses it.
pub const BASE_TOML: &str = include_str!("../firmware-config/base.toml");

/// Where frames come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A V4L2 camera ([camera] section).
    Camera,
    /// One image file or a folder of images.
    Images,
    /// A dump of raw frames ([raw] section gives the shape).
    Raw,
    /// A recorded serial stream of COBS frames, re-sent as is.
    Replay,
}

/// Camera library used for `source.kind = "camera"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraBackend {
    /// The `v4l` crate (cargo feature `camera`).
    V4l,
    /// The `nokhwa` crate (cargo feature `camera-nokhwa`).
    Nokhwa,
}

/// How to run the model (`model.precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// In the form the model's `shapecast.precision` metadata names (f32, int8 or f16 file),
    /// with no check: the default.
    Auto,
    /// The model must be an f32 file.
    F32,
    /// The model must be an int8 file (docs/int8.md).
    Int8,
    /// An f32 (or f16) file run in f16 arithmetic (tract's `f32_to_f16` transform; for aarch64
    /// CPUs with `asimdhp`, see `shapecast doctor`).
    F16,
}

impl Precision {
    /// Checks a model whose metadata says `model` against this setting; returns whether the
    /// model is to be run through the f16 transform, or why it cannot run.
    pub fn plan(self, model: crate::meta::Precision) -> Result<bool, String> {
        use crate::meta::Precision as M;
        match (self, model) {
            (Precision::Auto, _)
            | (Precision::F32, M::F32)
            | (Precision::Int8, M::Int8)
            | (Precision::F16, M::F16) => Ok(false),
            (Precision::F16, M::F32) => Ok(true),
            (want, got) => Err(format!(
                "the model's shapecast.precision is {got:?} but model.precision asks for {want:?} \
                 (set model.precision = \"auto\" to run any model in its own form)"
            )),
        }
    }
}

/// Transport of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    Udp,
    Serial,
}

/// `[source]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub kind: SourceKind,
    /// images: file or folder; raw: dump file; replay: recorded stream. Unused for camera.
    pub path: PathBuf,
    /// Plays of a file source; 0 = forever.
    pub loops: u32,
}

/// `[raw]`: shape of the frames in a raw dump.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub width: u32,
    pub height: u32,
    pub format: PixelFormat,
}

/// `[camera]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    pub backend: CameraBackend,
    pub device: String,
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
}

/// `[model]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub path: PathBuf,
    pub precision: Precision,
    pub threads: u32,
}

/// `[link]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    pub kind: LinkKind,
    /// UDP receiver, `host:port` (validated as a socket address when `kind = "udp"`).
    pub address: String,
    /// UDP local bind address.
    pub bind: String,
    pub serial_device: String,
    pub baud: u32,
    /// Pre-shared key file; `""` in a file means none (so an overlay can switch it off).
    #[serde(default, with = "opt_path")]
    pub psk_file: Option<PathBuf>,
}

/// `[wire]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireConfig {
    /// Bits per quantized coordinate, 8..=16 (`shapecast_wire::pointcode::{MIN_BITS, MAX_BITS}`).
    pub point_bits: u8,
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Frames per second at most; 0 = unlimited.
    pub max_fps: f64,
    /// Link bytes per second at most; 0 = unlimited.
    pub max_link_bytes_per_s: u64,
}

/// `[stats]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    /// Seconds between statistics lines; 0 = never.
    pub interval_s: f64,
}

/// `[output]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Send results on the link.
    pub link: bool,
    /// Also save results as PLY here; `""` in a file means none.
    #[serde(default, with = "opt_path")]
    pub save_dir: Option<PathBuf>,
    /// Save every n-th result (>= 1).
    pub save_every: u32,
    /// Keep only the newest this many saved files, deleting older ones (a robot that saves
    /// for days must not fill its disk); 0 = keep all.
    pub save_keep: u32,
}

/// The whole runtime configuration (after merging and validation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: SourceConfig,
    pub raw: RawConfig,
    pub camera: CameraConfig,
    pub model: ModelConfig,
    pub link: LinkConfig,
    pub wire: WireConfig,
    pub limits: LimitsConfig,
    pub stats: StatsConfig,
    pub output: OutputConfig,
}

/// `Option<PathBuf>` written as a string, `""` meaning `None`.
mod opt_path {
    use std::path::PathBuf;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(p) => s.serialize_str(&p.to_string_lossy()),
            None => s.serialize_str(""),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<PathBuf>, D::Error> {
        let s = String::deserialize(d)?;
        Ok(if s.is_empty() {
            None
        } else {
            Some(PathBuf::from(s))
        })
    }
}

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `link.baud`.
    pub key: String,
    /// The layer that set the key (`base.toml` path, overlay path, `command line`), or
    /// `(missing)` when no layer did.
    pub origin: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: key `{}`: {}", self.origin, self.key, self.message)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {cause}")]
    Read {
        path: PathBuf,
        // in the message, not a separate `source()`: `{:#}` chains name it once
        cause: std::io::Error,
    },
    #[error("board overlay {path} not found (boards in {dir}: {available})")]
    NoSuchBoard {
        path: PathBuf,
        dir: PathBuf,
        available: String,
    },
    #[error("{origin}: TOML syntax error: {message}")]
    Syntax { origin: String, message: String },
    #[error("bad command-line override `{item}`: {reason}")]
    BadOverride { item: String, reason: String },
    #[error("{}", join_problems(.0))]
    Invalid(Vec<Problem>),
}

fn join_problems(p: &[Problem]) -> String {
    let lines: Vec<String> = p.iter().map(|p| p.to_string()).collect();
    if lines.len() == 1 {
        format!("invalid configuration: {}", lines[0])
    } else {
        format!("invalid configuration:\n  {}", lines.join("\n  "))
    }
}

impl ConfigError {
    /// The problems of an [`ConfigError::Invalid`] (empty for other errors).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(p) => p,
            _ => &[],
        }
    }
}

/// Command-line overrides, applied over the files. The typed fields are what the CLI offers as
/// flags; `set` takes any `key=value` (the value is parsed as a TOML value, and taken as a
/// string when it is not one, so `--set link.address=10.0.0.2:47800` works unquoted).
/// Typed fields apply first, then `set` in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    pub source_kind: Option<SourceKind>,
    pub source_path: Option<PathBuf>,
    pub loops: Option<u32>,
    pub camera_device: Option<String>,
    pub model: Option<PathBuf>,
    pub precision: Option<Precision>,
    pub threads: Option<u32>,
    pub link: Option<LinkKind>,
    pub address: Option<String>,
    pub serial_device: Option<String>,
    pub baud: Option<u32>,
    pub psk_file: Option<PathBuf>,
    pub max_fps: Option<f64>,
    pub save_dir: Option<PathBuf>,
    pub set: Vec<String>,
}

impl Overrides {
    /// The overrides as (dotted key, value) pairs, typed fields first.
    pub fn to_pairs(&self) -> Result<Vec<(String, toml::Value)>, ConfigError> {
        fn ser<T: Serialize>(key: &str, v: &T) -> Result<(String, toml::Value), ConfigError> {
            toml::Value::try_from(v)
                .map(|v| (key.to_owned(), v))
                .map_err(|e| ConfigError::BadOverride {
                    item: key.to_owned(),
                    reason: e.to_string(),
                })
        }
        fn path(p: &Path) -> toml::Value {
            toml::Value::String(p.to_string_lossy().into_owned())
        }
        let mut out = Vec::new();
        if let Some(v) = &self.source_kind {
            out.push(ser("source.kind", v)?);
        }
        if let Some(v) = &self.source_path {
            out.push(("source.path".into(), path(v)));
        }
        if let Some(v) = self.loops {
            out.push(("source.loops".into(), toml::Value::Integer(v.into())));
        }
        if let Some(v) = &self.camera_device {
            out.push(("camera.device".into(), toml::Value::String(v.clone())));
        }
        if let Some(v) = &self.model {
            out.push(("model.path".into(), path(v)));
        }
        if let Some(v) = &self.precision {
            out.push(ser("model.precision", v)?);
        }
        if let Some(v) = self.threads {
            out.push(("model.threads".into(), toml::Value::Integer(v.into())));
        }
        if let Some(v) = &self.link {
            out.push(ser("link.kind", v)?);
        }
        if let Some(v) = &self.address {
            out.push(("link.address".into(), toml::Value::String(v.clone())));
        }
        if let Some(v) = &self.serial_device {
            out.push(("link.serial_device".into(), toml::Value::String(v.clone())));
        }
        if let Some(v) = self.baud {
            out.push(("link.baud".into(), toml::Value::Integer(v.into())));
        }
        if let Some(v) = &self.psk_file {
            out.push(("link.psk_file".into(), path(v)));
        }
        if let Some(v) = self.max_fps {
            out.push(("limits.max_fps".into(), toml::Value::Float(v)));
        }
        if let Some(v) = &self.save_dir {
            out.push(("output.save_dir".into(), path(v)));
        }
        for item in &self.set {
            out.push(parse_set(item)?);
        }
        Ok(out)
    }
}

/// Parses one `key=value` item. The value is a TOML value when it parses as one (`3`, `true`,
/// `1.5`, `"text"`, `[1, 2]`), otherwise the raw text as a string.
pub fn parse_set(item: &str) -> Result<(String, toml::Value), ConfigError> {
    let bad = |reason: &str| ConfigError::BadOverride {
        item: item.to_owned(),
        reason: reason.to_owned(),
    };
    let (key, raw) = item
        .split_once('=')
        .ok_or_else(|| bad("expected key=value, e.g. link.baud=115200"))?;
    let key = key.trim();
    if key.is_empty()
        || key
            .split('.')
            .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(bad("the key must be dotted words, e.g. model.threads"));
    }
    let raw = raw.trim();
    let value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    };
    Ok((key.to_owned(), value))
}

/// A loaded configuration with where each key came from.
#[derive(Debug, Clone)]
pub struct Effective {
    pub config: Config,
    /// The layers merged, lowest first (file paths, then `command line` if any override).
    pub layers: Vec<String>,
    /// Dotted key -> layer that set it last.
    origins: BTreeMap<String, String>,
}

impl Effective {
    /// The layer that set `key` last (None for unknown keys).
    pub fn origin_of(&self, key: &str) -> Option<&str> {
        self.origins.get(key).map(String::as_str)
    }
}

impl fmt::Display for Effective {
    /// The effective configuration as TOML, with a comment after every key that a layer above
    /// the first one set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "# effective configuration: {}", self.layers.join(" + "))?;
        let base = self.layers.first().map(String::as_str).unwrap_or("");
        let mut section = String::new();
        for line in self.config.to_toml().lines() {
            let t = line.trim();
            if t.starts_with('[') && t.ends_with(']') {
                section = t.trim_matches(|c| c == '[' || c == ']').to_owned();
                writeln!(f, "{line}")?;
                continue;
            }
            let origin = t
                .split_once(" = ")
                .and_then(|(k, _)| self.origins.get(&format!("{section}.{}", k.trim())));
            match origin {
                Some(o) if o != base => writeln!(f, "{line}  # {o}")?,
                _ => writeln!(f, "{line}")?,
            }
        }
        Ok(())
    }
}

impl Config {
    /// The compiled-in base.toml, no overlay (for tests and tools that need defaults).
    pub fn builtin() -> Result<Config, ConfigError> {
        Ok(load_layers(
            &[("base.toml (built in)".into(), BASE_TOML.into())],
            &Overrides::default(),
        )?
        .config)
    }

    /// Loads `<dir>/base.toml`, the overlay `<dir>/<board>.toml` if a board is given, and the
    /// overrides.
    pub fn load(
        dir: &Path,
        board: Option<&str>,
        overrides: &Overrides,
    ) -> Result<Effective, ConfigError> {
        let base = dir.join("base.toml");
        let overlay = match board {
            Some(b) => {
                let p = dir.join(format!("{b}.toml"));
                if !p.is_file() || b.contains(['/', '\\']) || b == "base" {
                    return Err(ConfigError::NoSuchBoard {
                        path: p,
                        dir: dir.to_owned(),
                        available: list_boards(dir).join(", "),
                    });
                }
                Some(p)
            }
            None => None,
        };
        Config::load_files(&base, overlay.as_deref(), overrides)
    }

    /// Loads a base file, an optional overlay file, and the overrides.
    pub fn load_files(
        base: &Path,
        overlay: Option<&Path>,
        overrides: &Overrides,
    ) -> Result<Effective, ConfigError> {
        let mut layers = Vec::new();
        for p in std::iter::once(base).chain(overlay) {
            let text = read_text_capped(p, MAX_CONFIG_BYTES).map_err(|e| ConfigError::Read {
                path: p.to_owned(),
                cause: e,
            })?;
            layers.push((p.display().to_string(), text));
        }
        load_layers(&layers, overrides)
    }

    /// Checks values that types alone do not (ranges, addresses, consistency).
    /// Returns (dotted key, message) pairs; empty when the configuration is valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut bad = |k: &str, m: String| p.push((k.to_owned(), m));
        let c = self;
        if c.source.kind != SourceKind::Camera && c.source.path.as_os_str().is_empty() {
            bad(
                "source.path",
                "must name a file or folder for this source kind".into(),
            );
        }
        if c.source.kind == SourceKind::Raw {
            if c.raw.width == 0 || c.raw.height == 0 {
                bad(
                    "raw.width",
                    format!(
                        "frame size {}x{} must be non-zero",
                        c.raw.width, c.raw.height
                    ),
                );
            } else if c.raw.width > 16384 || c.raw.height > 16384 {
                bad(
                    "raw.width",
                    format!("frame size {}x{} exceeds 16384", c.raw.width, c.raw.height),
                );
            }
        }
        if c.source.kind == SourceKind::Camera {
            if c.camera.device.is_empty() {
                bad("camera.device", "must not be empty".into());
            }
            if !PixelFormat::CAMERA.contains(&c.camera.format) {
                bad(
                    "camera.format",
                    format!(
                        "`{}` is not a camera format (one of: {})",
                        c.camera.format,
                        PixelFormat::CAMERA.map(|f| f.name()).join(", ")
                    ),
                );
            }
            if c.camera.width == 0
                || c.camera.height == 0
                || c.camera.width > 16384
                || c.camera.height > 16384
            {
                bad(
                    "camera.width",
                    format!(
                        "frame size {}x{} must be within 1..=16384",
                        c.camera.width, c.camera.height
                    ),
                );
            }
            if c.camera.fps == 0 || c.camera.fps > 1000 {
                bad(
                    "camera.fps",
                    format!("{} is not within 1..=1000", c.camera.fps),
                );
            }
            if c.camera.reconnect_initial_ms == 0 {
                bad("camera.reconnect_initial_ms", "must be at least 1".into());
            }
            if c.camera.reconnect_max_ms < c.camera.reconnect_initial_ms {
                bad(
                    "camera.reconnect_max_ms",
                    format!(
                        "{} is below camera.reconnect_initial_ms ({})",
                        c.camera.reconnect_max_ms, c.camera.reconnect_initial_ms
                    ),
                );
            }
        }
        if c.source.kind != SourceKind::Replay && c.model.path.as_os_str().is_empty() {
            bad("model.path", "must not be empty".into());
        }
        if c.model.threads == 0 || c.model.threads > 256 {
            bad(
                "model.threads",
                format!("{} is not within 1..=256", c.model.threads),
            );
        }
        match c.link.kind {
            LinkKind::Udp => {
                if let Err(e) = c.link.address.parse::<SocketAddr>() {
                    bad(
                        "link.address",
                        format!("`{}` is not ip:port ({e})", c.link.address),
                    );
                }
                if let Err(e) = c.link.bind.parse::<SocketAddr>() {
                    bad(
                        "link.bind",
                        format!("`{}` is not ip:port ({e})", c.link.bind),
                    );
                }
            }
            LinkKind::Serial => {
                if c.link.serial_device.is_empty() {
                    bad("link.serial_device", "must not be empty".into());
                }
                if !(300..=12_000_000).contains(&c.link.baud) {
                    bad(
                        "link.baud",
                        format!("{} is not within 300..=12000000", c.link.baud),
                    );
                }
            }
        }
        let (lo, hi) = (
            shapecast_wire::pointcode::MIN_BITS,
            shapecast_wire::pointcode::MAX_BITS,
        );
        if !(lo..=hi).contains(&c.wire.point_bits) {
            bad(
                "wire.point_bits",
                format!(
                    "{} is not within {lo}..={hi} (the wire's point-code range)",
                    c.wire.point_bits
                ),
            );
        }
        if !c.limits.max_fps.is_finite() || c.limits.max_fps < 0.0 {
            bad(
                "limits.max_fps",
                format!("{} must be a finite number >= 0", c.limits.max_fps),
            );
        }
        if !c.stats.interval_s.is_finite() || c.stats.interval_s < 0.0 {
            bad(
                "stats.interval_s",
                format!("{} must be a finite number >= 0", c.stats.interval_s),
            );
        }
        if c.output.save_every == 0 {
            bad("output.save_every", "must be at least 1".into());
        }
        if !c.output.link && c.output.save_dir.is_none() {
            bad(
                "output.link",
                "results go nowhere: output.link is false and output.save_dir is empty".into(),
            );
        }
        p
    }

    /// The configuration as TOML text (all keys, in section order).
    pub fn to_toml(&self) -> String {
        // Serializing plain structs of strings, numbers and bools cannot fail.
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print configuration: {e}\n"))
    }
}

/// Longest configuration file read (bytes).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads a UTF-8 text file of at most `max` bytes. A longer one (`/dev/zero`, a dump given
/// by mistake) is an `InvalidData` error after reading `max + 1` bytes, not an allocation
/// the size of the file.
pub fn read_text_capped(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(max.saturating_add(1))
        .read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("longer than {max} bytes"),
        ));
    }
    Ok(text)
}

/// The board overlays present in `dir` (file stems other than `base`), sorted.
pub fn list_boards(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "toml").then_some(())?;
            let stem = p.file_stem()?.to_str()?.to_owned();
            (stem != "base").then_some(stem)
        })
        .collect();
    v.sort();
    v
}

/// Merges `(origin, toml text)` layers (lowest first), applies the overrides, deserializes and
/// validates. Exposed for tests and tools that hold configuration text in memory.
pub fn load_layers(
    layers: &[(String, String)],
    overrides: &Overrides,
) -> Result<Effective, ConfigError> {
    let mut merged = toml::Table::new();
    let mut origins = BTreeMap::new();
    let mut names = Vec::new();
    for (origin, text) in layers {
        let table: toml::Table =
            text.parse()
                .map_err(|e: toml::de::Error| ConfigError::Syntax {
                    origin: origin.clone(),
                    message: e.to_string().trim_end().to_owned(),
                })?;
        merge(&mut merged, table, "", origin, &mut origins);
        names.push(origin.clone());
    }
    let pairs = overrides.to_pairs()?;
    if !pairs.is_empty() {
        const CLI: &str = "command line";
        for (key, value) in pairs {
            set_dotted(&mut merged, &key, value).map_err(|reason| ConfigError::BadOverride {
                item: key.clone(),
                reason,
            })?;
            origins.insert(key, CLI.to_owned());
        }
        names.push(CLI.to_owned());
    }
    let origin_of = |key: &str| -> String {
        // The key itself, else the closest parent a layer set (a table set wholesale).
        let mut k = key;
        loop {
            if let Some(o) = origins.get(k) {
                return o.clone();
            }
            match k.rfind('.') {
                Some(i) => k = &k[..i],
                None => return "(missing)".to_owned(),
            }
        }
    };
    let config: Config = match serde_path_to_error::deserialize(toml::Value::Table(merged)) {
        Ok(c) => c,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.message().trim_end().to_owned();
            let key = match unknown_field(&msg) {
                Some(f) if path == "." || path.is_empty() => f.to_owned(),
                Some(f) if !path.ends_with(f) => format!("{path}.{f}"),
                _ => path,
            };
            let (origin, message) = if msg.starts_with("missing field") {
                (
                    "(missing)".to_owned(),
                    format!("{msg}: every layer lacks it (base.toml must set every key)"),
                )
            } else if unknown_field(&msg).is_some() {
                (origin_of(&key), format!("unknown key ({msg})"))
            } else {
                (origin_of(&key), msg.clone())
            };
            let key = match (msg.strip_prefix("missing field `"), key.as_str()) {
                (Some(rest), k) => {
                    let f = rest.split('`').next().unwrap_or("");
                    if k == "." || k.is_empty() {
                        f.to_owned()
                    } else {
                        format!("{k}.{f}")
                    }
                }
                _ => key,
            };
            return Err(ConfigError::Invalid(vec![Problem {
                key,
                origin,
                message,
            }]));
        }
    };
    let problems: Vec<Problem> = config
        .validate()
        .into_iter()
        .map(|(key, message)| Problem {
            origin: origin_of(&key),
            key,
            message,
        })
        .collect();
    if !problems.is_empty() {
        return Err(ConfigError::Invalid(problems));
    }
    Ok(Effective {
        config,
        layers: names,
        origins,
    })
}

/// The field name in serde's "unknown field `x`, expected ..." message.
fn unknown_field(msg: &str) -> Option<&str> {
    msg.strip_prefix("unknown field `")?.split('`').next()
}

/// Deep merge: tables merge key by key, any other value replaces. Records the origin of every
/// leaf (and of every table) under its dotted key.
fn merge(
    dst: &mut toml::Table,
    src: toml::Table,
    prefix: &str,
    origin: &str,
    origins: &mut BTreeMap<String, String>,
) {
    for (k, v) in src {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match (dst.get_mut(&k), v) {
            (Some(toml::Value::Table(d)), toml::Value::Table(s)) => {
                merge(d, s, &key, origin, origins);
            }
            (_, toml::Value::Table(s)) => {
                origins.insert(key.clone(), origin.to_owned());
                let mut fresh = toml::Table::new();
                merge(&mut fresh, s, &key, origin, origins);
                dst.insert(k, toml::Value::Table(fresh));
            }
            (_, v) => {
                origins.insert(key, origin.to_owned());
                dst.insert(k, v);
            }
        }
    }
}

/// Sets `a.b.c = value`, creating tables on the way; refuses to descend into a non-table.
fn set_dotted(root: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().ok_or_else(|| "empty key".to_owned())?;
    let mut t = root;
    let mut walked = String::new();
    for p in parts {
        if !walked.is_empty() {
            walked.push('.');
        }
        walked.push_str(p);
        let entry = t
            .entry(p.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = match entry {
            toml::Value::Table(t) => t,
            _ => return Err(format!("`{walked}` is a value, not a section")),
        };
    }
    if matches!(t.get(last), Some(toml::Value::Table(_))) {
        return Err(format!("`{key}` is a section, not a value"));
    }
    t.insert(last.to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> (String, String) {
        ("base.toml".into(), BASE_TOML.into())
    }

    fn overlay(text: &str) -> (String, String) {
        ("board.toml".into(), text.into())
    }

    fn load(layers: &[(String, String)], o: &Overrides) -> Result<Effective, ConfigError> {
        load_layers(layers, o)
    }

    fn firmware_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-config")
    }

    #[test]
    fn precision_plan_follows_the_model_unless_pinned() {
        use crate::meta::Precision as M;
        for m in [M::F32, M::Int8, M::F16] {
            assert_eq!(Precision::Auto.plan(m), Ok(false), "{m:?}");
        }
        assert_eq!(Precision::Int8.plan(M::Int8), Ok(false));
        assert_eq!(Precision::F16.plan(M::F32), Ok(true), "f32 file run in f16");
        assert_eq!(Precision::F16.plan(M::F16), Ok(false));
        let e = Precision::F32.plan(M::Int8).unwrap_err();
        assert!(e.contains("Int8") && e.contains("auto"), "{e}");
        assert!(Precision::Int8.plan(M::F32).is_err());
        assert!(Precision::F16.plan(M::Int8).is_err());
        let c: ModelConfig =
            toml::from_str("path = \"m.onnx\"\nprecision = \"auto\"\nthreads = 1\n").unwrap();
        assert_eq!(c.precision, Precision::Auto);
    }

    #[test]
    fn base_file_is_complete_and_valid() {
        let c = Config::builtin().unwrap();
        assert_eq!(c.source.kind, SourceKind::Camera);
        assert_eq!(c.camera.format, PixelFormat::Mjpeg);
        assert_eq!(c.link.kind, LinkKind::Udp);
        assert_eq!(c.link.psk_file, None, "\"\" means no PSK");
        assert_eq!(c.output.save_dir, None);
        assert!(c.validate().is_empty());
    }

    #[test]
    fn every_board_overlay_in_the_repo_loads() {
        let dir = firmware_dir();
        let boards = list_boards(&dir);
        assert!(boards.contains(&"x86-dev".to_owned()), "{boards:?}");
        for b in boards {
            Config::load(&dir, Some(&b), &Overrides::default())
                .unwrap_or_else(|e| panic!("board {b}: {e:#}"));
        }
    }

    #[test]
    fn x86_dev_overlay_deep_merges_over_base() {
        let e = Config::load(&firmware_dir(), Some("x86-dev"), &Overrides::default()).unwrap();
        let c = &e.config;
        // Set by the overlay.
        assert_eq!(c.source.kind, SourceKind::Images);
        assert_eq!(c.source.loops, 3);
        assert_eq!(c.camera.format, PixelFormat::Yuyv);
        assert_eq!(c.model.threads, 4);
        assert_eq!(c.output.save_dir, Some(PathBuf::from("out/x86-dev")));
        // Siblings in the same sections keep the base values (deep, not shallow, merge).
        assert_eq!(c.camera.width, 640);
        assert_eq!(c.camera.backend, CameraBackend::V4l);
        assert_eq!(c.model.precision, Precision::Auto);
        assert!(c.output.link);
        assert!(e
            .origin_of("source.kind")
            .unwrap()
            .ends_with("x86-dev.toml"));
        assert!(e.origin_of("camera.width").unwrap().ends_with("base.toml"));
        assert_eq!(e.layers.len(), 2);
    }

    #[test]
    fn overrides_apply_after_overlay_typed_then_set() {
        let o = Overrides {
            model: Some("m/int8.onnx".into()),
            precision: Some(Precision::Int8),
            link: Some(LinkKind::Serial),
            baud: Some(115_200),
            set: vec![
                "model.threads=3".into(),
                "link.serial_device=/dev/ttyACM0".into(),
                "limits.max_fps=2.5".into(),
                "link.baud=230400".into(),
                "output.save_dir=\"\"".into(),
            ],
            ..Overrides::default()
        };
        let e = load(
            &[base(), overlay("[model]\nthreads = 8\npath = \"x.onnx\"\n")],
            &o,
        )
        .unwrap();
        let c = &e.config;
        assert_eq!(c.model.path, PathBuf::from("m/int8.onnx"));
        assert_eq!(c.model.precision, Precision::Int8);
        assert_eq!(c.model.threads, 3);
        assert_eq!(c.link.kind, LinkKind::Serial);
        assert_eq!(c.link.baud, 230_400, "set items come after typed flags");
        assert_eq!(c.link.serial_device, "/dev/ttyACM0");
        assert_eq!(c.limits.max_fps, 2.5);
        assert_eq!(e.origin_of("model.threads"), Some("command line"));
        assert_eq!(e.layers, vec!["base.toml", "board.toml", "command line"]);
        let shown = e.to_string();
        assert!(shown.contains("threads = 3  # command line"), "{shown}");
        assert!(shown.contains("# effective configuration: base.toml + board.toml + command line"));
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let err = load(
            &[base(), overlay("[camera]\nfsp = 30\n")],
            &Overrides::default(),
        )
        .unwrap_err();
        let p = &err.problems()[0];
        assert_eq!(p.key, "camera.fsp");
        assert_eq!(p.origin, "board.toml");
        let text = err.to_string();
        assert!(
            text.contains("board.toml: key `camera.fsp`: unknown key"),
            "{text}"
        );

        let err = load(
            &[base(), overlay("[cammera]\nfps = 30\n")],
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(err.problems()[0].key, "cammera");
        assert_eq!(err.problems()[0].origin, "board.toml");

        let o = Overrides {
            set: vec!["model.thread=2".into()],
            ..Overrides::default()
        };
        let err = load(&[base()], &o).unwrap_err();
        assert_eq!(err.problems()[0].key, "model.thread");
        assert_eq!(err.problems()[0].origin, "command line");
    }

    #[test]
    fn wrong_type_and_bad_enum_name_the_key() {
        let err = load(
            &[base(), overlay("[link]\nbaud = \"fast\"\n")],
            &Overrides::default(),
        )
        .unwrap_err();
        let p = &err.problems()[0];
        assert_eq!(
            (p.key.as_str(), p.origin.as_str()),
            ("link.baud", "board.toml"),
            "{err}"
        );

        let err = load(
            &[base(), overlay("[link]\nkind = \"carrier-pigeon\"\n")],
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(err.problems()[0].key, "link.kind", "{err}");
        assert!(err.to_string().contains("carrier-pigeon"), "{err}");

        let err = load(
            &[base(), overlay("[raw]\nformat = \"yuv9\"\n")],
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(err.problems()[0].key, "raw.format", "{err}");

        let err = load(
            &[base(), overlay("[camera]\nwidth = -1\n")],
            &Overrides::default(),
        )
        .unwrap_err();
        assert_eq!(err.problems()[0].key, "camera.width", "{err}");
    }

    #[test]
    fn validation_reports_every_bad_value_with_its_origin() {
        let o = Overrides {
            set: vec!["wire.point_bits=17".into()],
            ..Overrides::default()
        };
        let err = load(
            &[
                base(),
                overlay("[link]\naddress = \"localhost\"\n[model]\nthreads = 0\n[limits]\nmax_fps = -1.0\n"),
            ],
            &o,
        )
        .unwrap_err();
        let got: Vec<(&str, &str)> = err
            .problems()
            .iter()
            .map(|p| (p.key.as_str(), p.origin.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("model.threads", "board.toml"),
                ("link.address", "board.toml"),
                ("wire.point_bits", "command line"),
                ("limits.max_fps", "board.toml"),
            ]
        );
        let text = err.to_string();
        assert!(
            text.contains("board.toml: key `link.address`: `localhost` is not ip:port"),
            "{text}"
        );
    }

    #[test]
    fn serial_link_checks_baud_not_address() {
        let o = Overrides {
            link: Some(LinkKind::Serial),
            set: vec!["link.address=nonsense".into(), "link.baud=12".into()],
            ..Overrides::default()
        };
        let err = load(&[base()], &o).unwrap_err();
        assert_eq!(err.problems().len(), 1, "{err}");
        assert_eq!(err.problems()[0].key, "link.baud");
    }

    #[test]
    fn camera_checks_apply_only_to_camera_sources() {
        let bad_cam = overlay("[camera]\nformat = \"bgr24\"\nfps = 0\n");
        let err = load(&[base(), bad_cam.clone()], &Overrides::default()).unwrap_err();
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["camera.format", "camera.fps"]);
        let o = Overrides {
            source_kind: Some(SourceKind::Images),
            ..Overrides::default()
        };
        load(&[base(), bad_cam], &o).unwrap();
    }

    #[test]
    fn missing_key_is_reported() {
        let text = BASE_TOML.replace("threads = 2\n", "");
        assert_ne!(text, BASE_TOML);
        let err = load(&[("base.toml".into(), text)], &Overrides::default()).unwrap_err();
        let p = &err.problems()[0];
        assert_eq!(
            (p.key.as_str(), p.origin.as_str()),
            ("model.threads", "(missing)"),
            "{err}"
        );
    }

    #[test]
    fn syntax_error_names_the_file() {
        let err = load(
            &[base(), overlay("[link\nbaud = 1\n")],
            &Overrides::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Syntax { origin, .. } if origin == "board.toml"),
            "{err}"
        );
    }

    #[test]
    fn set_parsing() {
        assert_eq!(
            parse_set("a.b=3").unwrap(),
            ("a.b".into(), toml::Value::Integer(3))
        );
        assert_eq!(
            parse_set(" a = true ").unwrap(),
            ("a".into(), toml::Value::Boolean(true))
        );
        assert_eq!(
            parse_set("link.address=10.0.0.2:47800").unwrap().1,
            toml::Value::String("10.0.0.2:47800".into())
        );
        assert_eq!(
            parse_set("p=\"x y\"").unwrap().1,
            toml::Value::String("x y".into())
        );
        assert_eq!(
            parse_set("p=a=b").unwrap().1,
            toml::Value::String("a=b".into())
        );
        for bad in ["novalue", "=3", "a..b=1", "a b=1", ".a=1"] {
            assert!(
                matches!(parse_set(bad), Err(ConfigError::BadOverride { .. })),
                "{bad}"
            );
        }
        // Setting below a value or replacing a section is refused.
        let o = Overrides {
            set: vec!["model.path.x=1".into()],
            ..Overrides::default()
        };
        assert!(matches!(
            load(&[base()], &o),
            Err(ConfigError::BadOverride { .. })
        ));
        let o = Overrides {
            set: vec!["model=1".into()],
            ..Overrides::default()
        };
        assert!(matches!(
            load(&[base()], &o),
            Err(ConfigError::BadOverride { .. })
        ));
    }

    #[test]
    fn to_toml_round_trips() {
        let e = Config::load(&firmware_dir(), Some("x86-dev"), &Overrides::default()).unwrap();
        let text = e.config.to_toml();
        let again = load_layers(&[("printed".into(), text)], &Overrides::default()).unwrap();
        assert_eq!(again.config, e.config);
        // And the printed form with comments is valid TOML too.
        let shown = e.to_string();
        let again = load_layers(&[("shown".into(), shown)], &Overrides::default()).unwrap();
        assert_eq!(again.config, e.config);
    }

    #[test]
    fn missing_board_lists_the_available_ones() {
        let err =
            Config::load(&firmware_dir(), Some("nosuchboard"), &Overrides::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("nosuchboard.toml not found"), "{text}");
        assert!(text.contains("x86-dev"), "{text}");
        assert!(Config::load(&firmware_dir(), Some("../base"), &Overrides::default()).is_err());
    }
}
