//! Checkpoints in HF's layout: `output_dir/checkpoint-<step>/` with the model
//! (model.safetensors, config.json, tokenizer files), optimizer.safetensors,
//! scheduler.json, rng_state.json, trainer_state.json and training_args.json.
//! Each is written into a temporary folder, completed with a marker file, and renamed:
//! a crash never leaves something that looks like a complete checkpoint.

use std::fs;
use std::path::{Path, PathBuf};

use bert_model::BertForSequenceClassification;
use tch::Tensor;

use crate::args::TrainingArgs;
use crate::error::{io_error, Result, TrainError};
use crate::optim::AdamW;
use crate::schedule::LrSchedule;
use crate::state::TrainerState;

pub const COMPLETE_MARKER: &str = "checkpoint-complete";
const PREFIX: &str = "checkpoint-";

pub fn checkpoint_dir(output_dir: &Path, step: u64) -> PathBuf {
    output_dir.join(format!("{PREFIX}{step}"))
}

fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serializable");
    fs::write(path, text + "\n").map_err(io_error(path))
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(io_error(path))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

pub struct CheckpointParts<'a> {
    pub model: &'a BertForSequenceClassification,
    pub optimizer: &'a AdamW,
    pub schedule: &'a LrSchedule,
    pub state: &'a TrainerState,
    pub args: &'a TrainingArgs,
}

/// Writes a complete checkpoint for `state.global_step`, returns its folder.
pub fn save(output_dir: &Path, parts: &CheckpointParts) -> Result<PathBuf> {
    let target = checkpoint_dir(output_dir, parts.state.global_step);
    // Built under a temporary name, synced, then renamed: a checkpoint folder is
    // complete or absent, and rewriting one never mixes two versions.
    atomic_fs::write_dir(&target, |tmp| -> Result<()> {
        parts.model.write_pretrained(tmp)?;
        let state: Vec<(String, Tensor)> = parts
            .optimizer
            .state()
            .into_iter()
            .map(|(k, t)| (k, t.to(tch::Device::Cpu)))
            .collect();
        Tensor::write_safetensors(&state, tmp.join("optimizer.safetensors"))?;
        write_json(
            &tmp.join("scheduler.json"),
            &serde_json::json!({
                "lr_scheduler_type": parts.schedule.kind,
                "warmup_steps": parts.schedule.warmup_steps,
                "total_steps": parts.schedule.total_steps,
                "last_step": parts.state.global_step,
            }),
        )?;
        write_json(
            &tmp.join("rng_state.json"),
            &serde_json::json!({
                "seed": parts.args.seed,
                "scheme": "torch generator re-seeded with seed, step and micro-batch before every forward; data order from (seed, epoch)",
            }),
        )?;
        write_json(&tmp.join("trainer_state.json"), parts.state)?;
        write_json(&tmp.join("training_args.json"), parts.args)?;
        fs::write(tmp.join(COMPLETE_MARKER), b"").map_err(io_error(tmp))?;
        Ok(())
    })
    .map_err(|f| f.into_inner(|path, source| TrainError::Io { path, source }))?;
    Ok(target)
}

/// Complete checkpoints under `output_dir`, oldest first.
pub fn list(output_dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = fs::read_dir(output_dir) else {
        return Vec::new();
    };
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step = name.strip_prefix(PREFIX)?.parse().ok()?;
            let path = e.path();
            path.join(COMPLETE_MARKER).is_file().then_some((step, path))
        })
        .collect();
    found.sort();
    found
}

/// `--resume-from-checkpoint latest` or a path; incomplete folders are never picked.
pub fn resolve(output_dir: &Path, spec: &str) -> Result<PathBuf> {
    if spec == "latest" || spec == "last" {
        return list(output_dir)
            .pop()
            .map(|(_, p)| p)
            .ok_or_else(|| TrainError::NoCheckpoint(output_dir.to_path_buf()));
    }
    let path = PathBuf::from(spec);
    if !path.join(COMPLETE_MARKER).is_file() {
        return Err(TrainError::Checkpoint {
            path,
            message: format!("not a complete checkpoint (no {COMPLETE_MARKER} file); use `latest` or another checkpoint"),
        });
    }
    Ok(path)
}

