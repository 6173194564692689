//! glue-cli's data commands as a user runs them: real mirror data, real tokenizer.

use std::process::{Command, Output};

use glue_testkit::{mirror_dir, test_model_dir, HubServer};

fn glue_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_glue-cli"))
        .args(args)
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .expect("run glue-cli")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn inspect_shows_the_seed_example() {
    let mirror = mirror_dir();
    let out = glue_cli(&[
        "inspect",
        "--task",
        "mrpc",
        "--split",
        "train",
        "--index",
        "14",
        "--data-dir",
        mirror.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("'sentence1': 'Gyorgy Heizler , head of the local disaster unit"),
        "{text}"
    );
    assert!(text.contains("'label': 0, 'idx': 15}"), "{text}");
    assert!(text.contains("label name: not_equivalent"), "{text}");

    let out = glue_cli(&[
        "inspect",
        "--task",
        "wnli",
        "--features",
        "--data-dir",
        mirror.to_str().unwrap(),
    ]);
    assert!(stdout(&out).contains("ClassLabel(names=['not_entailment', 'entailment'])"));
}

#[test]
fn tokenize_one_and_all() {
    let mirror = mirror_dir();
    let model = test_model_dir();
    let out = glue_cli(&[
        "tokenize",
        "--task",
        "mrpc",
        "--split",
        "train",
        "--index",
        "15",
        "--tokenizer",
        model.to_str().unwrap(),
        "--data-dir",
        mirror.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("input_ids: [101, 24049, 2001, 2087, 3728,"),
        "{text}"
    );
    assert!(
        text.contains("tokens: ['[CLS]', 'rudder', 'was',"),
        "{text}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("rte.jsonl");
    let out = glue_cli(&[
        "tokenize",
        "--task",
        "rte",
        "--split",
        "validation",
        "--all",
        "--output",
        file.to_str().unwrap(),
        "--tokenizer",
        model.to_str().unwrap(),
        "--data-dir",
        mirror.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 277);
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(first["idx"], 0);
    assert_eq!(first["input_ids"][0], 101);
    assert!(first["input_ids"].as_array().unwrap().len() <= 128);
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "no temp file left"
    );
}

#[test]
fn tokenizer_from_a_hub_id_through_the_loopback_hub() {
    let hub =
        HubServer::start().with_model("sentence-transformers/all-MiniLM-L6-v2", &test_model_dir());
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_glue-cli"))
        .args([
            "tokenize",
            "--task",
            "mrpc",
            "--index",
            "15",
            "--tokenizer",
            "sentence-transformers/all-MiniLM-L6-v2",
        ])
        .args(["--data-dir", mirror_dir().to_str().unwrap()])
        .env("HF_ENDPOINT", hub.endpoint())
        .env("HF_HOME", tmp.path())
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("input_ids: [101, 24049,"));
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.ends_with("resolve/main/tokenizer.json")));
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let mirror = mirror_dir();
    let tmp = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "inspect".into(),
                "--task".into(),
                "qqp".into(),
                "--data-dir".into(),
                tmp.path().display().to_string(),
            ],
            "run `cargo xtask fetch-glue --tasks qqp`",
        ),
        (
            vec!["inspect".into(), "--task".into(), "squad".into()],
            "unknown GLUE task `squad`",
        ),
        (
            vec![
                "inspect".into(),
                "--task".into(),
                "mrpc".into(),
                "--index".into(),
                "5000".into(),
                "--data-dir".into(),
                mirror.display().to_string(),
            ],
            "out of range: split `train` has 3668 examples",
        ),
        (
            vec![
                "inspect".into(),
                "--task".into(),
                "mrpc".into(),
                "--split".into(),
                "dev".into(),
                "--data-dir".into(),
                mirror.display().to_string(),
            ],
            "has no split `dev`",
        ),
        (
            vec![
                "tokenize".into(),
                "--task".into(),
                "mrpc".into(),
                "--tokenizer".into(),
                tmp.path().display().to_string(),
                "--data-dir".into(),
                mirror.display().to_string(),
            ],
            "tokenizer.json",
        ),
        (
            // An existing folder as the output file: refused, and no temp file left.
            vec![
                "tokenize".into(),
                "--task".into(),
                "rte".into(),
                "--split".into(),
                "validation".into(),
                "--all".into(),
                "--tokenizer".into(),
                test_model_dir().display().to_string(),
                "--data-dir".into(),
                mirror.display().to_string(),
                "--output".into(),
                tmp.path().display().to_string(),
            ],
            "Is a directory",
        ),
    ];
    for (args, needle) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = glue_cli(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let parent = tmp.path().parent().unwrap();
    let name = tmp
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let leftovers: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|f| f.contains(&format!("{name}.tmp-")))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}
