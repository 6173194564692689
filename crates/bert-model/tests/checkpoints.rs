//! Checkpoint round trips and error paths, on the real test model.

use std::fs;
use std::path::Path;
use std::process::Command;

use bert_model::{BertError, BertForSequenceClassification, LoadReport};
use glue_testkit::{reference_python, test_model_dir, workspace_root, HubServer};
use tch::{Device, Kind, Tensor};

const MRPC: &[&str] = &["not_equivalent", "equivalent"];

/// Loads a checkpoint with MRPC's two-class head on CPU.
fn load_mrpc(id_or_path: &str) -> Result<(BertForSequenceClassification, LoadReport), BertError> {
    BertForSequenceClassification::from_pretrained(id_or_path, Some(MRPC), Device::Cpu)
}

/// The fixed input of scripts/check_hf_load.py.
fn fixed_input() -> (Tensor, Tensor, Tensor) {
    let ids = Tensor::from_slice(&glue_testkit::hf_check_input_ids(30522)).view([2, 8]);
    let mask = ids.ne(0).to_kind(Kind::Int64);
    (ids.shallow_clone(), ids.zeros_like(), mask)
}

fn logits(model: &BertForSequenceClassification) -> Vec<f32> {
    let (ids, types, mask) = fixed_input();
    let out = model.forward(&ids, &types, &mask, None, false).unwrap();
    Vec::try_from(out.logits.flatten(0, -1)).unwrap()
}

/// Bit-identical pooled output to the test model loaded the plain way.
fn assert_same_encoder_as_the_test_model(model: &BertForSequenceClassification) {
    let (plain, _) = load_mrpc(test_model_dir().to_str().unwrap()).unwrap();
    let (ids, types, mask) = fixed_input();
    let a = model
        .forward(&ids, &types, &mask, None, false)
        .unwrap()
        .pooled_output;
    let b = plain
        .forward(&ids, &types, &mask, None, false)
        .unwrap()
        .pooled_output;
    assert!(a.allclose(&b, 0.0, 0.0, false));
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn save_pretrained_round_trips_in_rust_and_in_hf_transformers() {
    tch::manual_seed(7);
    let (model, _) = load_mrpc(test_model_dir().to_str().unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("saved");
    model.save_pretrained(&out).unwrap();
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "vocab.txt",
    ] {
        assert!(out.join(f).is_file(), "{f} missing from the saved folder");
    }
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "no temp folder left"
    );
    let config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(config["id2label"]["1"], "equivalent");
    assert_eq!(config["label2id"]["not_equivalent"], 0);

    // Back into Rust: every weight found, same logits.
    let (again, report) =
        BertForSequenceClassification::from_pretrained(out.to_str().unwrap(), None, Device::Cpu)
            .unwrap();
    assert!(
        report.newly_initialized.is_empty() && report.unused.is_empty(),
        "{report:?}"
    );
    let (a, b) = (logits(&model), logits(&again));
    assert!(
        a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-6),
        "{a:?} vs {b:?}"
    );

    // And into HF transformers, when the reference venv is there.
    let Some(python) = reference_python() else {
        return;
    };
    let output = Command::new(python)
        .arg(workspace_root().join("scripts/check_hf_load.py"))
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let hf: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(hf["class"], "BertForSequenceClassification");
    assert_eq!(hf["missing_keys"], serde_json::json!([]), "{hf}");
    assert_eq!(hf["unexpected_keys"], serde_json::json!([]), "{hf}");
    assert_eq!(hf["mismatched_keys"], serde_json::json!([]), "{hf}");
    assert_eq!(hf["id2label"]["0"], "not_equivalent");
    let theirs: Vec<f64> = hf["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    for (ours, theirs) in a.iter().zip(&theirs) {
        assert!(
            (*ours as f64 - theirs).abs() <= 1e-5,
            "logits {a:?} vs HF {theirs:?}"
        );
    }
}

#[test]
fn loads_from_a_hub_id_through_the_loopback_hub() {
    let hub =
        HubServer::start().with_model("sentence-transformers/all-MiniLM-L6-v2", &test_model_dir());
    let tmp = tempfile::tempdir().unwrap();
    std::env::set_var("HF_ENDPOINT", hub.endpoint());
    std::env::set_var("HF_HOME", tmp.path());
    let (model, report) = load_mrpc("sentence-transformers/all-MiniLM-L6-v2").unwrap();
    assert_eq!(
        report.newly_initialized,
        vec!["classifier.bias", "classifier.weight"]
    );
    assert!(model
        .tokenizer_dir
        .as_ref()
        .unwrap()
        .join("tokenizer.json")
        .is_file());
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.ends_with("resolve/main/model.safetensors")));
    let err = BertForSequenceClassification::from_pretrained(
        "no-such-org/no-such-model",
        None,
        Device::Cpu,
    )
    .unwrap_err();
    assert!(err.to_string().contains("not found"), "{err}");
}

