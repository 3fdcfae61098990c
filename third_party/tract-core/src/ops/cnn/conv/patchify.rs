//! shapecast patch: direct "patchify" convolution.
//!
//! An unpadded, undilated, single-group f32 NCHW convolution whose strides equal its kernel
//! (`8x8/s8`, `4x4/s4`, `2x2/s2`: the stems of the small encoders) reads every input item exactly
//! once, so im2col is a pure permutation of the input that a direct kernel can skip: item
//! `(k = (c, ky, kx), p = (oy, ox))` of the im2col matrix is input item
//! `c*H*W + (oy*KH + ky)*W + ox*KW + kx`, and for a fixed `(c, ky)` the `kx` run is contiguous.
//!
//! `PatchifyConv` holds its weights packed once at codegen (`[k][co]`, output channels padded to
//! a multiple of 32, zeros in the padding) and its bias, and computes tiles of 32 output channels
//! x 8 consecutive output positions: 16 AVX-512 accumulators (two vectors of 16 channels per
//! position), two weight loads and 8 input broadcasts per `k`, the sum over `k` in im2col order
//! from zero, then `+ bias`, then the fused `max(., floor)` of a following Relu, then a 4x4-lane
//! transposing store to NCHW. This is the arithmetic of the im2col + matrix product path it
//! replaces (one FMA chain per output in `k` order, bias and max after), so outputs match it.
//!
//! `Conv::codegen` builds it only on x86_64 CPUs with AVX-512F (runtime detection); a portable
//! loop computes the same values elsewhere (used by the tests, and by `eval` should the op run on
//! a CPU without AVX-512).

use crate::internal::*;

/// Output channels per tile (two AVX-512 vectors).
const CO_TILE: usize = 32;
/// Output positions per tile.
const P_TILE: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PatchifyConv {
    /// Batch size (1 for a CHW input).
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    /// Kernel (and stride) extent.
    pub kh: usize,
    pub kw: usize,
    pub oh: usize,
    pub ow: usize,
    pub co: usize,
    /// Full output shape (NCHW or CHW, as the input).
    pub output_shape: TVec<usize>,
    /// `[k][co_pad]`, `k = (c, ky, kx)`, `co_pad` a multiple of 32.
    pub packed_weights: Arc<Tensor>,
    /// `[co_pad]`, zeros past `co`.
    pub bias: Arc<Tensor>,
    /// `max(., floor)` applied after the bias (a fused Relu), as f32 bits.
    pub floor_bits: Option<u32>,
}

impl PatchifyConv {
    /// Builds the op from an OIHW kernel `[co, c_in, kh, kw]` and a bias of `co` values (or one
    /// value for all). `input_shape` is NCHW (or CHW with `has_n == false`).
    pub fn new(
        input_shape: &[usize],
        has_n: bool,
        kernel_oihw: &Tensor,
        bias: &Tensor,
    ) -> TractResult<PatchifyConv> {
        let (n, chw) = if has_n {
            ensure!(input_shape.len() == 4, "PatchifyConv wants a NCHW input");
            (input_shape[0], &input_shape[1..])
        } else {
            ensure!(input_shape.len() == 3, "PatchifyConv wants a CHW input");
            (1, input_shape)
        };
        let (c_in, h, w) = (chw[0], chw[1], chw[2]);
        let kshape = kernel_oihw.shape();
        ensure!(kshape.len() == 4 && kshape[1] == c_in, "PatchifyConv wants an OIHW kernel");
        let (co, kh, kw) = (kshape[0], kshape[2], kshape[3]);
        ensure!(kh >= 1 && kw >= 1 && h >= kh && w >= kw && co >= 1 && c_in >= 1);
        let (oh, ow) = (h / kh, w / kw);
        let kernel = kernel_oihw.cast_to::<f32>()?;
        let kernel = kernel.try_as_plain_ram()?;
        let kernel = kernel.as_slice::<f32>()?;
        let k = c_in * kh * kw;
        let co_pad = co.div_ceil(CO_TILE) * CO_TILE;
        let mut packed = vec![0f32; k * co_pad];
        for o in 0..co {
            for kk in 0..k {
                packed[kk * co_pad + o] = kernel[o * k + kk];
            }
        }
        let bias = bias.cast_to::<f32>()?;
        let bias = bias.try_as_plain_ram()?;
        let bias = bias.as_slice::<f32>()?;
        let mut bias_pad = vec![0f32; co_pad];
        match bias.len() {
            0 => (),
            1 => bias_pad[..co].iter_mut().for_each(|b| *b = bias[0]),
            l if l == co => bias_pad[..co].copy_from_slice(bias),
            l => bail!("PatchifyConv: bias of {l} values for {co} output channels"),
        }
        let output_shape: TVec<usize> =
            if has_n { tvec!(n, co, oh, ow) } else { tvec!(co, oh, ow) };
        Ok(PatchifyConv {
            n,
            c_in,
            h,
            w,
            kh,
            kw,
            oh,
            ow,
            co,
            output_shape,
            packed_weights: Arc::new(tensor1(&packed).into_shape(&[k, co_pad])?),
            bias: Arc::new(tensor1(&bias_pad)),
            floor_bits: None,
        })
    }

