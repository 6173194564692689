//! GLUE data for fine-tuning: the task registry, parquet loading, HF-identical
//! tokenization and dynamic-padding batches. No tensor library is involved:
//! batches are plain `Vec<i64>` buffers.
//!
//! ```no_run
//! use std::path::Path;
//! use glue_data::{load_split, Collator, Preprocessor, Task};
//!
//! # fn main() -> Result<(), glue_data::DataError> {
//! let split = load_split(Path::new("data/glue"), Task::Mrpc, "train")?;
//! let pre = Preprocessor::from_file(Path::new("path/to/model"), 128)?;
//! let encoded = pre.encode_split(&split)?;
//! let batch = Collator::new(&pre).collate(&encoded, &[0, 1, 2, 3, 4, 5, 6, 7])?;
//! println!("{:?}", batch.shape()); // [8, 67]
//! # Ok(())
//! # }
//! ```

#[cfg(feature = "tokenize")]
mod collate;
mod error;
#[cfg(feature = "tokenize")]
mod fast_wordpiece;
mod load;
pub mod sampler;
mod task;
#[cfg(feature = "tokenize")]
mod tokenize;

#[cfg(feature = "tokenize")]
pub use collate::{Batch, BatchLabels, Collator};
pub use error::{DataError, Result};
pub use glue_metrics::Metric;
pub use load::{check_file, load_split, read_examples, split_path, Example, GlueSplit, Label};
pub use task::{SplitSpec, Submission, Task, TaskSpec, HUB_DATASET};
#[cfg(feature = "tokenize")]
pub use tokenize::{EncodedSplit, Features, Preprocessor, DEFAULT_MAX_SEQ_LENGTH};
