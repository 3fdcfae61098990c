//! `shapecast doctor`: checks the camera devices, the model, the link and the CPU features
//! tract will use; prints one line per check and exits non-zero if any failed.

use std::path::Path;
use std::time::Instant;

use super::{exit, ConfigArgs, Failure};
use crate::config::{LinkKind, SourceKind};

struct Report {
    failed: usize,
}

impl Report {
    fn ok(&mut self, what: &str, msg: impl AsRef<str>) {
        println!("[ ok ] {what:<8} {}", msg.as_ref());
    }
    fn warn(&mut self, what: &str, msg: impl AsRef<str>) {
        println!("[warn] {what:<8} {}", msg.as_ref());
    }
    fn fail(&mut self, what: &str, msg: impl AsRef<str>) {
        self.failed += 1;
        println!("[FAIL] {what:<8} {}", msg.as_ref());
    }
}

/// One CPU feature tract's kernels depend on: what the running CPU reports (std's runtime
/// detection: HWCAP on aarch64, CPUID on x86, which also sees an emulated CPU), and what
/// /proc/cpuinfo says (`None` when it has no feature line: qemu-user passes the host's file
/// through; kept as a second opinion because tract reads fp16 and the core kind from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuFeature {
    /// tract's token for it where tract has one (`TRACT_CPU_ISA`), else the usual name.
    pub name: &'static str,
    /// The /proc/cpuinfo word for it.
    pub cpuinfo_word: &'static str,
    pub detected: bool,
    pub cpuinfo: Option<bool>,
}

/// CPU features relevant to tract's kernels, on this machine.
pub fn cpu_features() -> Vec<CpuFeature> {
    // only this architecture's line: under qemu-user the file is the x86 host's (`flags`)
    let key = if cfg!(target_arch = "aarch64") {
        "Features"
    } else {
        "flags"
    };
    let words = cpuinfo_words(
        &std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default(),
        key,
    );
    let probe = |name, cpuinfo_word, detected| CpuFeature {
        name,
        cpuinfo_word,
        detected,
        cpuinfo: (!words.is_empty()).then(|| words.iter().any(|w| w == cpuinfo_word)),
    };
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        vec![
            probe("sse4.1", "sse4_1", has!("sse4.1")),
            probe("avx2", "avx2", has!("avx2")),
            probe("fma", "fma", has!("fma")),
            probe("f16c", "f16c", has!("f16c")),
            probe("avx512f", "avx512f", has!("avx512f")),
            probe("avx512vnni", "avx512_vnni", has!("avx512vnni")),
            probe("avxvnni", "avx_vnni", has!("avxvnni")),
        ]
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::is_aarch64_feature_detected as has;
        vec![
            probe("neon", "asimd", has!("neon")),
            probe("dotprod", "asimddp", has!("dotprod")),
            probe("fp16", "asimdhp", has!("fp16")),
            probe("i8mm", "i8mm", has!("i8mm")),
            probe("sve2", "sve2", has!("sve2")),
        ]
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = probe;
        Vec::new()
    }
}

/// `neon+ dotprod+ fp16- ...`, with the /proc/cpuinfo word where it differs from the name
/// and a note where /proc/cpuinfo disagrees or has no feature line.
pub fn feature_line(feats: &[CpuFeature]) -> String {
    let mut parts: Vec<String> = feats
        .iter()
        .map(|f| {
            let sign = if f.detected { "+" } else { "-" };
            let mut s = if f.name == f.cpuinfo_word {
                format!("{}{sign}", f.name)
            } else {
                format!("{} ({}){sign}", f.name, f.cpuinfo_word)
            };
            if f.cpuinfo.is_some_and(|c| c != f.detected) {
                s.push_str(if f.detected {
                    "[absent from /proc/cpuinfo]"
                } else {
                    "[in /proc/cpuinfo only]"
                });
            }
            s
        })
        .collect();
    if !feats.is_empty() && feats.iter().all(|f| f.cpuinfo.is_none()) {
        parts.push("(/proc/cpuinfo has no feature line: emulated?)".into());
    }
    parts.join(" ")
}

/// What tract-linalg dispatches to on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TractDispatch {
    /// The instruction-set tokens tract probed (after `TRACT_CPU_ISA`), e.g. `aarch64,dotprod`.
    pub isa: Vec<&'static str>,
    /// Its dispatch tiers, highest precedence first.
    pub tiers: Vec<&'static str>,
    /// Kernels this build has that the CPU can run.
    pub runnable: usize,
    /// The kernel a plain matmul gets: f32 (n = 8), f32 matrix-vector (n = 1), int8 (i32
    /// accumulator, n = 8), f16 (n = 8; only where the CPU computes in f16).
    pub f32_kernel: Option<String>,
    pub f32_mv_kernel: Option<String>,
    pub i8_kernel: Option<String>,
    pub f16_kernel: Option<String>,
}

