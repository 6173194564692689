//! `run` (train + evaluate, the seed's Trainer workflow), `evaluate` and `predict`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use bert_model::{select_device, BertForSequenceClassification, DeviceChoice};
use clap::Args;
use glue_data::{load_split, Collator, EncodedSplit, Preprocessor, Task};
use serde_json::{Map, Value};
use train_loop::{checkpoint, evaluate, EvalSet, Predictions, Trainer, TrainingArgs};

use crate::heap::bound_onednn_cache;
use crate::output::write_atomically;
use crate::plot::training_curves;
use crate::report::CliReporter;
use crate::DataArgs;

/// Flags named like HF `TrainingArguments`, in kebab-case. Unset flags take the
/// value from `--config`, then HF's default. Serialized, they are TrainingArgs' keys.
#[derive(Args, Debug, Default, Clone, serde::Serialize)]
pub struct TrainingFlags {
    #[arg(long)]
    pub(crate) output_dir: Option<PathBuf>,
    #[arg(long, value_parser = finite_f64, allow_hyphen_values = true)]
    num_train_epochs: Option<f64>,
    #[arg(long)]
    max_steps: Option<u64>,
    #[arg(long)]
    per_device_train_batch_size: Option<usize>,
    #[arg(long)]
    pub(crate) per_device_eval_batch_size: Option<usize>,
    #[arg(long, value_parser = finite_f64, allow_hyphen_values = true)]
    learning_rate: Option<f64>,
    #[arg(long, value_parser = finite_f64, allow_hyphen_values = true)]
    weight_decay: Option<f64>,
    #[arg(long, value_parser = finite_f64, allow_hyphen_values = true)]
    adam_beta1: Option<f64>,
    #[arg(long, value_parser = finite_f64, allow_hyphen_values = true)]
    adam_beta2: Option<f64>,
    #[arg(long, value_parser = finite_f64, allow_hyphen_values = true)]
    adam_epsilon: Option<f64>,
    #[arg(long, value_parser = finite_f64, allow_hyphen_values = true)]
    max_grad_norm: Option<f64>,
    /// adamw_torch_fused (default, as HF) or adamw_torch (single-tensor)
    #[arg(long)]
    optim: Option<String>,
    /// linear, cosine, constant, constant_with_warmup
    #[arg(long)]
    lr_scheduler_type: Option<String>,
    #[arg(long)]
    warmup_steps: Option<u64>,
    #[arg(long, value_parser = finite_f64, allow_hyphen_values = true)]
    warmup_ratio: Option<f64>,
    #[arg(long)]
    gradient_accumulation_steps: Option<usize>,
    /// no, steps, epoch
    #[arg(long)]
    eval_strategy: Option<String>,
    #[arg(long)]
    eval_steps: Option<u64>,
    /// no, steps, epoch
    #[arg(long)]
    save_strategy: Option<String>,
    #[arg(long)]
    save_steps: Option<u64>,
    #[arg(long)]
    logging_steps: Option<u64>,
    #[arg(long)]
    save_total_limit: Option<usize>,
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    load_best_model_at_end: Option<bool>,
    #[arg(long)]
    metric_for_best_model: Option<String>,
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    greater_is_better: Option<bool>,
    #[arg(long)]
    early_stopping_patience: Option<usize>,
    #[arg(long)]
    pub(crate) seed: Option<u64>,
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    group_by_length: Option<bool>,
    #[arg(long)]
    max_seq_length: Option<usize>,
    #[arg(long)]
    pad_to_multiple_of: Option<usize>,
    /// bfloat16 autocast with fp32 master weights (CUDA, or CPUs with AMX/AVX512-BF16).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    bf16: Option<bool>,
    /// Compute only what the outputs read: real tokens, and the first token in the last
    /// layer (default true); false runs HF's computation (padded, every token).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    padding_free: Option<bool>,
    /// Deterministic kernels only, as HF's `full_determinism` (also on CUDA).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    full_determinism: Option<bool>,
    /// Fine-tune through LoRA adapters of this rank (PEFT's `r`): the base model frozen,
    /// adapters and classifier trained; the output is a PEFT adapter folder.
    #[arg(long)]
    lora_r: Option<i64>,
    /// PEFT's `lora_alpha` (default 8; scaling = alpha / r).
    #[arg(long, value_parser = finite_f64, allow_hyphen_values = true)]
    lora_alpha: Option<f64>,
    /// PEFT's `lora_dropout` (default 0).
    #[arg(long, value_parser = finite_f64, allow_hyphen_values = true)]
    lora_dropout: Option<f64>,
    /// PEFT's `target_modules`, comma-separated (default: query,value; DistilBERT q_lin,v_lin).
    #[arg(long, value_delimiter = ',')]
    lora_target_modules: Option<Vec<String>>,
}

