//! shapecast patch (session 11): tests of the int8 kernel changes made for AMX CPUs, and
//! (session 12) of the VEX-only x86_64 templates.
//!
//! - no x86_64 kernel template (int8 since session 11, f32 / f16 since session 12) may contain
//!   legacy-SSE (non-VEX) instructions on xmm registers: on the Emerald Rapids VM these were
//!   measured on, every switch between a legacy-SSE instruction and a VEX one while the upper
//!   ymm/zmm state is dirty costs ~650 ns (measured with a standalone loop, `movd xmm, r32` after
//!   `vpaddd ymm`: 650-750 ns/iteration vs 2 ns with `vmovd`), and the 8x8 kernels had 14-20 such
//!   switches per call;
//! - `amx_int8_preferred` names the AMX 16x16 only on the shapes where it was measured to win;
//! - the AMX int8 kernels configure their tiles lazily (`sttilecfg`, compare, `ldtilecfg` only
//!   when the live configuration is not theirs), so they must still load theirs after another
//!   kernel's configuration or a `tilerelease`, and must leave theirs live when they return;
use super::*;
use crate::frame::mmm::{AsInputValue, FusedSpec, MatMatMul};
use crate::isa::{Arch, Isa, IsaSet};
use tract_data::internal::*;

/// Every template, include file and raw loop under `x86_64/` (f32, f16 and int8; fma, avx512,
/// vnni and amx), as (path relative to the crate, text), sorted by path.
fn x86_64_templates() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs = vec![root.join("x86_64")];
    let mut found = vec![];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
            let path = entry.unwrap_or_else(|e| panic!("{dir:?}: {e}")).path();
            let name = path.to_string_lossy().into_owned();
            if path.is_dir() {
                dirs.push(path);
            } else if name.ends_with(".j2") || name.ends_with(".S.raw") || name.ends_with(".S") {
                let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
                let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().into_owned();
                found.push((rel.replace('\\', "/"), text));
            }
        }
    }
    found.sort();
    found
}

/// The mnemonic of a template line when it is a legacy-SSE instruction on an xmm register:
/// an instruction (not a comment, label or directive) with an xmm operand whose mnemonic has no
/// VEX/EVEX `v` prefix.
fn legacy_sse(line: &str) -> Option<&str> {
    let mut line = line.split("//").next().unwrap_or("").trim();
    // `{% for ... %}vpminsd zmm{{r}}, ...` keeps its instruction after the tag
    while let Some(rest) = line.strip_prefix("{%") {
        line = rest.split_once("%}").map(|(_, after)| after.trim()).unwrap_or("");
    }
    let (mnemonic, operands) = line.split_once(char::is_whitespace)?;
    let mnemonic_is_instruction = mnemonic.chars().all(|c| c.is_ascii_alphanumeric());
    (mnemonic_is_instruction
        && !mnemonic.starts_with('v')
        && operands.to_ascii_lowercase().contains("xmm"))
    .then_some(mnemonic)
}

#[test]
fn legacy_sse_detector() {
    assert_eq!(legacy_sse("    movd            xmm14,  r8d"), Some("movd"));
    assert_eq!(legacy_sse("                pinsrd xmm10, eax, {{lane}}"), Some("pinsrd"));
    assert_eq!(legacy_sse("            extractps   ebx, xmm{{col}}, {{row}}"), Some("extractps"));
    assert_eq!(legacy_sse("    movq            xmm8, qword ptr [rax]  // read"), Some("movq"));
    assert_eq!(legacy_sse("    vmovd           xmm14,  r8d"), None);
    assert_eq!(legacy_sse("    vpbroadcastd    ymm14,  xmm14"), None);
    assert_eq!(legacy_sse("// movd xmm1, eax in a comment"), None);
    assert_eq!(legacy_sse("    stmxcsr     [rsp + 4]"), None);
    assert_eq!(legacy_sse("{{L}}clear:"), None);
    assert_eq!(legacy_sse("    {% for r in range(0, 16) %}movd xmm{{r}}, eax"), Some("movd"));
    // the f32 forms session 12 replaced
    assert_eq!(legacy_sse("                movaps xmm9, xmm{{vec}}"), Some("movaps"));
    assert_eq!(legacy_sse("    pextrw  word ptr [r8], xmm{{vec}}, {{row}}"), Some("pextrw"));
    assert_eq!(legacy_sse("    pinsrw  xmm12, word ptr [rdi + 8], 0"), Some("pinsrw"));
    assert_eq!(legacy_sse("    vpinsrd  xmm14, xmm14, eax, {{i}}"), None);
    assert_eq!(legacy_sse("    vpextrw  word ptr [r8], xmm{{vec}}, {{row}}"), None);
}

