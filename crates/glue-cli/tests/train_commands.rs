//! `glue-cli run / evaluate / predict` end to end on the real test model and data:
//! short runs (CI budget), exact resume after a real SIGKILL, leaderboard files.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use glue_testkit::{mirror_dir, test_model_dir, SMALL_RUN_FLAGS};

fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_glue-cli"));
    c.env_remove("HF_HUB_OFFLINE");
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A short MRPC run: 12 updates of 4 examples, checkpoints every 4.
fn short_run_args(out: &Path) -> Vec<String> {
    [
        "run",
        "--task",
        "mrpc",
        "--device",
        "cpu",
        "--max-steps",
        "12",
        "--logging-steps",
        "2",
        "--eval-strategy",
        "no",
        "--save-strategy",
        "steps",
        "--save-steps",
        "4",
        "--warmup-steps",
        "3",
    ]
    .iter()
    .chain(SMALL_RUN_FLAGS.iter())
    .map(|s| s.to_string())
    .chain([
        "--model".into(),
        test_model_dir().display().to_string(),
        "--data-dir".into(),
        mirror_dir().display().to_string(),
        "--output-dir".into(),
        out.display().to_string(),
    ])
    .collect()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(
        &fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn without_timings(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    if let Some(map) = v.as_object_mut() {
        map.retain(|k, _| !k.contains("runtime") && !k.contains("per_second"));
    }
    v
}

fn complete(out: &Path, step: u64) -> bool {
    out.join(format!("checkpoint-{step}/checkpoint-complete"))
        .is_file()
}

#[test]
fn resume_after_sigkill_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));

    let out = cli().args(short_run_args(&a)).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // Same run, killed with SIGKILL once its first checkpoint is complete.
    let mut child = cli()
        .args(short_run_args(&b))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !complete(&b, 4) {
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint appeared"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("run ended before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(
        !b.join("eval_results.json").exists(),
        "killed before the end"
    );

    // A checkpoint folder without its completion marker is never resumed from.
    let fake = b.join("checkpoint-999");
    fs::create_dir_all(&fake).unwrap();
    fs::copy(
        b.join("checkpoint-4/model.safetensors"),
        fake.join("model.safetensors"),
    )
    .unwrap();
    let out = cli()
        .args(short_run_args(&b))
        .args(["--resume-from-checkpoint", fake.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("not a complete checkpoint"),
        "{}",
        text(&out)
    );

    let out = cli()
        .args(short_run_args(&b))
        .args(["--resume-from-checkpoint", "latest"])
        .output()
        .unwrap();
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        !log.contains("starting at step 0"),
        "resumed from a checkpoint: {log}"
    );

    let weights = |d: &PathBuf| fs::read(d.join("model.safetensors")).unwrap();
    assert!(
        weights(&a) == weights(&b),
        "final weights differ after resume"
    );
    assert_eq!(
        without_timings(&json(&a.join("eval_results.json"))),
        without_timings(&json(&b.join("eval_results.json")))
    );
    let losses = |d: &PathBuf| -> Vec<serde_json::Value> {
        json(&d.join("trainer_state.json"))["log_history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e.get("loss").is_some())
            .cloned()
            .collect()
    };
    assert_eq!(losses(&a), losses(&b));
    assert_eq!(losses(&a).len(), 6);
}

/// bf16 on CPU, where AdamW keeps bf16 copies of the linear weights for the forward
/// (rewritten from the fp32 weights at every update and at resume): resuming is bit
/// identical, and the run tracks the one on autocast's per-forward casts
/// (`GLUE_RS_BF16_COPIES=0`), which differs only in AdamW's rounding.
#[test]
fn bf16_run_with_weight_copies_resumes_bit_identically_and_tracks_autocasts() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let args = |d: &Path| {
        let mut v = short_run_args(d);
        v.push("--bf16".into());
        v
    };
    let out = run_then_resume_elsewhere(args, &a, &b, 4);
    assert!(out.status.success(), "{}", text(&out));
    let weights = |d: &PathBuf| fs::read(d.join("model.safetensors")).unwrap();
    assert!(
        weights(&a) == weights(&b),
        "final weights differ after a bf16 resume"
    );

    let out = cli()
        .args(args(&c))
        .env("GLUE_RS_BF16_COPIES", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(weights(&a) != weights(&c), "the switch changed nothing");
    let losses = |d: &PathBuf| -> Vec<f64> {
        json(&d.join("trainer_state.json"))["log_history"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e.get("loss").and_then(serde_json::Value::as_f64))
            .collect()
    };
    let (with, without) = (losses(&a), losses(&c));
    assert_eq!(with.len(), 6);
    for (x, y) in with.iter().zip(&without) {
        assert!(
            (x - y).abs() <= 1e-3 * y.abs(),
            "losses {with:?} vs {without:?}"
        );
    }
}

/// Resume from a middle checkpoint with evaluation and best-model tracking on: the best
/// model, its metric, the evaluations and the restored optimizer state all come out as
/// in the uninterrupted run.
#[test]
fn resume_with_eval_and_best_model_matches_the_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let args = |out: &Path| {
        let mut args = with_flag(short_run_args(out), "--eval-strategy", "steps");
        args.extend(
            [
                "--eval-steps",
                "4",
                "--load-best-model-at-end",
                "--metric-for-best-model",
                "f1",
            ]
            .map(String::from),
        );
        args
    };
    let out = run_then_resume_elsewhere(args, &a, &b, 8);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("starting at step 8"), "{log}");

    for file in [
        "model.safetensors",
        "checkpoint-12/model.safetensors",
        "checkpoint-12/optimizer.safetensors",
    ] {
        assert!(
            fs::read(a.join(file)).unwrap() == fs::read(b.join(file)).unwrap(),
            "{file} differs after resume"
        );
    }
    assert_eq!(
        without_timings(&json(&a.join("eval_results.json"))),
        without_timings(&json(&b.join("eval_results.json")))
    );
    let state = |d: &Path| json(&d.join("trainer_state.json"));
    let (sa, sb) = (state(&a), state(&b));
    assert_eq!(sa["best_metric"], sb["best_metric"]);
    let best = |s: &serde_json::Value| {
        Path::new(
            s["best_model_checkpoint"]
                .as_str()
                .expect("a best checkpoint"),
        )
        .file_name()
        .unwrap()
        .to_owned()
    };
    assert_eq!(best(&sa), best(&sb));
    let evals = |s: &serde_json::Value| -> Vec<serde_json::Value> {
        s["log_history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e.get("eval_f1").is_some())
            .map(without_timings)
            .collect()
    };
    assert!(evals(&sa).len() >= 3, "evaluations at steps 4, 8 and 12");
    assert_eq!(evals(&sa), evals(&sb));
}

