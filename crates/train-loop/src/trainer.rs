//! The training loop of HF `Trainer.train()`: shuffled epochs of dynamically padded
//! batches, gradient accumulation, clipping, AdamW with a scheduled learning rate,
//! logging, evaluation and checkpoints per strategy, best-model tracking, early
//! stopping, and exact resume.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bert_model::{BertForSequenceClassification, LastLayer, Layout, Precision};
use glue_data::sampler::{length_grouped_indices, shuffled_indices};

use crate::distributed;
use glue_data::{Collator, EncodedSplit, Task};
use serde_json::Value;
use tch::{Kind, Tensor};

use crate::args::{IntervalStrategy, TrainingArgs};
use crate::checkpoint::{self, CheckpointParts};
use crate::error::{Result, TrainError};
use crate::eval::{batch_tensors, evaluate};
use crate::optim::{AdamW, AdamWConfig, OptimizerKind, Param};
use crate::schedule::LrSchedule;
use crate::state::{num, LogEntry, TrainerState};

/// What a callback can ask of the training loop after an event (HF `TrainerControl`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Control {
    /// End training after this step (the final checkpoint rules still apply).
    pub should_stop: bool,
}

/// Hooks into the training loop, as HF's `TrainerCallback`: progress display, extra
/// logging, stopping rules. Every method has a do-nothing default.
pub trait TrainerCallback {
    fn on_train_begin(&mut self, _plan: &Plan, _state: &TrainerState) {}
    /// After each optimizer update (before its logging, evaluation and saving).
    fn on_step_end(&mut self, _state: &TrainerState) -> Control {
        Control::default()
    }
    fn on_log(&mut self, _entry: &LogEntry) {}
    /// After an evaluation during training, with its `eval_*` metrics.
    fn on_evaluate(&mut self, _state: &TrainerState, _metrics: &BTreeMap<String, f64>) -> Control {
        Control::default()
    }
    fn on_save(&mut self, _checkpoint: &Path) {}
    fn on_train_end(&mut self, _state: &TrainerState) {}
}

/// An evaluation split; `suffix` is appended to metric keys (`""`, or `"_mm"` for MNLI mismatched, as run_glue.py).
pub struct EvalSet {
    pub split: String,
    pub suffix: String,
    pub data: EncodedSplit,
}

/// Step counts of a run, derived as HF derives them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Plan {
    pub num_examples: usize,
    pub batches_per_epoch: usize,
    pub updates_per_epoch: u64,
    pub max_steps: u64,
    pub num_epochs: u64,
    /// Weights the optimizer updates (HF's "Number of trainable parameters"); set by
    /// `train` (0 from [`Plan::new`]).
    pub trainable_parameters: u64,
}

impl Plan {
    /// The plan of this process: with a process group, its shard of the examples.
    pub fn new(args: &TrainingArgs, num_examples: usize) -> Plan {
        Self::for_world_size(args, num_examples, distributed::world_size() as usize)
    }

    /// HF's numbers under DDP: each of `world_size` ranks reads
    /// `ceil(num_examples / world_size)` examples per epoch in batches of
    /// `per_device_train_batch_size`, so steps per epoch shrink with the world size.
    pub fn for_world_size(args: &TrainingArgs, num_examples: usize, world_size: usize) -> Plan {
        let per_rank = num_examples.div_ceil(world_size.max(1));
        let batches_per_epoch = per_rank.div_ceil(args.per_device_train_batch_size).max(1);
        let updates_per_epoch = batches_per_epoch.div_ceil(args.gradient_accumulation_steps) as u64;
        let max_steps = if args.max_steps > 0 {
            args.max_steps
        } else {
            (args.num_train_epochs * updates_per_epoch as f64).ceil() as u64
        };
        Plan {
            num_examples,
            batches_per_epoch,
            updates_per_epoch,
            max_steps,
            num_epochs: max_steps.div_ceil(updates_per_epoch),
            trainable_parameters: 0,
        }
    }
}

