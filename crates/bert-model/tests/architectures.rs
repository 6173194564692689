//! DistilBERT, RoBERTa and DeBERTa-v2 parity with HF transformers:
//! tests/golden/<arch>-tiny/ is a random `*ForSequenceClassification` saved by
//! transformers (RoBERTa's with a byte-level BPE tokenizer trained on MRPC, DeBERTa's
//! with a Unigram one), and tests/golden/<arch>.json its outputs
//! (scripts/golden_distilbert.py, scripts/golden_roberta.py, scripts/golden_deberta.py).

use bert_model::{Architecture, BertConfig, BertForSequenceClassification, LastLayer, Layout};
use glue_testkit::{golden, golden_model_dir, json_f64s, json_i64s};
use std::path::Path;

use glue_data::Preprocessor;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn folder(architecture: &str) -> String {
    golden_model_dir(architecture)
        .to_string_lossy()
        .into_owned()
}

fn max_abs_diff(ours: &Tensor, theirs: &Value) -> f64 {
    let ours: Vec<f32> = Vec::try_from(ours.to_kind(Kind::Float).flatten(0, -1)).unwrap();
    let theirs = json_f64s(theirs);
    assert_eq!(ours.len(), theirs.len(), "element count");
    ours.iter()
        .zip(&theirs)
        .map(|(a, b)| (*a as f64 - b).abs())
        .fold(0.0, f64::max)
}

fn matrix(v: &Value) -> Tensor {
    let rows: Vec<Vec<i64>> = v.as_array().unwrap().iter().map(json_i64s).collect();
    let width = rows[0].len() as i64;
    Tensor::from_slice(&rows.concat()).view([-1, width])
}

/// Logits, loss, hidden states and head gradients as HF computes them, both layouts,
/// with the last layer over every token or over the first only.
#[test]
fn distilbert_matches_transformers() {
    matches_transformers(
        "distilbert",
        Architecture::DistilBert,
        &[
            ("classifier.weight", "/classifier_weight_grad"),
            ("pre_classifier.weight", "/pre_classifier_weight_grad"),
        ],
    );
}

/// The same for RoBERTa: padding id 1, positions from padding_idx + 1, its head.
#[test]
fn roberta_matches_transformers() {
    matches_transformers(
        "roberta",
        Architecture::Roberta,
        &[
            ("classifier.out_proj.weight", "/out_proj_weight_grad"),
            ("classifier.dense.weight", "/dense_weight_grad"),
        ],
    );
}

/// The same for DeBERTa-v3's settings: disentangled attention with log-bucketed
/// relative positions (8 buckets, so 24 tokens reach them), shared projections, the
/// pairwise mask, `ContextPooler`; gradients down to the relative embeddings.
#[test]
fn deberta_v2_matches_transformers() {
    matches_transformers(
        "deberta",
        Architecture::DebertaV2,
        &[
            ("classifier.weight", "/grads/classifier.weight"),
            ("pooler.dense.weight", "/grads/pooler.dense.weight"),
            (
                "deberta.encoder.layer.0.attention.self.query_proj.weight",
                "/grads/deberta.encoder.layer.0.attention.self.query_proj.weight",
            ),
            (
                "deberta.encoder.rel_embeddings.weight",
                "/grads/deberta.encoder.rel_embeddings.weight",
            ),
        ],
    );
}

