//! The suite's results: per task (and per swept setting) the median and mean ± std over
//! seeds of each GLUE metric, the task score, the chosen setting and the GLUE average;
//! as Markdown, CSV and JSON.

use std::path::Path;

use anyhow::Result;
use glue_data::Task;
use serde_json::{Map, Value};

use crate::output::write_atomically;
use crate::plot::{suite_figure, SuiteColumn};

/// The number of GLUE tasks the leaderboard averages over.
pub const GLUE_TASK_COUNT: usize = 9;

/// Median, mean and sample standard deviation of one metric over seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub mean: f64,
    pub std: f64,
    pub n: usize,
}

impl Summary {
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        let mean = v.iter().sum::<f64>() / n as f64;
        let std = if n > 1 {
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Summary {
            median,
            mean,
            std,
            n,
        })
    }
}

/// Result keys of one task: its GLUE metrics, MNLI's also on the mismatched set.
pub fn metric_keys(task: Task) -> Vec<String> {
    let spec = task.spec();
    let suffixes: &[&str] = if spec.eval_splits.len() > 1 {
        &["", "_mm"]
    } else {
        &[""]
    };
    suffixes
        .iter()
        .flat_map(|s| {
            spec.metrics
                .iter()
                .map(move |m| format!("eval_{}{s}", m.name()))
        })
        .collect()
}

/// One run's outcome.
pub enum Outcome {
    Done(Map<String, Value>),
    Failed(String),
    Skipped(String),
}

/// The runs of one task under one setting.
pub struct Row {
    pub task: Task,
    pub setting: String,
    /// (result key, summary over the seeds that finished)
    pub metrics: Vec<(String, Summary)>,
    /// The GLUE task score: unweighted mean of its metrics (x100), median over seeds.
    pub score: Option<f64>,
    /// Each finished seed's task score (x100).
    pub seed_scores: Vec<(u64, f64)>,
    /// The setting with the best score among the task's (always true without a sweep).
    pub chosen: bool,
    pub notes: Vec<String>,
}

impl Row {
    /// `runs`: (seed, outcome) of this task and setting.
    fn new(task: Task, setting: &str, runs: &[(u64, &Outcome)]) -> Row {
        let keys = metric_keys(task);
        let mut per_key: Vec<Vec<f64>> = vec![Vec::new(); keys.len()];
        let mut seed_scores = Vec::new();
        let mut notes = Vec::new();
        for &(seed, outcome) in runs {
            match outcome {
                Outcome::Done(results) => {
                    let values: Vec<Option<f64>> =
                        keys.iter().map(|k| results.get(k)?.as_f64()).collect();
                    for (acc, v) in per_key.iter_mut().zip(&values) {
                        acc.extend(v);
                    }
                    if !values.is_empty() && values.iter().all(Option::is_some) {
                        let sum: f64 = values.iter().flatten().sum();
                        seed_scores.push((seed, 100.0 * sum / values.len() as f64));
                    }
                }
                Outcome::Failed(m) => notes.push(format!("seed {seed} failed: {m}")),
                Outcome::Skipped(m) => {
                    if !notes.contains(m) {
                        notes.push(m.clone());
                    }
                }
            }
        }
        let scores: Vec<f64> = seed_scores.iter().map(|(_, s)| *s).collect();
        Row {
            task,
            setting: setting.to_string(),
            metrics: keys
                .into_iter()
                .zip(per_key)
                .filter_map(|(k, v)| Some((k, Summary::of(&v)?)))
                .collect(),
            score: Summary::of(&scores).map(|s| s.median),
            seed_scores,
            chosen: false,
            notes,
        }
    }

    fn finished(&self) -> usize {
        self.seed_scores.len()
    }
}

pub struct SuiteTable {
    pub seeds: Vec<u64>,
    /// Whether settings were swept (the table then names them).
    pub swept: bool,
    /// Task-major, settings in sweep order.
    pub rows: Vec<Row>,
}

impl SuiteTable {
    /// `runs`: (task, setting, seed) with `outcomes` in the same order.
    pub fn new(
        tasks: &[Task],
        settings: &[String],
        seeds: &[u64],
        runs: &[(Task, usize, u64)],
        outcomes: &[Outcome],
    ) -> Self {
        let mut rows = Vec::new();
        for &task in tasks {
            let first = rows.len();
            for (p, setting) in settings.iter().enumerate() {
                let mine: Vec<(u64, &Outcome)> = runs
                    .iter()
                    .zip(outcomes)
                    .filter(|((t, q, _), _)| *t == task && *q == p)
                    .map(|((_, _, seed), o)| (*seed, o))
                    .collect();
                rows.push(Row::new(task, setting, &mine));
            }
            // The setting chosen for the task: best median task score on the dev set.
            let best = rows[first..]
                .iter()
                .enumerate()
                .filter_map(|(i, r)| Some((i, r.score?)))
                .fold(None, |acc: Option<(usize, f64)>, (i, s)| match acc {
                    Some((_, b)) if b >= s => acc,
                    _ => Some((i, s)),
                });
            if let Some((i, _)) = best {
                rows[first + i].chosen = true;
            }
        }
        SuiteTable {
            seeds: seeds.to_vec(),
            swept: settings.len() > 1,
            rows,
        }
    }

