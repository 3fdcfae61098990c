//! One frame through the model: preprocess -> inference -> head decoding, with the
//! recurrent state of fusion models carried across frames.

use std::time::{Duration, Instant};

use crate::heads::{self, HeadError, Reconstruction};
use crate::implicit::{self, DecoderField, ImplicitOptions, SurfaceError};
use crate::meta::Head;
use crate::model::{as_f32, Model, ModelError};
use crate::preprocess::{PreprocessError, Preprocessor};

/// Errors of running one frame.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("preprocess: {0}")]
    Preprocess(#[from] PreprocessError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("decode: {0}")]
    Head(#[from] HeadError),
    #[error("implicit surface: {0}")]
    Surface(#[from] SurfaceError),
}

/// Options of the engine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineOptions {
    pub implicit: ImplicitOptions,
    /// Most points in one cloud for heads whose point count depends on the shape
    /// (voxels, implicit); 0 = no limit.
    pub max_points: usize,
    /// A fusion model's state is reset when no frame came for this long.
    pub state_timeout: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            implicit: ImplicitOptions::default(),
            max_points: 8192,
            state_timeout: Duration::from_secs(2),
        }
    }
}

/// Time spent in each stage of [`Engine::infer_rgb8`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    pub preprocess: Duration,
    pub inference: Duration,
    pub decode: Duration,
}

/// A model with its buffers and (for fusion models) state.
#[derive(Debug)]
pub struct Engine {
    pub model: Model,
    pub opts: EngineOptions,
    input: Vec<f32>,
    pre: Preprocessor,
    state: Option<Vec<f32>>,
    last_frame: Option<Instant>,
    /// Frames fused into the current state since the last reset.
    pub fused: u64,
    /// State resets so far (command or timeout).
    pub resets: u64,
}

impl Engine {
    pub fn new(model: Model, opts: EngineOptions) -> Self {
        let state = model
            .state_ix
            .map(|i| vec![0f32; model.net.input_shapes[i].iter().product()]);
        Engine {
            model,
            opts,
            input: Vec::new(),
            pre: Preprocessor::default(),
            state,
            last_frame: None,
            fused: 0,
            resets: 0,
        }
    }

    /// Whether the model carries state across frames.
    pub fn has_state(&self) -> bool {
        self.state.is_some()
    }

    /// Forgets the fused state (a new object is in view).
    pub fn reset_state(&mut self) {
        if let Some(s) = &mut self.state {
            s.fill(0.0);
            self.resets += 1;
            self.fused = 0;
        }
    }

    /// Preprocesses a packed RGB8 picture and runs it.
    pub fn infer_rgb8(
        &mut self,
        rgb: &[u8],
        width: usize,
        height: usize,
        now: Instant,
    ) -> Result<(Reconstruction, Timings), EngineError> {
        let t0 = Instant::now();
        let mut input = std::mem::take(&mut self.input);
        let r = self
            .pre
            .run(rgb, width, height, &self.model.meta.input, &mut input);
        let pre = t0.elapsed();
        let out = r
            .map_err(EngineError::from)
            .and_then(|_| self.infer_tensor(&input, now));
        self.input = input;
        let (rec, mut t) = out?;
        t.preprocess = pre;
        Ok((rec, t))
    }

    /// Runs an already preprocessed `image` tensor (NCHW, normalised).
    pub fn infer_tensor(
        &mut self,
        image: &[f32],
        now: Instant,
    ) -> Result<(Reconstruction, Timings), EngineError> {
        if let (Some(last), true) = (self.last_frame, self.state.is_some()) {
            if now.saturating_duration_since(last) > self.opts.state_timeout {
                log::info!(
                    "fusion state reset: no frame for {:.1} s",
                    now.saturating_duration_since(last).as_secs_f32()
                );
                self.reset_state();
            }
        }
        self.last_frame = Some(now);
        let m = &self.model;
        let t0 = Instant::now();
        let mut inputs: Vec<&[f32]> = vec![&[]; m.net.inputs.len()];
        inputs[m.image_ix] = image;
        if let (Some(si), Some(s)) = (m.state_ix, &self.state) {
            inputs[si] = s;
        }
        let outs = m.net.run(&inputs)?;
        let inference = t0.elapsed();
        let t1 = Instant::now();
        let o = &m.outputs;
        let get = |ix: Option<usize>| -> Result<Option<&[f32]>, ModelError> {
            match ix {
                Some(i) => match outs.get(i) {
                    Some(v) => as_f32(v).map(Some),
                    None => Err(ModelError::Run(format!("output {i} missing"))),
                },
                None => Ok(None),
            }
        };
        let mut rec = match m.meta.head {
            Head::Points => heads::decode_points(
                &m.meta,
                get(o.points)?.unwrap_or(&[]),
                get(o.labels)?,
                get(o.confidence)?,
            )?,
            Head::Voxels => {
                let r = heads::decode_voxels(&m.meta, get(o.occupancy)?.unwrap_or(&[]))?;
                if let (Some(new), Some(state)) = (get(o.state_out)?, self.state.as_mut()) {
                    if new.len() == state.len() {
                        state.copy_from_slice(new);
                        self.fused += 1;
                    }
                }
                r
            }
            Head::Mesh => {
                heads::decode_mesh(&m.meta, get(o.offsets)?.unwrap_or(&[]), get(o.labels)?)?
            }
            Head::Implicit => {
                let latent = get(o.latent)?.unwrap_or(&[]).to_vec();
                let (Some(dec), Some(im)) = (m.decoder.as_ref(), m.meta.implicit.as_ref()) else {
                    return Err(HeadError::Invalid("implicit model without decoder".into()).into());
                };
                let mut field = DecoderField::new(dec, latent);
                let s = implicit::coarse_to_fine(
                    &mut field,
                    &m.meta.bounds,
                    im.kind,
                    im.level,
                    &self.opts.implicit,
                )?;
                implicit::to_reconstruction(s, self.opts.max_points, self.opts.implicit.mesh)
            }
        };
        if m.meta.head == Head::Voxels && self.opts.max_points > 0 {
            if let Some(c) = rec.clouds.first_mut() {
                let n = c.points.len();
                if n > self.opts.max_points {
                    let k = self.opts.max_points;
                    c.points = (0..k).map(|i| c.points[i * n / k]).collect();
                }
            }
        }
        let decode = t1.elapsed();
        Ok((
            rec,
            Timings {
                preprocess: Duration::ZERO,
                inference,
                decode,
            },
        ))
    }
}