fn matches_transformers(name: &str, architecture: Architecture, grads: &[(&str, &str)]) {
    let g = golden(&format!("{name}.json"));
    let (model, report) =
        BertForSequenceClassification::from_pretrained(&folder(name), None, Device::Cpu).unwrap();
    assert_eq!(model.config.architecture, architecture);
    assert!(report.newly_initialized.is_empty(), "{report}");
    assert!(report.unused.is_empty(), "{report}");
    let ids = matrix(&g["input_ids"]);
    let mask = matrix(&g["attention_mask"]);
    let labels = Tensor::from_slice(&json_i64s(&g["labels"]));
    let mut model = model;
    let modes = [Layout::Padded, Layout::PaddingFree]
        .into_iter()
        .flat_map(|l| [(l, LastLayer::AllTokens), (l, LastLayer::FirstToken)]);
    for (layout, last_layer) in modes {
        model.set_layout(layout);
        model.set_last_layer(last_layer);
        let layout = format!("{layout:?}, {last_layer:?}");
        for (_, mut v) in model.vs.variables() {
            v.zero_grad();
        }
        // DistilBERT has no token types, RoBERTa one: zeros, as its tokenizer gives.
        let out = model
            .forward(&ids, &ids.zeros_like(), &mask, Some(&labels), false)
            .unwrap();
        let loss = out.loss.unwrap();
        loss.backward();
        let d_logits = max_abs_diff(&out.logits, &g["logits"]);
        assert!(d_logits < 1e-5, "{layout}: logits differ by {d_logits}");
        let d_loss = (loss.double_value(&[]) - g["loss"].as_f64().unwrap()).abs();
        assert!(d_loss < 1e-5, "{layout}: loss differs by {d_loss}");
        let vars = model.vs.variables();
        for (name, key) in grads {
            let d = max_abs_diff(&vars[*name].grad(), g.pointer(key).unwrap());
            assert!(d < 1e-5, "{layout}: {name} gradient differs by {d}");
        }
        if last_layer == LastLayer::FirstToken {
            continue;
        }
        let index = mask.flatten(0, -1).nonzero().squeeze_dim(1);
        let hidden = out
            .last_hidden_state
            .reshape([-1, model.config.hidden_size])
            .index_select(0, &index);
        let theirs: Vec<Value> = g["hidden_at_real_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|row| row.as_array().unwrap().clone())
            .collect();
        let d_hidden = max_abs_diff(&hidden, &Value::Array(theirs));
        assert!(
            d_hidden < 1e-5,
            "{layout}: hidden states differ by {d_hidden}"
        );
    }
}

/// A pretrained DeBERTa-v3 checkpoint's layout (as microsoft/deberta-v3-base's: the
/// encoder under `deberta.`, an absolute position table its config does not use, the
/// MLM and replaced-token-detection heads, no pooler or classifier) loads as
/// transformers loads it: `pooler` and `classifier` newly initialized, the pretraining
/// heads reported unused, the position table dropped without a word
/// (`_keys_to_ignore_on_load_unexpected`).
#[test]
fn a_deberta_v3_pretraining_checkpoint_loads_as_transformers_does() {
    let source = golden_model_dir("deberta");
    let tmp = tempfile::tempdir().unwrap();
    for file in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(source.join(file), tmp.path().join(file)).unwrap();
    }
    let mut tensors: Vec<(String, Tensor)> =
        Tensor::read_safetensors(source.join("model.safetensors"))
            .unwrap()
            .into_iter()
            .filter(|(k, _)| k.starts_with("deberta."))
            .collect();
    let encoder_weight = tensors
        .iter()
        .find(|(k, _)| k == "deberta.encoder.rel_embeddings.weight")
        .map(|(_, t)| t.copy())
        .unwrap();
    for (name, shape) in [
        (
            "deberta.embeddings.position_embeddings.weight",
            vec![40, 16],
        ),
        ("lm_predictions.lm_head.dense.weight", vec![16, 16]),
        ("lm_predictions.lm_head.bias", vec![300]),
        ("mask_predictions.classifier.weight", vec![1, 16]),
    ] {
        tensors.push((
            name.to_string(),
            Tensor::zeros(shape, (Kind::Float, Device::Cpu)),
        ));
    }
    Tensor::write_safetensors(&tensors, tmp.path().join("model.safetensors")).unwrap();
    let (model, report) = BertForSequenceClassification::from_pretrained(
        tmp.path().to_str().unwrap(),
        Some(&["not_equivalent", "equivalent"]),
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        report.newly_initialized,
        [
            "classifier.bias",
            "classifier.weight",
            "pooler.dense.bias",
            "pooler.dense.weight"
        ]
    );
    assert_eq!(
        report.unused,
        [
            "lm_predictions.lm_head.bias",
            "lm_predictions.lm_head.dense.weight",
            "mask_predictions.classifier.weight"
        ]
    );
    let loaded = &model.vs.variables()["deberta.encoder.rel_embeddings.weight"];
    assert!(loaded.equal(&encoder_weight));
}

/// A save is a DistilBERT folder again (its own config names), and reloads to the
/// same logits.
#[test]
fn distilbert_save_pretrained_round_trips() {
    let g = golden("distilbert.json");
    let (model, _) =
        BertForSequenceClassification::from_pretrained(&folder("distilbert"), None, Device::Cpu)
            .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let saved = tmp.path().join("saved");
    model.save_pretrained(&saved).unwrap();
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(saved.join("config.json")).unwrap()).unwrap();
    let original: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(&folder("distilbert")).join("config.json")).unwrap(),
    )
    .unwrap();
    for key in [
        "dim",
        "n_layers",
        "n_heads",
        "hidden_dim",
        "activation",
        "dropout",
        "attention_dropout",
        "seq_classif_dropout",
        "sinusoidal_pos_embds",
        "id2label",
    ] {
        assert_eq!(config[key], original[key], "{key}");
    }
    assert_eq!(config["model_type"], "distilbert");
    assert_eq!(
        config["architectures"][0],
        "DistilBertForSequenceClassification"
    );
    for bert_only in [
        "hidden_size",
        "type_vocab_size",
        "layer_norm_eps",
        "num_hidden_layers",
    ] {
        assert!(config.get(bert_only).is_none(), "{bert_only} written");
    }
    let (again, report) =
        BertForSequenceClassification::from_pretrained(saved.to_str().unwrap(), None, Device::Cpu)
            .unwrap();
    assert!(report.newly_initialized.is_empty());
    let ids = matrix(&g["input_ids"]);
    let mask = matrix(&g["attention_mask"]);
    let a = model
        .forward(&ids, &ids, &mask, None, false)
        .unwrap()
        .logits;
    let b = again
        .forward(&ids, &ids, &mask, None, false)
        .unwrap()
        .logits;
    assert!(a.equal(&b));
}

