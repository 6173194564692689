//! Shared by the golden tests against HF's Trainer.

use std::fs;

use bert_model::BertForSequenceClassification;
use glue_data::Task;
use glue_testkit::{json_f64s, test_model_dir};
use serde_json::Value;
use tch::{Device, Tensor};

pub fn floats(v: &Value) -> Vec<f32> {
    json_f64s(v).into_iter().map(|x| x as f32).collect()
}

/// The test model with dropout switched off, as the golden's HF model had it.
pub fn model_without_dropout(head: &Value, dir: &std::path::Path) -> BertForSequenceClassification {
    for entry in fs::read_dir(test_model_dir()).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_file() {
            fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    let config_path = dir.join("config.json");
    let mut config: Value =
        serde_json::from_str(&fs::read_to_string(&config_path).unwrap()).unwrap();
    config["hidden_dropout_prob"] = Value::from(0.0);
    config["attention_probs_dropout_prob"] = Value::from(0.0);
    config["classifier_dropout"] = Value::from(0.0);
    fs::write(&config_path, config.to_string()).unwrap();
    let (model, _) = BertForSequenceClassification::from_pretrained(
        dir.to_str().unwrap(),
        Some(Task::Mrpc.spec().label_names),
        Device::Cpu,
    )
    .unwrap();
    let mut vars = model.vs.variables();
    tch::no_grad(|| {
        vars.get_mut("classifier.weight")
            .unwrap()
            .copy_(&Tensor::from_slice(&floats(&head["classifier.weight"])).view([2, -1]));
        vars.get_mut("classifier.bias")
            .unwrap()
            .copy_(&Tensor::from_slice(&floats(&head["classifier.bias"])));
    });
    model
}

/// Per logged step: learning rate, loss and gradient norm as HF's Trainer logged them.
pub fn assert_steps_match(log_history: &[serde_json::Map<String, Value>], steps: &Value) {
    let ours: Vec<&serde_json::Map<String, Value>> = log_history
        .iter()
        .filter(|e| e.contains_key("loss"))
        .collect();
    let theirs = steps.as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (o, t) in ours.iter().zip(theirs) {
        let step = t["step"].as_u64().unwrap();
        let get = |m: &Value, k: &str| m[k].as_f64().unwrap();
        let o = Value::Object((*o).clone());
        assert_eq!(o["step"].as_u64(), Some(step));
        let (lr, loss, norm) = (
            get(&o, "learning_rate"),
            get(&o, "loss"),
            get(&o, "grad_norm"),
        );
        let (t_lr, t_loss, t_norm) = (get(t, "learning_rate"), get(t, "loss"), get(t, "grad_norm"));
        eprintln!("step {step}: lr {lr:e}/{t_lr:e} loss {loss:.7}/{t_loss:.7} grad_norm {norm:.6}/{t_norm:.6}");
        assert!(
            (lr - t_lr).abs() <= 1e-12,
            "step {step}: learning rate {lr} vs HF {t_lr}"
        );
        assert!(
            (loss - t_loss).abs() <= 2e-5,
            "step {step}: loss {loss} vs HF {t_loss}"
        );
        assert!(
            (norm - t_norm).abs() / t_norm <= 2e-4,
            "step {step}: grad norm {norm} vs HF {t_norm}"
        );
    }
}