/// Asks tract-linalg which instruction set it detected and which kernels it would pick.
pub fn tract_dispatch() -> TractDispatch {
    use tract_onnx::prelude::DatumType;
    use tract_onnx::tract_core::tract_linalg::{isa, MmmDispatch};
    let set = isa::native();
    let d = MmmDispatch::native();
    let kernel = |dt, n| {
        d.preferred_kernel(dt, None, None, Some(n))
            .map(|k| k.name().to_string())
    };
    TractDispatch {
        isa: set.iter().map(|i| i.name()).collect(),
        tiers: d.tiers().iter().map(|t| t.name).collect(),
        runnable: d.runnable().len(),
        f32_kernel: kernel(DatumType::F32, 8),
        f32_mv_kernel: kernel(DatumType::F32, 1),
        i8_kernel: kernel(DatumType::I32, 8),
        f16_kernel: set
            .fp16_arithmetic()
            .then(|| kernel(DatumType::F16, 8))
            .flatten(),
    }
}

/// `isa aarch64,dotprod; tiers a > b; 31 kernels runnable; f32 K, f32 n=1 K, int8 K, f16 K`.
pub fn dispatch_line(t: &TractDispatch) -> String {
    let k = |o: &Option<String>| o.as_deref().unwrap_or("none").to_string();
    let mut s = format!(
        "isa {}; tiers {}; {} kernels runnable; f32 {}, f32 n=1 {}, int8 {}",
        t.isa.join(","),
        t.tiers.join(" > "),
        t.runnable,
        k(&t.f32_kernel),
        k(&t.f32_mv_kernel),
        k(&t.i8_kernel)
    );
    if let Some(f) = &t.f16_kernel {
        s.push_str(&format!(", f16 {f}"));
    }
    s
}

/// Features the CPU has (runtime detection) that tract has a token for but does not use:
/// tract reads fp16 from /proc/cpuinfo (empty under qemu-user, or an old kernel), or this
/// build lacks the kernels. `TRACT_CPU_ISA=+name` forces a token on.
pub fn unused_by_tract(feats: &[CpuFeature], tract_isa: &[&str]) -> Vec<&'static str> {
    use tract_onnx::tract_core::tract_linalg::isa::Isa;
    feats
        .iter()
        .filter(|f| f.detected && !tract_isa.contains(&f.name))
        .filter(|f| {
            // a feature token of the architecture tract probed (the set names it first)
            Isa::ALL.iter().any(|i| {
                i.name() == f.name
                    && !i.is_arch()
                    && tract_isa.contains(&i.arch().to_string().as_str())
            })
        })
        .map(|f| f.name)
        .collect()
}

/// The `Features`/`flags` words of /proc/cpuinfo (first processor).
pub fn cpuinfo_flags(cpuinfo: &str) -> Vec<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("Features") || l.starts_with("flags"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The words of the first /proc/cpuinfo line whose key is `key` (`Features` on arm,
/// `flags` on x86).
pub fn cpuinfo_words(cpuinfo: &str, key: &str) -> Vec<String> {
    cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn video_devices() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("video").then(|| format!("/dev/{n}"))
        })
        .collect();
    v.sort();
    v
}