/// Every x86_64 template (f32 and int8, fma and avx512: kernels, their includes such as the
/// preamble, zmm/ymm ops and tile loads, and the `.S.raw` inner loops) is VEX/EVEX only: a
/// legacy-SSE instruction that writes an xmm register while the upper ymm/zmm state is dirty costs
/// ~500-650 ns here (see the module docs; session 12 remeasured `pinsrd` 494-559 ns and `movaps`
/// 583-592 ns against 0.7 ns for `vpinsrd` / `vmovaps`). `ldmxcsr` / `stmxcsr` (no xmm
/// operand) were measured at the same cost as their VEX forms and are not flagged.
#[test]
fn x86_64_templates_are_vex_only() {
    let templates = x86_64_templates();
    // the walk must have seen the whole tree, not an empty or moved folder
    assert!(templates.len() >= 120, "only {} templates under x86_64/", templates.len());
    for expected in [
        "x86_64/fma/avx512vnni_mmm_i32_8x8.S.j2",
        "x86_64/fma/fma_mmm_f32_64x1.S.j2",
        "x86_64/fma/fma_mmm_ymm_ops.j2",
        "x86_64/fma/preamble.j2",
        "x86_64/avx512/avx512_mmm_f32_128x1.S.j2",
        "x86_64/avx512/zmm_ops.j2",
        "x86_64/avx512/avx512_mmm_load_tile.j2",
        "x86_64/avx512/1x1/packed_packed_loop1/avx-512.S.raw",
    ] {
        assert!(templates.iter().any(|(path, _)| path == expected), "{expected} not scanned");
    }
    let mut found = vec![];
    for (path, text) in &templates {
        for (ix, line) in text.lines().enumerate() {
            if let Some(mnemonic) = legacy_sse(line) {
                found.push(format!("{path}:{}: {mnemonic}", ix + 1));
            }
        }
    }
    assert!(found.is_empty(), "legacy-SSE instructions in x86_64 templates: {found:#?}");
}

/// The instruction on a template line, lower-cased, without comments, `{% .. %}` tags or labels
/// (empty when the line holds none).
fn instruction(line: &str) -> String {
    let mut line = line.split("//").next().unwrap_or("").trim();
    while let Some(rest) = line.strip_prefix("{%") {
        line = rest.split_once("%}").map(|(_, after)| after.trim()).unwrap_or("");
    }
    if line.ends_with(':') || line.starts_with('.') || line.starts_with("{{") {
        return String::new();
    }
    line.to_ascii_lowercase()
}

