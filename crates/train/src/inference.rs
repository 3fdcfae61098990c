//! Forward passes: burn (any backend) and tract (exported ONNX files, f32 or int8).

use std::path::Path;

use burn::tensor::backend::Backend;
use std::sync::Arc;
use tract_onnx::prelude::{
    tvec, DatumExt, Framework, InferenceModelExt, IntoRunnable, IntoTValue, TypedRunnableModel,
};

use crate::model::PointNet;
use crate::TrainError;

/// Points of a batch: `[batch][hypothesis][point]`.
pub type BatchPoints = Vec<Vec<Vec<[f32; 3]>>>;

/// Runs `model` on `[B, 3, H, W]` pictures and returns the points per sample and hypothesis.
pub fn predict_points<B: Backend>(
    model: &PointNet<B>,
    images: burn::tensor::Tensor<B, 4>,
) -> BatchPoints {
    let out = model.forward(images);
    let [b, k, n, _] = out.points.dims();
    let v: Vec<f32> = out
        .points
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap_or_default();
    (0..b)
        .map(|bi| {
            (0..k)
                .map(|ki| {
                    (0..n)
                        .map(|ni| {
                            let o = ((bi * k + ki) * n + ni) * 3;
                            [v[o], v[o + 1], v[o + 2]]
                        })
                        .collect()
                })
                .collect()
        })
        .collect()
}

/// What a point model returned for one picture.
#[derive(Debug, Clone)]
pub struct TractPoints {
    /// `points` output, flat `[1, K, N, 3]`.
    pub points: Vec<f32>,
    /// Shape of `points`.
    pub shape: Vec<usize>,
    /// `labels` output, flat, when present.
    pub labels: Option<Vec<f32>>,
}

impl TractPoints {
    /// The most likely part label of every point of hypothesis `k` (argmax of the `labels`
    /// logits `[1, K, N, L]`), when the model has a `labels` output.
    pub fn argmax_labels(&self, k: usize) -> Option<Vec<u8>> {
        let l = self.labels.as_ref()?;
        let n = self.shape.get(2).copied().unwrap_or(0);
        let k_all = self.shape.get(1).copied().unwrap_or(1);
        // a malformed output (no points, no hypotheses, no classes, or more classes than a
        // label byte holds) has no labels rather than a panic
        let per = n.checked_mul(k_all).filter(|&p| p > 0)?;
        let classes = l.len() / per;
        if l.len() % per != 0 || classes == 0 || classes > 256 {
            return None;
        }
        let h = l.get(k * n * classes..(k + 1) * n * classes)?;
        Some(
            h.chunks_exact(classes)
                .map(|c| {
                    c.iter()
                        .enumerate()
                        .fold(
                            (0, f32::NEG_INFINITY),
                            |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                        )
                        .0 as u8
                })
                .collect(),
        )
    }

    /// Points of hypothesis `k`.
    pub fn hypothesis(&self, k: usize) -> Vec<[f32; 3]> {
        let n = self.shape.get(2).copied().unwrap_or(0);
        self.points[k * n * 3..(k + 1) * n * 3]
            .chunks_exact(3)
            .map(|c| [c[0], c[1], c[2]])
            .collect()
    }
}

/// An ONNX point model loaded and optimised by tract.
#[derive(Debug)]
pub struct TractRunner {
    plan: Arc<TypedRunnableModel>,
    side: usize,
    points_ix: usize,
    labels_ix: Option<usize>,
}

fn tract_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Onnx(format!("{}: {e:#}", path.display()))
}

impl TractRunner {
    /// Loads `path` with tract (input `image` `[1, 3, side, side]`).
    pub fn load(path: &Path, side: usize) -> Result<Self, TrainError> {
        let model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| tract_err(path, e))?;
        let outputs: Vec<String> = model
            .output_outlets()
            .map_err(|e| tract_err(path, e))?
            .iter()
            // the output tensor's name (`labels`), not its node's (e.g. `label_head`)
            .map(|o| {
                model
                    .outlet_label(*o)
                    .map_or_else(|| model.node(o.node).name.clone(), str::to_string)
            })
            .collect();
        let points_ix = outputs.iter().position(|n| n == "points").unwrap_or(0);
        let labels_ix = outputs.iter().position(|n| n == "labels");
        let plan = model
            .with_input_fact(0, f32::fact([1, 3, side, side]).into())
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| tract_err(path, e))?;
        Ok(Self {
            plan,
            side,
            points_ix,
            labels_ix,
        })
    }

    /// Runs one normalised `[1, 3, H, W]` picture.
    pub fn run(&self, image: &[f32]) -> Result<TractPoints, TrainError> {
        let s = self.side;
        let input = tract_onnx::prelude::Tensor::from_shape(&[1, 3, s, s], image)
            .map_err(|e| TrainError::Onnx(format!("input shape: {e}")))?;
        let out = self
            .plan
            .run(tvec!(input.into_tvalue()))
            .map_err(|e| TrainError::Onnx(format!("run: {e:#}")))?;
        let p = out
            .get(self.points_ix)
            .ok_or_else(|| TrainError::Onnx("no output".into()))?;
        let view = p
            .to_plain_array_view::<f32>()
            .map_err(|e| TrainError::Onnx(format!("points output: {e:#}")))?;
        let shape = view.shape().to_vec();
        let points = view.iter().copied().collect();
        let labels = match self.labels_ix {
            Some(i) => Some(
                out.get(i)
                    .ok_or_else(|| TrainError::Onnx("labels output missing".into()))?
                    .to_plain_array_view::<f32>()
                    .map_err(|e| TrainError::Onnx(format!("labels output: {e:#}")))?
                    .iter()
                    .copied()
                    .collect(),
            ),
            None => None,
        };
        Ok(TractPoints {
            points,
            shape,
            labels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_labels_picks_each_points_class_per_hypothesis() {
        // K = 2 hypotheses, N = 2 points, L = 3 classes
        let t = TractPoints {
            points: vec![0.0; 2 * 2 * 3],
            shape: vec![1, 2, 2, 3],
            labels: Some(vec![
                0.1, 0.9, 0.0, /**/ 2.0, -1.0, 0.5, // hypothesis 0
                -3.0, -2.0, -1.0, /**/ 0.0, 0.0, 7.0, // hypothesis 1
            ]),
        };
        assert_eq!(t.argmax_labels(0), Some(vec![1, 0]));
        assert_eq!(t.argmax_labels(1), Some(vec![2, 2]));
        assert_eq!(t.argmax_labels(2), None);
        let empty = TractPoints {
            labels: Some(vec![]),
            ..t.clone()
        };
        assert_eq!(empty.argmax_labels(0), None);
        let no_k = TractPoints {
            shape: vec![1, 0, 2, 3],
            ..t.clone()
        };
        assert_eq!(no_k.argmax_labels(0), None);
        let bare = TractPoints { labels: None, ..t };
        assert_eq!(bare.argmax_labels(0), None);
    }
}
