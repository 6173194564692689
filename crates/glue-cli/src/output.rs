//! Output files go through atomic-fs: written under a temporary name, synced and
//! renamed when complete, so an interrupted command never leaves a half-written file.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        anyhow::bail!(
            "output directory {} does not exist; create it first",
            dir.display()
        );
    }
    path.file_name().context("output path has no file name")?;
    atomic_fs::write_file(path, write).map_err(|f| {
        f.into_inner(|at, e| {
            anyhow::Error::new(e).context(format!("cannot write {}", at.display()))
        })
    })
}
