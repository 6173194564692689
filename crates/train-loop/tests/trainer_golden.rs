//! The Trainer's wiring against HF's Trainer (tests/golden/trainer.json, written by
//! scripts/golden_trainer.py): same data order, same classifier head, dropout off,
//! batch 4 with gradient accumulation 2, weight decay, warmup. Per optimizer step the
//! logged learning rate, loss and gradient norm must agree, which they cannot if the
//! schedule is stepped at the wrong index, accumulation is scaled wrongly, clipping
//! comes after the update, decay reaches biases, or the optimizer step is skipped.

use std::fs;

use bert_model::BertForSequenceClassification;
use glue_data::sampler::shuffled_indices;
use glue_data::{load_split, Collator, Preprocessor, Task};
use glue_testkit::{golden, json_f64s, mirror_dir, test_model_dir};
use serde_json::Value;
use tch::{Device, Tensor};
use train_loop::{IntervalStrategy, Trainer, TrainingArgs};

/// The test model with dropout switched off, as the golden's HF model had it.
fn model_without_dropout(head: &Value, dir: &std::path::Path) -> BertForSequenceClassification {
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
    let floats = |v: &Value| -> Vec<f32> { json_f64s(v).into_iter().map(|x| x as f32).collect() };
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

#[test]
fn first_steps_match_hf_trainer_with_accumulation_and_decay() {
    tch::set_num_threads(1);
    let g = golden("trainer.json");
    let s = &g["settings"];
    let int = |k: &str| s[k].as_u64().unwrap();
    let train = load_split(&mirror_dir(), Task::Mrpc, "train").unwrap();
    // The golden's Python re-implementation of our shuffle saw the same order.
    let order = shuffled_indices(train.len(), int("seed"), 0);
    let theirs: Vec<usize> = json_f64s(&g["first_rows"])
        .into_iter()
        .map(|x| x as usize)
        .collect();
    assert_eq!(order[..theirs.len()], theirs[..]);

    let tmp = tempfile::tempdir().unwrap();
    let model = model_without_dropout(&g["classification_head"], tmp.path());
    let pre = Preprocessor::from_file(&test_model_dir(), int("max_seq_length") as usize).unwrap();
    let args = TrainingArgs {
        output_dir: tmp.path().join("out"),
        max_steps: int("max_steps"),
        per_device_train_batch_size: int("per_device_train_batch_size") as usize,
        gradient_accumulation_steps: int("gradient_accumulation_steps") as usize,
        weight_decay: s["weight_decay"].as_f64().unwrap(),
        warmup_steps: int("warmup_steps"),
        learning_rate: s["learning_rate"].as_f64().unwrap(),
        seed: int("seed"),
        logging_steps: 1,
        eval_strategy: IntervalStrategy::No,
        save_strategy: IntervalStrategy::No,
        ..TrainingArgs::default()
    };
    let mut trainer = Trainer {
        args,
        task: Task::Mrpc,
        model,
        collator: Collator::new(&pre),
        train_data: pre.encode_split(&train).unwrap(),
        eval_sets: Vec::new(),
        callbacks: vec![],
    };
    let out = trainer.train(None).unwrap();
    let ours: Vec<&serde_json::Map<String, Value>> = out
        .state
        .log_history
        .iter()
        .filter(|e| e.contains_key("loss"))
        .collect();
    let theirs = g["steps"].as_array().unwrap();
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