#[test]
fn legacy_names_prefixes_and_pretraining_heads() {
    // A checkpoint with the `bert.` prefix, TF-style gamma/beta names and a `cls.` head.
    let dir = test_model_dir();
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&dir, tmp.path());
    let tensors = Tensor::read_safetensors(dir.join("model.safetensors")).unwrap();
    let renamed: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(k, t)| {
            let k = k
                .replace("LayerNorm.weight", "LayerNorm.gamma")
                .replace("LayerNorm.bias", "LayerNorm.beta");
            (format!("bert.{k}"), t)
        })
        .chain([(
            "cls.predictions.bias".to_string(),
            Tensor::zeros([30522], (Kind::Float, Device::Cpu)),
        )])
        .collect();
    Tensor::write_safetensors(&renamed, tmp.path().join("model.safetensors")).unwrap();
    let (legacy, report) = load_mrpc(tmp.path().to_str().unwrap()).unwrap();
    assert_eq!(
        report.newly_initialized,
        vec!["classifier.bias", "classifier.weight"]
    );
    assert_eq!(report.unused, vec!["cls.predictions.bias"]);
    assert!(report
        .to_string()
        .contains("newly initialized: classifier.bias, classifier.weight"));
    assert_same_encoder_as_the_test_model(&legacy);
}

#[test]
fn pytorch_model_bin_loads_like_safetensors() {
    let Some(python) = reference_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&test_model_dir(), tmp.path());
    fs::remove_file(tmp.path().join("model.safetensors")).unwrap();
    let script = format!(
        "import torch; from safetensors.torch import load_file; \
         torch.save(load_file('{}'), '{}')",
        test_model_dir().join("model.safetensors").display(),
        tmp.path().join("pytorch_model.bin").display()
    );
    let status = Command::new(python).args(["-c", &script]).status().unwrap();
    assert!(status.success());
    let (model, report) = load_mrpc(tmp.path().to_str().unwrap()).unwrap();
    assert_eq!(
        report.newly_initialized,
        vec!["classifier.bias", "classifier.weight"]
    );
    assert_same_encoder_as_the_test_model(&model);
}

fn load_err(dir: &Path) -> BertError {
    load_mrpc(dir.to_str().unwrap()).unwrap_err()
}

#[test]
fn bad_checkpoints_give_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();

    // Missing config.
    let empty = tmp.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let err = load_err(&empty);
    assert!(
        matches!(err, BertError::Hub(_)) && err.to_string().contains("config.json"),
        "{err}"
    );

    // Truncated safetensors.
    let truncated = tmp.path().join("truncated");
    copy_dir(&test_model_dir(), &truncated);
    let weights = truncated.join("model.safetensors");
    let len = fs::metadata(&weights).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    let err = load_err(&truncated);
    assert!(matches!(err, BertError::Weights { .. }), "{err}");
    assert!(err.to_string().contains("model.safetensors"), "{err}");

    // Wrong shapes: the config promises a smaller vocabulary than the weights hold.
    let shapes = tmp.path().join("shapes");
    copy_dir(&test_model_dir(), &shapes);
    let config = fs::read_to_string(shapes.join("config.json"))
        .unwrap()
        .replace("30522", "30000");
    fs::write(shapes.join("config.json"), config).unwrap();
    let err = load_err(&shapes);
    assert!(matches!(err, BertError::ShapeMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("embeddings.word_embeddings.weight")
            && msg.contains("[30522, 384]")
            && msg.contains("[30000, 384]"),
        "{msg}"
    );

    // Unknown activation.
    let act = tmp.path().join("act");
    copy_dir(&test_model_dir(), &act);
    let config = fs::read_to_string(act.join("config.json"))
        .unwrap()
        .replace("\"gelu\"", "\"swish\"");
    fs::write(act.join("config.json"), config).unwrap();
    let err = load_err(&act);
    let msg = err.to_string();
    assert!(matches!(err, BertError::Config { .. }), "{msg}");
    assert!(
        msg.contains("config.json") && msg.contains("hidden_act") && msg.contains("swish"),
        "{msg}"
    );
}

/// libtorch failures inside the forward come back as errors (tch's fallible `f_*`
/// calls), not as panics: the callers turn them into one-line messages.
#[test]
fn forward_failures_are_errors_not_panics() {
    let (model, _) = load_mrpc(test_model_dir().to_str().unwrap()).unwrap();
    let (ids, types, mask) = fixed_input();
    // A token id past the 30522-row embedding table (a tokenizer bigger than the model).
    let too_big = ids.ones_like() * 40_000;
    for layout in [bert_model::Layout::Padded, bert_model::Layout::PaddingFree] {
        let mut model = load_mrpc(test_model_dir().to_str().unwrap()).unwrap().0;
        model.set_layout(layout);
        let error = model
            .forward(&too_big, &types, &mask, None, false)
            .expect_err("id 40000 is outside the vocabulary");
        assert!(matches!(error, BertError::Torch(_)), "{error:?}");
        assert!(error.to_string().contains("index out of range"), "{error}");
        assert!(!error.is_out_of_memory());
    }
    // A batch whose first intermediate (2^38 x 512 one-byte or four-byte values) is past
    // any address space: the allocation fails in every overcommit mode, and the inputs
    // cost nothing (expanded from one element).
    let huge = [1i64 << 38, 512];
    let huge_ids = Tensor::zeros([1, 1], (Kind::Int64, Device::Cpu)).expand(huge, false);
    let huge_mask = Tensor::ones([1, 1], (Kind::Int64, Device::Cpu)).expand(huge, false);
    let error = tch::no_grad(|| model.forward(&huge_ids, &huge_ids, &huge_mask, None, false))
        .expect_err("2^47 bytes cannot be allocated");
    assert!(error.is_out_of_memory(), "{error}");
    // The model still works afterwards.
    let out = model.forward(&ids, &types, &mask, None, false).unwrap();
    assert_eq!(out.logits.size(), [2, 2]);
}