    /// The invariants `new` establishes and the unchecked loops of `compute` rely on. The fields
    /// are public (tract's ops are plain data), so a caller could break them: `compute` checks
    /// them first, so that no field value makes it read or write out of bounds.
    fn check_geometry(&self) -> TractResult<()> {
        let want_out: TVec<usize> = if self.output_shape.len() == 4 {
            tvec!(self.n, self.co, self.oh, self.ow)
        } else {
            ensure!(self.n == 1, "PatchifyConv: a CHW output with n = {}", self.n);
            tvec!(self.co, self.oh, self.ow)
        };
        ensure!(
            self.output_shape == want_out,
            "PatchifyConv: output shape {:?} is not {:?}",
            self.output_shape,
            want_out
        );
        // Every product below is checked: with oh = 0 (or ow = 0) the kernel size is bounded by
        // nothing else, and a wrapped c_in * kh * kw could match an empty weight tensor.
        ensure!(
            self.kh >= 1
                && self.kw >= 1
                && self.kh <= self.h
                && self.kw <= self.w
                && self.co >= 1
                && self.c_in >= 1
                && self.oh.checked_mul(self.kh).is_some_and(|v| v <= self.h)
                && self.ow.checked_mul(self.kw).is_some_and(|v| v <= self.w),
            "PatchifyConv: inconsistent geometry {self:?}"
        );
        let k = self.c_in.checked_mul(self.kh).and_then(|v| v.checked_mul(self.kw));
        let co_pad = self.co.checked_next_multiple_of(CO_TILE);
        let (Some(k), Some(co_pad)) = (k, co_pad) else {
            bail!("PatchifyConv: geometry overflows {self:?}")
        };
        ensure!(
            k.checked_mul(co_pad).is_some()
                && self.packed_weights.datum_type() == f32::datum_type()
                && self.packed_weights.len() == k * co_pad
                && self.bias.datum_type() == f32::datum_type()
                && self.bias.len() == co_pad,
            "PatchifyConv: packed weights {:?} / bias {:?} do not fit k = {k}, {co_pad} channels",
            self.packed_weights.shape(),
            self.bias.shape()
        );
        Ok(())
    }

    fn co_pad(&self) -> usize {
        self.co.div_ceil(CO_TILE) * CO_TILE
    }

    fn floor(&self) -> Option<f32> {
        self.floor_bits.map(f32::from_bits)
    }

    /// Whether the AVX-512 tile kernel can run on this CPU.
    pub fn has_fast_path() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Input offsets (items, from the batch's first item) of the first `k` of each output
    /// position of the tile starting at `p0`; past the last position, the last one again.
    fn tile_offsets(&self, p0: usize) -> [isize; P_TILE] {
        let n_pos = self.oh * self.ow;
        let mut offsets = [0isize; P_TILE];
        for (j, off) in offsets.iter_mut().enumerate() {
            let p = (p0 + j).min(n_pos - 1);
            let (oy, ox) = (p / self.ow, p % self.ow);
            *off = (oy * self.kh * self.w + ox * self.kw) as isize;
        }
        offsets
    }

    /// One batch item: `x` is `[c_in, h, w]`, `out` is `[co, oh, ow]`.
    ///
    /// # Safety
    /// `x` and `out` are valid for those many items.
    unsafe fn run_one(&self, x: *const f32, out: *mut f32, fast: bool) {
        let weights = unsafe { self.packed_weights.as_slice_unchecked::<f32>() };
        let bias = unsafe { self.bias.as_slice_unchecked::<f32>() };
        let co_pad = self.co_pad();
        let n_pos = self.oh * self.ow;
        let geo = TileGeometry {
            c_in: self.c_in,
            kh: self.kh,
            kw: self.kw,
            c_stride: (self.h * self.w) as isize,
            row_stride: self.w as isize,
            co_pad,
            out_c_stride: n_pos,
            floor: self.floor(),
        };
        for cb in (0..co_pad).step_by(CO_TILE) {
            let valid_co = (self.co - cb.min(self.co)).min(CO_TILE);
            for p0 in (0..n_pos).step_by(P_TILE) {
                let valid_p = (n_pos - p0).min(P_TILE);
                let offsets = self.tile_offsets(p0);
                let out = unsafe { out.add(cb * n_pos + p0) };
                let w = &weights[cb..];
                let b = &bias[cb..cb + CO_TILE];
                #[cfg(target_arch = "x86_64")]
                if fast {
                    unsafe { tile_avx512(&geo, x, &offsets, w, b, out, valid_co, valid_p) };
                    continue;
                }
                let _ = fast;
                unsafe { tile_portable(&geo, x, &offsets, w, b, out, valid_co, valid_p) };
            }
        }
    }

    /// Computes the op into a fresh tensor; `fast` picks the AVX-512 kernel (ignored where the
    /// CPU lacks it).
    pub fn compute(&self, input: &Tensor, fast: bool) -> TractResult<Tensor> {
        let in_shape: TVec<usize> = if self.output_shape.len() == 4 {
            tvec!(self.n, self.c_in, self.h, self.w)
        } else {
            tvec!(self.c_in, self.h, self.w)
        };
        ensure!(
            input.datum_type() == f32::datum_type() && input.shape() == &*in_shape,
            "PatchifyConv expects f32 {:?}, got {:?}",
            in_shape,
            input
        );
        self.check_geometry()?;
        let fast = fast && Self::has_fast_path();
        let mut output = unsafe { Tensor::uninitialized::<f32>(&self.output_shape)? };
        let in_len = self.c_in * self.h * self.w;
        let out_len = self.co * self.oh * self.ow;
        unsafe {
            let x = input.as_ptr_unchecked::<f32>();
            let o = output.as_ptr_mut_unchecked::<f32>();
            for b in 0..self.n {
                self.run_one(x.add(b * in_len), o.add(b * out_len), fast);
            }
        }
        Ok(output)
    }
}

/// What a tile kernel needs besides its pointers.
struct TileGeometry {
    c_in: usize,
    kh: usize,
    kw: usize,
    /// Items between two input channels.
    c_stride: isize,
    /// Items between two input rows.
    row_stride: isize,
    /// Row length of the packed weights.
    co_pad: usize,
    /// Items between two output channels.
    out_c_stride: usize,
    floor: Option<f32>,
}

/// Writes the `valid_co x valid_p` corner of a tile held as `tile[j][co]`.
///
/// # Safety
/// `out` is valid for `valid_co` channels of `out_c_stride` items from it, `valid_p` each.
unsafe fn store_partial(
    tile: &[[f32; CO_TILE]; P_TILE],
    out: *mut f32,
    out_c_stride: usize,
    valid_co: usize,
    valid_p: usize,
) {
    for co in 0..valid_co {
        for (j, col) in tile.iter().enumerate().take(valid_p) {
            unsafe { *out.add(co * out_c_stride + j) = col[co] };
        }
    }
}

/// The portable tile: same order of operations as the AVX-512 one (`mul_add` per `k` from
/// zero, then bias, then floor).
///
/// # Safety
/// As `tile_avx512`.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_portable(
    geo: &TileGeometry,
    x: *const f32,
    offsets: &[isize; P_TILE],
    w: &[f32],
    bias: &[f32],
    out: *mut f32,
    valid_co: usize,
    valid_p: usize,
) {
    let mut acc = [[0f32; CO_TILE]; P_TILE];
    let mut k = 0;
    for c in 0..geo.c_in as isize {
        for ky in 0..geo.kh as isize {
            let row = unsafe { x.offset(c * geo.c_stride + ky * geo.row_stride) };
            for kx in 0..geo.kw as isize {
                let wk = &w[k * geo.co_pad..][..CO_TILE];
                for (j, acc) in acc.iter_mut().enumerate() {
                    let v = unsafe { *row.offset(offsets[j] + kx) };
                    for (a, wv) in acc.iter_mut().zip(wk) {
                        *a = wv.mul_add(v, *a);
                    }
                }
                k += 1;
            }
        }
    }
    for col in acc.iter_mut() {
        for (a, b) in col.iter_mut().zip(bias) {
            *a += b;
            if let Some(f) = geo.floor {
                *a = if *a > f { *a } else { f };
            }
        }
    }
    unsafe { store_partial(&acc, out, geo.out_c_stride, valid_co, valid_p) };
}

