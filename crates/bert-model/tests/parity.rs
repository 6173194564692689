//! Parity with HF transformers on real weights (all-MiniLM-L6-v2) and real GLUE rows:
//! tests/golden/model.json is written by scripts/golden_model.py.

use bert_model::BertForSequenceClassification;
use glue_data::{load_split, Collator, Preprocessor, Task};
use glue_testkit::{mirror_dir, test_model_dir};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn golden() -> Value {
    glue_testkit::golden("model.json")
}

fn floats(v: &Value) -> Vec<f32> {
    glue_testkit::json_f64s(v)
        .into_iter()
        .map(|x| x as f32)
        .collect()
}

fn ints(v: &Value) -> Vec<i64> {
    glue_testkit::json_i64s(v)
}

fn max_abs_diff(ours: &Tensor, theirs: &[f32]) -> f64 {
    let ours: Vec<f32> = Vec::try_from(ours.to_kind(Kind::Float).flatten(0, -1)).unwrap();
    assert_eq!(ours.len(), theirs.len(), "element count");
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max)
}

fn model_with_head(labels: &[&str], head: &Value) -> BertForSequenceClassification {
    let dir = test_model_dir();
    let (model, report) = BertForSequenceClassification::from_pretrained(
        dir.to_str().unwrap(),
        Some(labels),
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        report.newly_initialized,
        vec!["classifier.bias", "classifier.weight"]
    );
    let mut vars = model.vs.variables();
    let shape = ints(&head["shape"]);
    tch::no_grad(|| {
        let w = Tensor::from_slice(&floats(&head["classifier.weight"])).view([shape[0], shape[1]]);
        vars.get_mut("classifier.weight").unwrap().copy_(&w);
        let b = Tensor::from_slice(&floats(&head["classifier.bias"]));
        vars.get_mut("classifier.bias").unwrap().copy_(&b);
    });
    model
}

fn inputs(case: &Value) -> (Tensor, Tensor, Tensor) {
    let shape = ints(&case["shape"]);
    let t = |k: &str| Tensor::from_slice(&ints(&case[k])).view([shape[0], shape[1]]);
    (t("input_ids"), t("token_type_ids"), t("attention_mask"))
}

#[test]
fn classification_matches_hf_on_mrpc_and_sst2() {
    tch::set_num_threads(1);
    let g = golden();
    let model = model_with_head(&["not_equivalent", "equivalent"], &g["classification_head"]);
    for case in g["cases"].as_array().unwrap().iter().take(2) {
        let name = case["name"].as_str().unwrap();
        let (ids, types, mask) = inputs(case);
        let labels = Tensor::from_slice(&ints(&case["labels"]));
        for (_, mut v) in model.vs.variables() {
            v.zero_grad();
        }
        let out = model.forward(&ids, &types, &mask, Some(&labels), false);
        let d_logits = max_abs_diff(&out.logits, &floats(&case["logits"]));
        let d_pooled = max_abs_diff(&out.pooled_output, &floats(&case["pooled_output"]));
        let d_hidden = max_abs_diff(&out.last_hidden_state, &floats(&case["last_hidden_state"]));
        let loss = out.loss.unwrap();
        let d_loss = (loss.double_value(&[]) - case["loss"].as_f64().unwrap()).abs();
        loss.backward();
        let grad = model.vs.variables()["classifier.weight"].grad();
        let theirs = floats(&case["classifier_weight_grad"]);
        let scale = theirs.iter().map(|x| x.abs() as f64).fold(0.0, f64::max);
        let d_grad = max_abs_diff(&grad, &theirs) / scale;
        eprintln!("{name}: logits {d_logits:.2e} pooled {d_pooled:.2e} hidden {d_hidden:.2e} loss {d_loss:.2e} grad(rel) {d_grad:.2e}");
        assert!(d_logits <= 1e-4, "{name} logits differ by {d_logits}");
        assert!(
            d_pooled <= 1e-4,
            "{name} pooled output differs by {d_pooled}"
        );
        assert!(
            d_hidden <= 1e-4,
            "{name} last hidden state differs by {d_hidden}"
        );
        assert!(d_loss <= 1e-4, "{name} loss differs by {d_loss}");
        assert!(
            d_grad <= 1e-4,
            "{name} classifier grad differs by {d_grad} (relative)"
        );
    }
}

#[test]
fn regression_head_and_mse_loss_match_hf_on_stsb() {
    tch::set_num_threads(1);
    let g = golden();
    let model = model_with_head(&[], &g["regression_head"]);
    let case = &g["cases"][2];
    let (ids, types, mask) = inputs(case);
    let labels = Tensor::from_slice(&floats(&case["labels"]));
    let out = model.forward(&ids, &types, &mask, Some(&labels), false);
    assert_eq!(out.logits.size(), vec![3, 1]);
    let d_logits = max_abs_diff(&out.logits, &floats(&case["logits"]));
    let loss = out.loss.unwrap();
    let d_loss = (loss.double_value(&[]) - case["loss"].as_f64().unwrap()).abs();
    assert!(d_logits <= 1e-4, "logits differ by {d_logits}");
    assert!(d_loss <= 1e-4, "MSE loss differs by {d_loss}");
    loss.backward();
    let grad = model.vs.variables()["classifier.weight"].grad();
    let theirs = floats(&case["classifier_weight_grad"]);
    let scale = theirs.iter().map(|x| x.abs() as f64).fold(0.0, f64::max);
    assert!(max_abs_diff(&grad, &theirs) / scale <= 1e-4);
}

#[test]
fn our_collator_builds_the_same_padded_batches_as_hf() {
    let g = golden();
    let pre = Preprocessor::from_file(&test_model_dir(), 128).unwrap();
    let rows: Vec<usize> = ints(&g["rows"]).iter().map(|&r| r as usize).collect();
    for (case, task) in
        g["cases"]
            .as_array()
            .unwrap()
            .iter()
            .zip([Task::Mrpc, Task::Sst2, Task::Stsb])
    {
        let split = load_split(&mirror_dir(), task, "validation").unwrap();
        let encoded = pre.encode_split(&split).unwrap();
        let batch = Collator::new(&pre).collate(&encoded, &rows).unwrap();
        assert_eq!(batch.input_ids, ints(&case["input_ids"]), "{task}");
        assert_eq!(
            batch.token_type_ids,
            ints(&case["token_type_ids"]),
            "{task}"
        );
        assert_eq!(
            batch.attention_mask,
            ints(&case["attention_mask"]),
            "{task}"
        );
    }
}

/// bf16 compute (fp32 master weights) stays within 2e-2 of HF's fp32 outputs.
#[test]
fn bf16_compute_stays_close_to_fp32_reference() {
    tch::set_num_threads(1);
    let g = golden();
    let mut model = model_with_head(&["not_equivalent", "equivalent"], &g["classification_head"]);
    model.set_precision(bert_model::Precision::Bf16);
    let case = &g["cases"][0];
    let (ids, types, mask) = inputs(case);
    let out = tch::no_grad(|| model.forward(&ids, &types, &mask, None, false));
    assert_eq!(out.logits.kind(), Kind::Float);
    let d_pooled = max_abs_diff(&out.pooled_output, &floats(&case["pooled_output"]));
    let d_logits = max_abs_diff(&out.logits, &floats(&case["logits"]));
    assert!(
        d_pooled <= 2e-2 && d_logits <= 2e-2,
        "bf16: pooled {d_pooled}, logits {d_logits}"
    );
    assert!(d_pooled > 0.0, "bf16 should not be bit-identical to fp32");
}
