#![allow(dead_code)]
// Kernel-level benchmark: AVX-512 VNNI int8 GEMM over the K=4-inner PackedI8K4
// layout (VPDPBUSD) vs the AVX2 int8 path (avx2_mmm_i32_8x8, vpmaddubsw-style
// widening). Three columns: the AVX2 baseline, the 8x8 ymm VNNI kernel, and the
// 16x16 zmm VNNI kernel (twice the columns per accumulator). All run the i8i8
// packing (index 1) over the same M/K/N so the only difference is the matmul
// inner loop and tile geometry.
use criterion::*;
use tract_data::internal::*;
use tract_linalg::mmm::{AsInputValue, FusedSpec, MatMatMul};

fn run_kernel(be: &mut Bencher, mmm: &dyn MatMatMul, m: usize, k: usize, n: usize) {
    run_kernel_dt(be, mmm, m, k, n, DatumType::I8, 1)
}

fn run_kernel_dt(
    be: &mut Bencher,
    mmm: &dyn MatMatMul,
    m: usize,
    k: usize,
    n: usize,
    dt: DatumType,
    packing: usize,
) {
    let a = Tensor::zero_dt(dt, &[m, k]).unwrap();
    let b = Tensor::zero_dt(dt, &[k, n]).unwrap();
    let (pack_a, pack_b) = &mmm.packings()[packing];
    let pa = pack_a.prepare_one(&a, 1, 0).unwrap();
    let pb = pack_b.prepare_one(&b, 0, 1).unwrap();
    let mut scratch = unsafe { mmm.allocate_scratch_space() };
    be.iter_custom(|iters| {
        let mut dur = std::time::Duration::default();
        for _ in 0..iters {
            let t = std::time::Instant::now();
            unsafe {
                mmm.run_with_scratch_space(
                    m,
                    n,
                    scratch.as_mut(),
                    &[FusedSpec::AddMatMul {
                        a: AsInputValue::Borrowed(&*pa),
                        b: AsInputValue::Borrowed(&*pb),
                        packing,
                    }],
                )
                .unwrap()
            };
            dur += t.elapsed();
        }
        dur
    });
}

fn benches(c: &mut Criterion) {
    #[cfg(target_arch = "x86_64")]
    {
        if !std::is_x86_feature_detected!("avx512vnni") {
            eprintln!("avx512vnni not available, skipping");
            return;
        }
        use tract_linalg::x86_64::mmm::*;
        for &(m, k, n) in
            &[(64usize, 256usize, 64usize), (256, 256, 256), (512, 512, 512), (1024, 1024, 64)]
        {
            let id = format!("{m}x{k}x{n}");
            let mut g = c.benchmark_group("vnni_i32/packed_packed");
            g.throughput(Throughput::Elements((m * k * n) as u64));
            g.bench_with_input(BenchmarkId::new("avx2", &id), &(m, k, n), |b, &(m, k, n)| {
                run_kernel(b, &*avx2_mmm_i32_8x8.mmm(), m, k, n)
            });
            g.bench_with_input(BenchmarkId::new("avx512vnni", &id), &(m, k, n), |b, &(m, k, n)| {
                run_kernel(b, &*avx512vnni_mmm_i32_8x8.mmm(), m, k, n)
            });
            g.bench_with_input(
                BenchmarkId::new("avx512vnni_16x16", &id),
                &(m, k, n),
                |b, &(m, k, n)| run_kernel(b, &*avx512vnni_mmm_i32_16x16.mmm(), m, k, n),
            );
            g.finish();
        }
    }
    // shapecast patch: batch-1 products (n == 1) of the shipped int8 models, the tiles tract
    // used before (16x16, 8x8), the int8 matrix-vector kernel, and tract's f32 GEMV on the
    // same shape (f32 data) for the int8/f32 ratio.
    #[cfg(target_arch = "x86_64")]
    {
        use tract_linalg::x86_64::mmm::*;
        for &(m, k) in &[
            (256usize, 4096usize),
            (256, 1024),
            (3072, 256),
            (15360, 256),
            (2048, 256),
            (1926, 256),
            (128, 256),
            (32, 256),
        ] {
            let id = format!("{m}x{k}x1");
            let mut g = c.benchmark_group("vnni_i32/mmv");
            g.throughput(Throughput::Elements((m * k) as u64));
            g.bench_with_input(BenchmarkId::new("i8_16x16", &id), &(m, k), |b, &(m, k)| {
                run_kernel(b, &*avx512vnni_mmm_i32_16x16.mmm(), m, k, 1)
            });
            g.bench_with_input(BenchmarkId::new("i8_8x8", &id), &(m, k), |b, &(m, k)| {
                run_kernel(b, &*avx512vnni_mmm_i32_8x8.mmm(), m, k, 1)
            });
            g.bench_with_input(BenchmarkId::new("i8_64x1", &id), &(m, k), |b, &(m, k)| {
                run_kernel(b, &*avx512vnni_mmm_i32_64x1.mmm(), m, k, 1)
            });
            g.bench_with_input(BenchmarkId::new("f32_128x1", &id), &(m, k), |b, &(m, k)| {
                run_kernel_dt(b, &*avx512_mmm_f32_128x1.mmm(), m, k, 1, DatumType::F32, 0)
            });
            g.finish();
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        eprintln!("this bench only runs on x86_64 targets — skipping on host");
        let _ = c;
    }
}

criterion_group!(g, benches);
criterion_main!(g);
