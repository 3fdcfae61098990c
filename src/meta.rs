//! The model contract's metadata (docs/model-contract.md, section 2): parsing and checking.
//!
//! Pure functions over a key -> value map, so every rule is unit-tested without a model file.

use std::collections::BTreeMap;
use std::fmt;

/// Contract version this runtime speaks.
pub const CONTRACT_VERSION: u32 = 1;

/// Everything that can be wrong with a model, each naming the item.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ContractError {
    /// A required metadata key is absent.
    #[error("metadata key \"{0}\" is missing")]
    Missing(String),
    /// A metadata key holds a value that does not parse or is out of range.
    #[error("metadata key \"{key}\" must hold {expected}, found \"{found}\"")]
    Bad {
        key: String,
        expected: String,
        found: String,
    },
    /// A tensor is absent, or has the wrong shape or type.
    #[error("tensor \"{name}\": {problem}")]
    Tensor { name: String, problem: String },
    /// Something about the model file itself (unreadable, not ONNX, second part missing).
    #[error("{0}")]
    File(String),
}

fn bad(key: &str, expected: impl Into<String>, found: &str) -> ContractError {
    ContractError::Bad {
        key: key.to_owned(),
        expected: expected.into(),
        found: truncate(found),
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= 80 {
        s.to_owned()
    } else {
        let mut end = 77;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

/// Which decoder the runtime applies to the network outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    Points,
    Voxels,
    Implicit,
    Mesh,
}

/// Channel order of the `image` input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    Rgb,
    Bgr,
    Gray,
}

impl Color {
    /// Channels of the `image` input.
    pub fn channels(self) -> usize {
        match self {
            Color::Gray => 1,
            _ => 3,
        }
    }
}

/// How a frame of another aspect becomes the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crop {
    Center,
    Stretch,
    Letterbox,
}

/// Coordinate frame of the outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CoordFrame {
    Object,
    Camera,
}

/// Units of output coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    Normalized,
    Metres,
    Millimetres,
}

/// Weights/compute form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    Int8,
    F16,
}

/// SDF or occupancy-logit decoder output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImplicitKind {
    Sdf,
    Occupancy,
}

/// Which part of a two-part model a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Encoder,
    Decoder,
}

/// Axis-aligned box of the outputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub min: [f32; 3],
    pub max: [f32; 3],
}

impl Bounds {
    /// Size along each axis.
    pub fn extent(&self) -> [f32; 3] {
        [
            self.max[0] - self.min[0],
            self.max[1] - self.min[1],
            self.max[2] - self.min[2],
        ]
    }
}

/// The `image` input description.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub width: usize,
    pub height: usize,
    pub color: Color,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub crop: Crop,
}

/// Per-head keys of an implicit model.
#[derive(Debug, Clone, PartialEq)]
pub struct ImplicitMeta {
    /// Decoder file relative to the encoder's folder (encoder part only).
    pub decoder: Option<String>,
    pub kind: ImplicitKind,
    pub level: f32,
    pub latent: usize,
    pub part: Part,
}

/// Per-head keys of a mesh model.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshMeta {
    pub template: Vec<[f32; 3]>,
    pub faces: Vec<[u32; 3]>,
}

/// What the runtime read from a model's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMeta {
    pub contract: u32,
    pub head: Head,
    pub model_id: String,
    pub input: InputSpec,
    pub frame: CoordFrame,
    pub units: Units,
    pub bounds: Bounds,
    pub precision: Precision,
    /// Class names (index = label id); empty when the model has no labels.
    pub classes: Vec<String>,
    /// points: (N, K).
    pub points: Option<(usize, usize)>,
    /// voxels: (R, probability threshold).
    pub voxels: Option<(usize, f32)>,
    /// voxels + fusion: views the recurrent model was trained to fuse.
    pub fusion_views: Option<usize>,
    pub implicit: Option<ImplicitMeta>,
    pub mesh: Option<MeshMeta>,
    /// Every other `shapecast.*` key (provenance), as read.
    pub other: BTreeMap<String, String>,
}

