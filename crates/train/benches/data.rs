//! Synthetic data generation speed, one sample per iteration on one core, with variants side by
//! side (ratios in one run). `cargo bench -p shapecast-train --bench data`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use shapecast_train::data::{Dataset, Split, SynthConfig, SyntheticDataset};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("synth_sample");
    g.sample_size(20);
    let base = SynthConfig {
        seed: 2026,
        objects_per_class: 400,
        views: 4,
        cache_objects: 0,
        ..SynthConfig::default()
    };
    let variants = [
        (
            "64px_points2048",
            SynthConfig {
                voxel_res: 0,
                n_sdf: 0,
                ..base.clone()
            },
        ),
        ("64px_points_vox32_sdf2048", base.clone()),
        (
            "128px_points2048",
            SynthConfig {
                image_size: 128,
                voxel_res: 0,
                n_sdf: 0,
                ..base.clone()
            },
        ),
        // Ground truth cached: the cost of one more view of a known object (render only).
        (
            "64px_cached_view",
            SynthConfig {
                cache_objects: 100_000,
                ..base.clone()
            },
        ),
    ];
    for (name, cfg) in variants {
        let ds = SyntheticDataset::new(cfg, Split::Train).expect("dataset");
        if name.contains("cached") {
            for i in 0..ds.len() {
                black_box(ds.get(i).expect("sample"));
            }
        }
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % ds.len();
                black_box(ds.get(i).expect("sample"))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