/// Float flags must be numbers: NaN and inf would otherwise vanish in the flag merge
/// (JSON has no NaN) and silently become the defaults. They take values starting with a
/// hyphen (`allow_hyphen_values`), so `--adam-epsilon -1e-8` reaches the range check
/// instead of clap's "unexpected argument '-1'" (its negative-number rule misses `1e-8`).
fn finite_f64(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(v) => Err(format!("{v} is not a finite number")),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Hub id or local HF model folder.
    #[arg(long, default_value = "bert-base-uncased")]
    pub(crate) model: String,
    /// cuda, cpu or auto.
    #[arg(long, default_value = "auto")]
    pub(crate) device: String,
    /// TOML or JSON file with TrainingArguments (snake_case names); flags override it.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// TrainingArguments under the config file's (the suite's per-task recipe).
    #[arg(skip)]
    pub(crate) base: Map<String, Value>,
    /// A checkpoint folder, or `latest` (the newest complete one in --output-dir).
    #[arg(long, num_args = 0..=1, default_missing_value = "latest")]
    pub(crate) resume_from_checkpoint: Option<String>,
    /// Resume even though batch size, seed, learning rate or other arguments that
    /// shape the run differ from the checkpoint's (the run is then not a continuation).
    #[arg(long)]
    pub(crate) resume_with_changed_args: bool,
    /// With LoRA: write a plain HF model folder with the adapters merged into the
    /// weights (PEFT's `merge_and_unload`) instead of the adapter folder.
    #[arg(long)]
    pub(crate) merge_lora: bool,
    /// Under torchrun (data-parallel): seconds the rendezvous and each collective may
    /// wait for the other ranks before the run stops with an error (HF's `ddp_timeout`).
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) ddp_timeout: u64,
    /// Under torchrun: the backend (HF's `ddp_backend`); default NCCL on CUDA, Gloo on CPU.
    #[arg(long, value_enum)]
    pub(crate) ddp_backend: Option<DdpBackend>,
    #[command(flatten)]
    pub(crate) training: TrainingFlags,
}

/// HF's `ddp_backend`: what averages the gradients across ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DdpBackend {
    /// c10d Gloo over TCP (the default on CPU); CUDA tensors pass through host memory.
    Gloo,
    /// NCCL (the default on CUDA), from the libnccl.so.2 that CUDA builds of torch ship.
    Nccl,
}

#[derive(Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Split to score (default: the task's evaluation splits).
    #[arg(long)]
    split: Option<String>,
    #[command(flatten)]
    inference: InferenceArgs,
}

/// How `evaluate` and `predict` run a fine-tuned model.
#[derive(Args)]
pub struct InferenceArgs {
    /// A fine-tuned model folder (or hub id).
    #[arg(long)]
    pub(crate) model: String,
    #[arg(long, default_value = "auto")]
    pub(crate) device: String,
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) batch_size: u64,
    #[arg(long, default_value_t = 128)]
    pub(crate) max_seq_length: usize,
    /// bfloat16 autocast, as HF `bf16_full_eval=False, bf16=True` evaluates.
    #[arg(long)]
    pub(crate) bf16: bool,
    /// Compute only what the outputs read: real tokens, and the first token in the last
    /// layer (default true); false runs HF's computation (padded, every token).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) padding_free: bool,
    /// Under torchrun: seconds to wait for the other ranks (HF's `ddp_timeout`).
    #[arg(long, default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) ddp_timeout: u64,
    /// Under torchrun: the backend (HF's `ddp_backend`); default NCCL on CUDA, Gloo on CPU.
    #[arg(long, value_enum)]
    pub(crate) ddp_backend: Option<DdpBackend>,
}

