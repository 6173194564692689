//! `suite`: the GLUE benchmark in one command — tasks x seeds, each an ordinary `run`
//! in its own folder (`DIR/<task>/seed-<seed>`), then one table over seeds.
//!
//! Restarting the same command skips finished runs (their `all_results.json` exists)
//! and resumes interrupted ones from their newest complete checkpoint; a failed run
//! is reported and the suite goes on.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use glue_data::{Metric, Task};
use serde_json::{Map, Value};
use train_loop::checkpoint;

use crate::output::write_atomically;
use crate::submission;
use crate::train_cmds::{self, InferenceArgs, PredictArgs, RunArgs, TrainingFlags};
use crate::DataArgs;

/// The nine GLUE tasks with a training split, in the leaderboard's order.
const GLUE_TASKS: [Task; 9] = [
    Task::Cola,
    Task::Sst2,
    Task::Mrpc,
    Task::Stsb,
    Task::Qqp,
    Task::Mnli,
    Task::Qnli,
    Task::Rte,
    Task::Wnli,
];

#[derive(Args)]
pub struct SuiteArgs {
    /// Comma-separated tasks [default: cola,sst2,mrpc,stsb,qqp,mnli,qnli,rte,wnli].
    #[arg(long, value_delimiter = ',')]
    tasks: Vec<String>,
    /// Comma-separated seeds; every task runs once per seed.
    #[arg(long, value_delimiter = ',', default_value = "42,43,44")]
    seeds: Vec<u64>,
    /// Directory written by `cargo xtask fetch-glue`.
    #[arg(long, default_value = "data/glue")]
    data_dir: PathBuf,
    /// Hub id or local HF model folder.
    #[arg(long, default_value = "bert-base-uncased")]
    model: String,
    /// cuda, cpu or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// TOML or JSON with TrainingArguments for every run; a table named after a task
    /// (`[rte]`) overrides them for that task. Flags override both.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Also predict each task's test set(s) with its median (or best) seed by task
    /// score, AX with the MNLI model, and zip them for the GLUE server:
    /// DIR/submission.zip (files checked for names, row counts and labels).
    #[arg(long, value_enum)]
    submission: Option<SubmissionSeed>,
    /// Flags of `run`, applied to every run; `--output-dir` is the suite's folder
    /// [default: output/suite], `--seed` is `--seeds`.
    #[command(flatten)]
    training: TrainingFlags,
}

impl SuiteArgs {
    /// `glue-cli run --task all ...`: the suite over the nine tasks, with the seeds
    /// 42, 43, 44 or the one `--seed` names.
    pub fn from_run(run: &RunArgs) -> Result<SuiteArgs> {
        if run.resume_from_checkpoint.is_some() {
            bail!("--task all resumes by itself: rerun the same command without --resume-from-checkpoint");
        }
        let mut training = run.training.clone();
        let seeds = training.seed.take().map_or(vec![42, 43, 44], |s| vec![s]);
        Ok(SuiteArgs {
            tasks: Vec::new(),
            seeds,
            data_dir: run.data.data_dir.clone(),
            model: run.model.clone(),
            device: run.device.clone(),
            config: run.config.clone(),
            submission: None,
            training,
        })
    }
}

/// Which seed's model predicts a task's test set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SubmissionSeed {
    /// The seed whose task score is the median (the lower one of the middle two).
    Median,
    /// The seed with the highest task score on the validation set.
    Best,
}

/// HF's recipe for the nine tasks (transformers' text-classification example, after
/// the BERT paper): batch 32, learning rate 2e-5, 128 tokens, 3 epochs, 5 for the two
/// smallest (MRPC, WNLI). Checkpoints: the newest only, enough to resume.
fn recipe(task: Task) -> Map<String, Value> {
    let epochs = if matches!(task, Task::Mrpc | Task::Wnli) {
        5.0
    } else {
        3.0
    };
    let mut m = Map::new();
    m.insert("per_device_train_batch_size".into(), 32.into());
    m.insert("learning_rate".into(), 2e-5.into());
    m.insert("max_seq_length".into(), 128.into());
    m.insert("num_train_epochs".into(), epochs.into());
    m.insert("save_total_limit".into(), 1.into());
    m
}

