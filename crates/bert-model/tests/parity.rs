//! Parity with HF transformers on real weights (all-MiniLM-L6-v2) and real GLUE rows:
//! tests/golden/model.json is written by scripts/golden_model.py.

use bert_model::{BertForSequenceClassification, LastLayer, Layout};
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

/// Rows of `hidden` (`[batch, seq, h]`) at real tokens, flattened, as HF's golden
/// lists them row by row; padding positions carry no meaning (and are where fp32
/// noise across CPUs is largest), so they are not compared.
fn real_tokens(hidden: &Tensor, mask: &Tensor) -> Tensor {
    let h = hidden.size()[2];
    let index = mask.flatten(0, -1).nonzero().squeeze_dim(1);
    hidden.reshape([-1, h]).index_select(0, &index)
}

fn padded_golden_real_tokens(case: &Value, mask: &Tensor) -> Vec<f32> {
    let shape = ints(&case["shape"]);
    let all =
        Tensor::from_slice(&floats(&case["last_hidden_state"])).view([shape[0], shape[1], -1]);
    Vec::try_from(real_tokens(&all, mask).flatten(0, -1)).unwrap()
}

fn scale(values: &[f32]) -> f64 {
    values.iter().map(|x| x.abs() as f64).fold(0.0, f64::max)
}

// fp32 bounds, relative to each tensor's largest |value|. HF disagrees with itself by
// at most (tests/golden/parity_spread.json, scripts/parity_spread.py: threads, SDPA vs
// eager, unpadded rows, padded to 128, and HF on another CPU vs the committed golden):
// hidden states at real tokens 4.2e-7, pooled output 2.9e-6, logits 8.0e-7 (relative).
// The bounds are 20x that, so any CPU's fp32 kernels pass and a wrong op does not.
const HIDDEN_REL: f64 = 1e-5;
const POOLED_REL: f64 = 6e-5;
const LOGITS_REL: f64 = 2e-5;

const LAYOUTS: [Layout; 2] = [Layout::Padded, Layout::PaddingFree];

#[test]
fn classification_matches_hf_on_mrpc_and_sst2_in_both_layouts() {
    tch::set_num_threads(1);
    let g = golden();
    let mut model = model_with_head(&["not_equivalent", "equivalent"], &g["classification_head"]);
    for layout in LAYOUTS {
        model.set_layout(layout);
        for case in g["cases"].as_array().unwrap().iter().take(2) {
            let name = case["name"].as_str().unwrap();
            let (ids, types, mask) = inputs(case);
            let labels = Tensor::from_slice(&ints(&case["labels"]));
            for (_, mut v) in model.vs.variables() {
                v.zero_grad();
            }
            let out = model
                .forward(&ids, &types, &mask, Some(&labels), false)
                .unwrap();
            let theirs_logits = floats(&case["logits"]);
            let theirs_pooled = floats(&case["pooled_output"]);
            let theirs_hidden = padded_golden_real_tokens(case, &mask);
            let d_logits = max_abs_diff(&out.logits, &theirs_logits) / scale(&theirs_logits);
            let d_pooled = max_abs_diff(&out.pooled_output, &theirs_pooled) / scale(&theirs_pooled);
            let d_hidden =
                max_abs_diff(&real_tokens(&out.last_hidden_state, &mask), &theirs_hidden)
                    / scale(&theirs_hidden);
            let loss = out.loss.unwrap();
            let d_loss = (loss.double_value(&[]) - case["loss"].as_f64().unwrap()).abs();
            loss.backward();
            let grad = model.vs.variables()["classifier.weight"].grad();
            let theirs = floats(&case["classifier_weight_grad"]);
            let d_grad = max_abs_diff(&grad, &theirs) / scale(&theirs);
            eprintln!("{name} {layout:?} (relative): logits {d_logits:.2e} pooled {d_pooled:.2e} hidden {d_hidden:.2e} loss {d_loss:.2e} grad {d_grad:.2e}");
            assert!(
                d_logits <= LOGITS_REL,
                "{name} {layout:?}: logits differ by {d_logits:e}"
            );
            assert!(
                d_pooled <= POOLED_REL,
                "{name} {layout:?}: pooled output differs by {d_pooled:e}"
            );
            assert!(
                d_hidden <= HIDDEN_REL,
                "{name} {layout:?}: hidden states differ by {d_hidden:e}"
            );
            assert!(
                d_loss <= 1e-6,
                "{name} {layout:?}: loss differs by {d_loss:e}"
            );
            assert!(
                d_grad <= 1e-5,
                "{name} {layout:?}: classifier grad differs by {d_grad:e}"
            );
            // Without autograd, as evaluation runs (fp32 linears through oneDNN), with
            // the plain weights and with them packed for oneDNN.
            for packed in [false, true] {
                let guard = packed.then(|| model.pack_for_inference().unwrap());
                let out = tch::no_grad(|| {
                    model
                        .forward(&ids, &types, &mask, Some(&labels), false)
                        .unwrap()
                });
                drop(guard);
                let d_logits = max_abs_diff(&out.logits, &theirs_logits) / scale(&theirs_logits);
                let d_hidden =
                    max_abs_diff(&real_tokens(&out.last_hidden_state, &mask), &theirs_hidden)
                        / scale(&theirs_hidden);
                let d_loss =
                    (out.loss.unwrap().double_value(&[]) - case["loss"].as_f64().unwrap()).abs();
                eprintln!("{name} {layout:?} no_grad, packed {packed} (relative): logits {d_logits:.2e} hidden {d_hidden:.2e} loss {d_loss:.2e}");
                assert!(
                    d_logits <= LOGITS_REL && d_hidden <= HIDDEN_REL && d_loss <= 1e-6,
                    "{name} {layout:?} without autograd, packed {packed}: logits {d_logits:e}, hidden {d_hidden:e}, loss {d_loss:e} from HF's"
                );
            }
        }
    }
}

