//! `trainer_state.json`, in HF's layout, plus what an exact resume needs.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One row of `log_history`: a training log or an evaluation, keys as HF writes them
/// (`loss`, `grad_norm`, `learning_rate`, `epoch`, `step`, `eval_loss`, `eval_accuracy`, ...).
pub type LogEntry = Map<String, Value>;

/// Accumulators between two logs; saved so a resumed run logs the same numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningTotals {
    pub loss_since_log: f64,
    pub steps_since_log: u64,
    pub loss_total: f64,
    pub evals_without_improvement: usize,
    /// Processes of the run (1 without a process group; 0 in files written before
    /// it was recorded, read as 1). A resume needs the same.
    #[serde(default)]
    pub world_size: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    pub global_step: u64,
    pub epoch: f64,
    pub max_steps: u64,
    pub num_train_epochs: u64,
    pub train_batch_size: usize,
    pub logging_steps: u64,
    pub eval_steps: u64,
    pub save_steps: u64,
    pub log_history: Vec<LogEntry>,
    pub best_metric: Option<f64>,
    pub best_global_step: Option<u64>,
    pub best_model_checkpoint: Option<String>,
    /// Not in HF's file: the loop's running totals, for a bit-identical resume.
    #[serde(default)]
    pub glue_rs: RunningTotals,
}

/// A JSON number rounded like HF rounds logged floats (4 decimals for epoch, full otherwise).
pub fn num(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or(Value::Null)
}
