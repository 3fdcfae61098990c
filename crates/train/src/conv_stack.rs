//! Geometry of the image encoders' convolution stacks, shared by every head.
//!
//! Two kinds of layer:
//! - *3x3-like*: an odd kernel `k` with stride 1 or 2 and padding `k / 2` on each side;
//! - *patchify*: kernel = stride (>= 2) and no padding, so every input pixel is seen once.
//!   tract 0.23.9 lowers these without a `Pad` node and with 16x fewer multiply-adds than a
//!   3x3 stack of the same reduction; with them the default model runs in tract as fast as
//!   in onnxruntime (bench/onnx/RESULTS.md, sections 0a and 0b).
//!
//! A stack is described by `strides` and `kernels` (one per layer; an empty `kernels` means
//! 3x3 everywhere, the form of the first models, so older configuration files still load).

use burn::module::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::prelude::*;

/// He (Kaiming) uniform initialisation for ReLU layers (gain sqrt 2). burn's default gain
/// (1/sqrt 3) shrinks the activation variance 6x per layer; without normalisation layers
/// the encoder's output then hardly depends on the picture and training stalls at the mean
/// shape.
pub fn he() -> Initializer {
    Initializer::KaimingUniform {
        gain: std::f64::consts::SQRT_2,
        fan_out_only: false,
    }
}

/// Kernel side of layer `i` (3 when `kernels` does not name it).
pub fn kernel(kernels: &[usize], i: usize) -> usize {
    kernels.get(i).copied().unwrap_or(3)
}

/// Padding (each side) of layer `i`: 0 for a patchify layer (kernel = stride), `kernel / 2`
/// otherwise.
pub fn padding(kernels: &[usize], strides: &[usize], i: usize) -> usize {
    let k = kernel(kernels, i);
    if strides.get(i) == Some(&k) {
        0
    } else {
        k / 2
    }
}

/// Side of the last feature map of a square picture of `image` pixels.
pub fn feature_side(image: usize, kernels: &[usize], strides: &[usize]) -> usize {
    strides.iter().enumerate().fold(image, |s, (i, &st)| {
        (s + 2 * padding(kernels, strides, i)).saturating_sub(kernel(kernels, i)) / st.max(1) + 1
    })
}

/// Checks a stack; the message names the first thing wrong (`what` prefixes the field
/// names, e.g. `encoder`).
pub fn check(
    what: &str,
    image: usize,
    channels: &[usize],
    strides: &[usize],
    kernels: &[usize],
) -> Result<(), String> {
    if channels.is_empty() || channels.len() != strides.len() {
        return Err(format!(
            "{what}.channels and {what}.strides must have the same, non-zero length"
        ));
    }
    if !kernels.is_empty() && kernels.len() != strides.len() {
        return Err(format!(
            "{what}.kernels must be empty (3x3 everywhere) or name every layer"
        ));
    }
    if channels.contains(&0) {
        return Err(format!("{what}.channels must be > 0"));
    }
    let mut side = image;
    for (i, &s) in strides.iter().enumerate() {
        let k = kernel(kernels, i);
        if !((k % 2 == 1 && (s == 1 || s == 2)) || (k == s && k >= 2)) {
            return Err(format!(
                "{what} layer {i}: kernel {k} with stride {s}: each layer must be an odd kernel with stride 1 or 2, or a patchify layer (kernel = stride >= 2)"
            ));
        }
        let p = padding(kernels, strides, i);
        if side + 2 * p < k {
            return Err(format!(
                "{what}: a {image}-pixel picture is too small for layer {i} (a {side}-pixel map, kernel {k})"
            ));
        }
        side = (side + 2 * p - k) / s + 1;
    }
    Ok(())
}

/// Layer `i` of the stack, from `cin` to `cout` channels, with `init` weights.
pub fn conv<B: Backend>(
    cin: usize,
    cout: usize,
    kernels: &[usize],
    strides: &[usize],
    i: usize,
    init: Initializer,
    device: &B::Device,
) -> Conv2d<B> {
    let (k, p, s) = (kernel(kernels, i), padding(kernels, strides, i), strides[i]);
    Conv2dConfig::new([cin, cout], [k, k])
        .with_stride([s, s])
        .with_padding(PaddingConfig2d::Explicit(p, p))
        .with_initializer(init)
        .init(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_of_3x3_and_patchify_stacks() {
        // 3x3, padding 1: 64 -> 32 -> 16 -> 8 -> 8 -> 4
        assert_eq!(feature_side(64, &[], &[2, 2, 2, 1, 2]), 4);
        // patchify 8x8/s8 then 2x2/s2: 64 -> 8 -> 4
        assert_eq!(feature_side(64, &[8, 2], &[8, 2]), 4);
        assert_eq!(padding(&[8, 3], &[8, 2], 0), 0);
        assert_eq!(padding(&[8, 3], &[8, 2], 1), 1);
        assert!(check("e", 64, &[32, 64], &[8, 2], &[8, 2]).is_ok());
        assert!(check("e", 64, &[32, 64], &[8, 2], &[]).is_err()); // 3x3 with stride 8
        assert!(check("e", 64, &[32, 64], &[8, 2], &[8]).is_err()); // not one per layer
        assert!(check("e", 64, &[32], &[8, 2], &[8, 2]).is_err()); // lengths differ
        assert!(check("e", 8, &[8, 8], &[8, 2], &[8, 2]).is_err()); // 1-pixel map, 2x2 kernel
        let msg = check("encoder", 64, &[8], &[4], &[2]).unwrap_err();
        assert!(
            msg.contains("encoder layer 0: kernel 2 with stride 4"),
            "{msg}"
        );
    }
}
