//! `cargo xtask gpu-check`: prepares `target/gpu-check/`, everything the GPU machine
//! needs (it has torch 2.11.0 in /opt/torch/.venv but no Rust and no internet):
//! the stripped `gpu_check` binary, a vocabulary-pruned copy of the test model with
//! the golden batches (< 64 MiB in all), the HF throughput script and `run.sh`.
//! Then run there: `bash target/gpu-check/run.sh` (carry `target/gpu-check`).

use std::fs;
use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

const RUN_SH: &str = r#"#!/usr/bin/env bash
# Runs on the GPU machine; prints one markdown table.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
torch_lib=${TORCH_LIB:-/opt/torch/.venv/lib/python3.12/site-packages/torch/lib}
python=${TORCH_PYTHON:-/opt/torch/.venv/bin/python}
export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
nvidia-smi -L || true
"$here/gpu_check" check "$here"
"$python" "$here/gpu_check_hf.py"
"#;

pub fn run() -> Result<ExitCode> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("no workspace root")?;
    let out = root.join("target/gpu-check");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "bert-model",
            "--example",
            "gpu_check",
        ])
        .current_dir(root)
        .status()
        .context("cannot run cargo build")?;
    if !status.success() {
        bail!("building the gpu_check example failed (run `cargo xtask setup` first)");
    }
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out)?;
    let binary = root.join("target/release/examples/gpu_check");
    let status = Command::new(&binary)
        .arg("pack")
        .arg(&out)
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("gpu_check pack failed");
    }
    fs::copy(&binary, out.join("gpu_check"))?;
    // Debug info would take most of the 64 MiB that may travel.
    let _ = Command::new("strip").arg(out.join("gpu_check")).status();
    fs::copy(
        root.join("scripts/gpu_check_hf.py"),
        out.join("gpu_check_hf.py"),
    )?;
    fs::write(out.join("run.sh"), RUN_SH)?;
    let size: u64 = walk_size(&out)?;
    println!(
        "gpu-check: {} ready ({:.1} MiB); on the GPU machine run `bash target/gpu-check/run.sh`",
        out.display(),
        size as f64 / (1 << 20) as f64
    );
    if size > 64 << 20 {
        bail!("{} is over the 64 MiB that can travel", out.display());
    }
    Ok(ExitCode::SUCCESS)
}

fn walk_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            walk_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
