//! `cargo xtask bench-train`: `glue-cli run` and HF's `Trainer` (scripts/hf_train.py
//! in .venv-ref) on the same task, model, data, settings and thread count, on this
//! machine, interleaved (A B, then B A, ...), in one table: train seconds, train and eval
//! samples/s, peak RSS, final metrics, and the ratios.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context, Result};
use serde_json::Value;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// GLUE task (its train split must be in --data-dir).
    #[arg(long, default_value = "mrpc")]
    task: String,
    /// HF model folder [default: the test model, .venv/test-model].
    #[arg(long)]
    model: Option<PathBuf>,
    /// A bert-base-uncased-shaped model with random weights instead (config only, no
    /// download): the seed's model size. Made once by transformers in target/bench-train.
    #[arg(long, conflicts_with = "model")]
    bert_base: bool,
    /// GLUE parquet folder [default: data/glue if it has the task, else ../shared/glue-mirror].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Stop after this many optimizer steps (no evaluation during training); 0 = full epochs.
    #[arg(long, default_value_t = 0)]
    max_steps: u64,
    #[arg(long, default_value_t = 3.0)]
    num_train_epochs: f64,
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// glue-rs --bf16 against HF bf16=True and against HF fp32.
    #[arg(long)]
    bf16: bool,
    /// Intra-op threads for both sides [default: this machine's physical cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Rounds of (glue-rs, HF) runs; every other round runs them in reverse order.
    #[arg(long, default_value_t = 2)]
    repeats: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Extra flags for glue-cli run (e.g. "--padding-free false"), split on spaces.
    #[arg(long, default_value = "")]
    glue_rs_flags: String,
}

struct Outcome {
    results: Value,
    peak_rss_mib: f64,
}

/// Runs a command, returning its peak RSS (wait4's ru_maxrss for this child alone).
fn run_measured(cmd: &mut Command, log: &Path) -> Result<f64> {
    let log_file = fs::File::create(log)?;
    let child = cmd
        .stdout(Stdio::from(log_file.try_clone()?))
        .stderr(Stdio::from(log_file))
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, with valid out-pointers.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    if pid < 0 {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!(
            "{cmd:?} failed (status {status}); its output is in {}",
            log.display()
        );
    }
    Ok(usage.ru_maxrss as f64 / 1024.0)
}

/// A run's `all_results.json`, with `eval_all_samples_per_second` added: the mean over
/// every evaluation in its `trainer_state.json` (one evaluation swings by 5-10% on this
/// kind of VM; the mean of the three after each epoch and the final one is steadier).
fn read_results(dir: &Path) -> Result<Value> {
    let path = dir.join("all_results.json");
    let text =
        fs::read_to_string(&path).with_context(|| format!("{} is missing", path.display()))?;
    let mut results: Value = serde_json::from_str(&text)?;
    let rates = eval_rates(&dir.join("trainer_state.json"));
    if let (false, Some(map)) = (rates.is_empty(), results.as_object_mut()) {
        map.insert(
            ALL_EVALS.into(),
            Value::from(rates.iter().sum::<f64>() / rates.len() as f64),
        );
    }
    Ok(results)
}

const ALL_EVALS: &str = "eval_all_samples_per_second";

/// `eval_samples_per_second` of every evaluation logged in a trainer_state.json (glue-rs
/// and HF Trainer write the same `log_history`); empty if there is none.
fn eval_rates(state: &Path) -> Vec<f64> {
    let Ok(text) = fs::read_to_string(state) else {
        return Vec::new();
    };
    let state: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    state
        .get("log_history")
        .and_then(Value::as_array)
        .map(|history| {
            history
                .iter()
                .filter_map(|entry| num(entry, "eval_samples_per_second"))
                .collect()
        })
        .unwrap_or_default()
}

