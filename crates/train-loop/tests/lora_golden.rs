//! LoRA fine-tuning against PEFT under HF's Trainer (tests/golden/lora.json, written by
//! scripts/golden_lora.py): the same head and initial lora_A, dropout off, 4 steps.
//! Per step the loss and gradient norm must agree, and so must the trained lora_B and
//! classifier, which they cannot if an adapter sits on the wrong layer, the scaling is
//! off, the base is not frozen (the norm and the decay would see it), or the head is
//! not trained.

use bert_model::LoraConfig;
use glue_data::{load_split, Collator, Preprocessor, Task};
use glue_testkit::{golden, mirror_dir, test_model_dir};
use serde_json::Value;
use tch::Tensor;
use train_loop::{IntervalStrategy, Trainer, TrainingArgs};

mod common;
use common::{assert_steps_match, floats, model_without_dropout};

#[test]
fn lora_steps_and_adapter_weights_match_peft() {
    tch::set_num_threads(1);
    let g = golden("lora.json");
    let s = &g["settings"];
    let int = |k: &str| s[k].as_u64().unwrap();
    let train = load_split(&mirror_dir(), Task::Mrpc, "train").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let base = model_without_dropout(&g["classification_head"], tmp.path());
    let lora = LoraConfig {
        r: s["lora_r"].as_i64().unwrap(),
        lora_alpha: s["lora_alpha"].as_f64().unwrap(),
        ..LoraConfig::new(base.config.architecture)
    };
    let model = base.with_lora(lora).unwrap();
    // PEFT's random lora_A, installed; lora_B starts at zero on both sides.
    let mut vars = model.vs.variables();
    let initial = g["initial_lora_A"].as_object().unwrap();
    let adapters: Vec<&String> = vars.keys().filter(|k| k.contains(".lora_")).collect();
    assert_eq!(
        adapters.len(),
        2 * initial.len(),
        "adapters on query and value of 6 layers"
    );
    tch::no_grad(|| {
        for (name, values) in initial {
            let var = vars.get_mut(name).unwrap_or_else(|| panic!("no {name}"));
            let size = var.size();
            var.copy_(&Tensor::from_slice(&floats(values)).view(size.as_slice()));
        }
    });
    let trainable: i64 = vars
        .values()
        .filter(|t| t.requires_grad())
        .map(|t| t.numel() as i64)
        .sum();
    assert_eq!(trainable, g["trainable_parameters"].as_i64().unwrap());

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
        lora_r: s["lora_r"].as_i64(),
        lora_alpha: s["lora_alpha"].as_f64().unwrap(),
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
    assert_steps_match(&out.state.log_history, &g["steps"]);
    let vars = trainer.model.vs.variables();
    for (name, theirs) in g["final"].as_object().unwrap() {
        let ours: Vec<f32> = Vec::try_from(vars[name].flatten(0, -1)).unwrap();
        let theirs = floats(theirs);
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let scale = theirs.iter().map(|x| x.abs()).fold(0f32, f32::max);
        // HF's own spread (eager vs SDPA attention) is up to 5.6e-4 of the scale here:
        // Adam turns fp32 noise in small gradients into lr-sized sign flips.
        let spread = g["final_spread_eager_vs_sdpa"][name].as_f64().unwrap() as f32;
        let bound = (1e-4 * scale.max(1e-3)).max(10.0 * spread);
        eprintln!("{name}: max |diff| {worst:e} (values up to {scale:e}, bound {bound:e})");
        assert!(worst <= bound, "{name} differs by {worst}");
    }

    // The adapter in PEFT's format; PEFT loads it onto the base and gets our logits.
    let adapter = tmp.path().join("adapter");
    trainer.model.save_adapter(&adapter).unwrap();
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["r"], 2);
    assert_eq!(config["task_type"], "SEQ_CLS");
    let Some(theirs) = glue_testkit::hf_load_logits(&adapter, "PeftModelForSequenceClassification")
    else {
        return;
    };
    let vocab = trainer.model.config.vocab_size;
    let ids = Tensor::from_slice(&glue_testkit::hf_check_input_ids(vocab)).view([2, 8]);
    let mask = ids.ne(0).to_kind(tch::Kind::Int64);
    let ours: Vec<f32> = Vec::try_from(
        trainer
            .model
            .forward(&ids, &ids.zeros_like(), &mask, None, false)
            .unwrap()
            .logits
            .flatten(0, -1),
    )
    .unwrap();
    for (a, b) in ours.iter().zip(&theirs) {
        assert!(
            (*a as f64 - b).abs() < 1e-4,
            "ours {ours:?} vs PEFT {theirs:?}"
        );
    }
}