/// Upper limits that keep a hostile file from making the runtime allocate without bound.
const MAX_SIDE: usize = 4096;
const MAX_POINTS: usize = 1 << 20;
const MAX_RES: usize = 256;
const MAX_LATENT: usize = 1 << 16;
const MAX_TEMPLATE: usize = 1 << 20;

struct Keys<'a> {
    map: &'a BTreeMap<String, String>,
}

impl Keys<'_> {
    fn opt(&self, key: &str) -> Option<&str> {
        self.map.get(key).map(|s| s.trim())
    }

    fn req(&self, key: &str) -> Result<&str, ContractError> {
        self.opt(key)
            .ok_or_else(|| ContractError::Missing(key.to_owned()))
    }

    fn usize_in(&self, key: &str, lo: usize, hi: usize) -> Result<usize, ContractError> {
        let v = self.req(key)?;
        parse_usize_in(key, v, lo, hi)
    }

    fn choice<T: Copy>(&self, key: &str, options: &[(&str, T)]) -> Result<T, ContractError> {
        let v = self.req(key)?;
        choose(key, v, options)
    }
}

fn parse_usize_in(key: &str, v: &str, lo: usize, hi: usize) -> Result<usize, ContractError> {
    match v.parse::<usize>() {
        Ok(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(bad(key, format!("an integer in {lo}..={hi}"), v)),
    }
}

fn choose<T: Copy>(key: &str, v: &str, options: &[(&str, T)]) -> Result<T, ContractError> {
    options
        .iter()
        .find(|(name, _)| *name == v)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            bad(key, format!("one of {}", names.join(" | ")), v)
        })
}

fn parse_floats(key: &str, v: &str, what: &str) -> Result<Vec<f32>, ContractError> {
    if v.is_empty() {
        return Ok(Vec::new());
    }
    v.split(',')
        .map(|s| match s.trim().parse::<f32>() {
            Ok(x) if x.is_finite() => Ok(x),
            _ => Err(bad(key, what, v)),
        })
        .collect()
}

fn floats_n(key: &str, v: &str, n: usize) -> Result<Vec<f32>, ContractError> {
    let what = if n == 1 {
        "1 number".to_owned()
    } else {
        format!("{n} numbers")
    };
    let xs = parse_floats(key, v, &what)?;
    if xs.len() != n {
        return Err(bad(key, what, v));
    }
    Ok(xs)
}

