//! `TrainingArgs`: the arguments of HF `TrainingArguments` that matter for GLUE
//! fine-tuning, with HF's names and defaults. Serializable: the run's record.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::optim::OptimizerKind;
use crate::schedule::SchedulerType;

/// HF `IntervalStrategy` (eval_strategy, save_strategy, logging).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IntervalStrategy {
    No,
    Steps,
    #[default]
    Epoch,
}

impl std::str::FromStr for IntervalStrategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "no" => Ok(IntervalStrategy::No),
            "steps" => Ok(IntervalStrategy::Steps),
            "epoch" => Ok(IntervalStrategy::Epoch),
            other => Err(format!(
                "unknown strategy `{other}`; use no, steps or epoch"
            )),
        }
    }
}

fn d_output_dir() -> PathBuf {
    PathBuf::from("output")
}
fn d_epochs() -> f64 {
    3.0
}
fn d_batch() -> usize {
    8
}
fn d_lr() -> f64 {
    5e-5
}
fn d_beta1() -> f64 {
    0.9
}
fn d_beta2() -> f64 {
    0.999
}
fn d_eps() -> f64 {
    1e-8
}
fn d_max_grad_norm() -> f64 {
    1.0
}
fn d_one() -> usize {
    1
}
fn d_logging_steps() -> u64 {
    500
}
fn d_save_steps() -> u64 {
    500
}
fn d_seed() -> u64 {
    42
}
fn d_true() -> bool {
    true
}
fn d_max_seq_length() -> usize {
    128
}

/// Defaults are HF's (`TrainingArguments`), except eval/save strategies, which follow
/// the seed's `eval_strategy="epoch"` (and save per epoch, so the best model can be kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingArgs {
    #[serde(default = "d_output_dir")]
    pub output_dir: PathBuf,
    #[serde(default = "d_epochs")]
    pub num_train_epochs: f64,
    /// Overrides num_train_epochs when > 0.
    #[serde(default)]
    pub max_steps: u64,
    #[serde(default = "d_batch")]
    pub per_device_train_batch_size: usize,
    #[serde(default = "d_batch")]
    pub per_device_eval_batch_size: usize,
    #[serde(default = "d_lr")]
    pub learning_rate: f64,
    /// Never applied to biases and LayerNorm weights.
    #[serde(default)]
    pub weight_decay: f64,
    #[serde(default = "d_beta1")]
    pub adam_beta1: f64,
    #[serde(default = "d_beta2")]
    pub adam_beta2: f64,
    #[serde(default = "d_eps")]
    pub adam_epsilon: f64,
    #[serde(default = "d_max_grad_norm")]
    pub max_grad_norm: f64,
    /// `adamw_torch_fused` (HF's default) or `adamw_torch`.
    #[serde(default)]
    pub optim: OptimizerKind,
    #[serde(default)]
    pub lr_scheduler_type: SchedulerType,
    #[serde(default)]
    pub warmup_steps: u64,
    #[serde(default)]
    pub warmup_ratio: f64,
    #[serde(default = "d_one")]
    pub gradient_accumulation_steps: usize,
    #[serde(default)]
    pub eval_strategy: IntervalStrategy,
    #[serde(default)]
    pub eval_steps: Option<u64>,
    #[serde(default)]
    pub save_strategy: IntervalStrategy,
    #[serde(default = "d_save_steps")]
    pub save_steps: u64,
    #[serde(default = "d_logging_steps")]
    pub logging_steps: u64,
    #[serde(default)]
    pub save_total_limit: Option<usize>,
    #[serde(default)]
    pub load_best_model_at_end: bool,
    /// As HF: `loss` when `load_best_model_at_end`, else no best-model tracking.
    #[serde(default)]
    pub metric_for_best_model: Option<String>,
    /// Default: true for metrics, false for `loss`.
    #[serde(default)]
    pub greater_is_better: Option<bool>,
    /// Stop after this many evaluations without improvement (HF's EarlyStoppingCallback).
    #[serde(default)]
    pub early_stopping_patience: Option<usize>,
    #[serde(default = "d_seed")]
    pub seed: u64,
    #[serde(default)]
    pub group_by_length: bool,
    #[serde(default = "d_max_seq_length")]
    pub max_seq_length: usize,
    /// Pad batches to a multiple of this (8 helps tensor cores); none by default.
    #[serde(default)]
    pub pad_to_multiple_of: Option<usize>,
    /// Forward passes under bfloat16 autocast with fp32 master weights (HF `bf16=True`).
    #[serde(default)]
    pub bf16: bool,
    /// Compute only what the loss reads (same results, less work): real tokens only, and
    /// in the last layer the first token only; `false` gives HF's computation (padded,
    /// every token in every layer).
    #[serde(default = "d_true")]
    pub padding_free: bool,
    /// HF `full_determinism`: deterministic kernels only (`torch.use_deterministic_algorithms`,
    /// cuDNN deterministic); on CUDA also needs `CUBLAS_WORKSPACE_CONFIG=:4096:8`.
    #[serde(default)]
    pub full_determinism: bool,
    /// LoRA rank (PEFT's `r`). Set, the trainer fine-tunes through LoRA adapters: the
    /// base model frozen, the adapters and the classifier trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_r: Option<i64>,
    /// PEFT's `lora_alpha` (scaling = alpha / r).
    #[serde(default = "d_lora_alpha")]
    pub lora_alpha: f64,
    /// PEFT's `lora_dropout`.
    #[serde(default)]
    pub lora_dropout: f64,
    /// PEFT's `target_modules`; default: the architecture's query and value projections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_target_modules: Option<Vec<String>>,
}

