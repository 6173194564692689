//! Fine-tuning a `bert-model` classifier on a GLUE task the way HF's `Trainer` does:
//! [`TrainingArgs`] with HF's names and defaults, [`AdamW`] over tensors with
//! checkpointable state, HF's LR schedules, evaluation with the GLUE metrics, and
//! crash-safe checkpoints in HF's layout that resume exactly. Started by torchrun,
//! [`distributed::init_from_env`] joins PyTorch's c10d (Gloo) and the same `Trainer`
//! trains data-parallel, as HF's does under DDP.
//!
//! ```no_run
//! use glue_data::{load_split, Collator, Task};
//! use bert_model::BertForSequenceClassification;
//! use train_loop::{EvalSet, Trainer, TrainingArgs};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let task = Task::Mrpc;
//! let (model, _) = BertForSequenceClassification::from_pretrained(
//!     "bert-base-uncased", Some(task.spec().label_names), tch::Device::Cpu)?;
//! let args = TrainingArgs::default();
//! // The model's tokenizer, max_seq_length (128) fitted to the model as run_glue.py does.
//! let pre = train_loop::model_tokenizer(&model, args.max_seq_length)?.preprocessor;
//! let data = std::path::Path::new("data/glue");
//! let train = pre.encode_split(&load_split(data, task, "train")?)?;
//! let validation = pre.encode_split(&load_split(data, task, "validation")?)?;
//! let mut trainer = Trainer {
//!     args,
//!     task,
//!     model,
//!     collator: Collator::new(&pre),
//!     train_data: train,
//!     eval_sets: vec![EvalSet { split: "validation".into(), suffix: String::new(), data: validation }],
//!     callbacks: vec![],
//! };
//! let out = trainer.train(None)?;
//! println!("{:?}", trainer.evaluate()?); // eval_accuracy, eval_f1, eval_loss, ...
//! # Ok(())
//! # }
//! ```

mod adamw_kernel;
mod args;
pub mod checkpoint;
pub mod distributed;
mod error;
mod eval;
mod lock;
mod optim;
mod prepare;
mod schedule;
mod state;
mod trainer;

pub use args::{IntervalStrategy, TrainingArgs};
pub use error::{Result, TrainError};
pub use eval::{batch_tensors, evaluate, EvalOutput, Predictions};
pub use lock::OutputLock;
pub use optim::{clip_grad_norm, AdamW, AdamWConfig, OptimizerKind, Param};
pub use prepare::{model_tokenizer, ModelTokenizer};
pub use schedule::{LrSchedule, SchedulerType};
pub use state::{LogEntry, RunningTotals, TrainerState};
pub use trainer::{Control, EvalSet, Plan, TrainOutput, Trainer, TrainerCallback};