impl ModelMeta {
    /// Parses and checks the metadata of one model file. `map` holds the `metadata_props`
    /// (keys without the `onnx.metadata_props.` prefix).
    pub fn parse(map: &BTreeMap<String, String>) -> Result<ModelMeta, ContractError> {
        let k = Keys { map };
        let contract = k.usize_in("shapecast.contract", 0, u32::MAX as usize)? as u32;
        if contract != CONTRACT_VERSION {
            return Err(bad(
                "shapecast.contract",
                format!("{CONTRACT_VERSION} (the contract version this runtime speaks)"),
                k.req("shapecast.contract")?,
            ));
        }
        let head = k.choice(
            "shapecast.head",
            &[
                ("points", Head::Points),
                ("voxels", Head::Voxels),
                ("implicit", Head::Implicit),
                ("mesh", Head::Mesh),
            ],
        )?;
        let model_id = k.req("shapecast.model_id")?.to_owned();
        if model_id.is_empty() || model_id.len() > 32 || !model_id.is_ascii() {
            return Err(bad(
                "shapecast.model_id",
                "1 to 32 ASCII characters",
                &model_id,
            ));
        }
        let width = k.usize_in("shapecast.input.width", 1, MAX_SIDE)?;
        let height = k.usize_in("shapecast.input.height", 1, MAX_SIDE)?;
        let color = k.choice(
            "shapecast.input.color",
            &[
                ("rgb", Color::Rgb),
                ("bgr", Color::Bgr),
                ("gray", Color::Gray),
            ],
        )?;
        let c = color.channels();
        let mean = floats_n("shapecast.input.mean", k.req("shapecast.input.mean")?, c)?;
        let std = floats_n("shapecast.input.std", k.req("shapecast.input.std")?, c)?;
        // Normalising is `(pixel / 255 - mean) / std`: a std so small that 1 / (255 std) or
        // mean / std overflows would feed infinities to the network.
        if std
            .iter()
            .zip(&mean)
            .any(|(s, m)| *s == 0.0 || !(1.0 / (255.0 * s)).is_finite() || !(m / s).is_finite())
        {
            return Err(bad(
                "shapecast.input.std",
                format!("{c} non-zero numbers, none so small that 1 / (255 std) or mean / std overflows"),
                k.req("shapecast.input.std")?,
            ));
        }
        let crop = k.choice(
            "shapecast.input.crop",
            &[
                ("center", Crop::Center),
                ("stretch", Crop::Stretch),
                ("letterbox", Crop::Letterbox),
            ],
        )?;
        let frame = k.choice(
            "shapecast.frame",
            &[
                ("object", CoordFrame::Object),
                ("camera", CoordFrame::Camera),
            ],
        )?;
        let units = k.choice(
            "shapecast.units",
            &[
                ("normalized", Units::Normalized),
                ("metres", Units::Metres),
                ("millimetres", Units::Millimetres),
            ],
        )?;
        let bv = k.req("shapecast.bounds")?;
        let b = floats_n("shapecast.bounds", bv, 6)?;
        let bounds = Bounds {
            min: [b[0], b[1], b[2]],
            max: [b[3], b[4], b[5]],
        };
        // the wire quantizes in these bounds (an infinite extent puts every point on the
        // min corner, and the host dequantizes to inf/NaN)
        let usable = shapecast_wire::pointcode::Bounds {
            min: bounds.min,
            max: bounds.max,
        }
        .is_usable();
        if !usable {
            return Err(bad(
                "shapecast.bounds",
                "xmin,ymin,zmin,xmax,ymax,zmax with min < max and a finite max - min on every axis",
                bv,
            ));
        }
        let precision = k.choice(
            "shapecast.precision",
            &[
                ("f32", Precision::F32),
                ("int8", Precision::Int8),
                ("f16", Precision::F16),
            ],
        )?;
        let classes: Vec<String> = match k.opt("shapecast.classes") {
            None => Vec::new(),
            Some(v) => {
                let names: Vec<String> = v.split(',').map(|s| s.trim().to_owned()).collect();
                if names.iter().any(String::is_empty) || names.len() > 256 {
                    return Err(bad(
                        "shapecast.classes",
                        "1 to 256 non-empty comma-separated class names",
                        v,
                    ));
                }
                names
            }
        };

        let mut meta = ModelMeta {
            contract,
            head,
            model_id,
            input: InputSpec {
                width,
                height,
                color,
                mean,
                std,
                crop,
            },
            frame,
            units,
            bounds,
            precision,
            classes,
            points: None,
            voxels: None,
            fusion_views: None,
            implicit: None,
            mesh: None,
            other: BTreeMap::new(),
        };

        match head {
            Head::Points => {
                let n = k.usize_in("shapecast.points", 1, MAX_POINTS)?;
                let kk = match k.opt("shapecast.hypotheses") {
                    None => 1,
                    Some(v) => parse_usize_in("shapecast.hypotheses", v, 1, 64)?,
                };
                if n * kk > MAX_POINTS {
                    return Err(bad(
                        "shapecast.hypotheses",
                        format!("K with K x N <= {MAX_POINTS}"),
                        &kk.to_string(),
                    ));
                }
                meta.points = Some((n, kk));
            }
            Head::Voxels => {
                let r = k.usize_in("shapecast.voxels.resolution", 2, MAX_RES)?;
                let t = match k.opt("shapecast.voxels.threshold") {
                    None => 0.5,
                    Some(v) => match v.parse::<f32>() {
                        Ok(t) if t > 0.0 && t < 1.0 => t,
                        _ => {
                            return Err(bad(
                                "shapecast.voxels.threshold",
                                "a probability in (0, 1)",
                                v,
                            ))
                        }
                    },
                };
                meta.voxels = Some((r, t));
            }
            Head::Implicit => {
                let part = k.choice(
                    "shapecast.part",
                    &[("encoder", Part::Encoder), ("decoder", Part::Decoder)],
                )?;
                let decoder = match part {
                    Part::Encoder => {
                        let d = k.req("shapecast.parts.decoder")?;
                        let p = std::path::Path::new(d);
                        if d.is_empty()
                            || p.is_absolute()
                            || p.components()
                                .any(|c| matches!(c, std::path::Component::ParentDir))
                        {
                            return Err(bad(
                                "shapecast.parts.decoder",
                                "a relative path inside the model's folder",
                                d,
                            ));
                        }
                        Some(d.to_owned())
                    }
                    Part::Decoder => None,
                };
                let kind = k.choice(
                    "shapecast.implicit.kind",
                    &[
                        ("sdf", ImplicitKind::Sdf),
                        ("occupancy", ImplicitKind::Occupancy),
                    ],
                )?;
                let lv = k.req("shapecast.implicit.level")?;
                let level = floats_n("shapecast.implicit.level", lv, 1)?[0];
                let latent = k.usize_in("shapecast.implicit.latent", 1, MAX_LATENT)?;
                meta.implicit = Some(ImplicitMeta {
                    decoder,
                    kind,
                    level,
                    latent,
                    part,
                });
            }
            Head::Mesh => {
                let tv = k.req("shapecast.mesh.template")?;
                let t = parse_floats("shapecast.mesh.template", tv, "x,y,z triples (V*3 numbers)")?;
                if t.is_empty() || t.len() % 3 != 0 || t.len() / 3 > MAX_TEMPLATE {
                    return Err(bad(
                        "shapecast.mesh.template",
                        "x,y,z triples (V*3 numbers, V >= 1)",
                        tv,
                    ));
                }
                let template: Vec<[f32; 3]> =
                    t.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
                let fv = k.req("shapecast.mesh.faces")?;
                let idx: Result<Vec<u32>, _> =
                    fv.split(',').map(|s| s.trim().parse::<u32>()).collect();
                let what = format!(
                    "a,b,c triangles of vertex indices < {} (the template's V)",
                    template.len()
                );
                let idx = idx.map_err(|_| bad("shapecast.mesh.faces", what.clone(), fv))?;
                if idx.len() % 3 != 0 || idx.iter().any(|&i| i as usize >= template.len()) {
                    return Err(bad("shapecast.mesh.faces", what, fv));
                }
                let faces = idx.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
                meta.mesh = Some(MeshMeta { template, faces });
            }
        }
        if let Some(v) = k.opt("shapecast.fusion.views") {
            if head != Head::Voxels {
                return Err(bad(
                    "shapecast.fusion.views",
                    "nothing: fusion is defined for voxel models only",
                    v,
                ));
            }
            meta.fusion_views = Some(parse_usize_in("shapecast.fusion.views", v, 1, 1024)?);
        }
        const KNOWN: &[&str] = &[
            "shapecast.contract",
            "shapecast.head",
            "shapecast.model_id",
            "shapecast.input.width",
            "shapecast.input.height",
            "shapecast.input.color",
            "shapecast.input.mean",
            "shapecast.input.std",
            "shapecast.input.crop",
            "shapecast.frame",
            "shapecast.units",
            "shapecast.bounds",
            "shapecast.precision",
            "shapecast.classes",
            "shapecast.points",
            "shapecast.hypotheses",
            "shapecast.voxels.resolution",
            "shapecast.voxels.threshold",
            "shapecast.fusion.views",
            "shapecast.parts.decoder",
            "shapecast.implicit.kind",
            "shapecast.implicit.level",
            "shapecast.implicit.latent",
            "shapecast.part",
            "shapecast.mesh.template",
            "shapecast.mesh.faces",
        ];
        for (key, v) in map {
            if !KNOWN.contains(&key.as_str()) {
                meta.other.insert(key.clone(), v.clone());
            }
        }
        Ok(meta)
    }
}

