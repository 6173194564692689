//! `suite --parallel N`: independent runs at once, each a `glue-cli run` child process
//! with its own GPU (`CUDA_VISIBLE_DEVICES`) or its share of the CPU cores
//! (`OMP_NUM_THREADS`), its output in `<run dir>/suite-run.log`.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::output::write_atomically;
use crate::suite::{results_of, Job};
use crate::suite_table::Outcome;

/// What one slot gives its run.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    Gpu(usize),
    Cpu { threads: usize },
}

/// `wanted` slots, cut to what the machine has: one run per GPU when CUDA is used,
/// else at most one per physical core, the cores shared out evenly.
pub fn slots(wanted: u64, device: &str) -> Result<Vec<Slot>> {
    let wanted = wanted.max(1) as usize;
    if wanted == 1 {
        return Ok(vec![Slot::Cpu { threads: 0 }]);
    }
    let choice: bert_model::DeviceChoice = device.parse()?;
    let (device, _) = bert_model::select_device(choice)?;
    if device.is_cuda() {
        let gpus = tch::Cuda::device_count().max(1) as usize;
        if wanted > gpus {
            eprintln!("--parallel {wanted}: {gpus} GPU(s) visible, running {gpus} at once");
        }
        return Ok((0..wanted.min(gpus)).map(Slot::Gpu).collect());
    }
    Ok(cpu_slots(wanted, bert_model::physical_cores()))
}

fn cpu_slots(wanted: usize, cores: usize) -> Vec<Slot> {
    let cores = cores.max(1);
    let n = wanted.min(cores);
    if wanted > cores {
        eprintln!("--parallel {wanted}: {cores} physical core(s), running {n} at once");
    }
    // The first `cores % n` slots get one core more.
    (0..n)
        .map(|i| Slot::Cpu {
            threads: cores / n + usize::from(i < cores % n),
        })
        .collect()
}

/// The child's command line: `run` with the job's arguments, its TrainingArguments
/// (recipe, config, setting and flags, already merged) in `<run dir>/suite-run.json`.
fn command(job: &Job, slot: &Slot) -> Result<Command> {
    fs::create_dir_all(&job.dir).with_context(|| format!("cannot create {}", job.dir.display()))?;
    let mut arguments = job.run.base.clone();
    if let Value::Object(flags) = serde_json::to_value(&job.run.training)? {
        for (k, v) in flags {
            if !v.is_null() && k != "output_dir" && k != "seed" {
                arguments.insert(k, v);
            }
        }
    }
    let config = job.dir.join("suite-run.json");
    let text = serde_json::to_string_pretty(&arguments)?;
    write_atomically(&config, |o| Ok(o.write_all(text.as_bytes())?))?;
    let exe = std::env::current_exe().context("cannot find the running glue-cli program")?;
    // A program replaced on disk mid-suite (a rebuild, an upgrade) cannot be started
    // again; say so instead of a bare "No such file or directory".
    if !exe.exists() {
        anyhow::bail!(
            "cannot start {}: the program was replaced or removed while the suite ran; rerun the suite (finished runs are skipped)",
            exe.display()
        );
    }
    let mut c = Command::new(exe);
    c.arg("run")
        .args(["--task", &job.run.data.task, "--data-dir"])
        .arg(&job.run.data.data_dir)
        .args([
            "--model",
            &job.run.model,
            "--device",
            &job.run.device,
            "--config",
        ])
        .arg(&config)
        .arg("--output-dir")
        .arg(&job.dir)
        .arg("--seed")
        .arg(job.run.training.seed.unwrap_or(42).to_string());
    if job.run.resume_from_checkpoint.is_some() {
        c.args(["--resume-from-checkpoint", "latest"]);
    }
    match slot {
        Slot::Gpu(i) => c.env("CUDA_VISIBLE_DEVICES", i.to_string()),
        Slot::Cpu { threads } => c.env("OMP_NUM_THREADS", threads.to_string()),
    };
    let log = fs::File::create(job.dir.join("suite-run.log"))?;
    c.stdout(log.try_clone()?).stderr(log).stdin(Stdio::null());
    // SAFETY: prctl only marks this child to be killed when the suite dies, so a
    // killed suite leaves no run behind holding its folder's lock.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    Ok(c)
}

/// The child's `error: ...` line (or its last line), for the suite's report.
fn failure_message(dir: &Path) -> String {
    let log = fs::read_to_string(dir.join("suite-run.log")).unwrap_or_default();
    log.lines()
        .rev()
        .find(|l| l.starts_with("error: "))
        .or_else(|| log.lines().rev().find(|l| !l.trim().is_empty()))
        .map_or("exited without a message".into(), |l| {
            l.trim_start_matches("error: ").to_string()
        })
}

/// Runs every job, at most one per slot at a time; returns (job index, outcome).
pub fn run_all(
    jobs: &[Job],
    slots: &[Slot],
    progress: &dyn Fn(usize) -> String,
) -> Result<Vec<(usize, Outcome)>> {
    let mut pending = jobs.iter();
    let mut running: Vec<Option<(&Job, Child)>> = (0..slots.len()).map(|_| None).collect();
    let mut finished = Vec::with_capacity(jobs.len());
    loop {
        for (slot, place) in slots.iter().zip(running.iter_mut()) {
            if place.is_some() {
                continue;
            }
            let Some(job) = pending.next() else { break };
            let verb = if job.run.resume_from_checkpoint.is_some() {
                "resuming"
            } else {
                "training"
            };
            let on = match slot {
                Slot::Gpu(i) => format!("GPU {i}"),
                Slot::Cpu { threads } => format!("{threads} thread(s)"),
            };
            eprintln!(
                "{}: {verb} on {on}, log in {} ({})",
                job.label,
                job.dir.join("suite-run.log").display(),
                progress(finished.len())
            );
            match command(job, slot).and_then(|mut c| Ok(c.spawn()?)) {
                Ok(child) => *place = Some((job, child)),
                Err(e) => finished.push((job.index, Outcome::Failed(crate::output::one_line(&e)))),
            }
        }
        if running.iter().all(Option::is_none) {
            return Ok(finished);
        }
        std::thread::sleep(Duration::from_millis(200));
        for place in running.iter_mut() {
            let Some((job, child)) = place else { continue };
            let Some(status) = child.try_wait()? else {
                continue;
            };
            let outcome = match results_of(&job.dir) {
                Some(results) if status.success() => {
                    eprintln!("{}: done", job.label);
                    Outcome::Done(results)
                }
                _ => {
                    let message = failure_message(&job.dir);
                    eprintln!("{}: failed: {message}; the suite goes on", job.label);
                    Outcome::Failed(message)
                }
            };
            finished.push((job.index, outcome));
            *place = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_are_shared_out_and_never_oversubscribed() {
        assert_eq!(
            cpu_slots(2, 5),
            [Slot::Cpu { threads: 3 }, Slot::Cpu { threads: 2 }]
        );
        assert_eq!(cpu_slots(4, 2).len(), 2);
        assert_eq!(cpu_slots(3, 1), [Slot::Cpu { threads: 1 }]);
    }
}
