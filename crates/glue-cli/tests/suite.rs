//! `glue-cli suite` end to end on the real test model and data: a small suite (two
//! tasks x two seeds, a few steps each), its table checked against the runs' own
//! result files, a rerun that skips everything, a restart after SIGKILL that resumes
//! the interrupted run, a task the mirror lacks, and a failing run that does not stop
//! the others.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use glue_testkit::{mirror_dir, test_model_dir, SMALL_RUN_FLAGS};
use serde_json::Value;

fn suite(out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_glue-cli"));
    c.env_remove("HF_HUB_OFFLINE");
    c.args(["suite", "--device", "cpu", "--model"])
        .arg(test_model_dir())
        .arg("--data-dir")
        .arg(mirror_dir())
        .arg("--output-dir")
        .arg(out)
        .args(SMALL_RUN_FLAGS)
        .args(extra);
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn small_suite_table_rerun_and_missing_task() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("suite");
    let args = [
        "--tasks",
        "wnli,rte,qqp",
        "--seeds",
        "42,43",
        "--max-steps",
        "2",
    ];
    let first = suite(&out, &args).output().unwrap();
    let log = text(&first);
    assert!(first.status.success(), "{log}");
    // QQP is not in the mirror: said, not fatal.
    assert!(
        log.contains("qqp seed 42: not run:") && log.contains("fetch-glue --tasks qqp"),
        "{log}"
    );

    // The table against the four runs' own results (median of two = their mean).
    let table = json(&out.join("suite_results.json"));
    let mut task_scores = Vec::new();
    for task in ["wnli", "rte"] {
        let accs: Vec<f64> = [42, 43]
            .iter()
            .map(|seed| {
                let r = json(&out.join(task).join(format!("seed-{seed}/all_results.json")));
                r["eval_accuracy"].as_f64().unwrap()
            })
            .collect();
        let mean = (accs[0] + accs[1]) / 2.0;
        let std = (accs[0] - accs[1]).abs() / 2f64.sqrt();
        let default = &table["tasks"][task]["settings"]["default"];
        assert_eq!(table["tasks"][task]["chosen_setting"], "default");
        let m = &default["metrics"]["accuracy"];
        assert_eq!(m["runs"], 2, "{table}");
        assert!(
            (m["median"].as_f64().unwrap() - mean).abs() < 1e-12,
            "{table}"
        );
        assert!(
            (m["mean"].as_f64().unwrap() - mean).abs() < 1e-12,
            "{table}"
        );
        assert!((m["std"].as_f64().unwrap() - std).abs() < 1e-12, "{table}");
        assert!((default["task_score"].as_f64().unwrap() - mean).abs() < 1e-12);
        task_scores.push(mean);
        // Each run is an ordinary run folder with its seed.
        let args = json(&out.join(task).join("seed-43/training_args.json"));
        assert_eq!(args["seed"], 43);
        assert_eq!(args["learning_rate"], 2e-5, "the suite's recipe");
    }
    let average = (task_scores[0] + task_scores[1]) / 2.0;
    assert!((table["glue_average"].as_f64().unwrap() - average).abs() < 1e-12);
    assert_eq!(table["glue_average_tasks"], 2);
    assert_eq!(
        table["tasks"]["qqp"]["settings"]["default"]["finished_runs"],
        0
    );
    let csv = fs::read_to_string(out.join("suite_results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let md = fs::read_to_string(out.join("suite_results.md")).unwrap();
    assert!(md.contains("GLUE average** (over 2 of 9 tasks)"), "{md}");

    // The same command again: nothing retrained, the same table.
    let again = suite(&out, &args).output().unwrap();
    let log = text(&again);
    assert!(again.status.success(), "{log}");
    assert_eq!(log.matches("finished before, skipped").count(), 4, "{log}");
    assert!(!log.contains("training:"), "{log}");
    assert_eq!(json(&out.join("suite_results.json")), table);
}

#[test]
fn restart_after_sigkill_resumes_the_interrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("suite");
    let args = [
        "--tasks",
        "wnli",
        "--seeds",
        "7",
        "--max-steps",
        "30",
        "--save-strategy",
        "steps",
        "--save-steps",
        "2",
        "--eval-strategy",
        "no",
    ];
    let mut child = suite(&out, &args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let checkpoint = out.join("wnli/seed-7/checkpoint-2/checkpoint-complete");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !checkpoint.exists() {
        assert!(Instant::now() < deadline, "no checkpoint-2 after 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !out.join("wnli/seed-7/all_results.json").exists(),
        "killed too late"
    );

    let restart = suite(&out, &args).output().unwrap();
    let log = text(&restart);
    assert!(restart.status.success(), "{log}");
    assert!(log.contains("wnli seed 7: resuming"), "{log}");
    assert!(
        log.contains("starting at step ") && !log.contains("starting at step 0\n"),
        "{log}"
    );
    let results = json(&out.join("wnli/seed-7/trainer_state.json"));
    assert_eq!(results["global_step"], 30);
}

#[test]
fn a_failing_run_is_reported_and_the_others_go_on() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("suite");
    let config = tmp.path().join("suite.toml");
    // RTE gets an impossible setting; WNLI must still run.
    fs::write(&config, "[rte]\nadam_beta1 = 1.5\n").unwrap();
    let o = suite(
        &out,
        &[
            "--tasks",
            "rte,wnli",
            "--seeds",
            "1",
            "--max-steps",
            "1",
            "--submission",
            "best",
        ],
    )
    .arg("--config")
    .arg(&config)
    .output()
    .unwrap();
    let log = text(&o);
    assert_eq!(o.status.code(), Some(2), "{log}");
    assert!(
        log.contains("rte seed 1: failed:") && log.contains("adam-beta1"),
        "{log}"
    );
    assert!(
        log.contains("error: 1 of 2 runs failed (rte seed 1;"),
        "{log}"
    );
    assert!(out.join("wnli/seed-1/all_results.json").exists(), "{log}");
    // The submission holds what could be predicted, checked, and names what is left out.
    assert!(
        log.contains("submission: left out: rte (no finished run)"),
        "{log}"
    );
    let zip = fs::File::open(out.join("submission.zip")).unwrap();
    let mut zip = zip::ZipArchive::new(zip).unwrap();
    assert_eq!(zip.len(), 1);
    let mut wnli = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("WNLI.tsv").unwrap(), &mut wnli).unwrap();
    assert_eq!(
        wnli.lines().count(),
        1 + 146,
        "header + the 146 WNLI test rows"
    );
    assert!(wnli.starts_with("index\tprediction\n0\t"));
    // WNLI as the GLUE baselines submit it: the training set's majority class, 0
    // (not_entailment: 323 of the 635 training pairs, counted with pyarrow).
    assert!(
        log.contains("the training set's majority class (0)"),
        "{log}"
    );
    assert!(wnli.lines().skip(1).all(|l| l.ends_with("\t0")), "{wnli}");
    let table = json(&out.join("suite_results.json"));
    assert!(table["tasks"]["rte"]["settings"]["default"]["notes"][0]
        .as_str()
        .unwrap()
        .contains("adam-beta1"));
}

/// Under torchrun every rank would run the whole suite into one folder: one line instead.
#[test]
fn the_suite_refuses_to_run_under_torchrun() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("suite");
    let o = suite(&out, &["--tasks", "rte"])
        .env("WORLD_SIZE", "2")
        .env("RANK", "0")
        .env("MASTER_PORT", "29500")
        .output()
        .unwrap();
    let log = text(&o);
    assert_eq!(o.status.code(), Some(2), "{log}");
    assert_eq!(log.trim().lines().count(), 1, "{log}");
    assert!(log.contains("not under torchrun"), "{log}");
    assert!(!out.exists());
}

