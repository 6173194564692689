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

    #[error("CUDA out of memory at step {step}; use a smaller --per-device-train-batch-size with --gradient-accumulation-steps to keep the effective batch")]
    OutOfMemory { step: u64 },

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
}

pub type Result<T, E = TrainError> = std::result::Result<T, E>;

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}
