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

/// CPU features relevant to tract's kernels, as (name, present).
pub fn cpu_features() -> Vec<(&'static str, bool)> {
    #[cfg(target_arch = "x86_64")]
    {
        vec![
            ("sse4.1", std::arch::is_x86_feature_detected!("sse4.1")),
            ("fma", std::arch::is_x86_feature_detected!("fma")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
            (
                "avx512vnni",
                std::arch::is_x86_feature_detected!("avx512vnni"),
            ),
            ("avxvnni", std::arch::is_x86_feature_detected!("avxvnni")),
            ("f16c", std::arch::is_x86_feature_detected!("f16c")),
        ]
    }
    #[cfg(target_arch = "aarch64")]
    {
        let flags = cpuinfo_flags(&std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default());
        let has = |f: &str| flags.iter().any(|x| x == f);
        vec![
            ("neon (asimd)", has("asimd")),
            ("dotprod (asimddp)", has("asimddp")),
            ("fp16 (asimdhp)", has("asimdhp") || has("fphp")),
            ("i8mm", has("i8mm")),
        ]
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        Vec::new()
    }
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
    let list: Vec<String> = feats
        .iter()
        .map(|(n, p)| format!("{n}{}", if *p { "+" } else { "-" }))
        .collect();
    r.ok(
        "cpu",
        format!(
            "{} on {}, {} logical cores: {}",
            std::env::consts::ARCH,
            std::env::consts::OS,
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            list.join(" ")
        ),
    );
    #[cfg(target_arch = "x86_64")]
    if !feats.iter().any(|(n, p)| *n == "fma" && *p) {
        r.warn("cpu", "no FMA: tract falls back to generic kernels (slow)");
    }
    #[cfg(target_arch = "aarch64")]
    if !feats.iter().any(|(n, p)| n.starts_with("dotprod") && *p) {
        r.warn(
            "cpu",
            "no dotprod: int8 models run without the fast int8 kernels",
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
            match std::fs::metadata(p) {
                Ok(_) => r.ok("link", format!("pre-shared key file {}", p.display())),
                Err(e) => r.fail("link", format!("pre-shared key file {}: {e}", p.display())),
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
    }
}
