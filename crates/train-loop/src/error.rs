use std::path::PathBuf;

/// Why training, evaluation or a checkpoint operation stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("invalid training arguments: {0}")]
    InvalidArgs(String),

    #[error("loss is {value} at step {step}: training diverged; the last good checkpoint stays in {output_dir} (try a lower --learning-rate)")]
    NonFiniteLoss {
        step: u64,
        value: f64,
        output_dir: PathBuf,
    },

    #[error("out of memory at step {step}; use a smaller --per-device-train-batch-size with --gradient-accumulation-steps to keep the effective batch")]
    OutOfMemory { step: u64 },

    #[error("out of memory while evaluating batches of {batch_size}; use a smaller --per-device-eval-batch-size")]
    EvalOutOfMemory { batch_size: usize },

    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: PathBuf, message: String },

    #[error(
        "no complete checkpoint in {0}; nothing to resume from (drop --resume-from-checkpoint)"
    )]
    NoCheckpoint(PathBuf),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the model folder has no tokenizer.json; copy the tokenizer files next to the weights"
    )]
    NoTokenizer,

    #[error("the tokenizer in {} has {tokens} tokens but the model's embedding matrix has {rows} rows; use the tokenizer that came with the model", dir.display())]
    TokenizerTooLarge {
        dir: PathBuf,
        tokens: usize,
        rows: usize,
    },

    #[error(transparent)]
    Data(#[from] glue_data::DataError),

    #[error(transparent)]
    Model(#[from] bert_model::BertError),

    #[error(transparent)]
    Metric(#[from] glue_metrics::MetricError),

    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),

    #[error(transparent)]
    Shim(#[from] torch_shim::TorchError),

    #[error("data-parallel training: {0}")]
    Distributed(String),
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}

impl TrainError {
    /// Whether libtorch failed to allocate memory somewhere below this error.
    pub fn is_out_of_memory(&self) -> bool {
        match self {
            TrainError::Model(e) => e.is_out_of_memory(),
            TrainError::Torch(_) | TrainError::Shim(_) => {
                bert_model::is_allocation_failure(&self.to_string())
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtorch_allocation_failures_are_recognised() {
        // A real failure of libtorch's CPU allocator (4 PiB), as tch reports it.
        let error = tch::Tensor::f_zeros([1i64 << 50], (tch::Kind::Float, tch::Device::Cpu))
            .expect_err("4 PiB cannot be allocated");
        assert!(TrainError::from(error).is_out_of_memory());
        let cuda = torch_shim::TorchError("CUDA out of memory. Tried to allocate 2.00 GiB".into());
        assert!(TrainError::from(cuda).is_out_of_memory());
        let other =
            bert_model::BertError::Torch(tch::TchError::Torch("index out of range in self".into()));
        assert!(!TrainError::from(other).is_out_of_memory());
    }
}