/// Recipe, then the config file's top-level keys, then its `[task]` table.
fn base_args(task: Task, config: &Map<String, Value>) -> Map<String, Value> {
    let mut m = recipe(task);
    for (k, v) in config {
        let is_task_table = k.parse::<Task>().is_ok() && v.is_object();
        if !is_task_table {
            m.insert(k.clone(), v.clone());
        }
    }
    if let Some(Value::Object(table)) = config.get(task.name()) {
        m.extend(table.clone());
    }
    m
}

/// One run's outcome.
enum Outcome {
    Done(Map<String, Value>),
    Failed(String),
    Skipped(String),
}

fn results_of(dir: &Path) -> Option<Map<String, Value>> {
    let text = std::fs::read_to_string(dir.join("all_results.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// What the data folder lacks for `task`, if anything.
fn missing_data(data_dir: &Path, task: Task) -> Option<String> {
    let spec = task.spec();
    let splits = spec
        .train_split
        .into_iter()
        .chain(spec.eval_splits.iter().copied());
    for split in splits {
        let path = spec
            .split(split)
            .map(|s| glue_data::split_path(data_dir, task, s))
            .ok()?;
        if !path.exists() {
            return Some(format!(
                "{} is missing (cargo xtask fetch-glue --tasks {})",
                path.display(),
                task.name()
            ));
        }
    }
    None
}

fn hms(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

pub fn suite(args: &SuiteArgs) -> Result<()> {
    if args.training.seed.is_some() {
        bail!("suite takes --seeds (a list), not --seed");
    }
    if args.seeds.is_empty() {
        bail!("--seeds is empty; give at least one seed, e.g. --seeds 42");
    }
    let tasks: Vec<Task> = if args.tasks.is_empty() {
        GLUE_TASKS.to_vec()
    } else {
        Task::parse_list(&args.tasks.join(","))?
    };
    for task in &tasks {
        if task.spec().train_split.is_none() {
            bail!(
                "`{task}` has no training split; the suite trains mnli and scores {task} with its model"
            );
        }
    }
    let config = match &args.config {
        Some(path) => train_cmds::config_map(path)?,
        None => Map::new(),
    };
    let root = args
        .training
        .output_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("output/suite"));
    let _lock = train_loop::OutputLock::acquire(&root)?;
    let runs: Vec<(Task, u64)> = tasks
        .iter()
        .flat_map(|&t| args.seeds.iter().map(move |&s| (t, s)))
        .collect();
    let started = Instant::now();
    let mut trained = 0usize;
    let mut outcomes = Vec::with_capacity(runs.len());
    for (i, &(task, seed)) in runs.iter().enumerate() {
        let dir = root.join(task.name()).join(format!("seed-{seed}"));
        let label = format!("[{}/{}] {task} seed {seed}", i + 1, runs.len());
        if let Some(results) = results_of(&dir) {
            eprintln!("{label}: finished before, skipped");
            outcomes.push(Outcome::Done(results));
            continue;
        }
        if let Some(why) = missing_data(&args.data_dir, task) {
            eprintln!("{label}: not run: {why}");
            outcomes.push(Outcome::Skipped(why));
            continue;
        }
        let resume = !checkpoint::list(&dir).is_empty();
        let eta = if trained > 0 {
            let left = runs.len() - i;
            format!(
                ", ETA {}",
                hms(started.elapsed().as_secs_f64() / trained as f64 * left as f64)
            )
        } else {
            String::new()
        };
        eprintln!(
            "{label}: {} (suite elapsed {}{eta})",
            if resume { "resuming" } else { "training" },
            hms(started.elapsed().as_secs_f64())
        );
        let mut training = args.training.clone();
        training.output_dir = Some(dir.clone());
        training.seed = Some(seed);
        let run = RunArgs {
            data: DataArgs {
                task: task.name().to_string(),
                data_dir: args.data_dir.clone(),
            },
            model: args.model.clone(),
            device: args.device.clone(),
            config: None,
            base: base_args(task, &config),
            resume_from_checkpoint: resume.then(|| "latest".to_string()),
            resume_with_changed_args: false,
            training,
        };
        match train_cmds::run(&run) {
            Ok(()) => {
                trained += 1;
                let results = results_of(&dir)
                    .with_context(|| format!("{} has no all_results.json", dir.display()))?;
                outcomes.push(Outcome::Done(results));
            }
            Err(e) => {
                let message = format!("{e:#}").replace('\n', " ");
                eprintln!("{label}: failed: {message}; the suite goes on");
                outcomes.push(Outcome::Failed(message));
            }
        }
    }
    let table = SuiteTable::new(&tasks, &args.seeds, &runs, &outcomes);
    println!("{}", table.markdown());
    table.write(&root)?;
    if let Some(choice) = args.submission {
        write_submission(args, &root, &table, choice)?;
    }
    let failed: Vec<String> = runs
        .iter()
        .zip(&outcomes)
        .filter_map(|((task, seed), o)| match o {
            Outcome::Failed(_) => Some(format!("{task} seed {seed}")),
            _ => None,
        })
        .collect();
    eprintln!(
        "suite: {} run(s) in {}; results in {}/suite_results.{{json,csv,md}}",
        runs.len(),
        hms(started.elapsed().as_secs_f64()),
        root.display()
    );
    if outcomes.iter().all(|o| matches!(o, Outcome::Skipped(_))) {
        bail!(
            "no run could start: the data is missing in {} (see above); fetch it with cargo xtask fetch-glue or pass --data-dir",
            args.data_dir.display()
        );
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} runs failed ({}; messages above and in suite_results.json); fix the cause and rerun the same command: finished runs are skipped",
            failed.len(),
            runs.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// The seed that predicts a task's test set.
fn pick_seed(seed_scores: &[(u64, f64)], choice: SubmissionSeed) -> Option<u64> {
    let mut sorted = seed_scores.to_vec();
    sorted.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    let i = match choice {
        SubmissionSeed::Median => sorted.len().checked_sub(1)? / 2,
        SubmissionSeed::Best => sorted.len().checked_sub(1)?,
    };
    Some(sorted[i].0)
}

/// Predicts the test sets into DIR/submission and zips them into DIR/submission.zip.
fn write_submission(
    args: &SuiteArgs,
    root: &Path,
    table: &SuiteTable,
    choice: SubmissionSeed,
) -> Result<()> {
    let dir = root.join("submission");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut left_out = Vec::new();
    for row in &table.rows {
        let Some(seed) = pick_seed(&row.seed_scores, choice) else {
            left_out.push(format!("{} (no finished run)", row.task));
            continue;
        };
        let run_dir = root.join(row.task.name()).join(format!("seed-{seed}"));
        let saved: Value = serde_json::from_str(
            &std::fs::read_to_string(run_dir.join("training_args.json")).unwrap_or_default(),
        )
        .unwrap_or_default();
        let max_seq_length = saved["max_seq_length"].as_u64().unwrap_or(128) as usize;
        eprintln!("submission: {} from seed {seed}", row.task);
        let predict = PredictArgs {
            data: DataArgs {
                task: row.task.name().to_string(),
                data_dir: args.data_dir.clone(),
            },
            output_dir: dir.clone(),
            inference: InferenceArgs {
                model: run_dir.display().to_string(),
                device: args.device.clone(),
                batch_size: args
                    .training
                    .per_device_eval_batch_size
                    .unwrap_or(32)
                    .max(1) as u64,
                max_seq_length,
                bf16: saved["bf16"].as_bool().unwrap_or(false),
                padding_free: true,
            },
        };
        if let Err(e) = train_cmds::predict(&predict) {
            left_out.push(format!(
                "{} ({})",
                row.task,
                format!("{e:#}").replace('\n', " ")
            ));
        }
    }
    let zip_path = root.join("submission.zip");
    let files = submission::zip_folder(&dir, &zip_path)?;
    eprintln!(
        "submission: {} with {} file(s): {}",
        zip_path.display(),
        files.len(),
        files.join(", ")
    );
    if !left_out.is_empty() {
        eprintln!("submission: left out: {}", left_out.join("; "));
    }
    Ok(())
}

/// Median, mean and sample standard deviation of one metric over seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl Summary {
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        let mean = v.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Summary {
            median,
            mean,
            std,
            n,
        })
    }
}

/// Result keys of one task: its GLUE metrics, MNLI's also on the mismatched set.
fn metric_keys(task: Task) -> Vec<String> {
    let spec = task.spec();
    let suffixes: Vec<&str> = if spec.eval_splits.len() > 1 {
        vec!["", "_mm"]
    } else {
        vec![""]
    };
    suffixes
        .iter()
        .flat_map(|s| {
            spec.metrics
                .iter()
                .map(move |m: &Metric| format!("eval_{}{s}", m.name()))
        })
        .collect()
}

struct TaskRow {
    task: Task,
    /// (result key, summary over the seeds that finished)
    metrics: Vec<(String, Summary)>,
    /// The GLUE task score: unweighted mean of its metrics (x100), median over seeds.
    score: Option<f64>,
    /// Each finished seed's task score (x100).
    seed_scores: Vec<(u64, f64)>,
    finished: usize,
    notes: Vec<String>,
}

struct SuiteTable {
    seeds: Vec<u64>,
    rows: Vec<TaskRow>,
}

impl SuiteTable {
    fn new(tasks: &[Task], seeds: &[u64], runs: &[(Task, u64)], outcomes: &[Outcome]) -> Self {
        let rows = tasks
            .iter()
            .map(|&task| {
                let keys = metric_keys(task);
                let mine = runs.iter().zip(outcomes).filter(|((t, _), _)| *t == task);
                let mut per_key: Vec<Vec<f64>> = vec![Vec::new(); keys.len()];
                let mut scores = Vec::new();
                let mut notes = Vec::new();
                let mut finished = 0;
                for ((_, seed), outcome) in mine {
                    match outcome {
                        Outcome::Done(results) => {
                            let values: Vec<Option<f64>> =
                                keys.iter().map(|k| results.get(k)?.as_f64()).collect();
                            for (acc, v) in per_key.iter_mut().zip(&values) {
                                acc.extend(v);
                            }
                            if values.iter().all(Option::is_some) && !values.is_empty() {
                                let sum: f64 = values.iter().flatten().sum();
                                scores.push((*seed, 100.0 * sum / values.len() as f64));
                            }
                            finished += 1;
                        }
                        Outcome::Failed(m) => notes.push(format!("seed {seed} failed: {m}")),
                        Outcome::Skipped(m) => {
                            if !notes.contains(m) {
                                notes.push(m.clone());
                            }
                        }
                    }
                }
                TaskRow {
                    task,
                    metrics: keys
                        .into_iter()
                        .zip(per_key)
                        .filter_map(|(k, v)| Some((k, Summary::of(&v)?)))
                        .collect(),
                    score: Summary::of(&scores.iter().map(|(_, s)| *s).collect::<Vec<_>>())
                        .map(|s| s.median),
                    seed_scores: scores,
                    finished,
                    notes,
                }
            })
            .collect();
        SuiteTable {
            seeds: seeds.to_vec(),
            rows,
        }
    }

    /// Mean of the task scores over the tasks that have one, and how many those are.
    fn glue_average(&self) -> Option<(f64, usize)> {
        let scores: Vec<f64> = self.rows.iter().filter_map(|r| r.score).collect();
        (!scores.is_empty()).then(|| {
            (
                scores.iter().sum::<f64>() / scores.len() as f64,
                scores.len(),
            )
        })
    }

    fn markdown(&self) -> String {
        let mut out = String::from(
            "| task | runs | metric | median | mean ± std | task score |\n|---|---|---|---|---|---|\n",
        );
        for row in &self.rows {
            let runs = format!("{}/{}", row.finished, self.seeds.len());
            let score = row.score.map_or("-".into(), |s| format!("{s:.2}"));
            if row.metrics.is_empty() {
                let why = row.notes.first().map_or("no finished run", String::as_str);
                out += &format!("| {} | {runs} | - | - | - | - ({why}) |\n", row.task);
            }
            for (i, (key, s)) in row.metrics.iter().enumerate() {
                let metric = key.trim_start_matches("eval_");
                let first = i == 0;
                out += &format!(
                    "| {} | {} | {metric} | {:.2} | {:.2} ± {:.2} | {} |\n",
                    if first { row.task.name() } else { "" },
                    if first { runs.as_str() } else { "" },
                    100.0 * s.median,
                    100.0 * s.mean,
                    100.0 * s.std,
                    if first { score.as_str() } else { "" },
                );
            }
        }
        match self.glue_average() {
            Some((avg, n)) => {
                let of = if n == GLUE_TASKS.len() {
                    String::new()
                } else {
                    format!(" (over {n} of 9 tasks)")
                };
                out += &format!("| **GLUE average**{of} | | | | | **{avg:.2}** |\n");
            }
            None => out += "| **GLUE average** | | | | | - |\n",
        }
        out
    }

    fn csv(&self) -> String {
        let mut out = String::from("task,metric,runs,median,mean,std,task_score\n");
        for row in &self.rows {
            for (key, s) in &row.metrics {
                out += &format!(
                    "{},{},{},{},{},{},{}\n",
                    row.task,
                    key.trim_start_matches("eval_"),
                    s.n,
                    s.median,
                    s.mean,
                    s.std,
                    row.score.map_or(String::new(), |v| (v / 100.0).to_string())
                );
            }
        }
        out
    }

    fn json(&self) -> Value {
        let tasks: Map<String, Value> = self
            .rows
            .iter()
            .map(|row| {
                let metrics: Map<String, Value> = row
                    .metrics
                    .iter()
                    .map(|(k, s)| {
                        let v = serde_json::json!({
                            "median": s.median, "mean": s.mean, "std": s.std, "runs": s.n,
                        });
                        (k.trim_start_matches("eval_").to_string(), v)
                    })
                    .collect();
                let v = serde_json::json!({
                    "finished_runs": row.finished,
                    "metrics": metrics,
                    "task_score": row.score.map(|s| s / 100.0),
                    "notes": row.notes,
                });
                (row.task.name().to_string(), v)
            })
            .collect();
        let average = self.glue_average();
        serde_json::json!({
            "seeds": self.seeds,
            "tasks": tasks,
            "glue_average": average.map(|(a, _)| a / 100.0),
            "glue_average_tasks": average.map_or(0, |(_, n)| n),
        })
    }

    fn write(&self, root: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(&self.json())? + "\n";
        for (name, text) in [
            ("suite_results.json", json),
            ("suite_results.csv", self.csv()),
            ("suite_results.md", self.markdown()),
        ] {
            write_atomically(&root.join(name), |o| Ok(o.write_all(text.as_bytes())?))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_matches_numpy() {
        // numpy: median 0.8, mean 0.7666..., std(ddof=1) 0.0577350...
        let s = Summary::of(&[0.7, 0.8, 0.8]).unwrap();
        assert_eq!(s.median, 0.8);
        assert!((s.mean - 0.766_666_666_666_666_7).abs() < 1e-12);
        assert!((s.std - 0.057_735_026_918_962_58).abs() < 1e-12);
        assert_eq!(Summary::of(&[1.0, 2.0]).unwrap().median, 1.5);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn config_tables_override_per_task() {
        let config: Map<String, Value> =
            serde_json::from_str(r#"{"learning_rate": 3e-5, "rte": {"num_train_epochs": 10}}"#)
                .unwrap();
        let rte = base_args(Task::Rte, &config);
        assert_eq!(rte["learning_rate"], 3e-5);
        assert_eq!(rte["num_train_epochs"], 10);
        assert!(!rte.contains_key("rte"));
        let mrpc = base_args(Task::Mrpc, &config);
        assert_eq!(mrpc["num_train_epochs"], 5.0);
        assert_eq!(mrpc["per_device_train_batch_size"], 32);
    }

    #[test]
    fn median_and_best_seed() {
        let scores = [(42, 80.0), (43, 70.0), (44, 90.0), (45, 75.0)];
        assert_eq!(pick_seed(&scores, SubmissionSeed::Median), Some(45));
        assert_eq!(pick_seed(&scores[..3], SubmissionSeed::Median), Some(42));
        assert_eq!(pick_seed(&scores, SubmissionSeed::Best), Some(44));
        assert_eq!(pick_seed(&[], SubmissionSeed::Best), None);
    }

    #[test]
    fn mnli_is_scored_on_both_sets() {
        assert_eq!(
            metric_keys(Task::Mnli),
            ["eval_accuracy", "eval_accuracy_mm"]
        );
        assert_eq!(metric_keys(Task::Mrpc), ["eval_accuracy", "eval_f1"]);
    }
}