/// HF `_rotate_checkpoints`: keeps exactly `limit` checkpoints, the best one among
/// them (moved to second-to-last in age order, so the newest stays too); with a
/// limit of 1 and a best that is not the newest, two are kept, so the run can resume.
pub fn rotate(output_dir: &Path, limit: Option<usize>, best: Option<&Path>) {
    let Some(limit) = limit else { return };
    let mut all: Vec<PathBuf> = list(output_dir).into_iter().map(|(_, p)| p).collect();
    let mut limit = limit.max(1);
    if let Some(at) = best.and_then(|b| all.iter().position(|p| p == b)) {
        if at + 1 < all.len() {
            let best = all.remove(at);
            all.insert(all.len() - 1, best);
            if limit == 1 {
                limit = 2;
            }
        }
    }
    for path in &all[..all.len().saturating_sub(limit)] {
        let _ = fs::remove_dir_all(path);
    }
}

/// What a resumed run must share with the run that wrote the checkpoint for the
/// resume to continue that run (data order, batches, optimizer trajectory). Epochs,
/// max_steps, strategies, output folder and layout may change.
pub fn resume_differences(checkpoint: &Path, args: &TrainingArgs) -> Result<Vec<String>> {
    let saved: serde_json::Value = read_json(&checkpoint.join("training_args.json"))?;
    let now = serde_json::to_value(args).expect("serializable");
    const MUST_MATCH: &[&str] = &[
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "seed",
        "group_by_length",
        "max_seq_length",
        "learning_rate",
        "lr_scheduler_type",
        "warmup_steps",
        "warmup_ratio",
        "weight_decay",
        "optim",
        "adam_beta1",
        "adam_beta2",
        "adam_epsilon",
        "max_grad_norm",
        "bf16",
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_target_modules",
    ];
    Ok(MUST_MATCH
        .iter()
        .filter(|k| saved.get(**k) != now.get(**k))
        .map(|k| {
            let show = |v: Option<&serde_json::Value>| v.map_or("unset".into(), |v| v.to_string());
            format!("{k} {} -> {}", show(saved.get(*k)), show(now.get(*k)))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remaining(dir: &Path) -> Vec<u64> {
        list(dir).into_iter().map(|(step, _)| step).collect()
    }

    /// transformers `Trainer._rotate_checkpoints` / `_sorted_checkpoints`.
    #[test]
    fn rotation_keeps_exactly_the_limit_with_the_best_among_them() {
        let make = |steps: &[u64]| {
            let dir = tempfile::tempdir().unwrap();
            for s in steps {
                let c = checkpoint_dir(dir.path(), *s);
                fs::create_dir_all(&c).unwrap();
                fs::write(c.join(COMPLETE_MARKER), b"").unwrap();
            }
            dir
        };
        let dir = make(&[2, 4, 6, 8]);
        rotate(dir.path(), Some(2), None);
        assert_eq!(remaining(dir.path()), [6, 8]);
        let dir = make(&[2, 4, 6, 8]);
        rotate(dir.path(), Some(2), Some(&checkpoint_dir(dir.path(), 4)));
        assert_eq!(remaining(dir.path()), [4, 8]);
        let dir = make(&[2, 4, 6, 8]);
        rotate(dir.path(), Some(3), Some(&checkpoint_dir(dir.path(), 2)));
        assert_eq!(remaining(dir.path()), [2, 6, 8]);
        // Limit 1 with an older best keeps two, so the run can still resume.
        let dir = make(&[2, 4, 6, 8]);
        rotate(dir.path(), Some(1), Some(&checkpoint_dir(dir.path(), 4)));
        assert_eq!(remaining(dir.path()), [4, 8]);
        let dir = make(&[2, 4, 6, 8]);
        rotate(dir.path(), Some(1), Some(&checkpoint_dir(dir.path(), 8)));
        assert_eq!(remaining(dir.path()), [8]);
    }
}