/// Runs `args(a)` to the end, then resumes `args(b)` from a copy of a's checkpoint at
/// `step` alone in `b` (as if b's run had stopped right after saving it); returns the
/// resumed run's output.
fn run_then_resume_elsewhere(
    args: impl Fn(&Path) -> Vec<String>,
    a: &Path,
    b: &Path,
    step: u64,
) -> Output {
    let out = cli().args(args(a)).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let checkpoint = format!("checkpoint-{step}");
    copy_dir(&a.join(&checkpoint), &b.join(&checkpoint));
    cli()
        .args(args(b))
        .args(["--resume-from-checkpoint", "latest"])
        .output()
        .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// The README's reproducibility promise: same machine, threads and flags, same weights.
#[test]
fn the_same_run_launched_three_times_gives_identical_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let runs: Vec<PathBuf> = (0..3)
        .map(|i| tmp.path().join(format!("run-{i}")))
        .collect();
    for dir in &runs {
        let out = cli().args(short_run_args(dir)).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
    }
    let weights: Vec<Vec<u8>> = runs
        .iter()
        .map(|d| fs::read(d.join("model.safetensors")).unwrap())
        .collect();
    assert!(weights[0] == weights[1], "launches 1 and 2 differ");
    assert!(weights[0] == weights[2], "launches 1 and 3 differ");
}

