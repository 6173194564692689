//! Learning-rate schedules, computed as HF `transformers.optimization` computes them.

use serde::{Deserialize, Serialize};

/// HF `lr_scheduler_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerType {
    #[default]
    Linear,
    Cosine,
    Constant,
    ConstantWithWarmup,
}

impl std::str::FromStr for SchedulerType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "linear" => Ok(SchedulerType::Linear),
            "cosine" => Ok(SchedulerType::Cosine),
            "constant" => Ok(SchedulerType::Constant),
            "constant_with_warmup" => Ok(SchedulerType::ConstantWithWarmup),
            other => Err(format!(
                "unknown lr_scheduler_type `{other}`; use linear, cosine, constant or constant_with_warmup"
            )),
        }
    }
}

/// A schedule over a run: the multiplier of the base learning rate at each optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    pub kind: SchedulerType,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl LrSchedule {
    /// HF `TrainingArguments.get_warmup_steps`: warmup_steps if set, else ceil(total * ratio).
    pub fn new(
        kind: SchedulerType,
        warmup_steps: u64,
        warmup_ratio: f64,
        total_steps: u64,
    ) -> Self {
        let warmup_steps = if warmup_steps > 0 {
            warmup_steps
        } else {
            (total_steps as f64 * warmup_ratio).ceil() as u64
        };
        LrSchedule {
            kind,
            warmup_steps,
            total_steps,
        }
    }

    /// The `lr_lambda` of HF's `get_*_schedule_with_warmup` at `step` (0 = first update).
    pub fn factor(&self, step: u64) -> f64 {
        let (s, w, t) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        let warming = step < self.warmup_steps;
        match self.kind {
            SchedulerType::Constant => 1.0,
            SchedulerType::ConstantWithWarmup if warming => s / w.max(1.0),
            SchedulerType::ConstantWithWarmup => 1.0,
            _ if warming => s / w.max(1.0),
            SchedulerType::Linear => ((t - s) / (t - w).max(1.0)).max(0.0),
            SchedulerType::Cosine => {
                let progress = (s - w) / (t - w).max(1.0);
                // num_cycles = 0.5: half a cosine, from 1 down to 0.
                (0.5 * (1.0 + (std::f64::consts::PI * 0.5 * 2.0 * progress).cos())).max(0.0)
            }
        }
    }

    pub fn lr(&self, base_lr: f64, step: u64) -> f64 {
        base_lr * self.factor(step)
    }
}
