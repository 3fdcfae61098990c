//! Point-coder benchmark: generates deterministic clouds of 2048 points on
//! varied shapes (analytic surfaces and procedural triangle meshes written as
//! PLY files), quantizes them at 8, 10 and 12 bits, writes the quantized clouds
//! as `.xyz` files (integer grid coordinates) for `bench/pointcode/draco.py`,
//! times our encoder and decoder and prints one TSV line per cloud.
//!
//! Usage: `cargo run --release -p shapecast-wire --example pointcode_bench -- [DIR]`
//! (default DIR: /tmp/pointcode_bench; `-- DIR enc|dec REPS` only runs the
//! coder REPS times per cloud, untimed, for `perf`; `PC_ONLY=<shape>_<bits>`
//! restricts that mode to one cloud; `PC_DUMP=<dir>` also writes each
//! stream there as `<shape>_<bits>.pc`; `PC_SAMPLES=N` times each cloud as
//! the fastest of N single calls instead of the best of 11 batches).
//! `PC_METHOD=compact`
//! selects the compact coder (format 3), `PC_METHOD=symbol` the symbol coder
//! (format 5), instead of the default fast one (format 4). Exit code 1 on any failure. (That the
//! coder does not allocate is checked by a test in `tests/wire.rs`.)
use shapecast_wire::pointcode::{self, Bounds};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

const N: usize = 2048;

const BITS: [u8; 3] = [8, 10, 12];

/// SplitMix64: small deterministic generator (no dependency).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn f(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

type V = [f64; 3];

#[derive(Default)]
struct Mesh {
    v: Vec<V>,
    f: Vec<[usize; 3]>,
}