#[derive(Args)]
pub struct PredictArgs {
    #[command(flatten)]
    pub(crate) data: DataArgs,
    /// Folder for the leaderboard files (CoLA.tsv, ...).
    #[arg(long, default_value = "predictions")]
    pub(crate) output_dir: PathBuf,
    #[command(flatten)]
    pub(crate) inference: InferenceArgs,
}

pub(crate) fn config_map(path: &Path) -> Result<Map<String, Value>> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read --config {}", path.display()))?;
    let value: Value = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{}: invalid JSON", path.display()))?
    } else {
        let table: toml::Table =
            toml::from_str(&text).with_context(|| format!("{}: invalid TOML", path.display()))?;
        serde_json::to_value(table)?
    };
    match value {
        Value::Object(map) => Ok(map),
        _ => bail!("{}: expected a table of TrainingArguments", path.display()),
    }
}

/// Flags, then the config file, then `base`, then HF defaults; unknown names are errors that name them.
fn training_args(run: &RunArgs, task: Task) -> Result<TrainingArgs> {
    let mut map = run.base.clone();
    if let Some(path) = &run.config {
        map.extend(config_map(path)?);
    }
    let flags = serde_json::to_value(&run.training)?;
    if let Value::Object(flags) = flags {
        for (k, v) in flags {
            if !v.is_null() {
                map.insert(k, v);
            }
        }
    }
    map.entry("output_dir".to_string())
        .or_insert_with(|| Value::from(format!("output/{}", task.name())));
    // The path names the argument whose value has the wrong type.
    let args: TrainingArgs = serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
        let key = e.path().to_string();
        let e = e.into_inner();
        if key == "." {
            anyhow::anyhow!("invalid training arguments: {e}")
        } else {
            anyhow::anyhow!("invalid training argument `{key}`: {e}")
        }
    })?;
    args.validate()?;
    Ok(args)
}

fn device(choice: &str) -> Result<tch::Device> {
    let choice: DeviceChoice = choice.parse()?;
    let (device, notice) = select_device(choice)?;
    eprintln!("{notice}");
    Ok(device)
}

/// The model's tokenizer, checked against the model, sequences clamped to the model's
/// maximum with a warning, as run_glue.py does.
fn preprocessor(
    model: &BertForSequenceClassification,
    max_seq_length: usize,
) -> Result<Preprocessor> {
    let tok = train_loop::model_tokenizer(model, max_seq_length)?;
    if let Some(asked) = tok.clamped_from {
        eprintln!(
            "warning: --max-seq-length {asked} is larger than the model's maximum \
             ({}, max_position_embeddings); using {}",
            tok.max_seq_length, tok.max_seq_length
        );
    }
    Ok(tok.preprocessor)
}

fn encode(pre: &Preprocessor, data_dir: &Path, task: Task, split: &str) -> Result<EncodedSplit> {
    Ok(pre.encode_split(&load_split(data_dir, task, split)?)?)
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_atomically(path, |out| {
        out.write_all(text.as_bytes())?;
        out.write_all(b"\n")?;
        Ok(())
    })
}

/// The model files go into output_dir next to the checkpoints, each synced and
/// renamed into place; if writing fails (a full disk), nothing of it is left behind.
/// A LoRA model is saved as PEFT saves it (the adapter files), or merged.
fn save_model_into(
    model: &BertForSequenceClassification,
    dir: &Path,
    merge_lora: bool,
) -> Result<()> {
    let tmp = atomic_fs::temp_path(&dir.join("model"));
    let written = (|| -> Result<()> {
        fs::create_dir_all(&tmp)?;
        match (model.lora(), merge_lora) {
            (Some(_), false) => model.write_adapter(&tmp)?,
            (Some(_), true) => model.merged()?.write_pretrained(&tmp)?,
            (None, _) => model.write_pretrained(&tmp)?,
        }
        atomic_fs::publish_files(&tmp, dir)?;
        Ok(())
    })();
    let _ = fs::remove_dir_all(&tmp);
    written.with_context(|| format!("saving the model into {}", dir.display()))
}

