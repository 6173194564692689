//! `cargo install --path crates/glue-cli` gives a glue-cli that starts from any
//! directory: installed into a temporary root, run from another temporary folder.

use std::path::{Path, PathBuf};
use std::process::Command;

use glue_testkit::{mirror_dir, test_model_dir};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn cargo_install_gives_a_glue_cli_that_runs_from_any_directory() {
    let root = workspace_root();
    let prefix = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Its own target folder: without dev-dependencies the features differ, so it
    // could not reuse the test build anyway, and it must not swap the binary that
    // the other tests run.
    let out = Command::new(cargo)
        .current_dir(&root)
        .args([
            "install",
            "--debug",
            "--offline",
            "--locked",
            "--quiet",
            "--path",
        ])
        .arg(root.join("crates/glue-cli"))
        .arg("--root")
        .arg(prefix.path())
        .env("CARGO_TARGET_DIR", root.join("target/install-test"))
        // A from-scratch build of the whole graph (CI's clean clone): no debug info and
        // no incremental state, which this test never uses, keep it a few minutes shorter.
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .env("CARGO_INCREMENTAL", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let installed = prefix.path().join("bin/glue-cli");
    let run = |args: &[&str]| {
        let out = Command::new(&installed)
            .current_dir(elsewhere.path())
            .args(args)
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "glue-cli {args:?} failed: {text}");
        text
    };
    assert!(run(&["--help"]).contains("Fine-tune"));
    // The launcher alone, without the program beside it: one line naming the fix.
    let alone = elsewhere.path().join("alone");
    std::fs::create_dir_all(&alone).unwrap();
    std::fs::copy(&installed, alone.join("glue-cli")).unwrap();
    let out = Command::new(alone.join("glue-cli"))
        .arg("--version")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("glue-cli-torch is missing beside glue-cli") && stderr.lines().count() == 1,
        "{stderr}"
    );
    let version = run(&["--version"]);
    assert!(version.contains("libtorch 2.11.0"), "{version}");
    assert!(version.contains("devices: cpu"), "{version}");
    let output_dir = elsewhere.path().join("run");
    let text = run(&[
        "run",
        "--task",
        "rte",
        "--model",
        test_model_dir().to_str().unwrap(),
        "--data-dir",
        mirror_dir().to_str().unwrap(),
        "--device",
        "cpu",
        "--max-steps",
        "2",
        "--eval-strategy",
        "no",
        "--save-strategy",
        "no",
        "--output-dir",
        output_dir.to_str().unwrap(),
    ]);
    assert!(text.contains("train: 2 steps"), "{text}");
    assert!(output_dir.join("model.safetensors").is_file());
}