/// Every `ret` of an x86_64 kernel template leaves the upper ymm/zmm state clean: walking back
/// from it over the epilogue's stack and general-register restores (`pop`, `mov`, `add`,
/// `lea` on general registers) and the Windows xmm6-15 reloads, the first other instruction is
/// `vzeroupper`. Session 11 put it in fma/postamble.j2 and the int8 kernels; session 12 found
/// avx512/postamble.j2 (every AVX-512 f32 kernel: 64x4, 48x4, 128x1, ...) and the sigmoid /
/// tanh / silu kernels returning with dirty zmm0-15, so the caller's next legacy-SSE write to
/// an xmm register (Rust code built for baseline x86-64) paid the SSE/AVX switch.
#[test]
fn x86_64_kernels_return_with_clean_upper_state() {
    let mut rets = 0;
    let mut dirty = vec![];
    for (path, text) in x86_64_templates() {
        // the assembler probes of build.rs are never called
        if path.rsplit('/').next().is_some_and(|name| name.starts_with("dummy")) {
            continue;
        }
        let lines: Vec<String> = text.lines().map(instruction).collect();
        for (ix, ins) in lines.iter().enumerate() {
            if ins != "ret" {
                continue;
            }
            rets += 1;
            let before = lines[..ix].iter().rev().find(|ins| {
                let mnemonic = ins.split_whitespace().next().unwrap_or("");
                let gpr_restore =
                    matches!(mnemonic, "pop" | "mov" | "add" | "lea") && !ins.contains("mm");
                let xmm_reload = ins.starts_with("vmovaps xmm") && ins.contains("[rsp");
                let restore = gpr_restore || xmm_reload;
                !ins.is_empty() && !restore
            });
            if before.map(String::as_str) != Some("vzeroupper") {
                dirty.push(format!("{path}:{}: ret after {before:?}", ix + 1));
            }
        }
    }
    assert!(rets >= 17, "only {rets} `ret` found in the x86_64 templates");
    assert!(dirty.is_empty(), "kernels returning without vzeroupper: {dirty:#?}");
}

/// Deterministic full-range i8 stream (xorshift32).
fn i8_stream(mut seed: u32) -> impl FnMut() -> i8 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        (seed >> 11) as u8 as i8
    }
}

/// C = A.B + row bias + an i32 and an i8 addend (AddUnicast, both item sizes), through `ker`'s
/// i8i8 packing (index 1); A [m, k] and B [k, n] row-major. Stored as i32, or clamped to i8 and
/// stored as i8 (`store_i8`), then widened back for comparison.
fn run_i8i8(
    ker: &dyn MatMatMul,
    (m, k, n): (usize, usize, usize),
    a: &[i8],
    b: &[i8],
    store_i8: bool,
) -> TractResult<Vec<i32>> {
    let at = tract_ndarray::Array2::from_shape_vec((m, k), a.to_vec()).unwrap().into_tensor();
    let bt = tract_ndarray::Array2::from_shape_vec((k, n), b.to_vec()).unwrap().into_tensor();
    let (pack_a, pack_b) = &ker.packings()[1];
    let pa = pack_a.prepare_one(&at, 1, 0)?;
    let pb = pack_b.prepare_one(&bt, 0, 1)?;
    let (bias, add32, add8) = addends(m, n);
    let bias = Tensor::from_shape(&[m], &bias)?;
    let add32 = Tensor::from_shape(&[m, n], &add32)?;
    let add8 = Tensor::from_shape(&[m, n], &add8)?;
    let lo = tensor0(-128i32);
    let hi = tensor0(127i32);
    let mut c32 = Tensor::zero::<i32>(&[m, n])?;
    let mut c8 = Tensor::zero::<i8>(&[m, n])?;
    unsafe {
        let spec32 = ker.c_from_data_and_strides(4, n as isize, 1);
        let spec8 = ker.c_from_data_and_strides(1, n as isize, 1);
        let (add32_view, add8_view) = (add32.view(), add8.view());
        let (view32, view8) = (c32.view_mut(), c8.view_mut());
        let mut ops: TVec<FusedSpec> = tvec!(
            FusedSpec::AddMatMul {
                a: AsInputValue::Borrowed(&*pa),
                b: AsInputValue::Borrowed(&*pb),
                packing: 1,
            },
            FusedSpec::BinPerRow(bias.view(), crate::BinOp::Add),
            FusedSpec::AddUnicast(spec32.wrap(&add32_view)),
        );
        // an i8 addend only on whole tiles: on a partial one the frame hands the kernel its
        // scratch tile, which is i32 (the same with the kernels before this patch)
        if whole_tiles(ker, m, n) {
            ops.push(FusedSpec::AddUnicast(spec8.wrap(&add8_view)));
        }
        if store_i8 {
            ops.push(FusedSpec::BinScalar(&lo, crate::BinOp::Max));
            ops.push(FusedSpec::BinScalar(&hi, crate::BinOp::Min));
            ops.push(FusedSpec::Store(spec8.wrap(&view8)));
        } else {
            ops.push(FusedSpec::Store(spec32.wrap(&view32)));
        }
        ker.run(m, n, &ops)?;
    }
    Ok(if store_i8 {
        c8.to_plain_array_view::<i8>()?.iter().map(|&x| x as i32).collect()
    } else {
        c32.to_plain_array_view::<i32>()?.iter().copied().collect()
    })
}

