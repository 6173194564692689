//! `cargo xtask gpu-check`: prepares `target/gpu-check/`, everything the GPU machine
//! needs (it has torch 2.11.0 and transformers in /opt/torch/.venv but no Rust and no
//! internet, and at most 64 MiB travel): the stripped `glue-cli` and `gpu_check`
//! binaries, a vocabulary-pruned copy of the test model with the golden batches, the
//! MRPC train/validation parquet files and the test model's tokenizer (for a
//! bert-base-shaped random model made there), scripts/hf_train.py, and `run.sh`
//! (scripts/gpu_check_run.sh).
//! Then, there: `bash target/gpu-check/run.sh` (carry `target/gpu-check`). It prints
//! one markdown table: parity, fused AdamW, deterministic mode, and training
//! throughput next to HF Trainer on the same card (bert-base-shaped, fp32 and bf16,
//! batch 8 and 32, MRPC lengths), within about 8 minutes.

use std::fs;
use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

pub fn run() -> Result<ExitCode> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("no workspace root")?;
    let out = root.join("target/gpu-check");
    // Two builds: with `--example`, cargo would build only the example of every package named.
    for target in [
        &["-p", "glue-cli", "--bins"][..],
        &["-p", "bert-model", "--example", "gpu_check"],
    ] {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "-q"])
            .args(target)
            .current_dir(root)
            .status()
            .context("cannot run cargo build")?;
        if !status.success() {
            bail!("building {target:?} failed (run `cargo xtask setup` first)");
        }
    }
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out)?;
    let check = root.join("target/release/examples/gpu_check");
    let status = Command::new(&check)
        .arg("pack")
        .arg(&out)
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("gpu_check pack failed");
    }
    for (binary, name) in [
        (check, "gpu_check"),
        // The program itself; the launcher's libtorch check would look for this machine's folders.
        (root.join("target/release/glue-cli-torch"), "glue-cli"),
    ] {
        fs::copy(&binary, out.join(name))?;
        // Debug info would take most of the 64 MiB that may travel; gzip halves the rest.
        let _ = Command::new("strip").arg(out.join(name)).status();
        let status = Command::new("gzip")
            .arg("-9")
            .arg(out.join(name))
            .status()?;
        if !status.success() {
            bail!("gzip {name} failed");
        }
    }
    let mirror = std::env::var_os("GLUE_MIRROR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/glue-mirror"));
    fs::create_dir_all(out.join("glue/mrpc"))?;
    for split in ["train", "validation"] {
        let name = format!("{split}-00000-of-00001.parquet");
        fs::copy(
            mirror.join("mrpc").join(&name),
            out.join("glue/mrpc").join(&name),
        )
        .with_context(|| format!("copying MRPC {split} from {}", mirror.display()))?;
    }
    fs::create_dir_all(out.join("tokenizer"))?;
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "special_tokens_map.json",
    ] {
        fs::copy(
            root.join(".venv/test-model").join(f),
            out.join("tokenizer").join(f),
        )?;
    }
    fs::copy(root.join("scripts/hf_train.py"), out.join("hf_train.py"))?;
    fs::copy(root.join("scripts/gpu_check_run.sh"), out.join("run.sh"))?;
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