/// What `train` returns: the final state and HF's `train_*` metrics.
#[derive(Debug, Clone)]
pub struct TrainOutput {
    pub state: TrainerState,
    pub metrics: BTreeMap<String, f64>,
}

pub struct Trainer<'r> {
    pub args: TrainingArgs,
    pub task: Task,
    pub model: BertForSequenceClassification,
    /// Pads the batches; its `pad_to_multiple_of` is set from `args` by the trainer.
    pub collator: Collator,
    pub train_data: EncodedSplit,
    pub eval_sets: Vec<EvalSet>,
    /// Called in order at every event.
    pub callbacks: Vec<&'r mut dyn TrainerCallback>,
}

/// Which of the per-step actions are due after an update.
#[derive(Debug, Clone, Copy)]
struct Due {
    log: bool,
    eval: bool,
    save: bool,
    last_step: bool,
}

/// HF `get_decay_parameter_names`: no weight decay on biases and LayerNorm weights.
fn decays(name: &str) -> bool {
    !(name.ends_with(".bias") || name.contains("LayerNorm"))
}

/// Dropout masks depend only on (seed, step, micro-batch, rank), so a resumed run
/// draws the same ones, and data-parallel ranks draw different ones.
/// An environment switch that is on unless set to `0`.
fn switch_on(name: &str) -> bool {
    std::env::var(name).map_or(true, |v| v != "0")
}

fn step_seed(seed: u64, global_step: u64, micro: usize, rank: i64) -> i64 {
    (seed.wrapping_mul(1_000_003) ^ (global_step << 8 | micro as u64) ^ ((rank as u64) << 48))
        as i64
        & i64::MAX
}

