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
/// failure leaves nothing behind. `write` must report every write error (flush what it
/// buffers). A `path` without a file name (`out/`, `..`, empty) is an `InvalidInput` error.
/// The data is not synced to disk: after a power cut the file may be missing, empty or
/// truncated. The temporary name is fixed, so one folder must have one writer per file name.
pub fn write_via_temp<E: From<io::Error>>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    if path.file_name().is_none() || path.as_os_str().to_string_lossy().ends_with('/') {
        return Err(E::from(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{}` names no file", path.display()),
        )));
    }
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
    fn a_path_without_a_file_name_is_refused() {
        for p in ["", "..", "out/", "/"] {
            let e = write_via_temp::<io::Error>(Path::new(p), |_| panic!("no write for {p:?}"))
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{p:?}");
        }
    }

    /// A full disk under the temporary name (linked to /dev/full) is an error, and the
    /// target never appears.
    #[cfg(unix)]
    #[test]
    fn full_disk_is_an_error_and_publishes_nothing() {
        if !Path::new("/dev/full").exists() {
            return;
        }
        let d = dir("full");
        let p = d.join("a.png");
        std::os::unix::fs::symlink("/dev/full", temp_path(&p)).unwrap();
        let e =
            write_via_temp::<io::Error>(&p, |t| std::fs::write(t, vec![7u8; 100_000])).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
        assert!(!p.exists());
        assert!(std::fs::symlink_metadata(temp_path(&p)).is_err());
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
