//! Chamfer / F-score speed: k-d tree against brute force on the same clouds (ratio in one run).
//!
//! `cargo bench -p shapecast-geom --bench metrics`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rand::{Rng, SeedableRng};
use shapecast_geom::metrics::{chamfer, PointDistances};

fn cloud(n: usize, seed: u64) -> Vec<[f32; 3]> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    // Points on a unit sphere (a surface, like real reconstructions).
    (0..n)
        .map(|_| {
            let v: [f32; 3] = [
                rng.gen_range(-1.0..1.0),
                rng.gen_range(-1.0..1.0),
                rng.gen_range(-1.0..1.0),
            ];
            let l = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt().max(1e-6);
            [0.5 * v[0] / l, 0.5 * v[1] / l, 0.5 * v[2] / l]
        })
        .collect()
}

fn brute_chamfer_l2(a: &[[f32; 3]], b: &[[f32; 3]]) -> f32 {
    let dir = |x: &[[f32; 3]], y: &[[f32; 3]]| {
        x.iter()
            .map(|p| {
                y.iter()
                    .map(|q| (p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2) + (p[2] - q[2]).powi(2))
                    .fold(f32::INFINITY, f32::min)
            })
            .sum::<f32>()
            / x.len() as f32
    };
    dir(a, b) + dir(b, a)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("chamfer");
    g.sample_size(10);
    for n in [2048usize, 10_000] {
        let a = cloud(n, 1);
        let b = cloud(n, 2);
        g.bench_function(format!("kdtree_{n}x{n}"), |bn| {
            bn.iter(|| chamfer(black_box(&a), black_box(&b)).map(|c| c.l2))
        });
        g.bench_function(format!("brute_{n}x{n}"), |bn| {
            bn.iter(|| brute_chamfer_l2(black_box(&a), black_box(&b)))
        });
    }
    let a = cloud(10_000, 3);
    let b = cloud(10_000, 4);
    g.bench_function("distances+chamfer+fscore@3_10000x10000", |bn| {
        bn.iter(|| {
            let d = PointDistances::new(black_box(&a), black_box(&b))
                .map(|d| (d.chamfer(), d.fscores(&[0.005, 0.01, 0.02])));
            black_box(d.is_ok())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
