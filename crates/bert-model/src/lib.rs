//! BERT for sequence classification in tch, numerically faithful to Hugging Face
//! `transformers`, loading and saving HF checkpoints.
//!
//! ```no_run
//! use bert_model::{BertForSequenceClassification, select_device, DeviceChoice};
//! use tch::Tensor;
//!
//! # fn main() -> Result<(), bert_model::BertError> {
//! let (device, notice) = select_device(DeviceChoice::Auto)?;
//! eprintln!("{notice}");
//! // A local HF folder or a hub id; two classes named as MRPC names them.
//! let (model, report) = BertForSequenceClassification::from_pretrained(
//!     "bert-base-uncased", Some(&["not_equivalent", "equivalent"]), device)?;
//! eprint!("{report}"); // newly initialized: classifier.weight, classifier.bias
//! let ids = Tensor::from_slice(&[101i64, 7592, 102]).view([1, 3]).to(device);
//! let out = model.forward(&ids, &ids.zeros_like(), &ids.ones_like(), None, false)?;
//! println!("{:?}", out.logits.size()); // [1, 2]
//! model.save_pretrained(std::path::Path::new("my-model"))?;
//! # Ok(())
//! # }
//! ```

mod config;
mod device;
mod dropout;
mod error;
pub mod hub;
mod lora;
mod model;
mod pretrained;
mod relative_position;

pub use config::{Architecture, BertConfig, DebertaOptions, HiddenAct};
pub use device::{cpu_has_bf16, physical_cores, select_device, DeviceChoice};
pub use error::{is_allocation_failure, BertError, Result};
pub use lora::LoraConfig;
pub use model::{
    BertModel, BertOutput, Bf16Copy, InferenceWeights, LastLayer, Layout, Precision,
    SequenceClassifier, SequenceClassifierOutput,
};
pub use pretrained::{BertForSequenceClassification, LoadReport};