fn whole_tiles(ker: &dyn MatMatMul, m: usize, n: usize) -> bool {
    m % ker.mr() == 0 && n % ker.nr() == 0
}

/// The row bias, the i32 addend and the i8 addend `run_i8i8` applies (full-range i8 addend).
fn addends(m: usize, n: usize) -> (Vec<i32>, Vec<i32>, Vec<i8>) {
    let bias = (0..m as i32).map(|r| r * 3 - 7).collect();
    let add32 = (0..(m * n) as i32).map(|i| (i % 11) - 5).collect();
    let add8 = (0..m * n).map(|i| (i * 37 % 256) as u8 as i8).collect();
    (bias, add32, add8)
}

fn reference(
    (m, k, n): (usize, usize, usize),
    a: &[i8],
    b: &[i8],
    store_i8: bool,
    with_add8: bool,
) -> Vec<i32> {
    let (bias, add32, add8) = addends(m, n);
    let mut c = vec![0i32; m * n];
    for r in 0..m {
        for col in 0..n {
            let dot = (0..k).fold(0i32, |acc, kk| {
                acc.wrapping_add(a[r * k + kk] as i32 * b[kk * n + col] as i32)
            });
            let v = dot
                + bias[r]
                + add32[r * n + col]
                + if with_add8 { add8[r * n + col] as i32 } else { 0 };
            c[r * n + col] = if store_i8 { v.clamp(-128, 127) } else { v };
        }
    }
    c
}

/// Checks `ker` on one shape, both stores.
fn check(ker: &dyn MatMatMul, shape: (usize, usize, usize), a: &[i8], b: &[i8]) -> TractResult<()> {
    for store_i8 in [false, true] {
        let got = run_i8i8(ker, shape, a, b, store_i8)?;
        assert_eq!(
            got,
            reference(shape, a, b, store_i8, whole_tiles(ker, shape.0, shape.2)),
            "{} {shape:?} i8={store_i8}",
            ker.name()
        );
    }
    Ok(())
}

#[cfg(tract_amx_int8)]
mod amx {
    use super::*;

    /// The live AMX tile configuration of this thread (64 bytes, zeros when tiles are released).
    fn live_tile_config() -> [u8; 64] {
        let mut cfg = [0u8; 64];
        unsafe {
            std::arch::asm!("sttilecfg [{}]", in(reg) cfg.as_mut_ptr(), options(nostack));
        }
        cfg
    }