#[test]
fn sst2_and_stsb_report_their_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    for (task, keys) in [
        ("sst2", vec!["eval_accuracy"]),
        (
            "stsb",
            vec!["eval_pearson", "eval_spearmanr", "eval_combined_score"],
        ),
    ] {
        let out_dir = tmp.path().join(task);
        // Part of the arguments come from a --config file, as HF users keep them.
        let config = tmp.path().join(format!("{task}.toml"));
        fs::write(
            &config,
            "max_steps = 3\nper_device_train_batch_size = 4\nlogging_steps = 1\nlearning_rate = 1e-3\n",
        )
        .unwrap();
        let out = cli()
            .args(["run", "--task", task, "--device", "cpu"])
            .args([
                "--config",
                config.to_str().unwrap(),
                "--learning-rate",
                "2e-5",
            ])
            .args([
                "--per-device-eval-batch-size",
                "128",
                "--max-seq-length",
                "32",
            ])
            .args([
                "--model",
                test_model_dir().to_str().unwrap(),
                "--data-dir",
                mirror_dir().to_str().unwrap(),
            ])
            .args(["--output-dir", out_dir.to_str().unwrap()])
            .output()
            .unwrap();
        let log = text(&out);
        assert!(out.status.success(), "{task}: {log}");
        let results = json(&out_dir.join("eval_results.json"));
        let recorded = json(&out_dir.join("training_args.json"));
        assert_eq!(recorded["max_steps"], 3, "from the config file");
        assert_eq!(
            recorded["learning_rate"], 2e-5,
            "flags win over the config file"
        );
        for k in keys {
            assert!(
                results[k].as_f64().is_some(),
                "{task}: {k} missing in {results}"
            );
        }
        for f in [
            "train_results.json",
            "all_results.json",
            "trainer_state.json",
            "training_curves.svg",
            "model.safetensors",
            "config.json",
        ] {
            assert!(out_dir.join(f).is_file(), "{task}: {f} missing");
        }
        assert!(
            log.contains("Epoch | Training Loss | Validation Loss"),
            "{log}"
        );
        let config = json(&out_dir.join("config.json"));
        if task == "stsb" {
            assert_eq!(config["problem_type"], "regression");
        }

        // The leaderboard file: header and one row per test example.
        let pred_dir = tmp.path().join(format!("{task}-pred"));
        let out = cli()
            .args([
                "predict",
                "--task",
                task,
                "--device",
                "cpu",
                "--model",
                out_dir.to_str().unwrap(),
            ])
            .args([
                "--data-dir",
                mirror_dir().to_str().unwrap(),
                "--output-dir",
                pred_dir.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let (file, rows) = if task == "sst2" {
            ("SST-2.tsv", 1821)
        } else {
            ("STS-B.tsv", 1379)
        };
        let tsv = fs::read_to_string(pred_dir.join(file)).unwrap();
        let lines: Vec<&str> = tsv.lines().collect();
        assert_eq!(lines[0], "index\tprediction");
        assert_eq!(lines.len(), rows + 1);
        assert!(lines[1].starts_with("0\t"));

        // Any two-class model can fill the other two-class leaderboard files; the
        // row counts are those of the mirror's test splits (PROVENANCE.md).
        if task == "sst2" {
            for (other, file, rows, sample) in [
                ("cola", "CoLA.tsv", 1063, None),
                ("mrpc", "MRPC.tsv", 1725, None),
                (
                    "rte",
                    "RTE.tsv",
                    3000,
                    Some(["entailment", "not_entailment"]),
                ),
                ("wnli", "WNLI.tsv", 146, None),
            ] {
                let out = cli()
                    .args([
                        "predict",
                        "--task",
                        other,
                        "--device",
                        "cpu",
                        "--max-seq-length",
                        "32",
                    ])
                    .args(["--model", out_dir.to_str().unwrap()])
                    .args(["--data-dir", mirror_dir().to_str().unwrap()])
                    .args(["--output-dir", pred_dir.to_str().unwrap()])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{other}: {}", text(&out));
                let tsv = fs::read_to_string(pred_dir.join(file)).unwrap();
                let lines: Vec<&str> = tsv.lines().collect();
                assert_eq!(lines.len(), rows + 1, "{file}");
                let value = lines[1].split('\t').nth(1).unwrap();
                match sample {
                    Some(names) => assert!(names.contains(&value), "{file}: {value}"),
                    None => assert!(value == "0" || value == "1", "{file}: {value}"),
                }
            }
        }
    }
}

#[test]
fn run_errors_are_one_line_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let model = test_model_dir();
    let mirror = mirror_dir();
    let bad_config = tmp.path().join("typo.toml");
    fs::write(&bad_config, "learning_rat = 1e-5\n").unwrap();
    let wrong_type = tmp.path().join("wrong-type.toml");
    fs::write(&wrong_type, "learning_rate = \"fast\"\n").unwrap();
    let metric_dir = tmp.path().join("metric");
    let scratch = tmp.path().join("out");
    // RTE whose train file is really its validation file: found before the model loads.
    let bad_data = tmp.path().join("bad-data");
    fs::create_dir_all(bad_data.join("rte")).unwrap();
    for (to, from) in [("train", "validation"), ("validation", "validation")] {
        fs::copy(
            mirror.join(format!("rte/{from}-00000-of-00001.parquet")),
            bad_data.join(format!("rte/{to}-00000-of-00001.parquet")),
        )
        .unwrap();
    }
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["run", "--task", "squad"], "unknown GLUE task `squad`"),
        // The hub is offline: a model-first order would fail on the model instead.
        (
            vec![
                "run",
                "--task",
                "rte",
                "--data-dir",
                bad_data.to_str().unwrap(),
                "--model",
                "no-such-org/no-such-model",
            ],
            "train-00000-of-00001.parquet: expected 2490 rows, found 277",
        ),
        // A config key misspelt or of the wrong type is named.
        (
            vec![
                "run",
                "--task",
                "mrpc",
                "--config",
                bad_config.to_str().unwrap(),
            ],
            "invalid training argument `learning_rat`: unknown field `learning_rat`",
        ),
        (
            vec![
                "run",
                "--task",
                "mrpc",
                "--config",
                wrong_type.to_str().unwrap(),
            ],
            "invalid training argument `learning_rate`: invalid type: string \"fast\"",
        ),
        (
            vec!["run", "--task", "qqp"],
            "cargo xtask fetch-glue --tasks qqp",
        ),
        (
            vec!["run", "--task", "mrpc", "--model", "/no/such/model-dir"],
            "not found",
        ),
        (
            vec![
                "run",
                "--task",
                "mrpc",
                "--model",
                tmp.path().to_str().unwrap(),
            ],
            "has no `config.json`; pass a folder saved by save_pretrained",
        ),
        (
            vec![
                "run",
                "--task",
                "mrpc",
                "--load-best-model-at-end",
                "--eval-strategy",
                "no",
            ],
            "--load-best-model-at-end needs an --eval-strategy",
        ),
        (
            vec![
                "run",
                "--task",
                "mrpc",
                "--gradient-accumulation-steps",
                "0",
            ],
            "at least 1",
        ),
        (
            vec![
                "run",
                "--task",
                "mrpc",
                "--resume-from-checkpoint",
                "--output-dir",
                tmp.path().to_str().unwrap(),
            ],
            "no complete checkpoint",
        ),
        // Values torch would reject mid-run, refused up front.
        (
            vec!["run", "--task", "mrpc", "--adam-beta1", "1.5"],
            "--adam-beta1 must be in [0, 1), got 1.5",
        ),
        (
            vec!["run", "--task", "mrpc", "--adam-epsilon", "-1e-8"],
            "--adam-epsilon must be a finite number >= 0",
        ),
        (
            vec!["run", "--task", "mrpc", "--pad-to-multiple-of", "0"],
            "--pad-to-multiple-of must be at least 1",
        ),
        (
            vec!["run", "--task", "mrpc", "--early-stopping-patience", "0"],
            "--early-stopping-patience must be at least 1",
        ),
        (
            vec![
                "run",
                "--task",
                "mrpc",
                "--metric-for-best-model",
                "acuracy",
                "--max-steps",
                "1",
                "--output-dir",
                metric_dir.to_str().unwrap(),
            ],
            "`acuracy` is not a metric of mrpc; use one of: loss, accuracy, f1, combined_score",
        ),
        (
            vec!["evaluate", "--task", "mrpc"],
            "has no weights for classifier.bias, classifier.weight",
        ),
    ];
    // The mirror, the test model and a scratch output folder unless a case names its own.
    let defaults = [
        ("--data-dir", mirror.to_str().unwrap()),
        ("--model", model.to_str().unwrap()),
        ("--output-dir", scratch.to_str().unwrap()),
    ];
    for (mut args, needle) in cases {
        for (flag, value) in defaults {
            let applies = flag != "--output-dir" || args[0] == "run";
            if applies && !args.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        let out = cli()
            .args(&args)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        let last = err
            .trim_end()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        assert!(
            last.starts_with("error: ") && last.contains(needle),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
    // Float flags that are not numbers: refused by the parser (they used to turn into
    // JSON null in the flag merge, i.e. silently into the defaults).
    for (args, needle) in [
        (
            vec!["run", "--task", "mrpc", "--learning-rate", "NaN"],
            "NaN is not a finite number",
        ),
        (
            vec!["run", "--task", "mrpc", "--warmup-ratio", "inf"],
            "inf is not a finite number",
        ),
        (
            vec![
                "evaluate",
                "--task",
                "mrpc",
                "--model",
                "m",
                "--batch-size",
                "0",
            ],
            "--batch-size",
        ),
    ] {
        let out = cli().args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.lines()
                .next()
                .is_some_and(|l| l.starts_with("error: ") && l.contains(needle)),
            "{args:?}: {err}"
        );
    }
}

/// `args` with `flag`'s value replaced (clap refuses a flag given twice), or appended.
fn with_flag(mut args: Vec<String>, flag: &str, value: &str) -> Vec<String> {
    match args.iter().position(|a| a == flag) {
        Some(at) => args[at + 1] = value.to_string(),
        None => args.extend([flag.to_string(), value.to_string()]),
    }
    args
}

/// One run per output folder; a resume refuses arguments that would not continue
/// the checkpoint's run unless told; a sequence limit above the model's is clamped.
#[test]
fn output_folder_lock_resume_checks_and_sequence_clamp() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("run");
    // 4 steps, checkpoints every 3: HF also saves at max_steps, so both 3 and 4 appear.
    let base = with_flag(
        with_flag(
            with_flag(short_run_args(&out_dir), "--max-steps", "4"),
            "--save-steps",
            "3",
        ),
        "--max-seq-length",
        "600",
    );
    // A live process holds the folder (this test's own pid).
    fs::create_dir_all(&out_dir).unwrap();
    let lock = out_dir.join(".glue-rs.lock");
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    fs::write(
        &lock,
        format!(
            "pid {} host {} started 0\n",
            std::process::id(),
            host.trim()
        ),
    )
    .unwrap();
    let out = cli().args(&base).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("is in use by another run"),
        "{}",
        text(&out)
    );
    assert!(
        !out_dir.join("checkpoint-4").exists(),
        "trained despite the lock"
    );
    fs::remove_file(&lock).unwrap();

    let out = cli().args(&base).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("--max-seq-length 600 is larger than the model's maximum (512"),
        "{}",
        text(&out)
    );
    assert!(!lock.exists(), "the lock outlived the run");
    assert!(
        complete(&out_dir, 3) && complete(&out_dir, 4),
        "checkpoints 3 and 4"
    );

    let resume = with_flag(base, "--resume-from-checkpoint", "latest");
    let changed = with_flag(
        with_flag(resume, "--per-device-train-batch-size", "8"),
        "--seed",
        "7",
    );
    let out = cli().args(&changed).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = text(&out);
    assert!(
        err.contains("per_device_train_batch_size 4 -> 8") && err.contains("seed 42 -> 7"),
        "{err}"
    );
    assert!(err.contains("--resume-with-changed-args"), "{err}");
    let out = cli()
        .args(&changed)
        .arg("--resume-with-changed-args")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("newly initialized"), "{}", text(&out));
}

