//! What a run shows while it trains: an indicatif bar (steps, loss, samples/s, ETA)
//! on a terminal, plain log lines otherwise (CI, files, pipes).

use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use train_loop::{Control, LogEntry, Plan, TrainerCallback, TrainerState};

pub struct CliReporter {
    bar: Option<ProgressBar>,
    batch_size: usize,
}

impl CliReporter {
    pub fn new(batch_size: usize) -> Self {
        CliReporter {
            bar: None,
            batch_size,
        }
    }

    fn line(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.println(text),
            None => eprintln!("{text}"),
        }
    }
}

fn format_entry(entry: &LogEntry) -> String {
    entry
        .iter()
        .map(|(k, v)| match v.as_f64() {
            Some(x) if k == "step" => format!("{k}={}", x as u64),
            Some(x) if x != 0.0 && x.abs() < 1e-3 => format!("{k}={x:.3e}"),
            Some(x) => format!("{k}={x:.4}"),
            None => format!("{k}={v}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `74498` -> `74,498`, as HF prints counts.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl TrainerCallback for CliReporter {
    fn on_train_begin(&mut self, plan: &Plan, state: &TrainerState) {
        eprintln!(
            "training: {} examples, {} epochs, {} optimizer steps ({} per epoch), starting at step {}",
            plan.num_examples, plan.num_epochs, plan.max_steps, plan.updates_per_epoch, state.global_step
        );
        // HF Trainer's "Number of trainable parameters"; AdamW keeps two fp32 moments each.
        eprintln!(
            "trainable parameters: {} (AdamW state {:.1} MB)",
            thousands(plan.trainable_parameters),
            plan.trainable_parameters as f64 * 8.0 / 1e6
        );
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(plan.max_steps);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps | loss {msg} | {per_sec} | ETA {eta}",
                )
                .expect("valid template"),
            );
            bar.set_position(state.global_step);
            self.bar = Some(bar);
        }
    }

    fn on_step_end(&mut self, state: &TrainerState) -> Control {
        if let Some(bar) = &self.bar {
            // The mean since the last log line, as far as the trainer has read it back.
            let totals = &state.glue_rs;
            let loss = totals.loss_since_log / totals.steps_since_log.max(1) as f64;
            bar.set_position(state.global_step);
            bar.set_message(format!("{loss:.4} | {} samples/step", self.batch_size));
        }
        Control::default()
    }

    fn on_log(&mut self, entry: &LogEntry) {
        self.line(&format_entry(entry));
    }

    fn on_save(&mut self, checkpoint: &Path) {
        self.line(&format!("saved {}", checkpoint.display()));
    }

    fn on_train_end(&mut self, _state: &TrainerState) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_as_hf_prints_them() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(74_498), "74,498");
        assert_eq!(super::thousands(22_713_986), "22,713,986");
    }
}