/// The AVX-512 tile: 32 output channels (`w` and `bias` start at the first) x 8 positions (the
/// input offsets of their first `k` in `offsets`), written to `out` (channel `co`, position `j`
/// at `out[co * out_c_stride + j]`), `valid_co x valid_p` of it.
///
/// # Safety
/// The CPU has AVX-512F; `x` covers every `offsets[j] + k offset`; `w` holds `k` rows of
/// `co_pad` (32 read from each); `out` as in `store_partial`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx512(
    geo: &TileGeometry,
    x: *const f32,
    offsets: &[isize; P_TILE],
    w: &[f32],
    bias: &[f32],
    out: *mut f32,
    valid_co: usize,
    valid_p: usize,
) {
    use std::arch::x86_64::*;
    unsafe {
        let mut a0 = [_mm512_setzero_ps(); P_TILE];
        let mut a1 = [_mm512_setzero_ps(); P_TILE];
        let mut wp = w.as_ptr();
        let kw = geo.kw;
        let co_pad = geo.co_pad;
        for c in 0..geo.c_in as isize {
            for ky in 0..geo.kh as isize {
                let row = x.offset(c * geo.c_stride + ky * geo.row_stride);
                let q: [*const f32; P_TILE] = std::array::from_fn(|j| row.offset(offsets[j]));
                for kx in 0..kw {
                    let w0 = _mm512_loadu_ps(wp);
                    let w1 = _mm512_loadu_ps(wp.add(16));
                    wp = wp.add(co_pad);
                    for j in 0..P_TILE {
                        let b = _mm512_set1_ps(*q[j].add(kx));
                        a0[j] = _mm512_fmadd_ps(w0, b, a0[j]);
                        a1[j] = _mm512_fmadd_ps(w1, b, a1[j]);
                    }
                }
            }
        }
        let b0 = _mm512_loadu_ps(bias.as_ptr());
        let b1 = _mm512_loadu_ps(bias.as_ptr().add(16));
        for j in 0..P_TILE {
            a0[j] = _mm512_add_ps(a0[j], b0);
            a1[j] = _mm512_add_ps(a1[j], b1);
        }
        if let Some(f) = geo.floor {
            let f = _mm512_set1_ps(f);
            for j in 0..P_TILE {
                a0[j] = _mm512_max_ps(a0[j], f);
                a1[j] = _mm512_max_ps(a1[j], f);
            }
        }
        if valid_p == P_TILE && valid_co == CO_TILE {
            store_16x8(&a0, out, geo.out_c_stride);
            store_16x8(&a1, out.add(16 * geo.out_c_stride), geo.out_c_stride);
        } else {
            let mut tile = [[0f32; CO_TILE]; P_TILE];
            for j in 0..P_TILE {
                _mm512_storeu_ps(tile[j].as_mut_ptr(), a0[j]);
                _mm512_storeu_ps(tile[j].as_mut_ptr().add(16), a1[j]);
            }
            store_partial(&tile, out, geo.out_c_stride, valid_co, valid_p);
        }
    }
}

