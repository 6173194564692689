//! `cargo xtask fetch-glue` end to end against a loopback server playing the hub,
//! serving the real GLUE mirror (../shared/glue-mirror) with the hub's sha256 etags.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use glue_data::{load_split, Task};
use glue_testkit::{hub_sha256, mirror_dir, sha256_hex, HubServer};

/// Every config/split in the mirror with its row count, from PROVENANCE.md ("Files written").
const MIRROR_ROWS: &[(&str, &str, usize)] = &[
    ("ax", "test", 1104),
    ("cola", "train", 8551),
    ("cola", "validation", 1043),
    ("cola", "test", 1063),
    ("mrpc", "train", 3668),
    ("mrpc", "validation", 408),
    ("mrpc", "test", 1725),
    ("qnli", "validation", 5463),
    ("qnli", "test", 5463),
    ("rte", "train", 2490),
    ("rte", "validation", 277),
    ("rte", "test", 3000),
    ("sst2", "train", 67349),
    ("sst2", "validation", 872),
    ("sst2", "test", 1821),
    ("stsb", "train", 5749),
    ("stsb", "validation", 1500),
    ("stsb", "test", 1379),
    ("wnli", "train", 635),
    ("wnli", "validation", 71),
    ("wnli", "test", 146),
    ("mnli", "validation_matched", 9815),
    ("mnli_matched", "validation", 9815),
];

/// Configs whose every split is in the mirror.
const COMPLETE: &str = "ax,cola,mrpc,rte,sst2,stsb,wnli";

fn fetch(args: &[&str], endpoint: &str, hf_home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("fetch-glue")
        .args(args)
        .env("HF_ENDPOINT", endpoint)
        .env("HF_HOME", hf_home)
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .expect("run xtask")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn status_line<'a>(out: &'a str, config: &str, split: &str) -> &'a str {
    out.lines()
        .find(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some(config) && w.next() == Some(split)
        })
        .unwrap_or_else(|| panic!("no status line for {config}/{split} in:\n{out}"))
}

#[test]
fn fetches_verifies_and_refetches_damaged_files() {
    let hub = HubServer::start().with_glue_mirror();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let hf_home = tmp.path().join("hf");
    let data_arg = data.to_str().unwrap();

    // 1. Every complete config, plus qnli and mnli whose mirror lacks some splits.
    let out = fetch(
        &["--tasks", COMPLETE, "--data-dir", data_arg],
        &hub.endpoint(),
        &hf_home,
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = fetch(
        &["--tasks", "qnli,mnli,mnli_matched", "--data-dir", data_arg],
        &hub.endpoint(),
        &hf_home,
    );
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        status_line(&log, "qnli", "train").contains("not on the hub"),
        "{log}"
    );
    assert!(
        status_line(&log, "qnli", "validation").contains("ok (fetched)"),
        "{log}"
    );

    // 2. Every file present in the mirror now loads with PROVENANCE.md's row counts,
    //    and is byte-identical to the hub's file.
    let sha = hub_sha256();
    for &(config, split, rows) in MIRROR_ROWS {
        let task: Task = config.parse().unwrap();
        let loaded = load_split(&data, task, split).unwrap();
        assert_eq!(loaded.len(), rows, "{config}/{split}");
        let key = format!("{config}/{split}-00000-of-00001.parquet");
        let bytes = fs::read(data.join(&key)).unwrap();
        assert_eq!(sha256_hex(&bytes), sha[&key], "{key}");
    }
    // Nothing half-written is left behind.
    for config in fs::read_dir(&data).unwrap() {
        let path = config.unwrap().path();
        if path.is_dir() {
            for f in fs::read_dir(path).unwrap() {
                let name = f.unwrap().file_name().into_string().unwrap();
                assert!(name.ends_with(".parquet"), "stray file {name}");
            }
        }
    }

    // 3. A second run finds everything in place and downloads nothing.
    let before = hub.request_count();
    let out = fetch(
        &["--tasks", COMPLETE, "--data-dir", data_arg],
        &hub.endpoint(),
        &hf_home,
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(hub.request_count(), before, "{log}");
    assert!(
        status_line(&log, "sst2", "train").contains("already present"),
        "{log}"
    );

    // 4. A truncated file and a corrupted one are detected and replaced; the hub cache
    //    is emptied too, so they really come over the wire again.
    let truncated = data.join("mrpc/train-00000-of-00001.parquet");
    let len = fs::metadata(&truncated).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let corrupted = data.join("sst2/validation-00000-of-00001.parquet");
    let mut bytes = fs::read(&corrupted).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&corrupted, bytes).unwrap();
    fs::remove_dir_all(&hf_home).unwrap();
    let out = fetch(
        &["--tasks", "mrpc,sst2", "--data-dir", data_arg],
        &hub.endpoint(),
        &hf_home,
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        status_line(&log, "mrpc", "train").contains("ok (fetched)"),
        "{log}"
    );
    assert!(
        status_line(&log, "sst2", "validation").contains("ok (fetched)"),
        "{log}"
    );
    assert!(
        status_line(&log, "mrpc", "test").contains("already present"),
        "{log}"
    );
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.ends_with("mrpc/train-00000-of-00001.parquet")));
    for key in [
        "mrpc/train-00000-of-00001.parquet",
        "sst2/validation-00000-of-00001.parquet",
    ] {
        assert_eq!(sha256_hex(&fs::read(data.join(key)).unwrap()), sha[key]);
    }
}

#[test]
fn damaged_download_never_takes_the_final_name() {
    let hub = HubServer::start().with_glue_mirror();
    hub.damage("datasets/nyu-mll/glue/wnli/validation-00000-of-00001.parquet");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = fetch(
        &["--tasks", "wnli", "--data-dir", data.to_str().unwrap()],
        &hub.endpoint(),
        &tmp.path().join("hf"),
    );
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        status_line(&log, "wnli", "validation").contains("does not match the hub"),
        "{log}"
    );
    assert!(!data.join("wnli/validation-00000-of-00001.parquet").exists());
    assert!(data.join("wnli/train-00000-of-00001.parquet").exists());
}

#[test]
fn imports_a_local_mirror_with_from() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let out = fetch(
        &[
            "--tasks",
            "wnli,rte",
            "--data-dir",
            data.to_str().unwrap(),
            "--from",
            mirror_dir().to_str().unwrap(),
        ],
        "http://127.0.0.1:9",
        &tmp.path().join("hf"),
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(load_split(&data, Task::Rte, "train").unwrap().len(), 2490);
}

#[test]
fn unknown_task_lists_valid_names() {
    let tmp = tempfile::tempdir().unwrap();
    let out = fetch(&["--tasks", "mrpc,squad"], "http://127.0.0.1:9", tmp.path());
    let log = text(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("unknown GLUE task `squad`"), "{log}");
    for name in [
        "ax", "cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli",
    ] {
        assert!(log.contains(name), "{name} missing from: {log}");
    }
    assert_eq!(log.lines().count(), 1, "one-line error expected: {log}");
}

#[test]
fn unreachable_hub_names_from_and_hf_endpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Port 9 (discard) on loopback: nothing listens, the connection is refused.
    let out = fetch(
        &["--tasks", "wnli", "--data-dir", data.to_str().unwrap()],
        "http://127.0.0.1:9",
        &tmp.path().join("hf"),
    );
    let log = text(&out);
    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("cannot reach the Hugging Face hub"), "{log}");
    assert!(
        log.contains("--from") && log.contains("HF_ENDPOINT"),
        "{log}"
    );
}