impl fmt::Display for Head {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Head::Points => "points",
            Head::Voxels => "voxels",
            Head::Implicit => "implicit",
            Head::Mesh => "mesh",
        })
    }
}

impl fmt::Display for ModelMeta {
    /// The human summary printed by `shapecast info`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.input;
        writeln!(f, "contract      {}", self.contract)?;
        writeln!(f, "head          {}", self.head)?;
        writeln!(f, "model_id      {}", self.model_id)?;
        writeln!(
            f,
            "input         image [1, {}, {}, {}] {:?}, crop {:?}, mean {:?}, std {:?}",
            i.color.channels(),
            i.height,
            i.width,
            i.color,
            i.crop,
            i.mean,
            i.std
        )?;
        writeln!(
            f,
            "outputs       frame {:?}, units {:?}, bounds min {:?} max {:?}",
            self.frame, self.units, self.bounds.min, self.bounds.max
        )?;
        writeln!(f, "precision     {:?}", self.precision)?;
        if !self.classes.is_empty() {
            writeln!(f, "classes       {}", self.classes.join(", "))?;
        }
        if let Some((n, k)) = self.points {
            writeln!(
                f,
                "points        N = {n} per hypothesis, K = {k} hypotheses"
            )?;
        }
        if let Some((r, t)) = self.voxels {
            writeln!(f, "voxels        R = {r}, threshold p > {t}")?;
        }
        if let Some(v) = self.fusion_views {
            writeln!(
                f,
                "fusion        state carried across frames, trained on {v} views"
            )?;
        }
        if let Some(im) = &self.implicit {
            writeln!(
                f,
                "implicit      {:?} part, {:?} level {}, latent Z = {}{}",
                im.part,
                im.kind,
                im.level,
                im.latent,
                im.decoder
                    .as_ref()
                    .map(|d| format!(", decoder {d}"))
                    .unwrap_or_default()
            )?;
        }
        if let Some(m) = &self.mesh {
            writeln!(
                f,
                "mesh          template V = {}, faces F = {}",
                m.template.len(),
                m.faces.len()
            )?;
        }
        for (k, v) in &self.other {
            writeln!(
                f,
                "{:<13} {}",
                k.trim_start_matches("shapecast."),
                truncate(v)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> BTreeMap<String, String> {
        [
            ("shapecast.contract", "1"),
            ("shapecast.head", "points"),
            ("shapecast.model_id", "test"),
            ("shapecast.input.width", "64"),
            ("shapecast.input.height", "48"),
            ("shapecast.input.color", "rgb"),
            ("shapecast.input.mean", "0.5,0.5,0.5"),
            ("shapecast.input.std", "0.25,0.25,0.25"),
            ("shapecast.input.crop", "center"),
            ("shapecast.frame", "object"),
            ("shapecast.units", "normalized"),
            ("shapecast.bounds", "-1,-1,-1,1,1,1"),
            ("shapecast.precision", "f32"),
            ("shapecast.points", "1024"),
            ("shapecast.dataset", "synthetic"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect()
    }

    fn with(key: &str, v: Option<&str>) -> Result<ModelMeta, ContractError> {
        let mut m = good();
        match v {
            Some(v) => m.insert(key.to_owned(), v.to_owned()),
            None => m.remove(key),
        };
        ModelMeta::parse(&m)
    }

    #[test]
    fn good_metadata_parses() {
        let m = ModelMeta::parse(&good()).unwrap();
        assert_eq!(m.head, Head::Points);
        assert_eq!(m.points, Some((1024, 1)));
        assert_eq!(m.input.width, 64);
        assert_eq!(m.bounds.max, [1.0; 3]);
        assert_eq!(m.other.get("shapecast.dataset").unwrap(), "synthetic");
        assert!(m.to_string().contains("N = 1024"));
    }

    #[test]
    fn every_required_key_is_named_when_missing() {
        for key in good().keys() {
            if key == "shapecast.dataset" {
                continue;
            }
            let e = with(key, None).unwrap_err();
            assert_eq!(e, ContractError::Missing(key.clone()), "{key}");
            assert!(e.to_string().contains(key.as_str()));
        }
    }

    #[test]
    fn bad_values_are_named_with_what_was_found() {
        let e = with("shapecast.input.mean", Some("0.5,0.5")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "metadata key \"shapecast.input.mean\" must hold 3 numbers, found \"0.5,0.5\""
        );
        for (k, v) in [
            ("shapecast.contract", "2"),
            ("shapecast.head", "splats"),
            (
                "shapecast.model_id",
                "this-model-id-is-much-longer-than-32-chars",
            ),
            ("shapecast.input.width", "0"),
            ("shapecast.input.width", "-3"),
            ("shapecast.input.height", "1e9"),
            ("shapecast.input.color", "rgba"),
            ("shapecast.input.std", "1,0,1"),
            ("shapecast.input.std", "1,nan,1"),
            ("shapecast.input.crop", "zoom"),
            ("shapecast.frame", "world"),
            ("shapecast.units", "inches"),
            ("shapecast.bounds", "1,1,1,-1,-1,-1"),
            ("shapecast.bounds", "0,0,0,1,1"),
            ("shapecast.precision", "int4"),
            ("shapecast.points", "0"),
            ("shapecast.hypotheses", "0"),
            ("shapecast.classes", "a,,b"),
            ("shapecast.fusion.views", "3"),
        ] {
            match with(k, Some(v)) {
                Err(ContractError::Bad { key, found, .. }) => {
                    assert_eq!(key, k);
                    assert_eq!(found, v);
                }
                other => panic!("{k}={v}: {other:?}"),
            }
        }
    }

    #[test]
    fn gray_needs_one_channel_of_mean_and_std() {
        let mut m = good();
        m.insert("shapecast.input.color".into(), "gray".into());
        assert!(
            matches!(ModelMeta::parse(&m), Err(ContractError::Bad { key, .. }) if key == "shapecast.input.mean")
        );
        m.insert("shapecast.input.mean".into(), "0.5".into());
        m.insert("shapecast.input.std".into(), "0.2".into());
        assert_eq!(ModelMeta::parse(&m).unwrap().input.color.channels(), 1);
    }

    #[test]
    fn per_head_keys() {
        let mut m = good();
        m.insert("shapecast.head".into(), "voxels".into());
        assert_eq!(
            ModelMeta::parse(&m).unwrap_err(),
            ContractError::Missing("shapecast.voxels.resolution".into())
        );
        m.insert("shapecast.voxels.resolution".into(), "32".into());
        m.insert("shapecast.fusion.views".into(), "4".into());
        let v = ModelMeta::parse(&m).unwrap();
        assert_eq!(v.voxels, Some((32, 0.5)));
        assert_eq!(v.fusion_views, Some(4));

        let mut m = good();
        m.insert("shapecast.head".into(), "implicit".into());
        m.insert("shapecast.part".into(), "encoder".into());
        m.insert("shapecast.implicit.kind".into(), "sdf".into());
        m.insert("shapecast.implicit.level".into(), "0".into());
        m.insert("shapecast.implicit.latent".into(), "64".into());
        assert_eq!(
            ModelMeta::parse(&m).unwrap_err(),
            ContractError::Missing("shapecast.parts.decoder".into())
        );
        m.insert("shapecast.parts.decoder".into(), "../../etc/passwd".into());
        assert!(matches!(
            ModelMeta::parse(&m),
            Err(ContractError::Bad { .. })
        ));
        m.insert("shapecast.parts.decoder".into(), "m.decoder.onnx".into());
        assert_eq!(ModelMeta::parse(&m).unwrap().implicit.unwrap().latent, 64);

        let mut m = good();
        m.insert("shapecast.head".into(), "mesh".into());
        m.insert("shapecast.mesh.template".into(), "0,0,0,1,0,0,0,1,0".into());
        m.insert("shapecast.mesh.faces".into(), "0,1,3".into());
        assert!(
            matches!(ModelMeta::parse(&m), Err(ContractError::Bad { key, .. }) if key == "shapecast.mesh.faces")
        );
        m.insert("shapecast.mesh.faces".into(), "0,1,2".into());
        let mm = ModelMeta::parse(&m).unwrap().mesh.unwrap();
        assert_eq!(mm.faces, vec![[0, 1, 2]]);
        assert_eq!(mm.template.len(), 3);
    }

    #[test]
    fn long_values_are_truncated_in_messages() {
        let long = "x".repeat(5000);
        let e = with("shapecast.frame", Some(&long))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 300, "{e}");
    }
}