/// Stores 8 vectors (position `j`, lanes = 16 output channels) as 16 rows of 8 positions:
/// channel `co` at `out[co * stride .. + 8]`. Two shuffle stages make, for each 128-bit lane
/// `l`, four vectors whose lane `l` holds channel `4l + r` at positions 0..4 (`u[r]`) and 4..8
/// (`u[4 + r]`); each lane is one 16-byte store.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn store_16x8(a: &[std::arch::x86_64::__m512; P_TILE], out: *mut f32, stride: usize) {
    use std::arch::x86_64::*;
    unsafe {
        let t0 = _mm512_unpacklo_ps(a[0], a[1]);
        let t1 = _mm512_unpackhi_ps(a[0], a[1]);
        let t2 = _mm512_unpacklo_ps(a[2], a[3]);
        let t3 = _mm512_unpackhi_ps(a[2], a[3]);
        let t4 = _mm512_unpacklo_ps(a[4], a[5]);
        let t5 = _mm512_unpackhi_ps(a[4], a[5]);
        let t6 = _mm512_unpacklo_ps(a[6], a[7]);
        let t7 = _mm512_unpackhi_ps(a[6], a[7]);
        let u = [
            _mm512_shuffle_ps::<0x44>(t0, t2),
            _mm512_shuffle_ps::<0xEE>(t0, t2),
            _mm512_shuffle_ps::<0x44>(t1, t3),
            _mm512_shuffle_ps::<0xEE>(t1, t3),
            _mm512_shuffle_ps::<0x44>(t4, t6),
            _mm512_shuffle_ps::<0xEE>(t4, t6),
            _mm512_shuffle_ps::<0x44>(t5, t7),
            _mm512_shuffle_ps::<0xEE>(t5, t7),
        ];
        macro_rules! lane {
            ($l:literal) => {
                for r in 0..4 {
                    let o = out.add((4 * $l + r) * stride);
                    _mm_storeu_ps(o, _mm512_extractf32x4_ps::<$l>(u[r]));
                    _mm_storeu_ps(o.add(4), _mm512_extractf32x4_ps::<$l>(u[4 + r]));
                }
            };
        }
        lane!(0);
        lane!(1);
        lane!(2);
        lane!(3);
    }
}

impl Op for PatchifyConv {
    fn name(&self) -> StaticName {
        "PatchifyConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "N={} C={}x{}x{} -> {}x{}x{}, kernel=stride {}x{}, floor {:?}",
            self.n,
            self.c_in,
            self.h,
            self.w,
            self.co,
            self.oh,
            self.ow,
            self.kh,
            self.kw,
            self.floor()
        )])
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for PatchifyConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        Ok(tvec!(self.compute(&input, true)?.into_tvalue()))
    }
}