#[test]
fn run_task_all_is_the_suite_and_says_when_nothing_can_run() {
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_glue-cli"))
        .args(["run", "--task", "all", "--seed", "3", "--data-dir"])
        .arg(tmp.path())
        .arg("--output-dir")
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    let log = text(&o);
    assert_eq!(o.status.code(), Some(2), "{log}");
    // All nine tasks, one seed, each missing; no model was loaded.
    assert_eq!(log.matches("seed 3: not run:").count(), 9, "{log}");
    assert!(log.contains("[9/9] wnli seed 3"), "{log}");
    assert!(
        log.contains("error: no run could start: the data is missing in"),
        "{log}"
    );
}

#[test]
fn a_sweep_runs_the_grid_and_picks_the_best_setting() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("suite");
    let sweep = tmp.path().join("sweep.toml");
    fs::write(&sweep, "learning_rate = [1e-5, 1e-3]\n").unwrap();
    let o = suite(
        &out,
        &["--tasks", "wnli", "--seeds", "1", "--max-steps", "2"],
    )
    .arg("--sweep")
    .arg(&sweep)
    .output()
    .unwrap();
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    let acc = |setting: &str| {
        let r = json(&out.join(format!("wnli/{setting}/seed-1/all_results.json")));
        r["eval_accuracy"].as_f64().unwrap()
    };
    let args = json(&out.join("wnli/lr1e-3/seed-1/training_args.json"));
    assert_eq!(args["learning_rate"], 1e-3);
    let (low, high) = (acc("lr1e-5"), acc("lr1e-3"));
    let want = if high > low { "lr1e-3" } else { "lr1e-5" };
    let table = json(&out.join("suite_results.json"));
    assert_eq!(table["tasks"]["wnli"]["chosen_setting"], want, "{table}");
    assert!((table["glue_average"].as_f64().unwrap() - low.max(high)).abs() < 1e-12);
    let md = fs::read_to_string(out.join("suite_results.md")).unwrap();
    assert!(
        md.contains("| setting |") && md.contains("(chosen)"),
        "{md}"
    );

    assert!(fs::read_to_string(out.join("suite_scores.svg"))
        .unwrap()
        .contains("wnli lr1e-"));

    // A second suite (the recipe's learning rate) side by side with the sweep.
    let plain = tmp.path().join("plain");
    let o = suite(
        &plain,
        &["--tasks", "wnli", "--seeds", "1", "--max-steps", "2"],
    )
    .arg("--compare")
    .arg(&out)
    .output()
    .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let plain_acc = json(&plain.join("wnli/seed-1/all_results.json"))["eval_accuracy"]
        .as_f64()
        .unwrap();
    let best = low.max(high);
    let row = format!(
        "| wnli | {:.2} | {:.2} | {:+.2} |",
        100.0 * plain_acc,
        100.0 * best,
        100.0 * (plain_acc - best)
    );
    let compare = fs::read_to_string(plain.join("compare.md")).unwrap();
    assert!(compare.contains(&row), "{compare}\nwanted {row}");
    let o = suite(
        &plain,
        &["--tasks", "wnli", "--seeds", "1", "--max-steps", "2"],
    )
    .arg("--compare")
    .arg(tmp.path().join("nowhere"))
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--compare: cannot read"));

    // A swept argument given as a flag too is refused before anything runs.
    let o = suite(&out, &["--tasks", "wnli", "--learning-rate", "2e-5"])
        .arg("--sweep")
        .arg(&sweep)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("`learning_rate` is swept and also given as --learning-rate"));
}

#[test]
fn parallel_runs_are_child_processes_with_their_share_of_the_cores() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("suite");
    let o = suite(
        &out,
        &[
            "--tasks",
            "wnli",
            "--seeds",
            "1,2",
            "--max-steps",
            "2",
            "--parallel",
            "2",
        ],
    )
    .output()
    .unwrap();
    let log = text(&o);
    assert!(o.status.success(), "{log}");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores >= 2 {
        assert!(log.contains("wnli seed 2: training on"), "{log}");
        for seed in [1, 2] {
            let run_log =
                fs::read_to_string(out.join(format!("wnli/seed-{seed}/suite-run.log"))).unwrap();
            assert!(run_log.contains("final evaluation:"), "{run_log}");
            let args = json(&out.join(format!("wnli/seed-{seed}/training_args.json")));
            assert_eq!(args["seed"], seed);
            assert_eq!(args["max_steps"], 2);
        }
    } else {
        eprintln!("one core here: --parallel 2 runs one at a time, in process");
    }
    let table = json(&out.join("suite_results.json"));
    assert_eq!(
        table["tasks"]["wnli"]["settings"]["default"]["finished_runs"],
        2
    );
}
