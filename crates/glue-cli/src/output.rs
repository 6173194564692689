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

/// An error and its causes on one line, each cause once: library errors that print
/// their source in their own message (`path: io error`, `torch: message`) would
/// otherwise show it twice (`X: Y: Y`).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapping(std::io::Error);
    impl std::fmt::Display for Wrapping {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "model.safetensors: {}", self.0)
        }
    }
    impl std::error::Error for Wrapping {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::other("No space left on device");
        let e = anyhow::Error::new(Wrapping(io)).context("saving the model into out");
        assert_eq!(
            one_line(&e),
            "saving the model into out: model.safetensors: No space left on device"
        );
        assert_eq!(
            format!("{e:#}").matches("No space left").count(),
            2,
            "what {{:#}} does"
        );
    }
}