    /// Loads a configuration no int8 kernel uses (every tile 16 rows x 32 bytes).
    fn load_foreign_tile_config() {
        let mut cfg = [0u8; 64];
        cfg[0] = 1;
        for t in 0..8 {
            cfg[16 + 2 * t] = 32;
            cfg[48 + t] = 16;
        }
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack));
        }
    }

    fn release_tiles() {
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem)) }
    }

    /// Both AMX int8 kernels, alternating on one thread, each after the other's configuration, a
    /// foreign one, a release, or its own (the lazy path that skips `ldtilecfg`), on shapes with
    /// partial tiles and K not a multiple of 64, against i32 arithmetic.
    #[test]
    fn amx_int8_tile_config_follows_kernel_switches() -> TractResult<()> {
        if !crate::x86_64::amx::has_amx_int8() {
            return Ok(());
        }
        let mut next = i8_stream(0x9e3779b9);
        let k8 = avx512amx_mmm_i32_8x8.mmm();
        let k16 = avx512amx_mmm_i32_16x16.mmm();
        let shapes = [(37usize, 130usize, 29usize), (16, 64, 16), (9, 3, 70), (64, 192, 32)];
        let plan: [(&dyn MatMatMul, u8); 8] = [
            (&*k16, 0), // after whatever the thread had
            (&*k16, 0), // own configuration live: skips ldtilecfg
            (&*k8, 0),  // the 16x16's configuration live
            (&*k8, 1),  // after a release
            (&*k16, 2), // after a foreign configuration
            (&*k8, 0),
            (&*k16, 1),
            (&*k8, 2),
        ];
        for (m, k, n) in shapes {
            let a: Vec<i8> = (0..m * k).map(|_| next()).collect();
            let b: Vec<i8> = (0..k * n).map(|_| next()).collect();
            for (ker, before) in plan {
                let expected = reference((m, k, n), &a, &b, false, whole_tiles(ker, m, n));
                match before {
                    1 => release_tiles(),
                    2 => load_foreign_tile_config(),
                    _ => (),
                }
                let got = run_i8i8(ker, (m, k, n), &a, &b, false)?;
                assert_eq!(got, expected, "{} m={m} k={k} n={n} before={before}", ker.name());
            }
        }
        Ok(())
    }

    /// The kernels leave their configuration live, so that the next call of the same kernel
    /// skips `ldtilecfg` (~500 ns per call where measured) instead of reloading it after a
    /// release.
    #[test]
    fn amx_int8_kernels_leave_their_tile_config_live() -> TractResult<()> {
        if !crate::x86_64::amx::has_amx_int8() {
            return Ok(());
        }
        let mut next = i8_stream(7);
        let (m, k, n) = (32, 70, 16);
        let a: Vec<i8> = (0..m * k).map(|_| next()).collect();
        let b: Vec<i8> = (0..k * n).map(|_| next()).collect();
        // (kernel, rows of tmm0/1/2, bytes per row of tmm0/1/2)
        type Case = (Box<dyn MatMatMul>, [u8; 3], [u16; 3]);
        let cases: [Case; 2] = [
            (avx512amx_mmm_i32_8x8.mmm(), [8, 8, 16], [32, 64, 32]),
            (avx512amx_mmm_i32_16x16.mmm(), [16, 16, 16], [64, 64, 64]),
        ];
        for (ker, rows, colsb) in cases {
            release_tiles();
            check(&*ker, (m, k, n), &a, &b)?;
            let cfg = live_tile_config();
            assert_eq!(cfg[0], 1, "{}: palette", ker.name());
            for (t, (&rows, &colsb)) in rows.iter().zip(colsb.iter()).enumerate() {
                assert_eq!(cfg[48 + t], rows, "{}: rows of tmm{t}", ker.name());
                let bytes = u16::from_le_bytes([cfg[16 + 2 * t], cfg[17 + 2 * t]]);
                assert_eq!(bytes, colsb, "{}: colsb of tmm{t}", ker.name());
            }
        }
        release_tiles();
        Ok(())
    }
}