/// Packed weights are a copy: once their guard drops, forwards read the weights again.
#[test]
fn packed_weights_end_with_their_guard() {
    tch::set_num_threads(1);
    let g = golden();
    let model = model_with_head(&["not_equivalent", "equivalent"], &g["classification_head"]);
    let (ids, types, mask) = inputs(&g["cases"][0]);
    let logits = || {
        tch::no_grad(|| {
            model
                .forward(&ids, &types, &mask, None, false)
                .unwrap()
                .logits
        })
    };
    let packed = model.pack_for_inference().unwrap();
    assert!(logits().abs().max().double_value(&[]) > 0.0);
    drop(packed);
    tch::no_grad(|| {
        for (name, mut v) in model.vs.variables() {
            if name.starts_with("classifier.") {
                let _ = v.zero_();
            }
        }
    });
    let d = logits().abs().max().double_value(&[]);
    assert_eq!(d, 0.0, "a zeroed classifier gave logits up to {d:e}");
}

/// Training-mode layouts, and the last layer over the first token only, give the same
/// logits, loss and gradient for every weight (dropout off).
#[test]
fn computation_shortcuts_leave_loss_and_gradients_unchanged() {
    tch::set_num_threads(1);
    let g = golden();
    let mut model = model_with_head(&["not_equivalent", "equivalent"], &g["classification_head"]);
    let case = &g["cases"][0];
    let (ids, types, mask) = inputs(case);
    let labels = Tensor::from_slice(&ints(&case["labels"]));
    // Logits, loss and every weight's gradient (by name) of one forward + backward.
    let logits_loss_and_grads = |model: &BertForSequenceClassification| {
        for (_, mut v) in model.vs.variables() {
            v.zero_grad();
        }
        let out = model
            .forward(&ids, &types, &mask, Some(&labels), false)
            .unwrap();
        let loss = out.loss.unwrap();
        loss.backward();
        let vars: std::collections::BTreeMap<String, Tensor> =
            model.vs.variables().into_iter().collect();
        let grads: Vec<(String, Tensor)> = vars
            .into_iter()
            .map(|(k, v)| (k, v.grad().copy()))
            .collect();
        (out.logits, loss, grads)
    };
    model.set_layout(Layout::Padded);
    let reference = logits_loss_and_grads(&model);
    // (layout, last layer, packed rows rounded to 64 with dummy rows as on CUDA)
    let variants = [
        (Layout::PaddingFree, LastLayer::AllTokens, None),
        (Layout::PaddingFree, LastLayer::AllTokens, Some(64)),
        (Layout::Padded, LastLayer::FirstToken, None),
        (Layout::PaddingFree, LastLayer::FirstToken, None),
        (Layout::PaddingFree, LastLayer::FirstToken, Some(64)),
    ];
    for (layout, last_layer, rows) in variants {
        let what = format!("{layout:?}, {last_layer:?}, rows rounded to {rows:?}");
        model.set_layout(layout);
        model.set_last_layer(last_layer);
        model.model.bert.set_packed_row_multiple(rows);
        let (logits, loss, grads) = logits_loss_and_grads(&model);
        let d = (&reference.0 - &logits).abs().max().double_value(&[]);
        assert!(d <= 1e-5, "{what}: logits differ by {d:e}");
        let d = (&reference.1 - &loss).abs().double_value(&[]);
        assert!(d <= 1e-5, "{what}: loss differs by {d:e}");
        for ((name, a), (_, b)) in reference.2.iter().zip(&grads) {
            let d = (a - b).abs().max().double_value(&[]);
            assert!(d <= 1e-5, "{what}: gradient of {name} differs by {d:e}");
        }
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
    let out = model
        .forward(&ids, &types, &mask, Some(&labels), false)
        .unwrap();
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

fn golden_bf16() -> Value {
    glue_testkit::golden("model_bf16.json")
}

fn mean_abs_diff(ours: &Tensor, theirs: &[f32]) -> f64 {
    let theirs = Tensor::from_slice(theirs).view(ours.size().as_slice());
    (ours.to_kind(Kind::Float) - theirs)
        .abs()
        .mean(Kind::Double)
        .double_value(&[])
}

/// `Precision::Bf16` against HF under `torch.autocast("cpu", dtype=torch.bfloat16)`
/// (tests/golden/model_bf16.json, scripts/golden_autocast.py). Two checks catch a
/// bf16 residual stream: the hidden states come out in fp32, and their mean
/// |difference| at real tokens stays under 1.6e-3. HF's own autocast moves that mean
/// by up to 1.22e-3 (one fp32 ulp of noise in the embeddings, as another addition
/// order or CPU gives; 8.0e-4 for unpadded rows); a residual stream rounded to bf16
/// moves it by 2.11e-3. On a CPU with bf16 instructions (AMD EPYC, AVX512-BF16; the
/// golden was written without them) HF itself is 1.31e-3 (mrpc) and 1.45e-3 (sst2) from
/// the golden, glue-rs the same to the bit, and a bf16 residual stream 1.81e-3 and
/// 2.10e-3: hence 1.6e-3, not tighter (`scripts/golden_autocast.py --check` prints
/// these on any machine). Maxima are sanity bounds only: batch-shape noise alone flips
/// bf16 roundings by up to 2.4e-4 in logits and 1.0e-3 in pooled outputs.
#[test]
fn bf16_matches_hf_autocast_in_both_layouts() {
    tch::set_num_threads(1);
    let g = golden_bf16();
    let mut model = model_with_head(&["not_equivalent", "equivalent"], &g["classification_head"]);
    model.set_precision(bert_model::Precision::Bf16).unwrap();
    for layout in LAYOUTS {
        model.set_layout(layout);
        for case in g["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let (ids, types, mask) = inputs(case);
            let labels = Tensor::from_slice(&ints(&case["labels"]));
            // As evaluation runs: bf16 weights packed for oneDNN (on bf16 CPUs).
            let packed = model.pack_for_inference().unwrap();
            let out_packed = tch::no_grad(|| {
                model
                    .forward(&ids, &types, &mask, Some(&labels), false)
                    .unwrap()
            });
            drop(packed);
            let out = tch::no_grad(|| {
                model
                    .forward(&ids, &types, &mask, Some(&labels), false)
                    .unwrap()
            });
            let d = (&out.logits - &out_packed.logits)
                .abs()
                .max()
                .double_value(&[]);
            assert!(
                d <= 1e-3,
                "bf16 {name} {layout:?}: packed weights move logits by {d:e}"
            );
            let hidden = real_tokens(&out_packed.last_hidden_state, &mask);
            let d = mean_abs_diff(&hidden, &floats(&case["hidden_real_tokens"]));
            assert!(
                d <= 1.6e-3,
                "bf16 {name} {layout:?} packed: hidden states differ by {d:e} on average"
            );
            assert_eq!(out.logits.kind(), Kind::Float);
            assert_eq!(
                out.last_hidden_state.kind(),
                Kind::Float,
                "the residual stream must stay fp32 under autocast"
            );
            let hidden = real_tokens(&out.last_hidden_state, &mask);
            let theirs_hidden = floats(&case["hidden_real_tokens"]);
            let mean_hidden = mean_abs_diff(&hidden, &theirs_hidden);
            let d_logits = max_abs_diff(&out.logits, &floats(&case["logits"]));
            let d_pooled = max_abs_diff(&out.pooled_output, &floats(&case["pooled_output"]));
            let d_loss =
                (out.loss.unwrap().double_value(&[]) - case["loss"][0].as_f64().unwrap()).abs();
            eprintln!("bf16 {name} {layout:?}: hidden mean {mean_hidden:.2e}, logits {d_logits:.2e}, pooled {d_pooled:.2e}, loss {d_loss:.2e}");
            assert!(
                mean_hidden <= 1.6e-3,
                "bf16 {name} {layout:?}: hidden states differ by {mean_hidden:e} on average"
            );
            assert!(
                d_logits <= 2e-3,
                "bf16 {name} {layout:?}: logits differ by {d_logits:e}"
            );
            assert!(
                d_pooled <= 5e-3,
                "bf16 {name} {layout:?}: pooled output differs by {d_pooled:e}"
            );
            assert!(
                d_loss <= 1e-3,
                "bf16 {name} {layout:?}: loss differs by {d_loss:e}"
            );
        }
    }
}