/// A DistilBERT folder (random weights, the test model's vocabulary and tokenizer)
/// fine-tunes, evaluates and saves through the same commands as BERT, and HF
/// transformers loads the result as a DistilBertForSequenceClassification with the
/// same logits.
#[test]
fn distilbert_runs_end_to_end_and_hf_loads_the_result() {
    use bert_model::{BertConfig, BertForSequenceClassification};
    let tmp = tempfile::tempdir().unwrap();
    let config = BertConfig::from_json(serde_json::json!({
        "model_type": "distilbert", "vocab_size": 30522, "dim": 32, "n_layers": 2,
        "n_heads": 2, "hidden_dim": 64,
    }))
    .unwrap();
    tch::manual_seed(3);
    let mut model = BertForSequenceClassification::new(config, tch::Device::Cpu);
    model.tokenizer_dir = Some(test_model_dir());
    let start = tmp.path().join("distilbert-random");
    model.save_pretrained(&start).unwrap();
    let out_dir = tmp.path().join("out");
    let mirror = mirror_dir();
    let mut args: Vec<&str> = vec![
        "run",
        "--task",
        "rte",
        "--device",
        "cpu",
        "--max-steps",
        "2",
    ];
    args.extend(SMALL_RUN_FLAGS);
    args.extend(["--eval-strategy", "no", "--save-strategy", "no"]);
    let out = cli()
        .args(&args)
        .args(["--model", start.to_str().unwrap()])
        .args(["--data-dir", mirror.to_str().unwrap()])
        .args(["--output-dir", out_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let saved: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out_dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["model_type"], "distilbert");
    assert_eq!(saved["dim"], 32);
    let eval = cli()
        .args([
            "evaluate",
            "--task",
            "rte",
            "--device",
            "cpu",
            "--max-seq-length",
            "48",
        ])
        .args(["--model", out_dir.to_str().unwrap()])
        .args(["--data-dir", mirror.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(eval.status.success(), "{}", text(&eval));
    assert!(text(&eval).contains("\"accuracy\""), "{}", text(&eval));

    assert_hf_loads_with_our_logits(&out_dir, "DistilBertForSequenceClassification");
}

/// transformers loads `folder` (no missing or unexpected keys, the given class) and
/// its logits for check_hf_load.py's fixed input equal ours within 1e-5.
fn assert_hf_loads_with_our_logits(folder: &Path, class: &str) {
    let (trained, _) = bert_model::BertForSequenceClassification::from_pretrained(
        folder.to_str().unwrap(),
        None,
        tch::Device::Cpu,
    )
    .unwrap();
    let Some(theirs) = glue_testkit::hf_load_logits(folder, class) else {
        return;
    };
    let ids = tch::Tensor::from_slice(&glue_testkit::hf_check_input_ids(trained.config.vocab_size))
        .view([2, 8]);
    let mask = ids.ne(0).to_kind(tch::Kind::Int64);
    let ours: Vec<f32> = Vec::try_from(
        trained
            .forward(&ids, &ids.zeros_like(), &mask, None, false)
            .unwrap()
            .logits
            .flatten(0, -1),
    )
    .unwrap();
    let worst = glue_testkit::max_abs_diff(&ours, &theirs);
    assert!(worst < 1e-5, "ours {ours:?} vs HF {theirs:?}");
}

/// `run --lora-r` fine-tunes through adapters and writes a PEFT adapter folder, which
/// `evaluate` loads onto its base; `--merge-lora` writes a plain HF folder instead that
/// scores the same.
#[test]
fn lora_run_saves_a_peft_adapter_that_evaluates_like_the_merged_model() {
    let tmp = tempfile::tempdir().unwrap();
    let mirror = mirror_dir();
    let model = test_model_dir();
    let mut scores = Vec::new();
    for merge in [false, true] {
        let out_dir = tmp.path().join(if merge { "merged" } else { "adapter" });
        let mut args: Vec<&str> = vec![
            "run",
            "--task",
            "rte",
            "--device",
            "cpu",
            "--max-steps",
            "3",
        ];
        args.extend(SMALL_RUN_FLAGS);
        args.extend([
            "--eval-strategy",
            "no",
            "--save-strategy",
            "steps",
            "--save-steps",
            "3",
            "--lora-r",
            "4",
        ]);
        args.extend(["--lora-alpha", "16", "--learning-rate", "1e-3"]);
        if merge {
            args.push("--merge-lora");
        }
        let out = cli()
            .args(&args)
            .args(["--model", model.to_str().unwrap()])
            .args(["--data-dir", mirror.to_str().unwrap()])
            .args(["--output-dir", out_dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let files = [
            "adapter_config.json",
            "adapter_model.safetensors",
            "model.safetensors",
        ]
        .map(|f| out_dir.join(f).exists());
        assert_eq!(files, [!merge, !merge, merge], "{merge}: {files:?}");
        let eval = cli()
            .args([
                "evaluate",
                "--task",
                "rte",
                "--device",
                "cpu",
                "--max-seq-length",
                "48",
            ])
            .args(["--model", out_dir.to_str().unwrap()])
            .args(["--data-dir", mirror.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(eval.status.success(), "{}", text(&eval));
        let metrics: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
        scores.push(metrics["validation"].clone());
        // A checkpoint of a LoRA run loads with its adapters (not as the bare base).
        let checkpoint = out_dir.join("checkpoint-3");
        assert!(checkpoint.join("adapter_config.json").exists());
        let eval = cli()
            .args([
                "evaluate",
                "--task",
                "rte",
                "--device",
                "cpu",
                "--max-seq-length",
                "48",
            ])
            .args(["--model", checkpoint.to_str().unwrap()])
            .args(["--data-dir", mirror.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(eval.status.success(), "{}", text(&eval));
        let at_checkpoint: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
        // checkpoint-3 holds the final weights, adapters included (up to float noise).
        let (at, last) = (&at_checkpoint["validation"], &metrics["validation"]);
        assert_eq!(at["accuracy"], last["accuracy"]);
        let gap = (at["loss"].as_f64().unwrap() - last["loss"].as_f64().unwrap()).abs();
        assert!(gap < 1e-6, "{at} vs {last}");
        let saved_args: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(out_dir.join("training_args.json")).unwrap())
                .unwrap();
        assert_eq!(saved_args["lora_r"], 4);
    }
    // Same seed, same steps: the adapter on its base and the merged weights agree.
    let (a, b) = (&scores[0], &scores[1]);
    assert_eq!(a["accuracy"], b["accuracy"], "{a} vs {b}");
    let loss = |m: &serde_json::Value| m["loss"].as_f64().unwrap();
    assert!((loss(a) - loss(b)).abs() < 1e-4, "{a} vs {b}");
}

/// A RoBERTa folder (tests/golden/roberta-tiny: byte-level BPE tokenizer, 40 positions)
/// trains, saves and evaluates through the CLI; --max-seq-length is clamped to the 38
/// tokens its position table holds.
#[test]
fn roberta_runs_end_to_end() {
    tiny_encoder_runs_end_to_end("roberta", "RobertaForSequenceClassification", 38);
}

/// The same for DeBERTa-v3's settings (tests/golden/deberta-tiny: Unigram tokenizer,
/// relative attention); transformers loads the trained folder with our logits.
#[test]
fn deberta_v2_runs_end_to_end() {
    let out_dir = tiny_encoder_runs_end_to_end("deberta", "DebertaV2ForSequenceClassification", 40);
    let saved: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out_dir.path().join("out/config.json")).unwrap())
            .unwrap();
    assert_eq!(saved["model_type"], "deberta-v2");
    assert_eq!(saved["position_buckets"], 8, "DeBERTa's own fields kept");
    assert_eq!(saved["pos_att_type"], serde_json::json!(["p2c", "c2p"]));
    assert_hf_loads_with_our_logits(
        &out_dir.path().join("out"),
        "DebertaV2ForSequenceClassification",
    );
}

/// Trains the golden tiny model `name` for 2 RTE steps into `<tmp>/out`, checks the
/// class written and the clamp to `max_tokens`, and evaluates the result.
fn tiny_encoder_runs_end_to_end(name: &str, class: &str, max_tokens: usize) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let model = glue_testkit::golden_model_dir(name);
    let out_dir = tmp.path().join("out");
    let mirror = mirror_dir();
    let out = cli()
        .args([
            "run",
            "--task",
            "rte",
            "--device",
            "cpu",
            "--max-steps",
            "2",
        ])
        .args([
            "--per-device-train-batch-size",
            "4",
            "--eval-strategy",
            "no",
        ])
        .args(["--save-strategy", "no", "--model", model.to_str().unwrap()])
        .args(["--data-dir", mirror.to_str().unwrap()])
        .args(["--output-dir", out_dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let clamp = format!("--max-seq-length 128 is larger than the model's maximum ({max_tokens}");
    assert!(text(&out).contains(&clamp), "{}", text(&out));
    let saved: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out_dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["architectures"][0], class);
    let eval = cli()
        .args([
            "evaluate",
            "--task",
            "rte",
            "--device",
            "cpu",
            "--max-seq-length",
            &max_tokens.to_string(),
        ])
        .args(["--model", out_dir.to_str().unwrap()])
        .args(["--data-dir", mirror.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(eval.status.success(), "{}", text(&eval));
    tmp
}