/// The int8 kernels' epilogue paths (the 8x8 ones' i8 AddUnicast and i32 strided add now build
/// their rows with VEX `vpinsrd` + `vinserti128`, their i8 store uses `vextractps`), on
/// full-range data and partial tiles.
#[test]
fn int8_kernels_epilogue_paths() -> TractResult<()> {
    let mut kernels: Vec<Box<dyn MatMatMul>> = vec![];
    if is_x86_feature_detected!("avx2") {
        kernels.push(avx2_mmm_i32_8x8.mmm());
    }
    #[cfg(tract_avx512vnni)]
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni") {
        kernels.push(avx512vnni_mmm_i32_8x8.mmm());
        kernels.push(avx512vnni_mmm_i32_16x16.mmm());
    }
    #[cfg(tract_avxvnni)]
    if is_x86_feature_detected!("avxvnni") {
        kernels.push(avxvnni_mmm_i32_8x8.mmm());
    }
    #[cfg(tract_amx_int8)]
    if crate::x86_64::amx::has_amx_int8() {
        kernels.push(avx512amx_mmm_i32_8x8.mmm());
        kernels.push(avx512amx_mmm_i32_16x16.mmm());
    }
    let mut next = i8_stream(0x1234567);
    for (m, k, n) in [(8usize, 8usize, 8usize), (16, 67, 32), (13, 67, 11), (3, 1, 17)] {
        let a: Vec<i8> = (0..m * k).map(|_| next()).collect();
        let b: Vec<i8> = (0..k * n).map(|_| next()).collect();
        for ker in &kernels {
            check(&**ker, (m, k, n), &a, &b)?;
        }
    }
    Ok(())
}