impl Trainer<'_> {
    /// HF raises when `metric_for_best_model` names no metric; so do we, before training.
    fn check_metric_name(&self) -> Result<()> {
        let Some(name) = &self.args.metric_for_best_model else {
            return Ok(());
        };
        let spec = self.task.spec();
        let mut known: Vec<String> = vec!["loss".into()];
        known.extend(spec.metrics.iter().map(|m| m.name().to_string()));
        if spec.metrics.len() > 1 {
            known.push("combined_score".into());
        }
        let suffixes: Vec<&str> = self.eval_sets.iter().map(|s| s.suffix.as_str()).collect();
        let bare = name.strip_prefix("eval_").unwrap_or(name);
        let found = known.iter().any(|k| {
            suffixes
                .iter()
                .chain(std::iter::once(&""))
                .any(|suffix| bare == format!("{k}{suffix}"))
        });
        if found {
            Ok(())
        } else {
            Err(TrainError::InvalidArgs(format!(
                "--metric-for-best-model `{name}` is not a metric of {}; use one of: {}",
                self.task,
                known.join(", ")
            )))
        }
    }

    /// The metric that picks the best checkpoint, as HF's TrainingArguments resolves it:
    /// the one named, else `loss` when the best model is loaded at the end, else none
    /// (no best-model tracking).
    fn metric_key(&self) -> Option<String> {
        let name = match &self.args.metric_for_best_model {
            Some(name) => name.clone(),
            None if self.args.load_best_model_at_end => "loss".to_string(),
            None => return None,
        };
        Some(if name.starts_with("eval_") {
            name
        } else {
            format!("eval_{name}")
        })
    }

    fn greater_is_better(&self) -> bool {
        self.args
            .greater_is_better
            .unwrap_or_else(|| !self.metric_key().is_some_and(|k| k.ends_with("loss")))
    }

    fn optimizer(&self) -> AdamW {
        // Frozen weights (the base model under LoRA) are not optimized, as in torch.
        let mut vars: Vec<(String, Tensor)> = self
            .model
            .vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let params = vars
            .into_iter()
            .map(|(name, tensor)| Param {
                weight_decay: if decays(&name) {
                    self.args.weight_decay
                } else {
                    0.0
                },
                name,
                tensor,
            })
            .collect();
        AdamW::new(
            params,
            AdamWConfig {
                beta1: self.args.adam_beta1,
                beta2: self.args.adam_beta2,
                eps: self.args.adam_epsilon,
                kind: self.args.optim,
            },
        )
    }

    /// This rank's examples of `epoch`, in order (all of them without a group).
    fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let order = self.full_epoch_order(epoch);
        distributed::shard(
            &order,
            distributed::rank() as usize,
            distributed::world_size() as usize,
        )
    }

    fn full_epoch_order(&self, epoch: u64) -> Vec<usize> {
        if self.args.group_by_length {
            length_grouped_indices(
                &self.train_data.lengths(),
                self.args.per_device_train_batch_size,
                self.args.seed,
                epoch,
            )
        } else {
            shuffled_indices(self.train_data.len(), self.args.seed, epoch)
        }
    }

    /// Precision, layout and determinism of the model's computation, from the arguments.
    fn apply_compute_args(&mut self) -> Result<()> {
        if self.args.full_determinism {
            if self.model.device().is_cuda() {
                let config = std::env::var("CUBLAS_WORKSPACE_CONFIG").unwrap_or_default();
                if config != ":4096:8" && config != ":16:8" {
                    return Err(TrainError::InvalidArgs(
                        "full_determinism on CUDA needs CUBLAS_WORKSPACE_CONFIG=:4096:8 in the \
                         environment before CUDA starts (glue-cli sets it for --full-determinism)"
                            .into(),
                    ));
                }
            }
            torch_shim::set_deterministic(true)?;
        }
        if let Some(lora) = self.args.lora_config(self.model.config.architecture) {
            match self.model.lora() {
                None => self.model = self.model.with_lora(lora)?,
                Some(have) if *have == lora => {}
                Some(have) => {
                    return Err(TrainError::InvalidArgs(format!(
                        "the model already carries LoRA adapters (r {}, targets {:?}) other than \
                         the arguments ask for",
                        have.r, have.target_modules
                    )))
                }
            }
        }
        self.model.set_precision(if self.args.bf16 {
            Precision::Bf16
        } else {
            Precision::Fp32
        })?;
        self.collator.pad_to_multiple_of = self.args.pad_to_multiple_of;
        let (layout, last_layer) = if self.args.padding_free {
            (Layout::PaddingFree, LastLayer::FirstToken)
        } else {
            (Layout::Padded, LastLayer::AllTokens)
        };
        self.model.set_layout(layout);
        self.model.set_last_layer(last_layer);
        Ok(())
    }

    /// Whether AdamW's own CPU kernel may take gradients ATen's fused one cannot (bf16
    /// copies' and sparse word-embedding rows): on CPU with the fused AdamW, one
    /// backward per update and one process (summing gradients across micro-batches or
    /// ranks wants them dense and in fp32).
    fn own_update_applies(&self) -> bool {
        self.model.device() == tch::Device::Cpu
            && self.args.optim == OptimizerKind::AdamwTorchFused
            && self.args.gradient_accumulation_steps == 1
            && distributed::group().is_none()
    }

    /// Whether training's linears multiply with bf16 copies of the weights that AdamW
    /// keeps (see [`AdamW::attach_bf16_copies`]) rather than autocast's per-forward
    /// casts: same values, two passes over the weights fewer per step.
    /// `GLUE_RS_BF16_COPIES=0` turns it off (to compare); likewise
    /// `GLUE_RS_SPARSE_EMBEDDING_GRAD=0` for the word embeddings' sparse gradient, and
    /// `GLUE_RS_SKIP_DORMANT_ROWS=0` for AdamW's skipping of rows never looked up.
    fn uses_bf16_copies(&self) -> bool {
        self.args.bf16 && self.own_update_applies() && switch_on("GLUE_RS_BF16_COPIES")
    }

    /// Evaluates every eval set; keys carry HF's `eval_` prefix (and the set's suffix).
    pub fn evaluate(&mut self) -> Result<BTreeMap<String, f64>> {
        self.apply_compute_args()?;
        let mut out = BTreeMap::new();
        for set in &self.eval_sets {
            let result = evaluate(
                &self.model,
                self.task,
                &set.data,
                &self.collator,
                self.args.per_device_eval_batch_size,
            )?;
            for (k, v) in result.metrics {
                out.insert(format!("eval_{k}{}", set.suffix), v);
            }
        }
        Ok(out)
    }

    /// One optimizer update over a group of micro-batches; returns the update's loss
    /// (float64, 0-dim, on the device) and the gradient norm before clipping.
    fn update(
        &mut self,
        optimizer: &mut AdamW,
        group: &[&[usize]],
        lr: f64,
        step: u64,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let device = self.model.device();
        optimizer.zero_grad()?;
        let mut loss_sum = Tensor::zeros([], (Kind::Double, device));
        for (micro, rows) in group.iter().enumerate() {
            let batch = self.collator.collate(&self.train_data, rows)?;
            let (ids, types, mask, labels) = batch_tensors(&batch, device)?;
            tch::manual_seed(step_seed(self.args.seed, step, micro, distributed::rank()));
            let out = self
                .model
                .forward(&ids, &types, &mask, Some(&labels), true)?;
            let Some(loss) = out.loss else {
                unreachable!("the model returns a loss when given labels")
            };
            // A 0-dim f32 divisor, not a Scalar (see bert-model's `scalar`): same value, and a
            // failure here is an error rather than a panic.
            let loss = loss.f_div(&Tensor::from(group.len() as f32))?;
            loss.f_backward()?;
            loss_sum = loss_sum.f_add(&loss.detach().f_to_kind(Kind::Double)?)?;
        }
        if let Some(group) = distributed::group() {
            // DDP: gradients averaged once per update (none on the accumulation
            // group's earlier micro-batches), before clipping; the logged loss is the
            // ranks' mean, as HF gathers it.
            let grads: Vec<Tensor> = optimizer
                .params()
                .iter()
                .map(|p| p.tensor.grad())
                .filter(Tensor::defined)
                .collect();
            distributed::average(group, &grads)?;
            let total = distributed::sum_scalar(group, &loss_sum, "the loss all-reduce")?;
            loss_sum = total
                .f_div(&Tensor::from(group.world_size() as f64))?
                .f_to(device)?;
        }
        let grad_norm = if self.args.max_grad_norm > 0.0 {
            Some(optimizer.clip_grad_norm(self.args.max_grad_norm)?)
        } else {
            None
        };
        optimizer.step(lr)?;
        Ok((loss_sum, grad_norm))
    }

    /// Moves the losses summed on the device into the running totals (a host sync),
    /// stopping if training diverged.
    fn flush_loss(&self, pending: &mut Tensor, state: &mut TrainerState) -> Result<()> {
        let value = pending.double_value(&[]);
        if !value.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                step: state.global_step,
                value,
                output_dir: self.args.output_dir.clone(),
            });
        }
        let _ = pending.zero_();
        let totals = &mut state.glue_rs;
        totals.loss_since_log += value;
        totals.loss_total += value;
        Ok(())
    }

    /// Trains from scratch or from a checkpoint folder; see the module docs.
    pub fn train(&mut self, resume_from: Option<&Path>) -> Result<TrainOutput> {
        self.args.validate()?;
        self.check_metric_name()?;
        self.apply_compute_args()?;
        let start = Instant::now();
        let mut plan = Plan::new(&self.args, self.train_data.len());
        let schedule = LrSchedule::new(
            self.args.lr_scheduler_type,
            self.args.warmup_steps,
            self.args.warmup_ratio,
            plan.max_steps,
        );
        let mut optimizer = self.optimizer();
        plan.trainable_parameters = optimizer.num_parameters();
        let mut state = TrainerState {
            max_steps: plan.max_steps,
            num_train_epochs: plan.num_epochs,
            train_batch_size: self.args.per_device_train_batch_size,
            logging_steps: self.args.logging_steps,
            eval_steps: self.args.eval_interval(),
            save_steps: self.args.save_steps,
            ..Default::default()
        };
        if let Some(dir) = resume_from {
            state = self.restore(dir, &mut optimizer)?;
        }
        state.glue_rs.world_size = distributed::world_size() as u64;
        if let Some(group) = distributed::group() {
            // DDP's start: every rank begins from rank 0's weights (a fresh
            // classifier head is random on each rank otherwise).
            // In name order: every rank must issue the same collectives in turn.
            let mut named: Vec<(String, Tensor)> = self.model.vs.variables().into_iter().collect();
            named.sort_by(|a, b| a.0.cmp(&b.0));
            let weights: Vec<Tensor> = named.into_iter().map(|(_, t)| t).collect();
            distributed::broadcast_from_main(group, &weights)?;
        }
        self.model.model.detach_bf16_copies();
        let sparse = self.own_update_applies() && switch_on("GLUE_RS_SPARSE_EMBEDDING_GRAD");
        self.model.model.bert.set_sparse_word_gradient(sparse);
        optimizer.set_skip_dormant_rows(switch_on("GLUE_RS_SKIP_DORMANT_ROWS"));
        if self.uses_bf16_copies() {
            let copies = self.model.model.attach_bf16_copies()?;
            optimizer
                .attach_bf16_copies(copies.into_iter().map(|c| (c.master, c.copy)).collect())?;
        }
        for cb in &mut self.callbacks {
            cb.on_train_begin(&plan, &state);
        }
        let metric_key = self.metric_key();
        let bs = self.args.per_device_train_batch_size;
        let ga = self.args.gradient_accumulation_steps;
        let first_epoch = state.global_step / plan.updates_per_epoch;
        let mut stop = state.global_step >= plan.max_steps;
        let device = self.model.device();
        let sync_every_step = device == tch::Device::Cpu;
        let mut pending_loss = Tensor::zeros([], (Kind::Double, device));
        for epoch in first_epoch..plan.num_epochs {
            if stop {
                break;
            }
            let order = self.epoch_order(epoch);
            let batches: Vec<&[usize]> = order.chunks(bs).collect();
            let groups: Vec<&[&[usize]]> = batches.chunks(ga).collect();
            let done_in_epoch = (state.global_step - epoch * plan.updates_per_epoch) as usize;
            for (u, group) in groups.iter().enumerate().skip(done_in_epoch) {
                let step = state.global_step;
                let lr = schedule.lr(self.args.learning_rate, step);
                let (loss, grad_norm) =
                    self.update(&mut optimizer, group, lr, step).map_err(|e| {
                        match e.is_out_of_memory() {
                            true => TrainError::OutOfMemory { step: step + 1 },
                            false => e,
                        }
                    })?;
                pending_loss += loss;
                state.global_step += 1;
                state.epoch = epoch as f64 + (u + 1) as f64 / groups.len() as f64;
                state.glue_rs.steps_since_log += 1;

                let due = self.due(&state, &plan, u + 1 == groups.len());
                // On CPU reading the loss costs nothing, so a diverged run stops at its
                // first bad step; on CUDA it is read only when something needs it.
                if sync_every_step || due.log || due.eval || due.save || due.last_step {
                    self.flush_loss(&mut pending_loss, &mut state)?;
                }
                for cb in &mut self.callbacks {
                    stop |= cb.on_step_end(&state).should_stop;
                }
                if due.log {
                    self.log(&mut state, grad_norm.as_ref(), lr);
                }
                let improved = if due.eval {
                    let (improved, asked_to_stop) =
                        self.evaluate_during_training(&mut state, metric_key.as_deref())?;
                    stop |= asked_to_stop;
                    improved
                } else {
                    false
                };
                if due.save {
                    self.save(&mut state, &optimizer, &schedule, improved)?;
                }
                stop |= self.early_stopping_due(&state);
                if due.last_step || stop {
                    stop = true;
                    break;
                }
            }
        }
        self.model.model.detach_bf16_copies();
        self.model.model.bert.set_sparse_word_gradient(false);
        if self.args.load_best_model_at_end {
            if let Some(group) = distributed::group() {
                // Rank 0 wrote the checkpoints; the others read them once it is done.
                group.barrier().map_err(distributed::collective_error(
                    "the barrier before loading the best model",
                ))?;
            }
            if let Some(best) = state.best_model_checkpoint.clone() {
                self.model
                    .load_weights(&Path::new(&best).join("model.safetensors"))?;
            }
        }
        let metrics = self.train_metrics(&mut state, &plan, start.elapsed().as_secs_f64());
        for cb in &mut self.callbacks {
            cb.on_train_end(&state);
        }
        Ok(TrainOutput { state, metrics })
    }

    /// HF's `DefaultFlowCallback`: logging, evaluation and saving per their strategy
    /// and interval; a save at `max_steps` whatever the interval.
    fn due(&self, state: &TrainerState, plan: &Plan, last_of_epoch: bool) -> Due {
        let last_step = state.global_step >= plan.max_steps;
        let at = state.global_step;
        let due = |strategy: IntervalStrategy, every: u64| match strategy {
            IntervalStrategy::No => false,
            IntervalStrategy::Steps => at.is_multiple_of(every.max(1)),
            IntervalStrategy::Epoch => last_of_epoch || last_step,
        };
        Due {
            log: self.args.logging_steps > 0 && at.is_multiple_of(self.args.logging_steps),
            eval: due(self.args.eval_strategy, self.args.eval_interval()),
            save: due(self.args.save_strategy, self.args.save_steps)
                || (last_step && self.args.save_strategy != IntervalStrategy::No),
            last_step,
        }
    }

    fn emit_log(&mut self, state: &mut TrainerState, entry: LogEntry) {
        for cb in &mut self.callbacks {
            cb.on_log(&entry);
        }
        state.log_history.push(entry);
    }

    /// The training-loss entry of `log_history`: mean loss since the last one, the
    /// gradient norm before clipping, and the learning rate the update used.
    fn log(&mut self, state: &mut TrainerState, grad_norm: Option<&Tensor>, lr: f64) {
        let totals = &mut state.glue_rs;
        let mut entry = LogEntry::new();
        let mean = totals.loss_since_log / totals.steps_since_log.max(1) as f64;
        // transformers 5.x logs the mean unrounded (4.x rounded it to 4 places).
        entry.insert("loss".into(), num(mean));
        if let Some(g) = grad_norm {
            entry.insert(
                "grad_norm".into(),
                num(g.to_kind(tch::Kind::Double).double_value(&[])),
            );
        }
        // transformers 5.x logs the rate the update just taken used.
        entry.insert("learning_rate".into(), num(lr));
        entry.insert("epoch".into(), num(state.epoch));
        entry.insert("step".into(), Value::from(state.global_step));
        totals.loss_since_log = 0.0;
        totals.steps_since_log = 0;
        self.emit_log(state, entry);
    }

    /// Evaluates, logs, and tracks the best metric; returns whether it improved and
    /// whether a callback asked to stop.
    fn evaluate_during_training(
        &mut self,
        state: &mut TrainerState,
        metric_key: Option<&str>,
    ) -> Result<(bool, bool)> {
        let metrics = self.evaluate()?;
        let mut entry: LogEntry = metrics.iter().map(|(k, v)| (k.clone(), num(*v))).collect();
        entry.insert("epoch".into(), num(state.epoch));
        entry.insert("step".into(), Value::from(state.global_step));
        self.emit_log(state, entry);
        let mut improved = false;
        if let Some(&value) = metric_key.and_then(|k| metrics.get(k)) {
            let greater = self.greater_is_better();
            improved = match state.best_metric {
                None => true,
                Some(best) if greater => value > best,
                Some(best) => value < best,
            };
            if improved {
                state.best_metric = Some(value);
                state.best_global_step = Some(state.global_step);
                state.glue_rs.evals_without_improvement = 0;
            } else {
                state.glue_rs.evals_without_improvement += 1;
            }
        }
        let mut stop = false;
        for cb in &mut self.callbacks {
            stop |= cb.on_evaluate(state, &metrics).should_stop;
        }
        Ok((improved, stop))
    }

    /// A checkpoint of this step, then HF's rotation (`save_total_limit`, best kept).
    fn save(
        &mut self,
        state: &mut TrainerState,
        optimizer: &AdamW,
        schedule: &LrSchedule,
        improved: bool,
    ) -> Result<()> {
        if improved {
            state.best_model_checkpoint = Some(
                checkpoint::checkpoint_dir(&self.args.output_dir, state.global_step)
                    .display()
                    .to_string(),
            );
        }
        if !distributed::is_main_process() {
            // HF's `should_save`: only the world's process zero writes.
            return Ok(());
        }
        let path = checkpoint::save(
            &self.args.output_dir,
            &CheckpointParts {
                model: &self.model,
                optimizer,
                schedule,
                state,
                args: &self.args,
            },
        )?;
        let best = state.best_model_checkpoint.as_deref().map(PathBuf::from);
        checkpoint::rotate(
            &self.args.output_dir,
            self.args.save_total_limit,
            best.as_deref(),
        );
        for cb in &mut self.callbacks {
            cb.on_save(&path);
        }
        Ok(())
    }

    /// HF's `EarlyStoppingCallback`: `patience` evaluations without improvement.
    fn early_stopping_due(&self, state: &TrainerState) -> bool {
        self.args
            .early_stopping_patience
            .is_some_and(|patience| state.glue_rs.evals_without_improvement >= patience)
    }

    /// HF's `train_*` metrics, also appended to `log_history`.
    fn train_metrics(
        &mut self,
        state: &mut TrainerState,
        plan: &Plan,
        runtime: f64,
    ) -> BTreeMap<String, f64> {
        let (bs, ga) = (
            self.args.per_device_train_batch_size,
            self.args.gradient_accumulation_steps,
        );
        let mut metrics = BTreeMap::new();
        metrics.insert("train_runtime".to_string(), (runtime * 1e4).round() / 1e4);
        let world = distributed::world_size() as f64;
        let samples = (state.global_step as f64 * (bs * ga) as f64 * world)
            .min(plan.num_examples as f64 * state.epoch);
        metrics.insert(
            "train_samples_per_second".to_string(),
            (samples / runtime * 1e3).round() / 1e3,
        );
        metrics.insert(
            "train_steps_per_second".to_string(),
            (state.global_step as f64 / runtime * 1e3).round() / 1e3,
        );
        metrics.insert(
            "train_loss".to_string(),
            state.glue_rs.loss_total / state.global_step.max(1) as f64,
        );
        metrics.insert("epoch".to_string(), state.epoch);
        let mut entry: LogEntry = metrics.iter().map(|(k, v)| (k.clone(), num(*v))).collect();
        entry.insert("step".into(), Value::from(state.global_step));
        state.log_history.push(entry);
        metrics
    }

    fn restore(&mut self, dir: &Path, optimizer: &mut AdamW) -> Result<TrainerState> {
        let state: TrainerState = checkpoint::read_json(&dir.join("trainer_state.json"))?;
        let (saved, now) = (
            state.glue_rs.world_size.max(1),
            distributed::world_size() as u64,
        );
        if saved != now {
            return Err(TrainError::Checkpoint {
                path: dir.to_path_buf(),
                message: format!(
                    "saved by a run of {saved} process(es) (world size {saved}); this run has \
                     {now}: resume with the same number of processes"
                ),
            });
        }
        self.model.load_weights(&dir.join("model.safetensors"))?;
        let tensors = Tensor::read_safetensors(dir.join("optimizer.safetensors"))?;
        let device = self.model.device();
        optimizer
            .load_state(
                tensors
                    .into_iter()
                    .map(|(k, t)| (k, t.to(device)))
                    .collect(),
            )
            .map_err(|message| TrainError::Checkpoint {
                path: dir.to_path_buf(),
                message,
            })?;
        Ok(state)
    }
}