    /// Mean of the chosen settings' task scores, and over how many tasks.
    pub fn glue_average(&self) -> Option<(f64, usize)> {
        let scores: Vec<f64> = self
            .rows
            .iter()
            .filter(|r| r.chosen)
            .filter_map(|r| r.score)
            .collect();
        (!scores.is_empty()).then(|| {
            (
                scores.iter().sum::<f64>() / scores.len() as f64,
                scores.len(),
            )
        })
    }

    pub fn markdown(&self) -> String {
        let setting_header = if self.swept { " setting |" } else { "" };
        let setting_rule = if self.swept { "---|" } else { "" };
        let mut out = format!(
            "| task |{setting_header} runs | metric | median | mean ± std | task score |\n|---|{setting_rule}---|---|---|---|---|\n"
        );
        for row in &self.rows {
            let runs = format!("{}/{}", row.finished(), self.seeds.len());
            let mut score = row.score.map_or("-".into(), |s| format!("{s:.2}"));
            if self.swept && row.chosen {
                score += " (chosen)";
            }
            let setting = if self.swept {
                format!(" {} |", row.setting)
            } else {
                String::new()
            };
            if row.metrics.is_empty() {
                let why = row.notes.first().map_or("no finished run", String::as_str);
                out += &format!(
                    "| {} |{setting} {runs} | - | - | - | - ({why}) |\n",
                    row.task
                );
            }
            for (i, (key, s)) in row.metrics.iter().enumerate() {
                let first = i == 0;
                let blank = |text: &str| {
                    if first {
                        text.to_string()
                    } else {
                        String::new()
                    }
                };
                let setting = if self.swept {
                    format!(" {} |", blank(&row.setting))
                } else {
                    String::new()
                };
                out += &format!(
                    "| {} |{setting} {} | {} | {:.2} | {:.2} ± {:.2} | {} |\n",
                    blank(row.task.name()),
                    blank(&runs),
                    key.trim_start_matches("eval_"),
                    100.0 * s.median,
                    100.0 * s.mean,
                    100.0 * s.std,
                    blank(&score),
                );
            }
        }
        let pad = if self.swept { " |" } else { "" };
        match self.glue_average() {
            Some((avg, n)) => {
                let of = if n == GLUE_TASK_COUNT {
                    String::new()
                } else {
                    format!(" (over {n} of {GLUE_TASK_COUNT} tasks)")
                };
                out += &format!("| **GLUE average**{of} |{pad} | | | | **{avg:.2}** |\n");
            }
            None => out += &format!("| **GLUE average** |{pad} | | | | - |\n"),
        }
        out
    }

    pub fn csv(&self) -> String {
        let mut out = String::from("task,setting,chosen,metric,runs,median,mean,std,task_score\n");
        for row in &self.rows {
            for (key, s) in &row.metrics {
                out += &format!(
                    "{},{},{},{},{},{},{},{},{}\n",
                    row.task,
                    row.setting,
                    row.chosen,
                    key.trim_start_matches("eval_"),
                    s.n,
                    s.median,
                    s.mean,
                    s.std,
                    row.score.map_or(String::new(), |v| (v / 100.0).to_string())
                );
            }
        }
        out
    }

    /// `tasks.<task>.settings.<setting>` holds each setting's summaries;
    /// `tasks.<task>.chosen_setting` the one the average uses.
    pub fn json(&self) -> Value {
        let mut tasks = Map::new();
        for row in &self.rows {
            let metrics: Map<String, Value> = row
                .metrics
                .iter()
                .map(|(k, s)| {
                    let v = serde_json::json!({
                        "median": s.median, "mean": s.mean, "std": s.std, "runs": s.n,
                    });
                    (k.trim_start_matches("eval_").to_string(), v)
                })
                .collect();
            let seed_scores: Map<String, Value> = row
                .seed_scores
                .iter()
                .map(|(seed, s)| (seed.to_string(), Value::from(s / 100.0)))
                .collect();
            let entry = tasks
                .entry(row.task.name())
                .or_insert_with(|| serde_json::json!({"chosen_setting": null, "settings": {}}));
            if row.chosen {
                entry["chosen_setting"] = Value::from(row.setting.clone());
            }
            entry["settings"][&row.setting] = serde_json::json!({
                "finished_runs": row.finished(),
                "metrics": metrics,
                "task_score": row.score.map(|s| s / 100.0),
                "seed_task_scores": seed_scores,
                "notes": row.notes,
            });
        }
        let average = self.glue_average();
        serde_json::json!({
            "seeds": self.seeds,
            "tasks": tasks,
            "glue_average": average.map(|(a, _)| a / 100.0),
            "glue_average_tasks": average.map_or(0, |(_, n)| n),
        })
    }

