//! One run per output folder: `output_dir/.glue-rs.lock` holds the owner's pid, host
//! and start time. A second run is refused with one line naming the first; a lock left
//! by a process that died (SIGKILL, power loss) on this host is taken over.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use crate::error::{io_error, Result, TrainError};

const LOCK_FILE: &str = ".glue-rs.lock";

/// Held for the run's lifetime; the file is removed on drop.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Whether `pid` is a live process on this host (signal 0 only checks).
fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 sends nothing; it only reports whether pid exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl OutputLock {
    /// Creates `output_dir` if needed and takes its lock.
    pub fn acquire(output_dir: &Path) -> Result<OutputLock> {
        fs::create_dir_all(output_dir).map_err(io_error(output_dir))?;
        let path = output_dir.join(LOCK_FILE);
        let me = format!(
            "pid {} host {} started {}\n",
            std::process::id(),
            hostname(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        );
        for _ in 0..2 {
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    file.write_all(me.as_bytes()).map_err(io_error(&path))?;
                    return Ok(OutputLock { path });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let owner = fs::read_to_string(&path).unwrap_or_default();
                    let fields: Vec<&str> = owner.split_whitespace().collect();
                    let pid = fields.get(1).and_then(|p| p.parse::<i32>().ok());
                    let host = fields.get(3).copied().unwrap_or("");
                    let stale = host == hostname() && pid.is_some_and(|p| !alive(p));
                    if !stale {
                        return Err(TrainError::InvalidArgs(format!(
                            "{} is in use by another run ({}); wait for it to finish or use another --output-dir \
                             (if that run is gone, delete {})",
                            output_dir.display(),
                            owner.trim(),
                            path.display()
                        )));
                    }
                    let _ = fs::remove_file(&path);
                }
                Err(e) => {
                    return Err(TrainError::Io {
                        path: output_dir.to_path_buf(),
                        source: e,
                    })
                }
            }
        }
        Err(TrainError::InvalidArgs(format!(
            "could not take the lock {}; another run is starting in {}",
            path.display(),
            output_dir.display()
        )))
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_and_a_dead_owner_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let first = OutputLock::acquire(dir.path()).unwrap();
        let err = OutputLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("in use by another run"), "{err}");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        // A lock file from a process that no longer exists (pid far above pid_max).
        fs::write(
            dir.path().join(LOCK_FILE),
            format!("pid 2147483000 host {} started 0\n", hostname()),
        )
        .unwrap();
        let _taken = OutputLock::acquire(dir.path()).unwrap();
    }
}