/// As bert_model::physical_cores (xtask builds without tch, so it keeps its own).
fn physical_cores() -> usize {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mut cores = std::collections::BTreeSet::new();
    let mut physical = String::new();
    for line in info.lines() {
        if let Some(v) = line.strip_prefix("physical id") {
            physical = v.trim_start_matches([' ', '\t', ':']).to_string();
        } else if let Some(v) = line.strip_prefix("core id") {
            let core = v.trim_start_matches([' ', '\t', ':']).to_string();
            cores.insert((physical.clone(), core));
        }
    }
    cores.len().max(1)
}

/// The CPU's name and the flags that decide kernel speed (SIMD width, bf16 hardware).
pub fn cpu_description() -> String {
    let info = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let flags = field("flags");
    let wanted = [
        "avx2",
        "fma",
        "avx512f",
        "avx512_vnni",
        "avx512_bf16",
        "amx_bf16",
        "amx_tile",
    ];
    let present: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|w| flags.split_whitespace().any(|f| f == *w))
        .collect();
    format!(
        "{} ({} logical CPUs, {} physical cores; {})",
        field("model name"),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        physical_cores(),
        present.join(", ")
    )
}

/// A bert-base-uncased config with random weights and the test model's tokenizer
/// (the same bert-base-uncased vocabulary), written once by transformers.
fn bert_base_model(root: &Path, python: &Path) -> Result<PathBuf> {
    let dir = root.join("target/bench-train/bert-base-random");
    if dir.join("model.safetensors").is_file() {
        return Ok(dir);
    }
    let script = format!(
        "import shutil, torch\n\
         from transformers import BertConfig, BertForSequenceClassification\n\
         torch.manual_seed(0)\n\
         BertForSequenceClassification(BertConfig(num_labels=2)).save_pretrained({dir:?})\n\
         for f in ['tokenizer.json', 'tokenizer_config.json', 'vocab.txt', 'special_tokens_map.json']:\n\
         \x20   shutil.copy({tm:?} + '/' + f, {dir:?})\n",
        dir = dir.display().to_string(),
        tm = root.join(".venv/test-model").display().to_string(),
    );
    let status = Command::new(python).args(["-c", &script]).status()?;
    if !status.success() {
        bail!("writing the random bert-base model failed");
    }
    Ok(dir)
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("no workspace root")?
        .to_path_buf();
    let python = root.join(".venv-ref/bin/python");
    if !python.exists() {
        bail!("the HF side needs .venv-ref; run `cargo xtask setup --reference` first");
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "-q", "-p", "glue-cli"])
        .current_dir(&root)
        .status()?;
    if !status.success() {
        bail!("building glue-cli failed");
    }
    let model = match (&args.model, args.bert_base) {
        (Some(m), _) => m.clone(),
        (None, true) => bert_base_model(&root, &python)?,
        (None, false) => root.join(".venv/test-model"),
    };
    let data_dir = args.data_dir.clone().unwrap_or_else(|| {
        let local = root.join("data/glue");
        if local.join(&args.task).is_dir() {
            local
        } else {
            root.join("../shared/glue-mirror")
        }
    });
    let threads = args.threads.unwrap_or_else(physical_cores);
    let work = root.join("target/bench-train/runs");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let common: Vec<String> = {
        let mut c = vec![
            "--task".into(),
            args.task.clone(),
            "--model".into(),
            model.display().to_string(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--seed".into(),
            args.seed.to_string(),
            "--per-device-train-batch-size".into(),
            args.batch_size.to_string(),
            "--per-device-eval-batch-size".into(),
            args.batch_size.to_string(),
            "--num-train-epochs".into(),
            args.num_train_epochs.to_string(),
        ];
        if args.max_steps > 0 {
            c.extend(["--max-steps".into(), args.max_steps.to_string()]);
            c.extend(["--eval-strategy".into(), "no".into()]);
        }
        c
    };
    // (label, is ours, bf16)
    let mut sides: Vec<(String, bool, bool)> = vec![(
        if args.bf16 {
            "glue-rs bf16"
        } else {
            "glue-rs fp32"
        }
        .into(),
        true,
        args.bf16,
    )];
    if args.bf16 {
        sides.push(("HF bf16".into(), false, true));
    }
    sides.push(("HF fp32".into(), false, false));
    println!("bench-train: {}", cpu_description());
    println!(
        "  task {}, model {}, data {}, {} thread(s), batch {}, {}",
        args.task,
        model.display(),
        data_dir.display(),
        threads,
        args.batch_size,
        if args.max_steps > 0 {
            format!("{} steps, no eval during training", args.max_steps)
        } else {
            format!("{} epochs, eval every epoch", args.num_train_epochs)
        }
    );
    let mut outcomes: Vec<Vec<Outcome>> = sides.iter().map(|_| Vec::new()).collect();
    for round in 0..args.repeats {
        // A B, B A, A B, ...: this VM's speed drifts (HF's fp32 run took 502 s, then
        // 884 s half an hour later, 2026-11-29), and with the order reversed every other
        // round a steady drift weighs on both sides alike over two rounds.
        let order: Vec<usize> = match round % 2 {
            0 => (0..sides.len()).collect(),
            _ => (0..sides.len()).rev().collect(),
        };
        for i in order {
            let (label, ours, bf16) = &sides[i];
            let out_dir = work.join(format!("{}-{round}", label.replace(' ', "-")));
            let mut cmd = if *ours {
                let mut c = Command::new(root.join("target/release/glue-cli"));
                c.arg("run").args(&common).args([
                    "--device",
                    "cpu",
                    "--save-strategy",
                    "no",
                    "--output-dir",
                ]);
                c.arg(&out_dir);
                if *bf16 {
                    c.arg("--bf16");
                }
                c.args(args.glue_rs_flags.split_whitespace());
                c
            } else {
                let mut c = Command::new(&python);
                c.arg(root.join("scripts/hf_train.py")).args(&common).args([
                    "--threads",
                    &threads.to_string(),
                    "--output-dir",
                ]);
                c.arg(&out_dir);
                if *bf16 {
                    c.arg("--bf16");
                }
                c
            };
            cmd.env("OMP_NUM_THREADS", threads.to_string())
                .env("MKL_NUM_THREADS", threads.to_string());
            eprint!("  round {} {label} ... ", round + 1);
            let log = work.join(format!("{}-{round}.log", label.replace(' ', "-")));
            let peak = run_measured(&mut cmd, &log)?;
            let results = read_results(&out_dir)?;
            eprintln!(
                "{:.1} s",
                num(&results, "train_runtime").unwrap_or(f64::NAN)
            );
            outcomes[i].push(Outcome {
                results,
                peak_rss_mib: peak,
            });
        }
    }
    println!("{}", table(&sides, &outcomes, args.task.as_str()));
    Ok(ExitCode::SUCCESS)
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = values.collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn table(sides: &[(String, bool, bool)], outcomes: &[Vec<Outcome>], task: &str) -> String {
    let metric_keys: Vec<String> = {
        let first = &outcomes[0][0].results;
        let mut keys: Vec<String> = first
            .as_object()
            .map(|m| {
                m.keys()
                    .filter(|k| {
                        k.starts_with("eval_")
                            && !k.contains("runtime")
                            && !k.contains("per_second")
                            && !k.ends_with("loss")
                            && !k.contains("combined")
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        keys.sort();
        keys
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "\n| {task} | train s | train samples/s | eval samples/s | all evals samples/s | peak RSS MiB |"
    );
    for k in &metric_keys {
        let _ = write!(out, " {} |", k.trim_start_matches("eval_"));
    }
    let _ = write!(out, "\n|---|---|---|---|---|---|");
    out.push_str(&"---|".repeat(metric_keys.len()));
    let row = |out: &mut String, label: &str, o: &[&Outcome]| {
        let m = |key: &str| mean(o.iter().filter_map(|x| num(&x.results, key)));
        let _ = write!(
            out,
            "\n| {label} | {:.1} | {:.2} | {:.1} | {:.1} | {:.0} |",
            m("train_runtime"),
            m("train_samples_per_second"),
            m("eval_samples_per_second"),
            m(ALL_EVALS),
            mean(o.iter().map(|x| x.peak_rss_mib)),
        );
        for k in &metric_keys {
            let _ = write!(out, " {:.4} |", m(k));
        }
    };
    for ((label, _, _), runs) in sides.iter().zip(outcomes) {
        for (i, o) in runs.iter().enumerate() {
            row(&mut out, &format!("{label} #{}", i + 1), &[o]);
        }
    }
    for ((label, _, _), runs) in sides.iter().zip(outcomes) {
        let refs: Vec<&Outcome> = runs.iter().collect();
        row(&mut out, &format!("**{label}** (mean)"), &refs);
    }
    let ours: Vec<&Outcome> = outcomes[0].iter().collect();
    let m = |o: &[&Outcome], key: &str| mean(o.iter().filter_map(|x| num(&x.results, key)));
    for ((label, _, _), runs) in sides.iter().zip(outcomes).skip(1) {
        let theirs: Vec<&Outcome> = runs.iter().collect();
        let _ = write!(
            out,
            "\n| **{} vs {label}** | {:.2}x faster | {:.2}x | {:.2}x | {:.2}x | {:.2}x the memory |",
            sides[0].0,
            m(&theirs, "train_runtime") / m(&ours, "train_runtime"),
            m(&ours, "train_samples_per_second") / m(&theirs, "train_samples_per_second"),
            m(&ours, "eval_samples_per_second") / m(&theirs, "eval_samples_per_second"),
            m(&ours, ALL_EVALS) / m(&theirs, ALL_EVALS),
            mean(ours.iter().map(|x| x.peak_rss_mib)) / mean(theirs.iter().map(|x| x.peak_rss_mib)),
        );
        out.push_str(&" |".repeat(metric_keys.len()));
    }
    // This VM's speed drifts within the hour: a ratio from runs next to each other in
    // one round is steadier than a ratio of means, so each round's is listed too.
    if outcomes[0].len() > 1 {
        out.push('\n');
        for ((label, _, _), runs) in sides.iter().zip(outcomes).skip(1) {
            let per_round = |key: &str, theirs_over_ours: bool| -> Vec<f64> {
                ours.iter()
                    .zip(runs)
                    .filter_map(|(a, b)| {
                        let (a, b) = (num(&a.results, key)?, num(&b.results, key)?);
                        Some(if theirs_over_ours { b / a } else { a / b })
                    })
                    .collect()
            };
            let list = |v: &[f64]| {
                let each: Vec<String> = v.iter().map(|r| format!("{r:.2}x")).collect();
                format!("{} (median {:.2}x)", each.join(", "), median(v))
            };
            let _ = write!(
                out,
                "\n{} vs {label}, per round: training {}; evaluation {}; all evaluations {}",
                sides[0].0,
                list(&per_round("train_runtime", true)),
                list(&per_round("eval_samples_per_second", false)),
                list(&per_round(ALL_EVALS, false)),
            );
        }
    }
    out.push('\n');
    out
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(super::median(&[2.5, 1.0, 9.0]), 2.5);
        assert_eq!(super::median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(super::median(&[]).is_nan());
    }

    #[test]
    fn all_evaluations_average_into_the_results() {
        let dir = std::env::temp_dir().join(format!("bench-evals-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("all_results.json"),
            r#"{"eval_samples_per_second": 90.0}"#,
        )
        .unwrap();
        // HF Trainer's shape: training logs between the evaluations.
        std::fs::write(
            dir.join("trainer_state.json"),
            r#"{"log_history": [{"loss": 0.6, "step": 500},
                {"eval_samples_per_second": 80.0, "step": 459},
                {"eval_samples_per_second": 70.0, "step": 918},
                {"eval_samples_per_second": 90.0, "step": 1377}]}"#,
        )
        .unwrap();
        let results = super::read_results(&dir).unwrap();
        assert_eq!(super::num(&results, super::ALL_EVALS), Some(80.0));
        std::fs::remove_file(dir.join("trainer_state.json")).unwrap();
        let results = super::read_results(&dir).unwrap();
        assert_eq!(super::num(&results, super::ALL_EVALS), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
