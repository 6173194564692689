//! `glue-cli`: checks that the libtorch `glue-cli-torch` was linked against is still
//! there, then becomes it (exec: same pid, arguments, environment and exit code).
//!
//! Why a second binary: a program linked to libtorch never reaches `main` when the
//! loader cannot find `libtorch_cpu.so` (a deleted or moved venv after `cargo
//! install`); the loader's message says nothing about glue-rs or the fix. This one
//! links no libtorch, so it can say both in one line.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The folder `glue-cli-torch`'s absolute RUNPATH names (see build.rs).
const LIBTORCH_LIB: &str = env!("GLUE_CLI_LIBTORCH_LIB");
const REAL_BINARY: &str = "glue-cli-torch";

/// The folders the loader will search for libtorch, in its order: LD_LIBRARY_PATH,
/// then the RUNPATH entries (the absolute one, and the workspace's relative ones
/// from .cargo/config.toml, which serve binaries inside `target/`).
fn search_path(exe_dir: &Path, ld_library_path: Option<OsString>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = ld_library_path
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    dirs.push(PathBuf::from(LIBTORCH_LIB));
    dirs.push(exe_dir.join("../../.venv/torch/lib"));
    dirs.push(exe_dir.join("../../../.venv/torch/lib"));
    dirs
}

fn has_libtorch(dirs: &[PathBuf]) -> bool {
    dirs.iter().any(|d| d.join("libtorch_cpu.so").is_file())
}

fn missing_libtorch_message(built_against: &str) -> String {
    format!(
        "libtorch not found: glue-cli was built against {built_against}, which is gone \
         (venv moved or deleted?); rerun `cargo xtask setup` and `cargo install --path \
         crates/glue-cli`, or set LD_LIBRARY_PATH to a torch 2.11.0 `torch/lib` folder"
    )
}

fn main() -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot locate glue-cli itself: {e}");
            return ExitCode::from(2);
        }
    };
    let dir = exe.parent().unwrap_or(Path::new("."));
    let real = dir.join(REAL_BINARY);
    if !real.is_file() {
        eprintln!(
            "error: {} is missing beside glue-cli; reinstall with `cargo install --path crates/glue-cli`",
            real.display()
        );
        return ExitCode::from(2);
    }
    // Libraries in the loader's system folders (ld.so.cache) are not looked for here;
    // a libtorch installed there is taken on trust.
    let system = ["/usr/lib", "/usr/local/lib", "/lib"].map(PathBuf::from);
    let dirs = search_path(dir, std::env::var_os("LD_LIBRARY_PATH"));
    if !has_libtorch(&dirs) && !has_libtorch(&system) {
        eprintln!("error: {}", missing_libtorch_message(LIBTORCH_LIB));
        return ExitCode::from(2);
    }
    // argv[0] stays the name the user typed, for clap's usage lines.
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "glue-cli".into());
    let err = Command::new(&real).arg0(arg0).args(args).exec();
    eprintln!("error: cannot start {}: {err}", real.display());
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_libtorch_this_build_links_is_found() {
        let dirs = search_path(Path::new("/nowhere/bin"), None);
        assert!(has_libtorch(&dirs), "{dirs:?}");
    }

    #[test]
    fn a_vanished_libtorch_is_named_with_the_fix() {
        let gone = tempfile::tempdir().unwrap().path().join("venv/torch/lib");
        assert!(!has_libtorch(std::slice::from_ref(&gone)));
        let message = missing_libtorch_message(&gone.display().to_string());
        assert!(message.contains(&gone.display().to_string()));
        assert!(message.contains("cargo xtask setup"));
        assert!(!message.contains('\n'));
    }

    #[test]
    fn ld_library_path_is_searched_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("libtorch_cpu.so"), b"").unwrap();
        let dirs = search_path(
            Path::new("/nowhere/bin"),
            Some(dir.path().as_os_str().to_owned()),
        );
        assert_eq!(dirs[0], dir.path());
        assert!(has_libtorch(&dirs[..1]));
    }
}
