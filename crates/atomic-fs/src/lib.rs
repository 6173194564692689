#![doc = include_str!("../README.md")]

use std::fmt;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a write failed: the file system (with the path it was working on), or the
/// caller's own `write`/`fill` step.
#[derive(Debug)]
pub enum Failure<E> {
    Io { path: PathBuf, source: io::Error },
    Write(E),
}

impl<E> Failure<E> {
    /// The caller's error type, file-system failures converted by `io`.
    pub fn into_inner(self, io: impl FnOnce(PathBuf, io::Error) -> E) -> E {
        match self {
            Failure::Io { path, source } => io(path, source),
            Failure::Write(e) => e,
        }
    }
}

impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Failure::Write(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Failure<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Failure::Io { source, .. } => Some(source),
            Failure::Write(e) => Some(e),
        }
    }
}

fn at<E>(path: &Path) -> impl FnOnce(io::Error) -> Failure<E> + '_ {
    move |source| Failure::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `.<name>.tmp-<pid>-<n>` next to `path`: unique per process and per call, hidden,
/// and on the same file system, so the final rename is atomic.
pub fn temp_path(path: &Path) -> PathBuf {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.tmp-{}-{n}", std::process::id()))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a rename or creation inside `dir` durable (fsync of the folder itself).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Writes `path` through `write`; the file appears complete (and on disk) or not at
/// all, and nothing is left behind when `write` or the file system fails.
pub fn write_file<E>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<(), Failure<E>> {
    let tmp = temp_path(path);
    let result = (|| {
        let file = fs::File::create(&tmp).map_err(at(&tmp))?;
        let mut out = BufWriter::new(file);
        write(&mut out).map_err(Failure::Write)?;
        let file = out.into_inner().map_err(|e| at(&tmp)(e.into_error()))?;
        file.sync_all().map_err(at(&tmp))?;
        fs::rename(&tmp, path).map_err(at(path))?;
        sync_dir(parent(path)).map_err(at(parent(path)))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Syncs every file under `dir`, then the folders themselves.
fn sync_tree(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        } else {
            fs::File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// Builds the folder `dir` through `fill` (given an empty temporary folder), then
/// puts it in place: an existing `dir` is swapped out whole, so `dir` never holds a
/// mix of old and new files, and a failure leaves the old `dir` as it was.
pub fn write_dir<E>(
    dir: &Path,
    fill: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), Failure<E>> {
    let parent = parent(dir);
    fs::create_dir_all(parent).map_err(at(parent))?;
    let tmp = temp_path(dir);
    let result = (|| {
        fs::create_dir(&tmp).map_err(at(&tmp))?;
        fill(&tmp).map_err(Failure::Write)?;
        sync_tree(&tmp).map_err(at(&tmp))?;
        if dir.exists() {
            let old = temp_path(dir);
            fs::rename(dir, &old).map_err(at(dir))?;
            fs::rename(&tmp, dir).map_err(at(dir))?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&tmp, dir).map_err(at(dir))?;
        }
        sync_dir(parent).map_err(at(parent))
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// Moves every file of `from` into the existing folder `into` (each synced, then
/// renamed; then `into` synced) and removes `from`: for outputs that share a folder
/// with others, such as a final model next to its run's checkpoints.
pub fn publish_files(from: &Path, into: &Path) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        fs::File::open(entry.path())?.sync_all()?;
        fs::rename(entry.path(), into.join(entry.file_name()))?;
    }
    sync_dir(into)?;
    fs::remove_dir_all(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect()
    }

    #[test]
    fn a_failed_write_leaves_nothing_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.json");
        fs::write(&path, "old").unwrap();
        let e = write_file(&path, |out| {
            out.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert!(matches!(e, Failure::Write(_)));
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        assert!(leftovers(dir.path()).is_empty());
        write_file(&path, |out| out.write_all(b"new")).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
    }

    #[test]
    fn a_folder_is_replaced_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("checkpoint-4");
        write_dir(&target, |tmp| {
            fs::write(tmp.join("a"), "1")?;
            fs::create_dir(tmp.join("sub"))?;
            fs::write(tmp.join("sub/b"), "2")
        })
        .unwrap();
        // A failing rewrite keeps the first version intact.
        let e = write_dir(&target, |tmp| {
            fs::write(tmp.join("a"), "changed")?;
            Err(io::Error::other("interrupted"))
        });
        assert!(e.is_err());
        assert_eq!(fs::read_to_string(target.join("a")).unwrap(), "1");
        // A successful one replaces every file: nothing of the old folder survives.
        write_dir(&target, |tmp| fs::write(tmp.join("c"), "3")).unwrap();
        assert!(!target.join("a").exists() && !target.join("sub").exists());
        assert_eq!(fs::read_to_string(target.join("c")).unwrap(), "3");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn temporary_names_differ_per_call() {
        let p = Path::new("/x/model.safetensors");
        let (a, b) = (temp_path(p), temp_path(p));
        assert_ne!(a, b);
        assert!(a.starts_with("/x") && a.to_string_lossy().contains(".model.safetensors.tmp-"));
    }

    #[test]
    fn a_file_system_failure_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-folder/out.txt");
        let e = write_file(&path, |out| out.write_all(b"x")).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Failure::Io { .. }), "{text}");
        assert!(text.contains("missing-folder"), "{text}");
        let files = publish_files(&dir.path().join("nope"), dir.path());
        assert!(files.is_err());
    }
}
