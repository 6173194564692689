//! The Trainer's wiring against HF's Trainer (tests/golden/trainer.json, written by
//! scripts/golden_trainer.py): same data order, same classifier head, dropout off,
//! batch 4 with gradient accumulation 2, weight decay, warmup. Per optimizer step the
//! logged learning rate, loss and gradient norm must agree, which they cannot if the
//! schedule is stepped at the wrong index, accumulation is scaled wrongly, clipping
//! comes after the update, decay reaches biases, or the optimizer step is skipped.

use glue_data::sampler::shuffled_indices;
use glue_data::{load_split, Collator, Preprocessor, Task};
use glue_testkit::{golden, json_f64s, mirror_dir, test_model_dir};

mod common;
use common::{assert_steps_match, model_without_dropout};
use train_loop::{IntervalStrategy, Trainer, TrainingArgs};

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
    assert_steps_match(&out.state.log_history, &g["steps"]);
}
