//! `suite`: the GLUE benchmark in one command — tasks x seeds (x swept settings), each
//! an ordinary `run` in its own folder (`DIR/<task>/[<setting>/]seed-<seed>`), then one
//! table over seeds.
//!
//! Restarting the same command skips finished runs (their `all_results.json` exists)
//! and resumes interrupted ones from their newest complete checkpoint; a failed run
//! is reported and the suite goes on.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use glue_data::Task;
use serde_json::{Map, Value};
use train_loop::checkpoint;

use crate::parallel;
use crate::submission;
use crate::suite_table::{Outcome, SuiteTable};
use crate::train_cmds::{self, InferenceArgs, PredictArgs, RunArgs, TrainingFlags};
use crate::DataArgs;

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
    /// TOML or JSON whose keys are TrainingArguments with a list of values each
    /// (`learning_rate = [2e-5, 3e-5]`): every combination runs, and the table picks
    /// the setting with the best median task score per task.
    #[arg(long)]
    sweep: Option<PathBuf>,
    /// Another suite's output folder: print (and write to DIR/compare.md) the task
    /// scores and GLUE average side by side with it.
    #[arg(long)]
    compare: Option<PathBuf>,
    /// Runs at once, each in its own process: pinned to its own GPU when several are
    /// visible, else given its share of the CPU cores (never more runs than cores).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    parallel: u64,
    /// Also predict each task's test set(s) with its median (or best) seed by task
    /// score, AX with the MNLI model, and zip them for the GLUE server:
    /// DIR/submission.zip (files checked for names, row counts and labels).
    #[arg(long, value_enum)]
    submission: Option<SubmissionSeed>,
    /// WNLI.tsv from the fine-tuned WNLI model instead of the training set's majority
    /// class (what the GLUE baselines and the BERT paper submit).
    #[arg(long)]
    wnli_model: bool,
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
            sweep: None,
            compare: None,
            parallel: 1,
            submission: None,
            wnli_model: false,
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

/// One combination of swept values; `name` is its folder.
#[derive(Debug, Clone, PartialEq)]
struct Setting {
    name: String,
    values: Map<String, Value>,
}

/// Short names for the usual swept arguments, so folders stay readable.
fn abbreviation(key: &str) -> &str {
    match key {
        "learning_rate" => "lr",
        "per_device_train_batch_size" => "bs",
        "num_train_epochs" => "ep",
        "warmup_ratio" => "wr",
        "warmup_steps" => "ws",
        "weight_decay" => "wd",
        "lr_scheduler_type" => "sched",
        other => other,
    }
}

/// The grid of a sweep file: every combination of its lists, in file order (the
/// first key varies slowest). `seeds` may be swept here too.
fn settings(sweep: &Map<String, Value>) -> Result<(Vec<Setting>, Option<Vec<u64>>)> {
    let mut grid = vec![Setting {
        name: String::new(),
        values: Map::new(),
    }];
    let mut seeds = None;
    for (key, value) in sweep {
        let Value::Array(list) = value else {
            bail!("sweep key `{key}` must be a list of values (put fixed values in --config)");
        };
        if list.is_empty() {
            bail!("sweep key `{key}` has an empty list");
        }
        if key == "seeds" || key == "seed" {
            let parsed: Option<Vec<u64>> = list.iter().map(Value::as_u64).collect();
            seeds = Some(parsed.with_context(|| format!("sweep `{key}`: seeds are integers"))?);
            continue;
        }
        grid = grid
            .iter()
            .flat_map(|s| {
                list.iter().map(move |v| {
                    let mut next = s.clone();
                    let shown = match v {
                        Value::String(text) => text.clone(),
                        // Learning rates as 2e-5, not 0.00002.
                        Value::Number(n)
                            if n.as_f64().is_some_and(|f| f != 0.0 && f.abs() < 1e-2) =>
                        {
                            format!("{:e}", n.as_f64().unwrap_or_default())
                        }
                        other => other.to_string(),
                    };
                    let sep = if next.name.is_empty() { "" } else { "_" };
                    next.name = format!("{}{sep}{}{shown}", next.name, abbreviation(key));
                    next.values.insert(key.clone(), v.clone());
                    next
                })
            })
            .collect();
    }
    if grid.len() == 1 && grid[0].values.is_empty() {
        bail!("the sweep file has no list of values to sweep");
    }
    Ok((grid, seeds))
}

