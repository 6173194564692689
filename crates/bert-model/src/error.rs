use std::path::PathBuf;

use crate::hub::HubError;

/// Everything that can go wrong loading, running or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum BertError {
    #[error(transparent)]
    Hub(#[from] HubError),

    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },

    #[error("{path}: cannot read weights ({message}); the file is damaged or incomplete, download it again")]
    Weights { path: PathBuf, message: String },

    #[error("{source_name}: no model.safetensors or pytorch_model.bin found")]
    NoWeights { source_name: String },

    #[error("checkpoint weight `{key}` has shape {checkpoint:?}, the model expects {model:?} (is num_labels or the config different?)")]
    ShapeMismatch {
        key: String,
        checkpoint: Vec<i64>,
        model: Vec<i64>,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid input: {0}")]
    Input(String),

    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),

    #[error(transparent)]
    Shim(#[from] torch_shim::TorchError),
}

impl BertError {
    /// Whether libtorch failed to allocate (see [`is_allocation_failure`]).
    pub fn is_out_of_memory(&self) -> bool {
        is_allocation_failure(&self.to_string())
    }
}

/// Whether a libtorch error message is an allocation failure: CUDA's caching allocator
/// says "out of memory", the CPU allocator "can't allocate memory".
pub fn is_allocation_failure(message: &str) -> bool {
    message.contains("out of memory") || message.contains("can't allocate memory")
}

pub type Result<T, E = BertError> = std::result::Result<T, E>;

pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BertError {
    let path = path.into();
    move |source| BertError::Io { path, source }
}