pub fn doctor(a: &ConfigArgs) -> Result<(), Failure> {
    let mut r = Report { failed: 0 };
    let eff = match super::run::load_config(a) {
        Ok(e) => {
            r.ok("config", format!("loaded: {}", e.layers.join(" + ")));
            Some(e)
        }
        Err(f) => {
            r.fail("config", format!("{:#}", f.error));
            None
        }
    };
    // CPU
    let feats = cpu_features();
    r.ok(
        "cpu",
        format!(
            "{} on {}, {} logical cores: {}",
            std::env::consts::ARCH,
            std::env::consts::OS,
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            feature_line(&feats)
        ),
    );
    let has = |name: &str| feats.iter().any(|f| f.name == name && f.detected);
    if cfg!(target_arch = "x86_64") && !has("fma") {
        r.warn("cpu", "no FMA: tract falls back to generic kernels (slow)");
    }
    if cfg!(target_arch = "aarch64") && !has("dotprod") {
        r.warn(
            "cpu",
            "no dotprod: int8 models run on the SMLAL kernels (about 4x slower than SDOT)",
        );
    }
    let tract = tract_dispatch();
    r.ok("tract", dispatch_line(&tract));
    let unused = unused_by_tract(&feats, &tract.isa);
    if !unused.is_empty() {
        let plus: Vec<String> = unused.iter().map(|n| format!("+{n}")).collect();
        r.warn(
            "tract",
            format!(
                "the CPU has {} but tract does not use it (tract reads /proc/cpuinfo, or this \
                 build lacks the kernels); TRACT_CPU_ISA={} forces it on",
                unused.join(", "),
                plus.join(",")
            ),
        );
    }
    // cameras
    let devs = video_devices();
    let wants_camera = eff
        .as_ref()
        .is_some_and(|e| e.config.source.kind == SourceKind::Camera);
    if devs.is_empty() {
        let msg = "no /dev/video* device (no camera, or a kernel without V4L2)";
        if wants_camera {
            r.fail("camera", msg);
        } else {
            r.ok("camera", format!("{msg}; source is not a camera"));
        }
    } else {
        r.ok("camera", format!("devices: {}", devs.join(", ")));
    }
    if let Some(e) = &eff {
        let c = &e.config;
        if c.source.kind == SourceKind::Camera {
            match crate::source::open(c, None) {
                Ok(crate::source::Input::Frames(mut s)) => {
                    let t = Instant::now();
                    match s.next_frame() {
                        Ok(f) => r.ok(
                            "camera",
                            format!(
                                "{}: first frame {}x{} {} in {:.0} ms",
                                s.describe(),
                                f.width,
                                f.height,
                                f.format,
                                t.elapsed().as_secs_f64() * 1e3
                            ),
                        ),
                        Err(err) => r.fail("camera", format!("{}: {err}", s.describe())),
                    }
                }
                Ok(_) => {}
                Err(err) => r.fail("camera", format!("{err}")),
            }
        } else if !c.source.path.as_os_str().is_empty() {
            if c.source.path.exists() {
                r.ok(
                    "source",
                    format!("{:?} at {}", c.source.kind, c.source.path.display()),
                );
            } else {
                r.fail(
                    "source",
                    format!("{} does not exist", c.source.path.display()),
                );
            }
        }
        // model
        match super::run::load_model(c) {
            Ok(m) => {
                let mut eng =
                    crate::engine::Engine::new(m, crate::engine::EngineOptions::default());
                let (w, h) = (eng.model.meta.input.width, eng.model.meta.input.height);
                let t = Instant::now();
                match eng.infer_rgb8(&vec![127u8; w * h * 3], w, h, Instant::now()) {
                    Ok(_) => r.ok(
                        "model",
                        format!(
                            "{} ({} head, {:?}): one frame in {:.1} ms",
                            c.model.path.display(),
                            eng.model.meta.head,
                            eng.model.meta.precision,
                            t.elapsed().as_secs_f64() * 1e3
                        ),
                    ),
                    Err(err) => r.fail(
                        "model",
                        format!("{}: runs but fails: {err}", c.model.path.display()),
                    ),
                }
            }
            Err(f) => r.fail("model", format!("{:#}", f.error)),
        }
        // link
        match c.link.kind {
            LinkKind::Udp => match std::net::UdpSocket::bind(&c.link.bind) {
                Ok(s) => match s.connect(&c.link.address) {
                    Ok(()) => r.ok(
                        "link",
                        format!("udp {} -> {} (route ok)", c.link.bind, c.link.address),
                    ),
                    Err(e) => r.fail("link", format!("udp: no route to {}: {e}", c.link.address)),
                },
                Err(e) => r.fail("link", format!("udp: cannot bind {}: {e}", c.link.bind)),
            },
            LinkKind::Serial => {
                if Path::new(&c.link.serial_device).exists() {
                    match super::link::open(&c.link, 1) {
                        Ok(l) => {
                            r.ok("link", format!("{} opened", l.describe()));
                            let _ = l.close();
                        }
                        Err(e) => r.fail("link", format!("{e:#}")),
                    }
                } else {
                    r.fail(
                        "link",
                        format!("serial device {} does not exist", c.link.serial_device),
                    );
                }
            }
        }
        if let Some(p) = &c.link.psk_file {
            // The same read and parse `run` does, so a key that `run` would refuse fails here.
            match super::link::read_key(p) {
                Ok(_) => r.ok("link", format!("pre-shared key file {}", p.display())),
                Err(e) => r.fail("link", format!("{e:#}")),
            }
        }
    }
    if r.failed > 0 {
        println!("{} check(s) failed", r.failed);
        return Err(Failure::new(
            exit::DOCTOR,
            anyhow::anyhow!("{} check(s) failed", r.failed),
        ));
    }
    println!("all checks passed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuinfo_flags_of_arm_and_x86() {
        let arm =
            "processor\t: 0\nBogoMIPS\t: 48.00\nFeatures\t: fp asimd evtstrm aes asimdhp asimddp\n";
        let f = cpuinfo_flags(arm);
        assert!(f.contains(&"asimddp".to_string()) && f.contains(&"asimd".to_string()));
        let x86 = "processor\t: 0\nflags\t\t: fpu sse4_1 avx2 fma\n";
        assert_eq!(cpuinfo_flags(x86), vec!["fpu", "sse4_1", "avx2", "fma"]);
        assert!(cpuinfo_flags("").is_empty());
        // an aarch64 binary under qemu-user reads the x86 host's file: no `Features` line
        assert!(cpuinfo_words(x86, "Features").is_empty());
        assert_eq!(cpuinfo_words(arm, "Features")[..2], ["fp", "asimd"]);
        assert_eq!(cpuinfo_words(x86, "flags").len(), 4);
    }

    fn feat(name: &'static str, word: &'static str, d: bool, c: Option<bool>) -> CpuFeature {
        CpuFeature {
            name,
            cpuinfo_word: word,
            detected: d,
            cpuinfo: c,
        }
    }

    #[test]
    fn feature_line_marks_disagreement_and_emulation() {
        // qemu-user: HWCAP says neon and dotprod, /proc/cpuinfo is the x86 host's.
        let emulated = [
            feat("neon", "asimd", true, None),
            feat("dotprod", "asimddp", true, None),
            feat("fp16", "asimdhp", false, None),
        ];
        assert_eq!(
            feature_line(&emulated),
            "neon (asimd)+ dotprod (asimddp)+ fp16 (asimdhp)- \
             (/proc/cpuinfo has no feature line: emulated?)"
        );
        let board = [
            feat("neon", "asimd", true, Some(true)),
            feat("fp16", "asimdhp", true, Some(false)),
            feat("i8mm", "i8mm", false, Some(true)),
        ];
        assert_eq!(
            feature_line(&board),
            "neon (asimd)+ fp16 (asimdhp)+[absent from /proc/cpuinfo] i8mm-[in /proc/cpuinfo only]"
        );
    }

    #[test]
    fn unused_by_tract_names_only_detected_tract_tokens() {
        let feats = [
            feat("neon", "asimd", true, None),
            feat("dotprod", "asimddp", true, None),
            feat("fp16", "asimdhp", true, None),
            feat("i8mm", "i8mm", true, None),
            feat("sve2", "sve2", false, None),
        ];
        // tract saw dotprod (HWCAP) but not fp16 (it reads /proc/cpuinfo); `neon` is arm32's
        // token (the aarch64 baseline), `i8mm` none of tract's, sve2 is absent.
        assert_eq!(
            unused_by_tract(&feats, &["aarch64", "dotprod"]),
            vec!["fp16"]
        );
        assert!(unused_by_tract(&feats, &["aarch64", "dotprod", "fp16"]).is_empty());
        // tokens of another architecture never count
        assert!(unused_by_tract(&feats, &["x86_64", "fma"]).is_empty());
        let x86 = [
            feat("avx2", "avx2", true, None),
            feat("fma", "fma", true, None),
        ];
        assert_eq!(unused_by_tract(&x86, &["x86_64", "avx2"]), vec!["fma"]);
    }

    #[test]
    fn this_machine_reports_features_and_tract_kernels() {
        let feats = cpu_features();
        let t = tract_dispatch();
        let line = dispatch_line(&t);
        assert!(t.isa.contains(&std::env::consts::ARCH), "{line}");
        assert!(t.runnable > 0 && !t.tiers.is_empty(), "{line}");
        assert!(t.f32_kernel.is_some() && t.i8_kernel.is_some(), "{line}");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(feats.len(), 7);
            // std and tract probe the same CPUID bits for these
            for name in ["avx2", "fma", "f16c"] {
                let f = feats.iter().find(|f| f.name == name).unwrap();
                assert_eq!(f.detected, t.isa.contains(&name), "{name}: {line}");
            }
        }
        if cfg!(target_arch = "aarch64") {
            assert!(feats.iter().any(|f| f.name == "neon" && f.detected));
            let dot = feats.iter().any(|f| f.name == "dotprod" && f.detected);
            assert_eq!(dot, t.isa.contains(&"dotprod"), "{line}");
        }
    }
}