fn d_lora_alpha() -> f64 {
    8.0
}

impl Default for TrainingArgs {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults deserialize")
    }
}

impl TrainingArgs {
    /// Rejects combinations HF rejects (or that cannot work), with the fix in the message.
    /// The LoRA adapters these arguments ask for, for a model of `architecture`.
    pub fn lora_config(
        &self,
        architecture: bert_model::Architecture,
    ) -> Option<bert_model::LoraConfig> {
        let r = self.lora_r?;
        let defaults = bert_model::LoraConfig::new(architecture);
        Some(bert_model::LoraConfig {
            r,
            lora_alpha: self.lora_alpha,
            lora_dropout: self.lora_dropout,
            target_modules: self
                .lora_target_modules
                .clone()
                .unwrap_or(defaults.target_modules),
            modules_to_save: defaults.modules_to_save,
        })
    }

    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::InvalidArgs(m));
        if let Some(lora) = self.lora_config(bert_model::Architecture::Bert) {
            lora.validate().map_err(TrainError::InvalidArgs)?;
        }
        if self.per_device_train_batch_size == 0 || self.per_device_eval_batch_size == 0 {
            return bad("batch sizes must be at least 1".into());
        }
        if self.gradient_accumulation_steps == 0 {
            return bad("--gradient-accumulation-steps must be at least 1".into());
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad(format!(
                "--learning-rate must be positive, got {}",
                self.learning_rate
            ));
        }
        // What torch.optim.AdamW and clip_grad_norm_ would reject, said before training.
        for (flag, value, ok, rule) in [
            (
                "--adam-beta1",
                self.adam_beta1,
                (0.0..1.0).contains(&self.adam_beta1),
                "in [0, 1)",
            ),
            (
                "--adam-beta2",
                self.adam_beta2,
                (0.0..1.0).contains(&self.adam_beta2),
                "in [0, 1)",
            ),
            (
                "--adam-epsilon",
                self.adam_epsilon,
                self.adam_epsilon >= 0.0 && self.adam_epsilon.is_finite(),
                "a finite number >= 0",
            ),
            (
                "--weight-decay",
                self.weight_decay,
                self.weight_decay >= 0.0 && self.weight_decay.is_finite(),
                "a finite number >= 0",
            ),
            (
                "--max-grad-norm",
                self.max_grad_norm,
                self.max_grad_norm.is_finite(),
                "finite (0 or less: no clipping)",
            ),
            (
                "--num-train-epochs",
                self.num_train_epochs,
                self.num_train_epochs.is_finite(),
                "finite",
            ),
        ] {
            if !ok {
                return bad(format!("{flag} must be {rule}, got {value}"));
            }
        }
        if self.pad_to_multiple_of == Some(0) {
            return bad("--pad-to-multiple-of must be at least 1 (or left out)".into());
        }
        if self.early_stopping_patience == Some(0) {
            return bad("--early-stopping-patience must be at least 1 evaluation".into());
        }
        if self.max_steps == 0 && self.num_train_epochs <= 0.0 {
            return bad("give --num-train-epochs > 0 or --max-steps > 0".into());
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return bad(format!(
                "--warmup-ratio must be in [0, 1], got {}",
                self.warmup_ratio
            ));
        }
        if self.eval_strategy == IntervalStrategy::Steps
            && self.eval_steps.unwrap_or(self.logging_steps) == 0
        {
            return bad("--eval-strategy steps needs --eval-steps > 0".into());
        }
        if self.save_strategy == IntervalStrategy::Steps && self.save_steps == 0 {
            return bad("--save-strategy steps needs --save-steps > 0".into());
        }
        if self.load_best_model_at_end {
            if self.eval_strategy == IntervalStrategy::No {
                return bad(
                    "--load-best-model-at-end needs an --eval-strategy other than no".into(),
                );
            }
            if self.save_strategy != self.eval_strategy {
                return bad(format!(
                    "--load-best-model-at-end needs --save-strategy equal to --eval-strategy ({:?} vs {:?})",
                    self.save_strategy, self.eval_strategy
                ));
            }
            if self.save_strategy == IntervalStrategy::Steps
                && !self.save_steps.is_multiple_of(self.eval_interval())
            {
                return bad(format!(
                    "--load-best-model-at-end needs --save-steps ({}) to be a multiple of --eval-steps ({})",
                    self.save_steps,
                    self.eval_interval()
                ));
            }
        }
        if self.early_stopping_patience.is_some() && self.eval_strategy == IntervalStrategy::No {
            return bad("--early-stopping-patience needs an --eval-strategy other than no".into());
        }
        // HF's EarlyStoppingCallback asserts the same.
        if self.early_stopping_patience.is_some()
            && self.metric_for_best_model.is_none()
            && !self.load_best_model_at_end
        {
            return bad(
                "--early-stopping-patience needs --metric-for-best-model (or --load-best-model-at-end, which defaults it to loss)"
                    .into(),
            );
        }
        Ok(())
    }

    /// HF: eval_steps defaults to logging_steps.
    pub fn eval_interval(&self) -> u64 {
        self.eval_steps.unwrap_or(self.logging_steps).max(1)
    }
}