fn sub(a: V, b: V) -> V {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
fn cross(a: V, b: V) -> V {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
fn norm(a: V) -> f64 {
    (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt()
}

impl Mesh {
    /// Grid mesh of a parametric surface `s(u, v)`, u, v in [0, 1].
    fn param(&mut self, nu: usize, nv: usize, s: impl Fn(f64, f64) -> V) {
        let base = self.v.len();
        for i in 0..=nu {
            for j in 0..=nv {
                self.v.push(s(i as f64 / nu as f64, j as f64 / nv as f64));
            }
        }
        let id = |i: usize, j: usize| base + i * (nv + 1) + j;
        for i in 0..nu {
            for j in 0..nv {
                self.f.push([id(i, j), id(i + 1, j), id(i + 1, j + 1)]);
                self.f.push([id(i, j), id(i + 1, j + 1), id(i, j + 1)]);
            }
        }
    }

    /// Area-uniform samples on the triangles.
    fn sample(&self, rng: &mut Rng, n: usize) -> Vec<V> {
        let mut cum = Vec::with_capacity(self.f.len());
        let mut acc = 0.0;
        for t in &self.f {
            let (a, b, c) = (self.v[t[0]], self.v[t[1]], self.v[t[2]]);
            acc += 0.5 * norm(cross(sub(b, a), sub(c, a)));
            cum.push(acc);
        }
        (0..n)
            .map(|_| {
                let x = rng.f() * acc;
                let k = cum.partition_point(|&c| c < x).min(self.f.len() - 1);
                let t = self.f[k];
                let (a, b, c) = (self.v[t[0]], self.v[t[1]], self.v[t[2]]);
                let (mut r1, mut r2) = (rng.f(), rng.f());
                if r1 + r2 > 1.0 {
                    r1 = 1.0 - r1;
                    r2 = 1.0 - r2;
                }
                [0, 1, 2].map(|i| a[i] + r1 * (b[i] - a[i]) + r2 * (c[i] - a[i]))
            })
            .collect()
    }

    fn write_ply(&self, path: &Path) -> std::io::Result<()> {
        let mut s = String::new();
        let _ = write!(
            s,
            "ply\nformat ascii 1.0\nelement vertex {}\nproperty float x\nproperty float y\nproperty float z\nelement face {}\nproperty list uchar int vertex_indices\nend_header\n",
            self.v.len(),
            self.f.len()
        );
        for v in &self.v {
            let _ = writeln!(s, "{} {} {}", v[0] as f32, v[1] as f32, v[2] as f32);
        }
        for f in &self.f {
            let _ = writeln!(s, "3 {} {} {}", f[0], f[1], f[2]);
        }
        std::fs::write(path, s)
    }
}

fn sphere(rng: &mut Rng) -> Vec<V> {
    (0..N)
        .map(|_| loop {
            let p = [0, 1, 2].map(|_| rng.f() * 2.0 - 1.0);
            let r = norm(p);
            if r > 1e-3 && r <= 1.0 {
                break p.map(|c| c / r * 0.5);
            }
        })
        .collect()
}

/// Area-uniform samples on the surface of a union of boxes (points inside
/// another box are rejected, so only the outer surface remains).
fn boxes(rng: &mut Rng, bx: &[(V, V)]) -> Vec<V> {
    let area = |(lo, hi): &(V, V)| {
        let d = sub(*hi, *lo);
        2.0 * (d[0] * d[1] + d[1] * d[2] + d[0] * d[2])
    };
    let total: f64 = bx.iter().map(area).sum();
    let inside = |p: V, skip: usize| {
        bx.iter().enumerate().any(|(i, (lo, hi))| {
            i != skip && (0..3).all(|a| p[a] > lo[a] + 1e-9 && p[a] < hi[a] - 1e-9)
        })
    };
    let mut out = Vec::with_capacity(N);
    while out.len() < N {
        let mut x = rng.f() * total;
        let mut k = 0;
        while k + 1 < bx.len() && x > area(&bx[k]) {
            x -= area(&bx[k]);
            k += 1;
        }
        let (lo, hi) = bx[k];
        let d = sub(hi, lo);
        let fa = [d[1] * d[2], d[0] * d[2], d[0] * d[1]];
        let mut y = rng.f() * (fa[0] + fa[1] + fa[2]);
        let mut axis = 0;
        while axis < 2 && y > fa[axis] {
            y -= fa[axis];
            axis += 1;
        }
        let mut p = [0, 1, 2].map(|i| lo[i] + rng.f() * d[i]);
        p[axis] = if rng.f() < 0.5 { lo[axis] } else { hi[axis] };
        if !inside(p, k) {
            out.push(p);
        }
    }
    out
}

fn chair(rng: &mut Rng) -> Vec<V> {
    let leg = |x: f64, z: f64| ([x, 0.0, z], [x + 0.05, 0.45, z + 0.05]);
    boxes(
        rng,
        &[
            ([0.0, 0.45, 0.0], [0.5, 0.5, 0.5]),     // seat
            ([0.0, 0.5, 0.45], [0.5, 1.0, 0.5]),     // back
            ([0.05, 0.7, 0.43], [0.45, 0.75, 0.45]), // back rail
            leg(0.0, 0.0),
            leg(0.45, 0.0),
            leg(0.0, 0.45),
            leg(0.45, 0.45),
        ],
    )
}

fn torus_mesh() -> Mesh {
    let mut m = Mesh::default();
    let tau = std::f64::consts::TAU;
    m.param(96, 48, |u, v| {
        let (a, b) = (u * tau, v * tau);
        let r = 0.35 + 0.12 * b.cos();
        [r * a.cos(), r * a.sin(), 0.12 * b.sin()]
    });
    m
}

fn mug_mesh() -> Mesh {
    let mut m = Mesh::default();
    let tau = std::f64::consts::TAU;
    let (ro, ri, h) = (0.3, 0.27, 0.8);
    // outer wall, inner wall, rim, bottom (outside and inside)
    m.param(96, 24, |u, v| {
        [ro * (u * tau).cos(), ro * (u * tau).sin(), v * h]
    });
    m.param(96, 24, |u, v| {
        [
            ri * (u * tau).cos(),
            ri * (u * tau).sin(),
            0.05 + v * (h - 0.05),
        ]
    });
    m.param(96, 2, |u, v| {
        let r = ri + v * (ro - ri);
        [r * (u * tau).cos(), r * (u * tau).sin(), h]
    });
    m.param(96, 8, |u, v| {
        [v * ro * (u * tau).cos(), v * ro * (u * tau).sin(), 0.0]
    });
    m.param(96, 8, |u, v| {
        [v * ri * (u * tau).cos(), v * ri * (u * tau).sin(), 0.05]
    });
    // handle: a half torus in the x-z plane
    m.param(48, 24, |u, v| {
        let a = -0.5 * std::f64::consts::PI + u * std::f64::consts::PI;
        let b = v * tau;
        let r = 0.2 + 0.04 * b.cos();
        [ro + r * a.cos() - 0.02, 0.04 * b.sin(), 0.4 + r * a.sin()]
    });
    m
}

fn blob_mesh() -> Mesh {
    // Bunny-like blob: a deformed sphere with two ear lobes and a tail bump.
    let mut m = Mesh::default();
    let pi = std::f64::consts::PI;
    m.param(128, 96, |u, v| {
        let th = u * 2.0 * pi;
        let ph = v * pi;
        let d = [ph.sin() * th.cos(), ph.sin() * th.sin(), ph.cos()];
        let bump = |c: V, w: f64, a: f64| {
            let dot = d[0] * c[0] + d[1] * c[1] + d[2] * c[2];
            a * ((dot - 1.0) / w).exp()
        };
        let r = 0.4
            + 0.06 * (3.0 * th).sin() * ph.sin()
            + 0.04 * (2.0 * ph).cos()
            + bump([0.3, 0.2, 0.93], 0.02, 0.35)
            + bump([-0.3, 0.2, 0.93], 0.02, 0.3)
            + bump([0.0, -0.95, 0.3], 0.05, 0.08)
            + bump([0.9, 0.0, -0.4], 0.1, 0.1);
        [r * d[0] * 1.2, r * d[1], r * d[2] * 0.9]
    });
    m
}

/// Profiling mode (`-- DIR enc|dec REPS`): no timing, only `REPS` encodes
/// (sort included) or decodes of every cloud, for `perf stat` / `perf record`.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Bench,
    Enc(usize),
    Dec(usize),
}

fn run(dir: &Path, mode: Mode, method: pointcode::Method) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let mut rng = Rng(0x5EED_0001);
    let mut shapes: Vec<(&str, Vec<V>)> = Vec::new();
    shapes.push(("sphere", sphere(&mut rng)));
    shapes.push((
        "box",
        boxes(&mut rng, &[([0.0, 0.0, 0.0], [1.0, 0.6, 0.4])]),
    ));
    shapes.push(("chair", chair(&mut rng)));
    for (name, mesh) in [
        ("torus", torus_mesh()),
        ("mug", mug_mesh()),
        ("blob", blob_mesh()),
    ] {
        let path = dir.join(format!("{name}.ply"));
        mesh.write_ply(&path)
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        shapes.push((name, mesh.sample(&mut rng, N)));
    }
    let stdout = std::io::stdout();
    let mut o = stdout.lock();
    let _ = writeln!(o, "shape\tbits\tpoints\tbytes\tenc_us\tdec_us");
    for (name, pts) in &shapes {
        let mut b = Bounds {
            min: [f32::MAX; 3],
            max: [f32::MIN; 3],
        };
        for p in pts {
            for (i, &c) in p.iter().enumerate() {
                b.min[i] = b.min[i].min(c as f32);
                b.max[i] = b.max[i].max(c as f32);
            }
        }
        // Float bounds, for `bench/pointcode/bound.py` (information bound).
        let bpath = dir.join(format!("{name}.bounds"));
        std::fs::write(
            &bpath,
            format!(
                "{} {} {}\n{} {} {}\n",
                b.min[0], b.min[1], b.min[2], b.max[0], b.max[1], b.max[2]
            ),
        )
        .map_err(|e| format!("write {}: {e}", bpath.display()))?;
        for bits in BITS {
            let q: Vec<[u16; 3]> = pts
                .iter()
                .map(|p| pointcode::quantize(p.map(|c| c as f32), &b, bits))
                .collect();
            let mut xyz = String::new();
            for p in &q {
                let _ = writeln!(xyz, "{} {} {}", p[0], p[1], p[2]);
            }
            let path: PathBuf = dir.join(format!("{name}_{bits}.xyz"));
            std::fs::write(&path, xyz).map_err(|e| format!("write {}: {e}", path.display()))?;
            let mut buf = vec![0u8; pointcode::max_encoded_len(q.len(), bits)];
            if let Mode::Enc(reps) | Mode::Dec(reps) = mode {
                // `PC_ONLY=<shape>_<bits>` limits the profiling mode to one
                // cloud (bench/pointcode/cycles.sh).
                if let Ok(only) = std::env::var("PC_ONLY") {
                    if only != format!("{name}_{bits}") {
                        continue;
                    }
                }
                let mut work = q.clone();
                pointcode::sort_canonical(&mut work, &mut [] as &mut [u8]);
                let len = pointcode::encode_with(&work, bits, method, &mut buf).unwrap_or(0);
                // `PC_DUMP=<dir>`: also write the stream (byte-identity checks
                // between two builds).
                if let Ok(d) = std::env::var("PC_DUMP") {
                    let path = Path::new(&d).join(format!("{name}_{bits}.pc"));
                    std::fs::write(&path, &buf[..len])
                        .map_err(|e| format!("write {}: {e}", path.display()))?;
                }
                let mut out = vec![[0u16; 3]; q.len()];
                if pointcode::decode(&buf[..len], &mut out) != Ok((q.len(), bits)) || out != work {
                    return Err(format!("{name} {bits}: decode mismatch"));
                }
                for _ in 0..reps {
                    if mode == Mode::Dec(reps) {
                        let _ = std::hint::black_box(pointcode::decode(&buf[..len], &mut out));
                    } else {
                        work.copy_from_slice(&q);
                        pointcode::sort_canonical(&mut work, &mut [] as &mut [u8]);
                        let _ = std::hint::black_box(pointcode::encode_with(
                            &work, bits, method, &mut buf,
                        ));
                    }
                }
                let _ = writeln!(o, "{name}\t{bits}\t{}\t{len}", q.len());
                continue;
            }
            let mut work = q.clone();
            let mut len = 0;
            // Encode time includes putting the points into canonical order.
            let enc_us = time(|| {
                work.copy_from_slice(&q);
                pointcode::sort_canonical(&mut work, &mut [] as &mut [u8]);
                len = pointcode::encode_with(&work, bits, method, &mut buf).unwrap_or(0);
            });
            if len == 0 {
                return Err(format!("{name} {bits}: encode failed"));
            }
            let mut out = vec![[0u16; 3]; q.len()];
            work.copy_from_slice(&q);
            pointcode::sort_canonical(&mut work, &mut [] as &mut [u8]);
            let mut ok = false;
            let dec_us = time(|| {
                ok = pointcode::decode(&buf[..len], &mut out).is_ok();
            });
            if !ok || out != work {
                return Err(format!("{name} {bits}: decode mismatch"));
            }
            let _ = writeln!(
                o,
                "{name}\t{bits}\t{}\t{len}\t{enc_us:.1}\t{dec_us:.1}",
                q.len()
            );
        }
    }
    Ok(())
}

/// Minimum over 11 batches of the mean time of one call, in microseconds (the
/// minimum is the figure least disturbed by other processes on the machine).
fn time(mut f: impl FnMut()) -> f64 {
    f();
    // `PC_SAMPLES=N`: the fastest of N single calls instead (robust to
    // interruptions by other processes on a shared machine).
    if let Some(n) = std::env::var("PC_SAMPLES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        return (0..n.max(1))
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e6
            })
            .fold(f64::INFINITY, f64::min);
    }
    let t = Instant::now();
    f();
    let one = t.elapsed().as_secs_f64();
    let reps = ((0.02 / one.max(1e-7)) as usize).clamp(1, 10_000);
    let mut v: Vec<f64> = (0..11)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..reps {
                f();
            }
            t.elapsed().as_secs_f64() * 1e6 / reps as f64
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[0]
}

fn main() -> ExitCode {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/pointcode_bench"));
    let reps = std::env::args()
        .nth(3)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let mode = match std::env::args().nth(2).as_deref() {
        Some("enc") => Mode::Enc(reps),
        Some("dec") => Mode::Dec(reps),
        _ => Mode::Bench,
    };
    let method = match std::env::var("PC_METHOD").as_deref() {
        Ok("compact") => pointcode::Method::Compact,
        Ok("symbol") | Err(_) => pointcode::Method::Symbol,
        Ok("fast") => pointcode::Method::Fast,
        Ok(other) => {
            eprintln!("pointcode_bench: PC_METHOD must be fast, compact or symbol, not {other}");
            return ExitCode::FAILURE;
        }
    };
    match run(&dir, mode, method) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pointcode_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