/// A resume continues the run that wrote the checkpoint only with the arguments that
/// shaped it; anything else is refused unless the user says it is meant.
fn check_resume(dir: &Path, args: &TrainingArgs, task: Task, accept: bool) -> Result<()> {
    let mut differences = checkpoint::resume_differences(dir, args)?;
    let config: Value = serde_json::from_str(
        &fs::read_to_string(dir.join("config.json"))
            .with_context(|| format!("{} has no config.json", dir.display()))?,
    )
    .with_context(|| format!("{}/config.json is not valid JSON", dir.display()))?;
    let saved_labels: Vec<&str> = config["id2label"]
        .as_object()
        .map(|m| {
            let mut v: Vec<(usize, &str)> = m
                .iter()
                .filter_map(|(k, l)| Some((k.parse().ok()?, l.as_str()?)))
                .collect();
            v.sort();
            v.into_iter().map(|(_, l)| l).collect()
        })
        .unwrap_or_default();
    let labels = task.spec().label_names;
    if !labels.is_empty() && saved_labels != labels {
        differences.push(format!(
            "task labels {saved_labels:?} -> {labels:?} (another task?)"
        ));
    }
    if differences.is_empty() || accept {
        return Ok(());
    }
    bail!(
        "{} was written with other arguments: {}; resume with the same ones, or pass --resume-with-changed-args",
        dir.display(),
        differences.join(", ")
    )
}

fn print_table(history: &[train_loop::LogEntry], metric_names: &[&str], suffixes: &[String]) {
    let mut header = vec![
        "Epoch".to_string(),
        "Training Loss".into(),
        "Validation Loss".into(),
    ];
    for s in suffixes {
        for m in metric_names {
            header.push(format!(
                "{}{}",
                title(m),
                if s.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", &s[1..])
                }
            ));
        }
    }
    println!("{}", header.join(" | "));
    let mut last_train_loss: Option<f64> = None;
    for entry in history {
        if let Some(l) = entry.get("loss").and_then(Value::as_f64) {
            last_train_loss = Some(l);
            continue;
        }
        let Some(eval_loss) = entry.get("eval_loss").and_then(Value::as_f64) else {
            continue;
        };
        let epoch = entry.get("epoch").and_then(Value::as_f64).unwrap_or(0.0);
        let mut row = vec![
            if (epoch - epoch.round()).abs() < 1e-9 {
                format!("{epoch:.0}")
            } else {
                format!("{epoch:.2}")
            },
            last_train_loss
                .map(|l| format!("{l:.6}"))
                .unwrap_or_else(|| "No log".into()),
            format!("{eval_loss:.6}"),
        ];
        for s in suffixes {
            for m in metric_names {
                let v = entry.get(&format!("eval_{m}{s}")).and_then(Value::as_f64);
                row.push(v.map(|v| format!("{v:.6}")).unwrap_or_else(|| "-".into()));
            }
        }
        println!("{}", row.join(" | "));
    }
}