/// An encoder this crate does not run is one line naming the ones it does.
#[test]
fn unsupported_model_type_names_the_supported_ones() {
    let error = BertConfig::from_json(serde_json::json!({"model_type": "deberta"})).unwrap_err();
    assert_eq!(
        error,
        "field `model_type`: `deberta` is not supported; supported: bert, distilbert, roberta, \
         deberta-v2"
    );
    // DeBERTa-v2 settings this crate does not run are named, not ignored.
    let error = BertConfig::from_json(
        serde_json::json!({"model_type": "deberta-v2", "conv_kernel_size": 3}),
    )
    .unwrap_err();
    assert!(error.starts_with("field `conv_kernel_size`:"), "{error}");
    let error = BertConfig::from_json(
        serde_json::json!({"model_type": "deberta-v2", "pos_att_type": "p2c|p2p"}),
    )
    .unwrap_err();
    assert!(error.starts_with("field `pos_att_type`: `p2p`"), "{error}");
    // deberta-v3-base's own config.json: the string form of pos_att_type, v2 defaults.
    let v3 = BertConfig::from_json(serde_json::json!({
        "model_type": "deberta-v2", "hidden_size": 768, "num_hidden_layers": 12,
        "num_attention_heads": 12, "intermediate_size": 3072, "relative_attention": true,
        "position_buckets": 256, "norm_rel_ebd": "layer_norm", "share_att_key": true,
        "pos_att_type": "p2c|c2p", "max_relative_positions": -1,
        "position_biased_input": false
    }))
    .unwrap();
    let d = v3.deberta.as_ref().unwrap();
    assert!(d.c2p() && d.p2c() && d.layer_norm_rel_embeddings());
    assert_eq!((v3.vocab_size, v3.type_vocab_size), (128100, 0));
    assert_eq!((d.span(&v3), v3.layer_norm_eps), (256, 1e-7));
    // DistilBERT field errors name DistilBERT's field.
    let error = BertConfig::from_json(serde_json::json!({"model_type": "distilbert", "dim": "x"}))
        .unwrap_err();
    assert!(error.starts_with("field `dim`:"), "{error}");
}

/// DeBERTa pairs through its tokenizer.json (a Unigram model, as deberta-v3's
/// SentencePiece one), truncated at 24: HF's fast-tokenizer ids and token types,
/// `[CLS] A [SEP] B [SEP]`.
#[test]
fn deberta_pairs_tokenize_as_transformers() {
    let g = golden("deberta.json");
    let max = g["max_length"].as_u64().unwrap() as usize;
    let pre = Preprocessor::from_file(&golden_model_dir("deberta"), max).unwrap();
    assert_eq!(pre.pad_id(), 0, "[PAD]");
    let split = glue_data::load_split(
        &glue_testkit::mirror_dir(),
        glue_data::Task::Mrpc,
        "validation",
    )
    .unwrap();
    let encoded = pre.encode_split(&split).unwrap();
    for (k, row) in g["rows"].as_array().unwrap().iter().enumerate() {
        let row = row.as_u64().unwrap() as usize;
        let features = &encoded.features[row];
        let as_i64 = |v: &[u32]| v.iter().map(|&i| i as i64).collect::<Vec<_>>();
        let ids = json_i64s(&g["tokenized"]["input_ids"][k]);
        assert_eq!(as_i64(&features.input_ids), ids, "row {row}");
        let types = json_i64s(&g["tokenized"]["token_type_ids"][k]);
        assert_eq!(as_i64(&features.token_type_ids), types, "row {row}");
    }
}

/// RoBERTa pairs through the model's own tokenizer.json (byte-level BPE), truncated at
/// 24: the ids HF's fast tokenizer gives, `<s> A </s></s> B </s>`, one token type.
#[test]
fn roberta_pairs_tokenize_as_transformers() {
    let g = golden("roberta.json");
    let dir = folder("roberta");
    let max = g["max_length"].as_u64().unwrap() as usize;
    let pre = Preprocessor::from_file(Path::new(&dir), max).unwrap();
    assert_eq!(pre.pad_id(), 1, "RoBERTa's <pad>");
    let split = glue_data::load_split(
        &glue_testkit::mirror_dir(),
        glue_data::Task::Mrpc,
        "validation",
    )
    .unwrap();
    let encoded = pre.encode_split(&split).unwrap();
    for (k, row) in g["rows"].as_array().unwrap().iter().enumerate() {
        let row = row.as_u64().unwrap() as usize;
        let theirs = json_i64s(&g["tokenized"]["input_ids"][k]);
        let ours: Vec<i64> = encoded.features[row]
            .input_ids
            .iter()
            .map(|&i| i as i64)
            .collect();
        assert_eq!(ours, theirs, "row {row}");
        assert!(encoded.features[row].token_type_ids.iter().all(|&t| t == 0));
    }
    // Positions start at pad_token_id + 1: roberta-base's 514 rows hold 512 tokens, these 40 hold 38.
    let (model, _) =
        BertForSequenceClassification::from_pretrained(&dir, None, Device::Cpu).unwrap();
    assert_eq!(model.config.max_sequence_length(), 38);
}
