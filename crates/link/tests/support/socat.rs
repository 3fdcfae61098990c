//! Two pseudo-terminals joined by `socat`, shared by the serial tests of
//! shapecast-link and shapecast-host (included with `#[path]`).
//! qemu-user cannot do serial ioctls, so these tests run natively only.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `socat` with its two pty links; killed and cleaned up on drop.
pub struct Socat {
    child: Child,
    /// One end of the line.
    pub a: PathBuf,
    /// The other end.
    pub b: PathBuf,
    dir: PathBuf,
}

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `socat -d -d pty,raw,echo=0,link=A pty,raw,echo=0,link=B` in a
/// fresh folder named after `tag`; `None` (with a SKIPPED line) when socat
/// is not installed.
pub fn socat(tag: &str) -> Option<Socat> {
    if Command::new("socat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        eprintln!("SKIPPED: socat not installed (apt-get install socat); serial test not run");
        return None;
    }
    let dir = std::env::temp_dir().join(format!("shapecast-pty-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating the pty folder");
    let (a, b) = (dir.join("A"), dir.join("B"));
    let child = Command::new("socat")
        .args(["-d", "-d"])
        .arg(format!("pty,raw,echo=0,link={}", a.display()))
        .arg(format!("pty,raw,echo=0,link={}", b.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting socat");
    let t0 = Instant::now();
    while !(a.exists() && b.exists()) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "socat did not create the ptys"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Socat { child, a, b, dir })
}
