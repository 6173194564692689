use std::path::PathBuf;

/// Everything that can go wrong between a parquet file on disk and a padded batch.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("unknown GLUE task `{name}`; valid tasks: {valid}")]
    UnknownTask { name: String, valid: String },

    #[error("task `{task}` has no split `{split}`; its splits: {valid}")]
    UnknownSplit {
        task: String,
        split: String,
        valid: String,
    },

    #[error("{path}: data file not found; run `cargo xtask fetch-glue --tasks {task}` (or pass --data-dir)")]
    MissingData { path: PathBuf, task: String },

    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: not a readable parquet file ({message}); delete it and run `cargo xtask fetch-glue` again")]
    Parquet { path: PathBuf, message: String },

    #[error("{path}: column `{column}` {problem}")]
    Schema {
        path: PathBuf,
        column: String,
        problem: String,
    },

    #[error("{path}: expected {expected} rows, found {found}; the file is incomplete or from another dataset")]
    RowCount {
        path: PathBuf,
        expected: usize,
        found: usize,
    },

    #[error("{path}: cannot load tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },

    #[error("tokenization failed for example {index}: {message}")]
    Encode { index: usize, message: String },

    #[error("index {index} is out of range: split `{split}` has {len} examples")]
    IndexOutOfRange {
        index: usize,
        split: String,
        len: usize,
    },

    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
