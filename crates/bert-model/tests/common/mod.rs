//! Shared by the bf16 test binaries.

use bert_model::{BertForSequenceClassification, Precision};
use tch::Device;

/// The test model with an MRPC head, bf16 on CPU, one intra-op thread.
pub fn bf16_mrpc_model() -> BertForSequenceClassification {
    tch::set_num_threads(1);
    let dir = glue_testkit::test_model_dir();
    let (mut model, _) = BertForSequenceClassification::from_pretrained(
        dir.to_str().unwrap(),
        Some(&["not_equivalent", "equivalent"]),
        Device::Cpu,
    )
    .unwrap();
    model.set_precision(Precision::Bf16).unwrap();
    model
}
