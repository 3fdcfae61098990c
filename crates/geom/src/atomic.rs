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

/// Like [`write_via_temp`], but never replaces an existing file: `write` fills a temporary
/// file beside the first candidate ([`thread_temp_path`]: writers in other threads or
/// processes never share it), which is then published under the first name of
/// `candidates` that does not exist yet; returns that name.
///
/// Anything at the temporary name is unlinked first (never written through); `write`
/// should create the file with [`create_new_file`], so that a symlink planted there in the
/// meantime is refused rather than followed.
///
/// Publishing is a hard link of the temporary file to the candidate, which fails with
/// `AlreadyExists` instead of replacing it (atomic: of two writers racing for a name one
/// wins, the other moves on), then the temporary name is removed. Where the file system
/// has no hard links (FAT, some network mounts: the link fails with `PermissionDenied` or
/// `Unsupported`) it falls back to renaming onto a candidate that does not exist at that moment, which is
/// not atomic against another writer in the same folder. When every candidate exists the
/// error is `AlreadyExists`. As with [`write_via_temp`], a failure leaves nothing behind
/// (neither the temporary file nor a partial target), a candidate without a file name is
/// `InvalidInput`, and the data is not synced to disk.
pub fn write_via_temp_no_clobber<E: From<io::Error>>(
    candidates: impl IntoIterator<Item = PathBuf>,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<PathBuf, E> {
    let names_no_file =
        |p: &Path| p.file_name().is_none() || p.as_os_str().to_string_lossy().ends_with('/');
    let mut candidates = candidates.into_iter().peekable();
    let Some(first) = candidates.peek().cloned() else {
        return Err(E::from(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no file name to write to",
        )));
    };
    if names_no_file(&first) {
        return Err(E::from(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("`{}` names no file", first.display()),
        )));
    }
    let tmp = thread_temp_path(&first);
    // A file left at the temporary name (a writer killed between publishing and removing
    // it, so still hard-linked to a published file, or a planted symlink) must not be
    // written through: unlink it first, which leaves whatever it pointed to untouched.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(E::from(e)),
    }
    let r = write(&tmp).and_then(|()| publish_no_clobber(&tmp, candidates).map_err(E::from));
    let _ = std::fs::remove_file(&tmp);
    r
}

/// The temporary name [`write_via_temp_no_clobber`] writes `path` under when called on
/// this thread: `path` with `.<pid>-<start>.<t>.tmp` appended, `start` the process's first
/// use of this function (nanoseconds of the clock, hex: processes with the same pid, as in
/// separate containers sharing a folder or a restarted service, differ) and `t` a number
/// per thread. No other writer (thread or process) uses it at the same time, and one thread
/// writes one file at a time.
pub fn thread_temp_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static START: OnceLock<u64> = OnceLock::new();
    thread_local! {
        static THREAD: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    let start = *START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    let t = THREAD.with(|t| *t);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}-{start:x}.{t}.tmp", std::process::id()));
    PathBuf::from(tmp)
}