impl TypedOp for PatchifyConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        ensure!(inputs.len() == 1 && inputs[0].datum_type == f32::datum_type());
        Ok(tvec!(f32::fact(&*self.output_shape)))
    }

    fn cost(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let macs = self.n * self.co * self.oh * self.ow * self.c_in * self.kh * self.kw;
        Ok(tvec!((Cost::FMA(f32::datum_type()), macs.to_dim())))
    }

    /// Absorbs a following `max(., c)` with a constant scalar `c` (a Relu).
    fn fuse(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
        use crate::ops::binary::{OptBinByScalar, TypedBinOp};
        use tract_linalg::BinOp;
        rule_if!(self.floor_bits.is_none());
        rule_if!(node.outputs.len() == 1 && node.outputs[0].successors.len() == 1);
        rule_if!(!model.output_outlets()?.contains(&node.id.into()));
        let succ = model.node(node.outputs[0].successors[0].node);
        let binop = if let Some(op) = succ.op_as::<TypedBinOp>() {
            op.0.as_linalg_binop()
        } else if let Some(op) = succ.op_as::<OptBinByScalar>() {
            op.binop.as_linalg_binop()
        } else {
            None
        };
        rule_if!(binop == Some(BinOp::Max));
        rule_if!(succ.inputs.len() == 2);
        let other = if succ.inputs[0].node == node.id { succ.inputs[1] } else { succ.inputs[0] };
        rule_if!(other.node != node.id);
        let other_fact = model.outlet_fact(other)?;
        rule_if_some!(konst = other_fact.konst.as_ref());
        rule_if!(konst.datum_type() == f32::datum_type() && konst.len() == 1);
        let floor = konst.cast_to_scalar::<f32>()?;
        rule_if!(!floor.is_nan());
        rule_if!(succ.outputs[0].fact.shape.as_concrete() == Some(&*self.output_shape));
        rule_if!(succ.outputs[0].fact.datum_type == f32::datum_type());
        let mut op = self.clone();
        op.floor_bits = Some(floor.to_bits());
        let mut patch = TypedModelPatch::new(format!("fusing {succ} into {node}"));
        let input = patch.tap_model(model, node.inputs[0])?;
        let wire = patch.wire_node(&node.name, op, &[input])?[0];
        patch.shunt_outside(model, succ.id.into(), wire)?;
        Ok(Some(patch))
    }

    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cnn::conv::Conv;
    use crate::ops::cnn::{KernelFormat, PaddingSpec, PoolSpec};
    use crate::ops::nn::DataFormat;

    /// A seeded stream of values in [-1, 1).
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// How the conv's bias is given.
    #[derive(Clone, Copy, Debug)]
    enum Bias {
        /// `co` values.
        PerChannel,
        /// None: the zero scalar tract-hir wires for an ONNX Conv without a bias.
        Absent,
        /// One value for every channel (rank 0).
        Scalar,
    }

    /// What follows the conv.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum After {
        Nothing,
        /// `max(., 0)`, a Relu: fused into the op.
        Relu,
        /// `max(., 0.25)`: fused too, as a floor of 0.25.
        Floor,
        /// A Relu, the conv's own output also an output of the model: not fusable.
        ReluAndConvOutput,
    }

    #[derive(Clone, Copy, Debug)]
    struct Case {
        /// Batch size, `None` for a CHW input.
        n: Option<usize>,
        c_in: usize,
        hw: (usize, usize),
        /// Kernel, and strides.
        k: (usize, usize),
        co: usize,
        bias: Bias,
        after: After,
    }

    impl Case {
        fn new(n: usize, c_in: usize, hw: (usize, usize), k: (usize, usize), co: usize) -> Case {
            Case { n: Some(n), c_in, hw, k, co, bias: Bias::PerChannel, after: After::Nothing }
        }
        fn relu(self) -> Case {
            Case { after: After::Relu, ..self }
        }
        fn after(self, after: After) -> Case {
            Case { after, ..self }
        }
        fn bias(self, bias: Bias) -> Case {
            Case { bias, ..self }
        }
        fn chw(self) -> Case {
            Case { n: None, ..self }
        }
        fn input_shape(&self) -> TVec<usize> {
            let mut shape: TVec<usize> = tvec!(self.c_in, self.hw.0, self.hw.1);
            if let Some(n) = self.n {
                shape.insert(0, n);
            }
            shape
        }
    }

    /// `gamma(n) = n u / (1 - n u)`, `u = 2^-24`: a sum of `n` f32 terms (products included)
    /// computed in any order, with or without FMA, is within `gamma(n) * sum |term|` of the
    /// exact sum (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., 3.1 / 3.5).
    fn gamma(n: usize) -> f64 {
        let nu = n as f64 * (f32::EPSILON as f64 / 2.0);
        nu / (1.0 - nu)
    }

    /// Largest difference against the generic conv seen in a case: absolute, in ulps, and as a
    /// fraction of the rounding bound; and how many items of the patchify op differ from the
    /// im2col path's.
    #[derive(Default, Debug, Clone, Copy)]
    struct Worst {
        abs: f64,
        ulps: u32,
        ratio: f64,
        not_as_im2col: usize,
    }

    impl Worst {
        fn max(self, o: Worst) -> Worst {
            Worst {
                abs: self.abs.max(o.abs),
                ulps: self.ulps.max(o.ulps),
                ratio: self.ratio.max(o.ratio),
                not_as_im2col: self.not_as_im2col + o.not_as_im2col,
            }
        }
    }

    fn ulps(a: f32, b: f32) -> u32 {
        if a == b {
            0
        } else if a.is_sign_negative() != b.is_sign_negative() {
            // across zero: count both sides
            (a.to_bits() & 0x7fff_ffff) + (b.to_bits() & 0x7fff_ffff)
        } else {
            a.to_bits().abs_diff(b.to_bits())
        }
    }

    /// Builds the case as a model (Conv, then what follows), runs it unoptimized (tract's
    /// generic conv: `Conv::eval` wires an ad-hoc im2col + matrix product), optimized (the
    /// patchify op where it applies) and optimized with `TRACT_DISABLE_PATCHIFY_CONV` (im2col
    /// and the linalg kernels: what the op replaces). Checks:
    /// - every optimized output against the generic conv's within the summation-order bound
    ///   `2 gamma(k + 1) (sum_k |w x| + |b|)` (each of the two sums of `k` products and a bias
    ///   is within `gamma(k + 1) (sum |w x| + |b|)` of the exact value; Relu and floor are
    ///   1-Lipschitz, so the bound holds after them);
    /// - the im2col path's output (`TRACT_DISABLE_PATCHIFY_CONV`) within the same bound, as a
    ///   check of the check; items where the patchify op is not bit-identical to it are counted,
    ///   not refused: the op's order (one FMA chain over `k` from zero) is the usual kernels',
    ///   but tract picks another kernel, another order, for some shapes (one output position:
    ///   a matrix-vector product);
    /// - the op taken iff AVX-512F (never for a 1x1 kernel: decluttered into an EinSum before
    ///   codegen), and the Relu / floor fused into it exactly when fusable.
    ///
    /// Returns the worst difference against the generic conv, and whether the op was used.
    fn check_case(case: Case, seed: u64) -> TractResult<(Worst, bool)> {
        let Case { c_in, hw, k, co, .. } = case;
        let n = case.n.unwrap_or(1);
        let shape = case.input_shape();
        let x = values(n * c_in * hw.0 * hw.1, seed);
        let w = values(co * c_in * k.0 * k.1, seed + 1);
        let (bias, b) = match case.bias {
            Bias::PerChannel => {
                let b = values(co, seed + 2);
                (tensor1(&b), b)
            }
            Bias::Absent => (tensor0(0f32), vec![0f32; co]),
            Bias::Scalar => (tensor0(0.375f32), vec![0.375f32; co]),
        };
        let input = tensor1(&x).into_shape(&shape)?;
        let mut model = TypedModel::default();
        let source = model.add_source("x", f32::fact(&*shape))?;
        let kernel = model.add_const("kernel", tensor1(&w).into_shape(&[co, c_in, k.0, k.1])?)?;
        let bias = model.add_const("bias", bias)?;
        let pool_spec = PoolSpec {
            data_format: if case.n.is_some() { DataFormat::NCHW } else { DataFormat::CHW },
            kernel_shape: tvec!(k.0, k.1),
            padding: PaddingSpec::Valid,
            dilations: None,
            strides: Some(tvec!(k.0, k.1)),
            input_channels: c_in,
            output_channels: co,
        };
        let conv = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group: 1, q_params: None };
        let conv = model.wire_node("conv", conv, &[source, kernel, bias])?[0];
        let floor = match case.after {
            After::Nothing => None,
            After::Relu | After::ReluAndConvOutput => Some(0f32),
            After::Floor => Some(0.25f32),
        };
        let mut outputs = tvec!(conv);
        if let Some(f) = floor {
            let f = model.add_const("floor", tensor0(f).broadcast_into_rank(shape.len())?)?;
            outputs[0] = model.wire_node("max", crate::ops::math::max(), &[conv, f])?[0];
            if case.after == After::ReluAndConvOutput {
                outputs.push(conv);
            }
        }
        model.select_output_outlets(&outputs)?;

        let run = |m: TypedModel| -> TractResult<TVec<Tensor>> {
            let out = m.into_runnable()?.run(tvec!(input.clone().into_tvalue()))?;
            Ok(out.into_iter().map(|t| t.into_tensor()).collect())
        };
        let reference = run(model.clone())?;
        let optimized = model.clone().into_optimized()?;
        let im2col = tract_data::knobs::KnobScope::new([("TRACT_DISABLE_PATCHIFY_CONV", "1")])?
            .enter(|| model.clone().into_optimized())?;
        ensure!(!im2col.nodes().iter().any(|n| n.op_is::<PatchifyConv>()), "knob ignored");
        let ops: Vec<&PatchifyConv> =
            optimized.nodes().iter().filter_map(|n| n.op_as::<PatchifyConv>()).collect();
        let used = !ops.is_empty();
        if k.0 * k.1 > 1 {
            ensure!(used == PatchifyConv::has_fast_path(), "PatchifyConv used iff AVX-512F");
        } else {
            ensure!(!used, "a 1x1 kernel was expected to become an EinSum, not a PatchifyConv");
        }
        if let Some(op) = ops.first() {
            let fusable = matches!(case.after, After::Relu | After::Floor);
            let want = if fusable { floor.map(f32::to_bits) } else { None };
            ensure!(
                op.floor_bits == want,
                "floor {:?}, wanted {want:?}: {optimized}",
                op.floor_bits
            );
            if fusable {
                ensure!(optimized.nodes().len() == 2, "Relu/floor not fused: {optimized}");
            }
        }
        let got = run(optimized)?;
        let base = run(im2col)?;
        ensure!(got.len() == reference.len() && base.len() == reference.len());

        // per output item: sum_k |w x| + |b|
        let kk = c_in * k.0 * k.1;
        let (oh, ow) = (hw.0 / k.0, hw.1 / k.1);
        let mut abs_sum = vec![0f64; n * co * oh * ow];
        for bi in 0..n {
            for o in 0..co {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut s = (b[o] as f64).abs();
                        for c in 0..c_in {
                            for ky in 0..k.0 {
                                for kx in 0..k.1 {
                                    let xi = ((bi * c_in + c) * hw.0 + oy * k.0 + ky) * hw.1
                                        + ox * k.1
                                        + kx;
                                    let wi = ((o * c_in + c) * k.0 + ky) * k.1 + kx;
                                    s += (w[wi] as f64 * x[xi] as f64).abs();
                                }
                            }
                        }
                        abs_sum[((bi * co + o) * oh + oy) * ow + ox] = s;
                    }
                }
            }
        }
        // 1e-9: the f64 evaluation of the bound itself
        let g = 2.0 * gamma(kk + 1) * (1.0 + 1e-9);
        let mut worst = Worst::default();
        for ((r, o), i2c) in reference.iter().zip(got.iter()).zip(base.iter()) {
            ensure!(r.shape() == o.shape() && o.shape() == i2c.shape());
            let (r, o, i2c) =
                (r.try_as_plain_ram()?, o.try_as_plain_ram()?, i2c.try_as_plain_ram()?);
            let (r, o, i2c) = (r.as_slice::<f32>()?, o.as_slice::<f32>()?, i2c.as_slice::<f32>()?);
            for (i, ((&r, &o), &i2c)) in r.iter().zip(o).zip(i2c).enumerate() {
                let bound = g * abs_sum[i];
                // the im2col path, as a check of the check
                let d = (r as f64 - i2c as f64).abs();
                ensure!(
                    d <= bound,
                    "{case:?} item {i}: im2col path {i2c:e} vs generic conv {r:e}: \
                     |d| {d:e} > bound {bound:e}"
                );
                let d = (r as f64 - o as f64).abs();
                ensure!(
                    d <= bound,
                    "{case:?} item {i}: {o:e} vs generic conv {r:e}: |d| {d:e} > bound {bound:e}"
                );
                let ratio = if d == 0.0 { 0.0 } else { d / bound };
                let not_as_im2col = (o.to_bits() != i2c.to_bits()) as usize;
                worst = worst.max(Worst { abs: d, ulps: ulps(r, o), ratio, not_as_im2col });
            }
        }
        Ok((worst, used))
    }

    /// Runs the cases, prints each one's worst difference and the overall worst (`cargo test
    /// ... patchify -- --nocapture`), fails on the first case that does not check.
    fn check_all(name: &str, cases: &[Case]) {
        let mut overall = Worst::default();
        let mut on_path = 0;
        let mut cases_not_as_im2col = 0;
        for (ix, case) in cases.iter().enumerate() {
            let seed = 1000 * ix as u64 + case.co as u64 + case.c_in as u64;
            let (worst, used) = check_case(*case, seed)
                .unwrap_or_else(|e| panic!("{name} case {ix} {case:?}: {e:?}"));
            eprintln!(
                "{name} {ix}: {case:?} k={} patchify={used}: max |d| {:.2e}, {} ulp, {:.4} of the \
                 bound; {} items not bit-identical to the im2col path",
                case.c_in * case.k.0 * case.k.1,
                worst.abs,
                worst.ulps,
                worst.ratio,
                worst.not_as_im2col
            );
            overall = overall.max(worst);
            on_path += used as usize;
            cases_not_as_im2col += (worst.not_as_im2col > 0) as usize;
        }
        eprintln!(
            "{name}: {} cases, {on_path} on the patchify path; worst against the generic conv: \
             |d| {:.2e}, {} ulp, {:.4} of the bound; {cases_not_as_im2col} cases ({} items) not \
             bit-identical to the im2col path",
            cases.len(),
            overall.abs,
            overall.ulps,
            overall.ratio,
            overall.not_as_im2col
        );
    }

    #[test]
    fn patchify_shapes_of_the_stems() {
        check_all(
            "stems",
            &[
                Case::new(1, 3, (64, 64), (8, 8), 32).relu(),
                Case::new(1, 32, (8, 8), (2, 2), 64).relu(),
                Case::new(1, 3, (64, 64), (4, 4), 32).relu(),
                Case::new(1, 32, (16, 16), (2, 2), 64),
            ],
        );
    }

    #[test]
    fn patchify_odd_shapes() {
        // partial position tiles, channel counts off the 16/32 grid, rectangular kernels,
        // input sizes that do not divide by the kernel, batch > 1; the 7x7 one is the case that
        // met a 64-ulp summation-order difference in session 10
        check_all(
            "odd",
            &[
                Case::new(1, 1, (5, 7), (1, 1), 1),
                Case::new(2, 5, (9, 13), (3, 2), 17).relu(),
                Case::new(1, 4, (12, 10), (2, 5), 33),
                Case::new(3, 2, (7, 7), (7, 7), 48).relu(),
                Case::new(1, 7, (22, 6), (2, 3), 70).relu(),
            ],
        );
    }

    #[test]
    fn patchify_stress_against_generic_conv() {
        use After::*;
        check_all(
            "stress",
            &[
                // C_in off any tile: 1, 3, 5, 7, 13 input channels
                Case::new(1, 1, (16, 16), (4, 4), 32).relu(),
                Case::new(1, 3, (16, 16), (4, 4), 32),
                Case::new(1, 5, (16, 16), (2, 2), 32).relu(),
                Case::new(1, 7, (24, 24), (8, 8), 32),
                Case::new(1, 13, (8, 8), (2, 2), 32).relu(),
                // output channels not a multiple of 32 (and of 16)
                Case::new(1, 3, (16, 16), (4, 4), 1),
                Case::new(1, 3, (16, 16), (4, 4), 15).relu(),
                Case::new(1, 3, (16, 16), (4, 4), 31),
                Case::new(1, 3, (16, 16), (4, 4), 33).relu(),
                Case::new(1, 3, (16, 16), (4, 4), 63),
                Case::new(1, 3, (16, 16), (4, 4), 65).relu(),
                Case::new(1, 2, (8, 8), (2, 2), 100),
                // positions not a multiple of 8: 1, 3, 7, 9, 15, 17
                Case::new(1, 3, (4, 4), (4, 4), 32),
                Case::new(1, 3, (4, 12), (4, 4), 40).relu(),
                Case::new(1, 2, (2, 14), (2, 2), 32),
                Case::new(1, 2, (6, 6), (2, 2), 32).relu(),
                Case::new(1, 2, (6, 10), (2, 2), 17),
                Case::new(1, 2, (2, 34), (2, 2), 64).relu(),
                // batch > 1
                Case::new(2, 3, (16, 16), (4, 4), 32).relu(),
                Case::new(3, 3, (12, 20), (4, 4), 33),
                Case::new(4, 2, (6, 6), (3, 3), 5).relu(),
                // 1x1 kernel, stride 1 (not the patchify path: an EinSum before codegen)
                Case::new(1, 4, (6, 5), (1, 1), 40),
                Case::new(2, 3, (3, 9), (1, 1), 7).relu(),
                // non-square kernels
                Case::new(1, 3, (8, 16), (1, 8), 32).relu(),
                Case::new(1, 3, (16, 8), (8, 1), 32),
                Case::new(1, 4, (9, 25), (3, 5), 24).relu(),
                Case::new(2, 2, (10, 3), (5, 3), 36),
                Case::new(1, 1, (4, 40), (1, 2), 8).relu(),
                // bias absent (tract-hir's zero scalar), one scalar bias for every channel
                Case::new(1, 3, (16, 16), (4, 4), 32).bias(Bias::Absent),
                Case::new(1, 3, (16, 16), (4, 4), 20).bias(Bias::Absent).relu(),
                Case::new(2, 3, (12, 12), (2, 3), 40).bias(Bias::Scalar).relu(),
                Case::new(1, 3, (12, 12), (3, 2), 40).bias(Bias::Scalar),
                // Relu fused or not, another floor, a Relu that must not be fused
                Case::new(1, 3, (16, 16), (4, 4), 36).after(Nothing),
                Case::new(1, 3, (16, 16), (4, 4), 36).after(Relu),
                Case::new(1, 3, (16, 16), (4, 4), 36).after(Floor),
                Case::new(1, 3, (16, 16), (4, 4), 36).after(ReluAndConvOutput),
                Case::new(2, 5, (9, 13), (3, 2), 17).after(ReluAndConvOutput),
                // CHW input
                Case::new(1, 3, (16, 16), (4, 4), 32).chw(),
                Case::new(1, 5, (10, 9), (2, 3), 35).chw().relu(),
                // long sums: k = 1024 and 2304
                Case::new(1, 16, (32, 32), (8, 8), 48).relu(),
                Case::new(1, 64, (12, 12), (6, 6), 33),
            ],
        );
    }

    #[test]
    fn patchify_random_cases_against_generic_conv() {
        let mut s = 20261122u64;
        let mut next = |m: usize| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 33) as usize % m
        };
        let cases: Vec<Case> = (0..80)
            .map(|_| {
                let (kh, kw) = (1 + next(8), 1 + next(8));
                let hw = (kh * (1 + next(6)) + next(kh), kw * (1 + next(6)) + next(kw));
                let mut case = Case::new(1 + next(3), 1 + next(9), hw, (kh, kw), 1 + next(80));
                case.bias = [Bias::PerChannel, Bias::Absent, Bias::Scalar][next(3)];
                case.after =
                    [After::Nothing, After::Relu, After::Floor, After::ReluAndConvOutput][next(4)];
                if next(5) == 0 {
                    case.n = None;
                }
                case
            })
            .collect();
        check_all("random", &cases);
    }

    #[test]
    fn patchify_random_shapes_both_paths() -> TractResult<()> {
        let mut s = 12345u64;
        let mut next = |m: usize| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            1 + ((s >> 33) as usize % m)
        };
        for case in 0..40 {
            let (n, c_in, kh, kw, co) = (next(2), next(6), next(5), next(5), next(70));
            let (h, w) = (kh * next(6) + next(kh) - 1, kw * next(6) + next(kw) - 1);
            let input = tensor1(&values(n * c_in * h * w, case)).into_shape(&[n, c_in, h, w])?;
            let kernel = tensor1(&values(co * c_in * kh * kw, case + 100))
                .into_shape(&[co, c_in, kh, kw])?;
            let bias = tensor1(&values(co, case + 200));
            let mut op = PatchifyConv::new(input.shape(), true, &kernel, &bias)?;
            if case % 2 == 0 {
                op.floor_bits = Some(0f32.to_bits());
            }
            // straight reference: sum in im2col order, then bias, then floor
            let (x, kv, bv) =
                (input.try_as_plain_ram()?, kernel.try_as_plain_ram()?, bias.try_as_plain_ram()?);
            let (x, kv, bv) = (x.as_slice::<f32>()?, kv.as_slice::<f32>()?, bv.as_slice::<f32>()?);
            let (oh, ow) = (h / kh, w / kw);
            let mut expected = vec![0f32; n * co * oh * ow];
            for b in 0..n {
                for o in 0..co {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut acc = 0f32;
                            for c in 0..c_in {
                                for ky in 0..kh {
                                    for kx in 0..kw {
                                        let xi =
                                            ((b * c_in + c) * h + oy * kh + ky) * w + ox * kw + kx;
                                        let ki = ((o * c_in + c) * kh + ky) * kw + kx;
                                        acc = kv[ki].mul_add(x[xi], acc);
                                    }
                                }
                            }
                            acc += bv[o];
                            if case % 2 == 0 {
                                acc = acc.max(0.0);
                            }
                            expected[((b * co + o) * oh + oy) * ow + ox] = acc;
                        }
                    }
                }
            }
            let expected = tensor1(&expected).into_shape(&[n, co, oh, ow])?;
            // same operations in the same order: equal to the last bit, on both paths
            for fast in [false, true] {
                let got = op.compute(&input, fast)?;
                assert_eq!(got, expected, "case {case} fast {fast}: {op:?}");
            }
        }
        Ok(())
    }

    /// The fields are public: `compute` refuses values that break `new`'s invariants instead of
    /// reading or writing out of bounds (review of session 10: `output_shape = [1, 1, 1, 1]`
    /// wrote past the output buffer from safe code).
    #[test]
    fn patchify_refuses_tampered_geometry() -> TractResult<()> {
        let kernel = Tensor::zero::<f32>(&[4, 3, 2, 2])?;
        let op = PatchifyConv::new(&[1, 3, 8, 8], true, &kernel, &tensor1(&[0f32; 4]))?;
        let input = Tensor::zero::<f32>(&[1, 3, 8, 8])?;
        assert!(op.compute(&input, true).is_ok());
        let tampered: [Box<dyn Fn(&mut PatchifyConv)>; 7] = [
            Box::new(|op| op.output_shape = tvec!(1, 1, 1, 1)),
            Box::new(|op| op.co = 40),
            Box::new(|op| op.oh = 5),
            Box::new(|op| op.ow = usize::MAX / 2),
            Box::new(|op| op.bias = Arc::new(tensor1(&[0f32; 4]))),
            Box::new(|op| op.packed_weights = Arc::new(tensor1(&[0f32; 12]))),
            // No output rows and a kernel of 2^63 rows: 3 * 2^63 * 2 wraps to 0, which an
            // empty weight tensor matched (review finding, session 12; a debug build panicked).
            Box::new(|op| {
                op.oh = 0;
                op.kh = usize::MAX / 2 + 1;
                op.output_shape = tvec!(1, 4, 0, 4);
                op.packed_weights = Arc::new(Tensor::zero::<f32>(&[0]).unwrap());
            }),
        ];
        for (i, t) in tampered.iter().enumerate() {
            let mut bad = op.clone();
            t(&mut bad);
            for fast in [false, true] {
                assert!(bad.compute(&input, fast).is_err(), "tampering {i} accepted");
            }
        }
        Ok(())
    }
}
