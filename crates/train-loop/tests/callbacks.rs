//! The callback interface (HF `TrainerCallback`): every event reaches the callbacks in
//! order, and a callback's `should_stop` ends training after that step's logging,
//! evaluation and saving, as HF's `TrainerControl.should_training_stop` does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bert_model::BertForSequenceClassification;
use glue_data::{load_split, Collator, Preprocessor, Task};
use glue_testkit::{mirror_dir, test_model_dir};
use tch::Device;
use train_loop::{
    Control, EvalSet, IntervalStrategy, LogEntry, Plan, Trainer, TrainerCallback, TrainerState,
    TrainingArgs,
};

#[derive(Default)]
struct Recorder {
    events: Vec<String>,
    stop_at: Option<u64>,
}

impl TrainerCallback for Recorder {
    fn on_train_begin(&mut self, plan: &Plan, _state: &TrainerState) {
        self.events.push(format!("begin {}", plan.max_steps));
    }
    fn on_step_end(&mut self, state: &TrainerState) -> Control {
        self.events.push(format!("step {}", state.global_step));
        Control {
            should_stop: self.stop_at == Some(state.global_step),
        }
    }
    fn on_log(&mut self, entry: &LogEntry) {
        let kind = if entry.contains_key("loss") {
            "loss"
        } else {
            "eval"
        };
        self.events.push(format!("log {kind} {}", entry["step"]));
    }
    fn on_evaluate(&mut self, state: &TrainerState, metrics: &BTreeMap<String, f64>) -> Control {
        assert!(metrics.contains_key("eval_accuracy"));
        self.events.push(format!("evaluate {}", state.global_step));
        Control::default()
    }
    fn on_save(&mut self, checkpoint: &Path) {
        let name = checkpoint.file_name().unwrap().to_string_lossy();
        self.events.push(format!("save {name}"));
    }
    fn on_train_end(&mut self, state: &TrainerState) {
        self.events.push(format!("end {}", state.global_step));
    }
}

#[test]
fn callbacks_see_every_event_and_can_stop_training() {
    tch::manual_seed(0);
    let (model, _) = BertForSequenceClassification::from_pretrained(
        test_model_dir().to_str().unwrap(),
        Some(Task::Rte.spec().label_names),
        Device::Cpu,
    )
    .unwrap();
    let pre = Preprocessor::from_file(&test_model_dir(), 32).unwrap();
    let data = |split| pre.encode_split(&load_split(&mirror_dir(), Task::Rte, split).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let args = TrainingArgs {
        output_dir: tmp.path().to_path_buf(),
        max_steps: 10,
        per_device_train_batch_size: 2,
        per_device_eval_batch_size: 128,
        logging_steps: 1,
        eval_strategy: IntervalStrategy::Steps,
        eval_steps: Some(2),
        save_strategy: IntervalStrategy::Steps,
        save_steps: 2,
        pad_to_multiple_of: Some(8),
        ..TrainingArgs::default()
    };
    let (mut first, mut second) = (
        Recorder {
            stop_at: Some(3),
            ..Recorder::default()
        },
        Recorder::default(),
    );
    let mut trainer = Trainer {
        args,
        task: Task::Rte,
        model,
        collator: Collator::new(&pre),
        train_data: data("train").unwrap(),
        eval_sets: vec![EvalSet {
            split: "validation".into(),
            suffix: String::new(),
            data: data("validation").unwrap(),
        }],
        callbacks: vec![&mut first, &mut second],
    };
    let out = trainer.train(None).unwrap();
    // The collator was built without it: the trainer applies args.pad_to_multiple_of.
    assert_eq!(trainer.collator.pad_to_multiple_of, Some(8));
    drop(trainer);
    assert_eq!(out.state.global_step, 3, "stopped after step 3 of 10");
    let want = [
        "begin 10",
        "step 1",
        "log loss 1",
        "step 2",
        "log loss 2",
        "log eval 2",
        "evaluate 2",
        "save checkpoint-2",
        "step 3",
        "log loss 3",
        "end 3",
    ];
    assert_eq!(first.events, want);
    assert_eq!(second.events, want, "every callback sees every event");
    let saved: Vec<PathBuf> = train_loop::checkpoint::list(tmp.path())
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(saved, [tmp.path().join("checkpoint-2")]);
}