/// A run the suite has to train (or resume).
pub struct Job {
    /// Position in the suite's run list.
    pub index: usize,
    /// `[i/n] task [setting] seed s`, for progress lines.
    pub label: String,
    pub dir: PathBuf,
    pub run: RunArgs,
}

pub fn results_of(dir: &Path) -> Option<Map<String, Value>> {
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

/// `DIR/<task>/seed-<seed>`, or `DIR/<task>/<setting>/seed-<seed>` in a sweep.
fn run_dir(root: &Path, task: Task, setting: Option<&str>, seed: u64) -> PathBuf {
    let mut dir = root.join(task.name());
    if let Some(name) = setting {
        dir.push(name);
    }
    dir.join(format!("seed-{seed}"))
}

fn hms(seconds: f64) -> String {
    let s = seconds.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

pub fn suite(args: &SuiteArgs) -> Result<()> {
    // Every rank would take the folder's lock and write the tables; one process runs
    // the suite, and a data-parallel run is one `glue-cli run` under torchrun.
    if train_loop::distributed::LaunchEnv::from_env()?.is_some() {
        bail!(
            "suite runs in one process, not under torchrun (WORLD_SIZE is set); start it \
             without torchrun, or run each task with `torchrun ... glue-cli run --task T`"
        );
    }
    if args.training.seed.is_some() {
        bail!("suite takes --seeds (a list), not --seed");
    }
    if args.seeds.is_empty() {
        bail!("--seeds is empty; give at least one seed, e.g. --seeds 42");
    }
    let tasks: Vec<Task> = if args.tasks.is_empty() {
        Task::GLUE.to_vec()
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
    let (grid, swept_seeds) = match &args.sweep {
        Some(path) => {
            let (grid, seeds) = settings(&train_cmds::config_map(path)?)?;
            (grid, seeds)
        }
        None => (
            vec![Setting {
                name: "default".into(),
                values: Map::new(),
            }],
            None,
        ),
    };
    let seeds = swept_seeds.unwrap_or_else(|| args.seeds.clone());
    // A swept value set by a flag too would make every setting the same run.
    let flags = serde_json::to_value(&args.training)?;
    for key in grid[0].values.keys() {
        if !flags[key.as_str()].is_null() {
            bail!(
                "`{key}` is swept and also given as --{}; drop one",
                key.replace('_', "-")
            );
        }
    }
    let swept = args.sweep.is_some();
    // Read before any run: a wrong path should not wait for the whole suite.
    let theirs: Option<Value> = match &args.compare {
        Some(other) => {
            let path = other.join("suite_results.json");
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "--compare: cannot read {}; pass the output folder of another suite",
                    path.display()
                )
            })?;
            Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("--compare: {} is not valid JSON", path.display()))?,
            )
        }
        None => None,
    };
    let root = args
        .training
        .output_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("output/suite"));
    let _lock = train_loop::OutputLock::acquire(&root)?;
    let runs: Vec<(Task, usize, u64)> = tasks
        .iter()
        .flat_map(|&t| (0..grid.len()).map(move |p| (t, p)))
        .flat_map(|(t, p)| seeds.iter().map(move |&s| (t, p, s)))
        .collect();
    let started = Instant::now();
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(runs.len());
    let mut jobs = Vec::new();
    for (i, &(task, p, seed)) in runs.iter().enumerate() {
        let setting = &grid[p];
        let dir = run_dir(&root, task, swept.then_some(setting.name.as_str()), seed);
        let shown = if swept {
            format!(" {}", setting.name)
        } else {
            String::new()
        };
        let label = format!("[{}/{}] {task}{shown} seed {seed}", i + 1, runs.len());
        if let Some(results) = results_of(&dir) {
            eprintln!("{label}: finished before, skipped");
            outcomes.push(Some(Outcome::Done(results)));
            continue;
        }
        if let Some(why) = missing_data(&args.data_dir, task) {
            eprintln!("{label}: not run: {why}");
            outcomes.push(Some(Outcome::Skipped(why)));
            continue;
        }
        outcomes.push(None);
        let mut training = args.training.clone();
        training.output_dir = Some(dir.clone());
        training.seed = Some(seed);
        let mut base = base_args(task, &config);
        base.extend(setting.values.clone());
        let resume = !checkpoint::list(&dir).is_empty();
        jobs.push(Job {
            index: i,
            label,
            dir,
            run: RunArgs {
                data: DataArgs {
                    task: task.name().to_string(),
                    data_dir: args.data_dir.clone(),
                },
                model: args.model.clone(),
                device: args.device.clone(),
                config: None,
                base,
                resume_from_checkpoint: resume.then(|| "latest".to_string()),
                resume_with_changed_args: false,
                merge_lora: false,
                ddp_timeout: 1800,
                ddp_backend: None,
                training,
            },
        });
    }
    let slots = parallel::slots(args.parallel, &args.device)?;
    let total = jobs.len();
    // Runs finished per second so far, parallel or not, predicts the rest.
    let progress = |done: usize| {
        let elapsed = started.elapsed().as_secs_f64();
        let eta = if done > 0 {
            format!(
                ", ETA {}",
                hms(elapsed * (total - done) as f64 / done as f64)
            )
        } else {
            String::new()
        };
        format!("suite elapsed {}{eta}", hms(elapsed))
    };
    let finished: Vec<(usize, Outcome)> = if slots.len() > 1 {
        parallel::run_all(&jobs, &slots, &progress)?
    } else {
        let mut finished = Vec::new();
        for job in &jobs {
            let verb = if job.run.resume_from_checkpoint.is_some() {
                "resuming"
            } else {
                "training"
            };
            eprintln!("{}: {verb} ({})", job.label, progress(finished.len()));
            let outcome =
                match train_cmds::run(&job.run) {
                    Ok(()) => Outcome::Done(results_of(&job.dir).with_context(|| {
                        format!("{} has no all_results.json", job.dir.display())
                    })?),
                    Err(e) => {
                        let message = crate::output::one_line(&e);
                        eprintln!("{}: failed: {message}; the suite goes on", job.label);
                        Outcome::Failed(message)
                    }
                };
            finished.push((job.index, outcome));
        }
        finished
    };
    for (index, outcome) in finished {
        outcomes[index] = Some(outcome);
    }
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Outcome::Failed("did not run".into())))
        .collect();
    let names: Vec<String> = grid.iter().map(|s| s.name.clone()).collect();
    let table = SuiteTable::new(&tasks, &names, &seeds, &runs, &outcomes);
    println!("{}", table.markdown());
    table.write(&root)?;
    if let (Some(other), Some(theirs)) = (&args.compare, &theirs) {
        let comparison = table.compare(theirs, &other.display().to_string());
        println!("{comparison}");
        crate::output::write_atomically(&root.join("compare.md"), |o| {
            Ok(o.write_all(comparison.as_bytes())?)
        })?;
    }
    if let Some(choice) = args.submission {
        write_submission(args, &root, &table, choice)?;
    }
    let failed: Vec<String> = runs
        .iter()
        .zip(&outcomes)
        .filter_map(|((task, p, seed), o)| match o {
            Outcome::Failed(_) if swept => Some(format!("{task} {} seed {seed}", grid[*p].name)),
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

/// WNLI's dev and test sets are adversarial to its training set (the same sentences
/// with flipped labels), so fine-tuned models score below the majority class there;
/// the GLUE baselines and the BERT paper submit the training set's majority class.
/// Writes WNLI.tsv that way; returns the class written.
fn wnli_majority(data_dir: &Path, dir: &Path) -> Result<String> {
    let train = glue_data::load_split(data_dir, Task::Wnli, "train")?;
    let mut counts = [0usize; 2];
    for e in &train.examples {
        if let glue_data::Label::Class(c @ 0..=1) = e.label {
            counts[c as usize] += 1;
        }
    }
    let majority = i64::from(counts[1] > counts[0]);
    let spec = Task::Wnli.spec();
    let submission = &spec.submissions[0];
    let test = glue_data::load_split(data_dir, Task::Wnli, submission.split)?;
    let label = spec
        .submission_label(majority)
        .context("WNLI has two classes")?;
    crate::output::write_atomically(&dir.join(submission.file_name), |w| {
        writeln!(w, "index\tprediction")?;
        for e in &test.examples {
            writeln!(w, "{}\t{label}", e.idx)?;
        }
        Ok(())
    })?;
    Ok(label)
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
    let mut tasks: Vec<Task> = table.rows.iter().map(|r| r.task).collect();
    tasks.dedup();
    for task in tasks {
        let row = table.rows.iter().find(|r| r.task == task && r.chosen);
        let Some((row, seed)) = row.and_then(|r| Some((r, pick_seed(&r.seed_scores, choice)?)))
        else {
            left_out.push(format!("{task} (no finished run)"));
            continue;
        };
        if task == Task::Wnli && !args.wnli_model {
            match wnli_majority(&args.data_dir, &dir) {
                Ok(class) => eprintln!(
                    "submission: wnli: the training set's majority class ({class}) for every test \
                     example, as the BERT paper and the GLUE baselines submit (--wnli-model: the model's)"
                ),
                Err(e) => left_out.push(format!("wnli ({})", crate::output::one_line(&e))),
            }
            continue;
        }
        let setting = table.swept.then_some(row.setting.as_str());
        let run_dir = run_dir(root, task, setting, seed);
        let saved: Value = serde_json::from_str(
            &std::fs::read_to_string(run_dir.join("training_args.json")).unwrap_or_default(),
        )
        .unwrap_or_default();
        let max_seq_length = saved["max_seq_length"].as_u64().unwrap_or(128) as usize;
        eprintln!(
            "submission: {task} from {}seed {seed}",
            setting.map_or(String::new(), |s| format!("{s} "))
        );
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
                ddp_timeout: 1800,
                ddp_backend: None,
            },
        };
        if let Err(e) = train_cmds::predict(&predict) {
            left_out.push(format!("{} ({})", row.task, crate::output::one_line(&e)));
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_sweep_is_the_grid_of_its_lists() {
        let sweep: Map<String, Value> = serde_json::from_str(
            r#"{"learning_rate": [2e-5, 5e-5], "per_device_train_batch_size": [16, 32], "seeds": [1, 2]}"#,
        )
        .unwrap();
        let (grid, seeds) = settings(&sweep).unwrap();
        let names: Vec<&str> = grid.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["lr2e-5_bs16", "lr2e-5_bs32", "lr5e-5_bs16", "lr5e-5_bs32"]
        );
        assert_eq!(grid[3].values["learning_rate"], 5e-5);
        assert_eq!(grid[3].values["per_device_train_batch_size"], 32);
        assert_eq!(seeds, Some(vec![1, 2]));
        let scalar: Map<String, Value> =
            serde_json::from_str(r#"{"learning_rate": 2e-5}"#).unwrap();
        let e = settings(&scalar).unwrap_err().to_string();
        assert!(e.contains("`learning_rate` must be a list"), "{e}");
    }
}