fn title(metric: &str) -> String {
    metric
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn run(run: &RunArgs) -> Result<()> {
    let task: Task = run.data.task.parse()?;
    let spec = task.spec();
    let train_split = spec
        .train_split
        .with_context(|| format!("task `{task}` has no training split; train on mnli and use `glue-cli predict --task {task}`"))?;
    let args = training_args(run, task)?;
    let resume = match &run.resume_from_checkpoint {
        Some(spec) => Some(checkpoint::resolve(&args.output_dir, spec)?),
        None => None,
    };
    if let Some(dir) = &resume {
        check_resume(dir, &args, task, run.resume_with_changed_args)?;
    }
    // Started by torchrun: join the other ranks (c10d, Gloo) before anything else.
    let launch = join_ranks(run.ddp_timeout)?;
    let main_process = train_loop::distributed::is_main_process();
    // Data first: a missing or damaged file (bad labels, wrong schema) fails before a
    // model download; only the tokenization waits for the model's tokenizer.
    let train_raw = load_split(&run.data.data_dir, task, train_split)?;
    let eval_raw = spec
        .eval_splits
        .iter()
        .map(|split| load_split(&run.data.data_dir, task, split))
        .collect::<Result<Vec<_>, _>>()?;
    if args.full_determinism && std::env::var_os("CUBLAS_WORKSPACE_CONFIG").is_none() {
        // As HF's enable_full_determinism; cuBLAS reads it when CUDA starts, below.
        std::env::set_var("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
    }
    let device = rank_device(launch.as_ref(), &run.device, run.ddp_backend)?;
    // Before the model loads (a download, perhaps): one run per folder, and a folder
    // that cannot be written fails now, not after training.
    // Only rank 0 writes there (HF's `should_save`).
    let _lock = match main_process {
        true => Some(train_loop::OutputLock::acquire(&args.output_dir)?),
        false => None,
    };
    tch::manual_seed(args.seed as i64);
    bound_onednn_cache(device, args.bf16);
    let (model, report) =
        BertForSequenceClassification::from_pretrained(&run.model, Some(spec.label_names), device)?;
    if resume.is_none() && main_process {
        eprint!("{report}");
    }
    if args.bf16 && device == tch::Device::Cpu && !bert_model::cpu_has_bf16() {
        eprintln!("note: this CPU has no bfloat16 instructions (AVX512-BF16 or AMX); --bf16 will be slower than fp32 here");
    }
    let pre = preprocessor(&model, args.max_seq_length)?;
    let train_data = pre.encode_split(&train_raw)?;
    drop(train_raw);
    let eval_sets = spec
        .eval_splits
        .iter()
        .zip(&eval_raw)
        .enumerate()
        .map(|(i, (split, raw))| {
            Ok(EvalSet {
                split: split.to_string(),
                suffix: spec.eval_suffix(i).to_string(),
                data: pre.encode_split(raw)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    drop(eval_raw);
    let mut reporter =
        CliReporter::new(args.per_device_train_batch_size * args.gradient_accumulation_steps);
    // The trainer sets the collator's pad_to_multiple_of from args.
    let collator = Collator::new(&pre);
    let mut trainer = Trainer {
        args: args.clone(),
        task,
        model,
        collator,
        train_data,
        eval_sets,
        // Progress and logs on rank 0 only.
        callbacks: match main_process {
            true => vec![&mut reporter],
            false => vec![],
        },
    };
    let out = trainer.train(resume.as_deref())?;
    // Sharded across the ranks: every rank takes part, rank 0 writes the results.
    let eval_metrics = trainer.evaluate()?;
    if !main_process {
        return Ok(());
    }
    let mut state = out.state;
    let mut final_eval: Map<String, Value> = eval_metrics
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(*v)))
        .collect();
    final_eval.insert("epoch".into(), Value::from(state.epoch));
    let out_dir = &args.output_dir;
    save_model_into(&trainer.model, out_dir, run.merge_lora)?;
    let mut train_results: Map<String, Value> = out
        .metrics
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(*v)))
        .collect();
    train_results.insert(
        "train_samples".into(),
        Value::from(trainer.train_data.len()),
    );
    let mut all = train_results.clone();
    all.extend(final_eval.clone());
    write_json(&out_dir.join("eval_results.json"), &final_eval)?;
    write_json(&out_dir.join("train_results.json"), &train_results)?;
    write_json(&out_dir.join("all_results.json"), &all)?;
    let mut final_entry: Map<String, Value> = final_eval.clone();
    final_entry.insert("step".into(), Value::from(state.global_step));
    state.log_history.push(final_entry);
    write_json(&out_dir.join("trainer_state.json"), &state)?;
    write_json(&out_dir.join("training_args.json"), &args)?;
    let metric_names: Vec<&str> = spec.metrics.iter().map(|m| m.name()).collect();
    let plot_key = format!("eval_{}", spec.main_metric().name());
    let svg = training_curves(&state.log_history, &plot_key);
    write_atomically(&out_dir.join("training_curves.svg"), |o| {
        Ok(o.write_all(svg.as_bytes())?)
    })?;
    let suffixes: Vec<String> = (0..trainer.eval_sets.len())
        .map(|i| spec.eval_suffix(i).to_string())
        .collect();
    print_table(
        &state.log_history[..state.log_history.len() - 1],
        &metric_names,
        &suffixes,
    );
    println!();
    let summary: BTreeMap<&String, &f64> = eval_metrics
        .iter()
        .filter(|(k, _)| !k.contains("runtime") && !k.contains("per_second"))
        .collect();
    println!("final evaluation: {}", serde_json::to_string(&summary)?);
    println!(
        "train: {} steps, {:.1} s, {:.1} samples/s; model, results and training_curves.svg in {}",
        state.global_step,
        out.metrics["train_runtime"],
        out.metrics["train_samples_per_second"],
        out_dir.display()
    );
    Ok(())
}

fn load_for(
    task: Task,
    inference: &InferenceArgs,
    device: tch::Device,
) -> Result<BertForSequenceClassification> {
    bound_onednn_cache(device, inference.bf16);
    let (mut model, report) =
        BertForSequenceClassification::from_pretrained(&inference.model, None, device)?;
    // Scoring with freshly initialized weights would look like a result; refuse it.
    if !report.newly_initialized.is_empty() {
        bail!(
            "{} has no weights for {}; evaluate a fine-tuned model folder (the output of `glue-cli run`)",
            inference.model,
            report.newly_initialized.join(", ")
        );
    }
    if inference.bf16 {
        model.set_precision(bert_model::Precision::Bf16)?;
    }
    if inference.padding_free {
        model.set_last_layer(bert_model::LastLayer::FirstToken);
    } else {
        model.set_layout(bert_model::Layout::Padded);
    }
    let want = task.spec().num_labels();
    if model.config.labels() != want {
        bail!(
            "the model has {} output(s) but task `{task}` needs {want}; pass a model fine-tuned on {task}",
            model.config.labels()
        );
    }
    Ok(model)
}

/// Joins the other ranks when torchrun started this process (its variables are set).
fn join_ranks(timeout_s: u64) -> Result<Option<train_loop::distributed::LaunchEnv>> {
    Ok(train_loop::distributed::init_from_env(
        std::time::Duration::from_secs(timeout_s),
    )?)
}

/// This rank's device under torchrun, and its backend, as HF's `TrainingArguments`
/// picks them: on CUDA, device `LOCAL_RANK` and NCCL for the tensors there (Gloo when
/// asked for, through host memory: correct, slower); on CPU, Gloo.
fn rank_device(
    launch: Option<&train_loop::distributed::LaunchEnv>,
    choice: &str,
    backend: Option<DdpBackend>,
) -> Result<tch::Device> {
    let Some(launch) = launch else {
        return device(choice);
    };
    let cpu_only =
        choice.parse::<DeviceChoice>()? == DeviceChoice::Cpu || !tch::Cuda::is_available();
    if backend == Some(DdpBackend::Nccl) && cpu_only {
        bail!("--ddp-backend nccl needs CUDA devices; on CPU use --ddp-backend gloo (the default)");
    }
    match device(choice)? {
        tch::Device::Cuda(_) => {
            let cards = tch::Cuda::device_count();
            if launch.local_rank >= cards {
                bail!(
                    "LOCAL_RANK={} but this machine has {cards} CUDA device(s); start at most \
                     {cards} process(es) per node (torchrun --nproc-per-node {cards})",
                    launch.local_rank
                );
            }
            let index = launch.local_rank as usize;
            if backend != Some(DdpBackend::Gloo) {
                train_loop::distributed::use_nccl(index)?;
            }
            Ok(tch::Device::Cuda(index))
        }
        device => Ok(device),
    }
}

/// What `evaluate` and `predict` run: the model on its device, its tokenizer and
/// collator; under torchrun, after joining the other ranks.
fn load_for_inference(
    task: Task,
    args: &InferenceArgs,
) -> Result<(BertForSequenceClassification, Preprocessor, Collator)> {
    let launch = join_ranks(args.ddp_timeout)?;
    let device = rank_device(launch.as_ref(), &args.device, args.ddp_backend)?;
    let model = load_for(task, args, device)?;
    let pre = preprocessor(&model, args.max_seq_length)?;
    let collator = Collator::new(&pre);
    Ok((model, pre, collator))
}

pub fn evaluate_cmd(args: &EvaluateArgs) -> Result<()> {
    let task: Task = args.data.task.parse()?;
    let spec = task.spec();
    let splits: Vec<String> = match &args.split {
        Some(s) => vec![spec.split(s)?.name.to_string()],
        None => spec.eval_splits.iter().map(|s| s.to_string()).collect(),
    };
    for split in &splits {
        glue_data::load_split(&args.data.data_dir, task, split)?;
    }
    // Under torchrun the batches are shared out across the ranks; rank 0 prints.
    let (model, pre, collator) = load_for_inference(task, &args.inference)?;
    let mut results = Map::new();
    for split in &splits {
        let data = encode(&pre, &args.data.data_dir, task, split)?;
        if data.labels.iter().any(|l| l.is_missing()) {
            bail!(
                "split `{split}` of {task} has no labels; use `glue-cli predict` for test splits"
            );
        }
        let out = evaluate(
            &model,
            task,
            &data,
            &collator,
            args.inference.batch_size as usize,
        )?;
        let metrics: Map<String, Value> = out
            .metrics
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect();
        results.insert(split.clone(), Value::Object(metrics));
    }
    if train_loop::distributed::is_main_process() {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(())
}

/// GLUE leaderboard value of one prediction: the registry's label for a class, a
/// score clamped to 0-5 for STS-B.
fn prediction_text(task: Task, predictions: &Predictions, i: usize) -> String {
    match predictions {
        Predictions::Scores(s) => format!("{:.3}", s[i].clamp(0.0, 5.0)),
        Predictions::Classes(c) => task
            .spec()
            .submission_label(c[i])
            .unwrap_or_else(|| c[i].to_string()),
    }
}

pub fn predict(args: &PredictArgs) -> Result<()> {
    let task: Task = args.data.task.parse()?;
    // MNLI models also answer the diagnostic set, when its file is there.
    let jobs: Vec<(Task, &glue_data::Submission)> = task
        .leaderboard_sets()
        .into_iter()
        .filter(|&(t, s)| {
            t == task || {
                let split = t.spec().split(s.split);
                split.is_ok_and(|sp| glue_data::split_path(&args.data.data_dir, t, sp).exists())
            }
        })
        .collect();
    for (t, s) in &jobs {
        glue_data::load_split(&args.data.data_dir, *t, s.split)?;
    }
    // Under torchrun the batches are shared out across the ranks; rank 0 writes.
    let (model, pre, collator) = load_for_inference(task, &args.inference)?;
    let main_process = train_loop::distributed::is_main_process();
    if main_process {
        fs::create_dir_all(&args.output_dir)
            .with_context(|| format!("cannot create {}", args.output_dir.display()))?;
    }
    for (t, submission) in jobs {
        let split = load_split(&args.data.data_dir, t, submission.split)?;
        let data = pre.encode_split(&split)?;
        let mut unlabelled = data.clone();
        for l in &mut unlabelled.labels {
            *l = match l {
                glue_data::Label::Class(_) => glue_data::Label::Class(-1),
                glue_data::Label::Score(_) => glue_data::Label::Score(-1.0),
            };
        }
        let out = evaluate(
            &model,
            t,
            &unlabelled,
            &collator,
            args.inference.batch_size as usize,
        )?;
        if !main_process {
            continue;
        }
        let path = args.output_dir.join(submission.file_name);
        write_atomically(&path, |w| {
            writeln!(w, "index\tprediction")?;
            for (i, idx) in data.idx.iter().enumerate() {
                writeln!(w, "{idx}\t{}", prediction_text(t, &out.predictions, i))?;
            }
            Ok(())
        })?;
        println!("wrote {} ({} rows)", path.display(), data.len());
    }
    Ok(())
}