    /// The chosen setting of every task that has one.
    fn chosen(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.chosen)
    }

    fn figure(&self) -> String {
        let columns: Vec<SuiteColumn> = self
            .chosen()
            .map(|r| SuiteColumn {
                label: if self.swept {
                    format!("{} {}", r.task, r.setting)
                } else {
                    r.task.name().to_string()
                },
                seed_scores: r.seed_scores.iter().map(|(_, s)| *s).collect(),
                median: r.score,
            })
            .collect();
        suite_figure(&columns)
    }

    /// Task scores and GLUE average side by side with another suite's results
    /// (`suite_results.json` of `other`), chosen settings on both sides.
    pub fn compare(&self, other: &Value, other_name: &str) -> String {
        let mut out =
            format!("| task | this suite | {other_name} | difference |\n|---|---|---|---|\n");
        let theirs = |task: &str| -> Option<f64> {
            let t = &other["tasks"][task];
            let setting = t["chosen_setting"].as_str()?;
            Some(100.0 * t["settings"][setting]["task_score"].as_f64()?)
        };
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        for row in self.chosen() {
            let (mine, other) = (row.score, theirs(row.task.name()));
            let diff = mine.zip(other).map(|(a, b)| format!("{:+.2}", a - b));
            out += &format!(
                "| {} | {} | {} | {} |\n",
                row.task,
                cell(mine),
                cell(other),
                diff.unwrap_or("-".into())
            );
        }
        let mine = self.glue_average().map(|(a, _)| a);
        let other = other["glue_average"].as_f64().map(|a| 100.0 * a);
        let diff = mine.zip(other).map(|(a, b)| format!("{:+.2}", a - b));
        out += &format!(
            "| **GLUE average** | {} | {} | {} |\n",
            cell(mine),
            cell(other),
            diff.unwrap_or("-".into())
        );
        out
    }

    pub fn write(&self, root: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(&self.json())? + "\n";
        for (name, text) in [
            ("suite_results.json", json),
            ("suite_results.csv", self.csv()),
            ("suite_results.md", self.markdown()),
            ("suite_scores.svg", self.figure()),
        ] {
            write_atomically(&root.join(name), |o| Ok(o.write_all(text.as_bytes())?))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_matches_numpy() {
        // numpy: median 0.8, mean 0.7666..., std(ddof=1) 0.0577350...
        let s = Summary::of(&[0.7, 0.8, 0.8]).unwrap();
        assert_eq!(s.median, 0.8);
        assert!((s.mean - 0.766_666_666_666_666_7).abs() < 1e-12);
        assert!((s.std - 0.057_735_026_918_962_58).abs() < 1e-12);
        assert_eq!(Summary::of(&[1.0, 2.0]).unwrap().median, 1.5);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn mnli_is_scored_on_both_sets() {
        assert_eq!(
            metric_keys(Task::Mnli),
            ["eval_accuracy", "eval_accuracy_mm"]
        );
        assert_eq!(metric_keys(Task::Mrpc), ["eval_accuracy", "eval_f1"]);
    }

    fn done(accuracy: f64, f1: f64) -> Outcome {
        let v = serde_json::json!({"eval_accuracy": accuracy, "eval_f1": f1});
        Outcome::Done(v.as_object().unwrap().clone())
    }

    #[test]
    fn the_setting_with_the_best_median_is_chosen() {
        let settings = vec!["lr2e-05".to_string(), "lr5e-05".to_string()];
        let runs = [
            (Task::Mrpc, 0, 1),
            (Task::Mrpc, 0, 2),
            (Task::Mrpc, 1, 1),
            (Task::Mrpc, 1, 2),
        ];
        let outcomes = [
            done(0.7, 0.8),
            done(0.8, 0.9),
            done(0.8, 0.9),
            done(0.9, 1.0),
        ];
        let t = SuiteTable::new(&[Task::Mrpc], &settings, &[1, 2], &runs, &outcomes);
        assert!(!t.rows[0].chosen && t.rows[1].chosen);
        // Setting 2: task scores 85 and 95, median 90; the average is that task's.
        assert!((t.rows[1].score.unwrap() - 90.0).abs() < 1e-9);
        assert!((t.glue_average().unwrap().0 - 90.0).abs() < 1e-9);
        let json = t.json();
        assert_eq!(json["tasks"]["mrpc"]["chosen_setting"], "lr5e-05");
        assert!(t.markdown().contains("| mrpc | lr5e-05 | 2/2 | accuracy |"));
        // Against a suite whose chosen MRPC score is 0.8: +10 points.
        let other = serde_json::json!({
            "tasks": {"mrpc": {"chosen_setting": "default",
                               "settings": {"default": {"task_score": 0.8}}}},
            "glue_average": 0.8,
        });
        let cmp = t.compare(&other, "other");
        assert!(cmp.contains("| mrpc | 90.00 | 80.00 | +10.00 |"), "{cmp}");
        assert!(
            cmp.contains("| **GLUE average** | 90.00 | 80.00 | +10.00 |"),
            "{cmp}"
        );
        assert!(t.figure().contains("mrpc lr5e-05"));
    }
}