/// The int8 products of the shipped models as tract runs them (m, k, n and which operand is the
/// activation, packed on every run; found with a breakpoint on `amx_int8_preferred`), on every
/// int8 kernel, activation pack and kernel timed together, best of `AMX11_ITERS`. A measuring
/// aid for `amx_int8_preferred`, not a check:
/// `cargo test --release --lib amx11_int8_shapes -- --ignored --nocapture --test-threads 1`
#[test]
#[ignore]
fn amx11_int8_shapes() -> TractResult<()> {
    use std::time::Instant;
    if !is_x86_feature_detected!("avx512vnni") {
        return Ok(());
    }
    let iters: usize =
        std::env::var("AMX11_ITERS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    #[allow(unused_mut)]
    let mut kernels: Vec<Box<dyn MatMatMul>> = vec![];
    #[cfg(tract_avx512vnni)]
    {
        kernels.push(avx512vnni_mmm_i32_8x8.mmm());
        kernels.push(avx512vnni_mmm_i32_16x16.mmm());
    }
    #[cfg(tract_amx_int8)]
    if crate::x86_64::amx::has_amx_int8() {
        kernels.push(avx512amx_mmm_i32_8x8.mmm());
        kernels.push(avx512amx_mmm_i32_16x16.mmm());
    }
    // (m, k, n, activation on the m side)
    let shapes: &[(usize, usize, usize, bool)] = &[
        (8192, 3, 64, true),   // implicit decoder, first layer
        (8192, 64, 64, true),  // implicit decoder, hidden layers
        (32, 48, 256, false),  // default / semantic conv 1
        (64, 128, 64, false),  // default / semantic / voxels conv 2
        (32, 192, 64, false),  // lmnet / mesh / implicit conv 1
        (64, 128, 16, false),  // lmnet / mesh / implicit conv 2
        (128, 256, 16, false), // voxels conv 3
        (256, 128, 4, false),  // lmnet
        (256, 256, 4, false),  // lmnet
        (3072, 256, 4, false), // lmnet
        (256, 1024, 64, false),
        (256, 4096, 16, false),
    ];
    let mut next = i8_stream(42);
    for &(m, k, n, act_m) in shapes {
        let a: Vec<i8> = (0..m * k).map(|_| next()).collect();
        let b: Vec<i8> = (0..k * n).map(|_| next()).collect();
        let at = tract_ndarray::Array2::from_shape_vec((m, k), a).unwrap().into_tensor();
        let bt = tract_ndarray::Array2::from_shape_vec((k, n), b).unwrap().into_tensor();
        let bias = Tensor::from_shape(&[m], &(0..m as i32).collect::<Vec<_>>())?;
        let scaler = crate::Scaler::new(0.0123, crate::frame::mmm::RoundingPolicy::Even);
        let (lo, hi) = (tensor0(-128i32), tensor0(127i32));
        for ker in &kernels {
            let (pack_a, pack_b) = &ker.packings()[1];
            let (fixed, moving, moving_t, k_axis, mn_axis) = if act_m {
                (pack_b.prepare_one(&bt, 0, 1)?, pack_a, &at, 1, 0)
            } else {
                (pack_a.prepare_one(&at, 1, 0)?, pack_b, &bt, 0, 1)
            };
            let mut c = Tensor::zero::<i8>(&[m, n])?;
            let mut best = f64::MAX;
            for _ in 0..iters {
                let t0 = Instant::now();
                let packed = moving.prepare_one(moving_t, k_axis, mn_axis)?;
                let (pa, pb) = if act_m { (&packed, &fixed) } else { (&fixed, &packed) };
                unsafe {
                    let c_spec = ker.c_from_data_and_strides(1, n as isize, 1);
                    let view = c.view_mut();
                    let ops: TVec<FusedSpec> = tvec!(
                        FusedSpec::AddMatMul {
                            a: AsInputValue::Borrowed(&**pa),
                            b: AsInputValue::Borrowed(&**pb),
                            packing: 1,
                        },
                        FusedSpec::BinPerRow(bias.view(), crate::BinOp::Add),
                        scaler.as_fused_spec(),
                        FusedSpec::BinScalar(&lo, crate::BinOp::Max),
                        FusedSpec::BinScalar(&hi, crate::BinOp::Min),
                        FusedSpec::Store(c_spec.wrap(&view)),
                    );
                    ker.run(m, n, &ops)?;
                }
                best = best.min(t0.elapsed().as_secs_f64());
            }
            println!("amx11 m={m:5} k={k:5} n={n:4} {:<26} {:9.2} us", ker.name(), best * 1e6);
        }
    }
    Ok(())
}

/// The kernel a forced x86_64 ISA (AVX-512 VNNI, with or without AMX int8) runs for m, k, n.
#[cfg(tract_amx_int8)]
fn forced_pick(amx: bool, m: usize, k: usize, n: usize) -> String {
    let mut isa = IsaSet::of_arch(Arch::X86_64)
        .with(Isa::X86_64Avx)
        .with(Isa::X86_64Avx2)
        .with(Isa::X86_64Fma)
        .with(Isa::X86_64Avx512f)
        .with(Isa::X86_64Avx512Vnni);
    if amx {
        isa = isa.with(Isa::X86_64AmxInt8);
    }
    let dispatch = crate::MmmDispatch::for_isa(isa);
    dispatch.preferred_kernel(DatumType::I32, Some(m), Some(k), Some(n)).unwrap().name().to_string()
}

/// The measured rule: AMX 16x16 where it won, the VNNI tier's answer elsewhere (k < 64, small m,
/// small n with short k), and never AMX without the feature.
#[cfg(tract_amx_int8)]
#[test]
fn amx_int8_rule() {
    for (m, k, n) in [(8192, 64, 64), (64, 128, 16), (32, 192, 64), (3072, 256, 4), (256, 4096, 16)]
    {
        assert_eq!(forced_pick(true, m, k, n), "avx512amx_mmm_i32_16x16", "{m} {k} {n}");
    }
    for (m, k, n) in [(8192, 3, 64), (32, 48, 256), (256, 128, 4), (8, 512, 64), (256, 1024, 1)] {
        let with_amx = forced_pick(true, m, k, n);
        assert!(with_amx.starts_with("avx512vnni_mmm_i32_"), "{m} {k} {n}: {with_amx}");
        assert_eq!(with_amx, forced_pick(false, m, k, n), "{m} {k} {n}");
    }
    for (m, k, n) in [(8192, 64, 64), (3072, 256, 4)] {
        assert!(forced_pick(false, m, k, n).starts_with("avx512vnni_mmm_i32_"));
    }
}
