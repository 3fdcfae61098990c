//! Writing a file so that a reader never sees it half written.

use std::io;
use std::path::{Path, PathBuf};

/// The temporary name [`write_via_temp`] writes `path` under: `path` with `.tmp` appended
/// (`frame_000001.ply` -> `frame_000001.ply.tmp`), in the same directory so the final rename
/// stays on one filesystem.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Calls `write` on [`temp_path`]`(path)` and renames the result to `path`.
///
/// A reader sees either no file or the whole file. When `write` or the rename fails (a full
/// disk, a removed directory) the temporary file is removed and the error returned, so a
/// failure leaves nothing behind. The data is not synced to disk: after a power cut the file
/// may be missing or empty, never partial.
pub fn write_via_temp<E: From<io::Error>>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = temp_path(path);
    let r = write(&tmp).and_then(|()| std::fs::rename(&tmp, path).map_err(E::from));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("geom-atomic-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn success_renames_and_leaves_no_temp() {
        let d = dir("ok");
        let p = d.join("a.ply");
        write_via_temp::<io::Error>(&p, |t| std::fs::write(t, b"abc")).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"abc");
        assert!(!temp_path(&p).exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn failed_write_leaves_neither_file() {
        let d = dir("fail");
        let p = d.join("a.ply");
        let e = write_via_temp(&p, |t| {
            std::fs::write(t, b"partial")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert!(!p.exists());
        assert!(!temp_path(&p).exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn failed_rename_removes_the_temp() {
        let d = dir("rename");
        // The target is a non-empty directory: rename onto it fails.
        let p = d.join("taken");
        std::fs::create_dir_all(p.join("x")).unwrap();
        assert!(write_via_temp::<io::Error>(&p, |t| std::fs::write(t, b"abc")).is_err());
        assert!(!temp_path(&p).exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