/// Opens a new file at `path` for writing, failing with `AlreadyExists` when anything is
/// there, a symlink included (`O_EXCL`: never writes through a name planted after
/// [`write_via_temp_no_clobber`] cleared it). What `write` callbacks of
/// [`write_via_temp_no_clobber`] should create their temporary file with.
pub fn create_new_file(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

/// Whether `name` has the shape of a [`thread_temp_path`] name:
/// `<anything>.<pid>-<hex>.<thread>.tmp`.
fn is_thread_temp_name(name: &str) -> bool {
    let Some(rest) = name.strip_suffix(".tmp") else {
        return false;
    };
    let mut parts = rest.rsplitn(3, '.');
    let (Some(thread), Some(pid_start), Some(base)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Some((pid, start)) = pid_start.split_once('-') else {
        return false;
    };
    !base.is_empty()
        && !thread.is_empty()
        && thread.bytes().all(|b| b.is_ascii_digit())
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && !start.is_empty()
        && start.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Removes the temporary files of [`write_via_temp_no_clobber`] that killed writers left in
/// `dir` and its subfolders (one level: a sink's `<dir>/<device>/`), if last modified more
/// than `older_than` ago (a writer still running keeps its temporary file for a moment
/// only). Their names carry their process's start, so no later writer reuses and clears
/// them. Regular files and symlinks only, never followed; returns how many were removed.
/// Unreadable folders and failed removals are skipped.
pub fn remove_stale_temps(dir: &Path, older_than: std::time::Duration) -> usize {
    let now = std::time::SystemTime::now();
    let mut removed = 0;
    let mut sweep = |d: &Path, subdirs: &mut Vec<PathBuf>| {
        let Ok(entries) = std::fs::read_dir(d) else {
            return;
        };
        for e in entries.flatten() {
            // The name and the entry's type (from the folder listing itself on Linux) come
            // first: a folder of a day's frames holds ~10^6 files, and a stat of each one
            // would stall the sink's opening (50 000 files: 0.33 s, 4-5x a listing).
            let Ok(kind) = e.file_type() else {
                continue;
            };
            if kind.is_dir() {
                subdirs.push(e.path());
                continue;
            }
            if !is_thread_temp_name(&e.file_name().to_string_lossy()) {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            let stale = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age > older_than);
            if stale && !meta.is_dir() && std::fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
    };
    let mut subdirs = Vec::new();
    sweep(dir, &mut subdirs);
    for sub in subdirs {
        sweep(&sub, &mut Vec::new());
    }
    removed
}

fn publish_no_clobber(
    tmp: &Path,
    candidates: impl Iterator<Item = PathBuf>,
) -> io::Result<PathBuf> {
    let mut last = None;
    for c in candidates {
        if c.file_name().is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{}` names no file", c.display()),
            ));
        }
        match std::fs::hard_link(tmp, &c) {
            Ok(()) => return Ok(c),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            // EPERM (FAT, some network mounts), EOPNOTSUPP: this file system has no hard
            // links. Any other error (full disk, a removed folder) is returned.
            Err(e)
                if e.kind() == io::ErrorKind::PermissionDenied
                    || e.kind() == io::ErrorKind::Unsupported =>
            {
                // no hard links here: rename onto a name that is free now
                match std::fs::symlink_metadata(&c) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        std::fs::rename(tmp, &c)?;
                        return Ok(c);
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        }
        last = Some(c);
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        match last {
            Some(l) => format!("every name up to `{}` is taken", l.display()),
            None => "no file name to write to".to_string(),
        },
    ))
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
    fn stale_temps_are_swept_and_nothing_else() {
        let d = dir("sweep");
        let dev = d.join("7");
        std::fs::create_dir_all(&dev).unwrap();
        let temp = thread_temp_path(&dev.join("3.ply"));
        assert!(is_thread_temp_name(
            &temp.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&temp, b"left by a killed writer").unwrap();
        std::fs::write(dev.join("3.ply"), b"published").unwrap();
        std::fs::write(dev.join("notes.tmp"), b"not ours").unwrap();
        std::fs::write(d.join("x.1-zz.0.tmp"), b"not hex").unwrap();
        // too recent: a writer may still be at work
        assert_eq!(
            remove_stale_temps(&d, std::time::Duration::from_secs(600)),
            0
        );
        assert!(temp.exists());
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(
            remove_stale_temps(&d, std::time::Duration::from_millis(1)),
            1
        );
        assert!(!temp.exists());
        for kept in [
            dev.join("3.ply"),
            dev.join("notes.tmp"),
            d.join("x.1-zz.0.tmp"),
        ] {
            assert!(kept.exists(), "{}", kept.display());
        }
        for bad in [
            "a.tmp",
            "a.1-ff.tmp",
            ".1-ff.0.tmp",
            "a.x-ff.0.tmp",
            "a.1-ff.y.tmp",
        ] {
            assert!(!is_thread_temp_name(bad), "{bad}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// `create_new_file` never writes through a name that exists, a symlink included.
    #[cfg(unix)]
    #[test]
    fn create_new_file_refuses_a_planted_symlink() {
        let d = dir("createnew");
        let target = d.join("published.ply");
        std::fs::write(&target, b"keep").unwrap();
        let tmp = d.join("t.tmp");
        std::os::unix::fs::symlink(&target, &tmp).unwrap();
        let e = create_new_file(&tmp).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
        std::fs::remove_file(&tmp).unwrap();
        use std::io::Write;
        create_new_file(&tmp).unwrap().write_all(b"new").unwrap();
        assert_eq!(std::fs::read(&tmp).unwrap(), b"new");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn no_clobber_takes_the_next_free_name_and_keeps_the_others() {
        let d = dir("noclobber");
        let names = |n: usize| (0..n).map(|i| d.join(format!("f.{i}.ply")));
        let mut got = Vec::new();
        for i in 0..3u8 {
            let p = write_via_temp_no_clobber::<io::Error>(names(3), |t| std::fs::write(t, [i]))
                .unwrap();
            got.push(p);
        }
        assert_eq!(got, names(3).collect::<Vec<_>>());
        for (i, p) in got.iter().enumerate() {
            assert_eq!(std::fs::read(p).unwrap(), [i as u8], "{}", p.display());
        }
        // all taken: an error, nothing replaced, no temporary left
        let e = write_via_temp_no_clobber::<io::Error>(names(3), |t| std::fs::write(t, b"x"))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&got[0]).unwrap(), [0]);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 3);
        // a failed write publishes nothing
        let p = d.join("g.ply");
        let e = write_via_temp_no_clobber(std::iter::once(p.clone()), |t| {
            std::fs::write(t, b"partial")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert!(!p.exists() && !thread_temp_path(&p).exists());
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 3);
        for bad in ["", "out/"] {
            let e =
                write_via_temp_no_clobber::<io::Error>(std::iter::once(PathBuf::from(bad)), |_| {
                    panic!("no write for {bad:?}")
                })
                .unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_stale_temp_linked_to_a_published_file_is_not_written_through() {
        // A writer killed between publishing and removing its temporary name leaves the temp
        // hard-linked to the published file; a symlink may also sit there. The next write
        // must unlink it, not truncate and fill what it points to.
        let d = dir("stale");
        let first = d.join("7.ply");
        std::fs::write(&first, b"OLD FRAME").unwrap();
        let tmp = thread_temp_path(&first);
        std::fs::hard_link(&first, &tmp).unwrap();
        let got = write_via_temp_no_clobber::<io::Error>([first.clone(), d.join("7.1.ply")], |t| {
            std::fs::write(t, b"NEW FRAME")
        })
        .unwrap();
        assert_eq!(got, d.join("7.1.ply"));
        assert_eq!(std::fs::read(&first).unwrap(), b"OLD FRAME");
        assert_eq!(std::fs::read(&got).unwrap(), b"NEW FRAME");
        assert!(!tmp.exists());
        // a symlink planted at the temporary name
        let victim = d.join("victim");
        std::fs::write(&victim, b"KEEP").unwrap();
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_via_temp_no_clobber::<io::Error>([first.clone(), d.join("7.2.ply")], |t| {
            std::fs::write(t, b"NEWER")
        })
        .unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"KEEP");
        assert_eq!(std::fs::read(d.join("7.2.ply")).unwrap(), b"NEWER");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn temp_names_carry_the_process_start() {
        // `<name>.<pid>-<start>.<t>.tmp`: two processes with one pid (containers) differ
        let t = thread_temp_path(Path::new("a.ply"));
        let s = t.to_str().unwrap();
        let pid = std::process::id().to_string();
        let rest = s.strip_prefix(&format!("a.ply.{pid}-")).expect(s);
        let (start, tail) = rest.split_once('.').expect(s);
        assert!(u64::from_str_radix(start, 16).unwrap() > 0, "{s}");
        assert!(tail.ends_with(".tmp"), "{s}");
    }

    #[test]
    fn racing_writers_never_share_a_temp_or_publish_a_mixed_file() {
        // Four threads write distinct contents to the same candidate names at once: every
        // published file is one writer's whole content, and no write fails.
        let d = dir("race");
        let names = |r: usize| (0..8).map(move |i| PathBuf::from(format!("r{r}.{i}")));
        std::thread::scope(|s| {
            for w in 0..4u8 {
                let d = &d;
                s.spawn(move || {
                    for r in 0..50 {
                        let body = vec![w; 4096 + usize::from(w)];
                        write_via_temp_no_clobber::<io::Error>(names(r).map(|n| d.join(n)), |t| {
                            std::fs::write(t, &body)
                        })
                        .unwrap();
                    }
                });
            }
        });
        let files: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 200, "no temporary left, every write published");
        for f in files {
            let b = std::fs::read(&f).unwrap();
            let w = b[0];
            assert!(w < 4 && b.len() == 4096 + usize::from(w), "{}", f.display());
            assert!(b.iter().all(|&x| x == w), "{} mixes writers", f.display());
        }
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
