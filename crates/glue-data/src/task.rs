//! The registry of GLUE tasks: one `TaskSpec` per hub config of `nyu-mll/glue`.
//!
//! Column names, class order and split sizes are those of the hub's parquet files
//! (the dataset card's `dataset_info`), so a loader can check what it reads.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use glue_metrics::Metric;

use crate::error::DataError;

/// The hub dataset every task is read from.
pub const HUB_DATASET: &str = "nyu-mll/glue";

/// A config of the `nyu-mll/glue` hub dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    Ax,
    Cola,
    Mnli,
    MnliMatched,
    MnliMismatched,
    Mrpc,
    Qnli,
    Qqp,
    Rte,
    Sst2,
    Stsb,
    Wnli,
}

/// One split of a config: its hub name and the number of rows the hub file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitSpec {
    pub name: &'static str,
    pub num_rows: usize,
}

impl SplitSpec {
    /// Path of the split's parquet file relative to the dataset root, as on the hub.
    pub fn file_name(&self) -> String {
        format!("{}-00000-of-00001.parquet", self.name)
    }
}

/// A test split and the file name the GLUE leaderboard expects its predictions in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Submission {
    pub split: &'static str,
    pub file_name: &'static str,
}

/// Everything a pipeline needs to know about one task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TaskSpec {
    pub task: Task,
    /// The hub config (folder) name.
    pub config: &'static str,
    /// One column for single-sentence tasks, two for pair tasks.
    pub text_columns: &'static [&'static str],
    /// Class names in hub (ClassLabel) order; empty for regression.
    pub label_names: &'static [&'static str],
    /// Every split the hub holds, in card order.
    pub splits: &'static [SplitSpec],
    /// Split to fine-tune on; `None` for test-only configs (ax).
    pub train_split: Option<&'static str>,
    /// Splits evaluated after each epoch (mnli: matched and mismatched).
    pub eval_splits: &'static [&'static str],
    /// Test splits and their leaderboard file names.
    pub submissions: &'static [Submission],
    /// Metrics of HF `evaluate.load("glue", config)`.
    pub metrics: &'static [Metric],
}

impl TaskSpec {
    pub fn is_regression(&self) -> bool {
        self.label_names.is_empty()
    }

    /// Model outputs: 1 for regression (stsb), else the number of classes.
    pub fn num_labels(&self) -> usize {
        self.label_names.len().max(1)
    }

    pub fn is_pair(&self) -> bool {
        self.text_columns.len() == 2
    }

    /// The metric used to pick the best checkpoint (HF's `metric_for_best_model`).
    pub fn main_metric(&self) -> Metric {
        self.metrics[0]
    }

    /// run_glue.py's metric-key suffix of the `index`-th eval split: none for the
    /// first, `_mm` for MNLI mismatched.
    pub fn eval_suffix(&self, index: usize) -> &'static str {
        if index == 0 {
            ""
        } else {
            "_mm"
        }
    }

    /// Whether the GLUE server wants class names (`entailment`, `not_entailment`) in
    /// this task's submission file rather than class indices: the NLI tasks.
    pub fn submits_label_names(&self) -> bool {
        matches!(
            self.task,
            Task::Mnli
                | Task::MnliMatched
                | Task::MnliMismatched
                | Task::Ax
                | Task::Rte
                | Task::Qnli
        )
    }

    /// A predicted class as the submission file writes it (`None`: not a class).
    pub fn submission_label(&self, class: i64) -> Option<String> {
        let name = self.label_names.get(usize::try_from(class).ok()?)?;
        Some(if self.submits_label_names() {
            name.to_string()
        } else {
            class.to_string()
        })
    }

    pub fn split(&self, name: &str) -> Result<&'static SplitSpec, DataError> {
        self.splits
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| DataError::UnknownSplit {
                task: self.config.to_string(),
                split: name.to_string(),
                valid: self
                    .splits
                    .iter()
                    .map(|s| s.name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

const fn split(name: &'static str, num_rows: usize) -> SplitSpec {
    SplitSpec { name, num_rows }
}

const NLI3: &[&str] = &["entailment", "neutral", "contradiction"];
const PAIR: &[&str] = &["sentence1", "sentence2"];
const NLI_COLUMNS: &[&str] = &["premise", "hypothesis"];
const ACC: &[Metric] = &[Metric::Accuracy];
const ACC_F1: &[Metric] = &[Metric::Accuracy, Metric::F1];

static SPECS: [TaskSpec; 12] = [
    TaskSpec {
        task: Task::Ax,
        config: "ax",
        text_columns: NLI_COLUMNS,
        label_names: NLI3,
        splits: &[split("test", 1104)],
        train_split: None,
        eval_splits: &[],
        submissions: &[Submission {
            split: "test",
            file_name: "AX.tsv",
        }],
        metrics: ACC,
    },
    TaskSpec {
        task: Task::Cola,
        config: "cola",
        text_columns: &["sentence"],
        label_names: &["unacceptable", "acceptable"],
        splits: &[
            split("train", 8551),
            split("validation", 1043),
            split("test", 1063),
        ],
        train_split: Some("train"),
        eval_splits: &["validation"],
        submissions: &[Submission {
            split: "test",
            file_name: "CoLA.tsv",
        }],
        metrics: &[Metric::MatthewsCorrelation],
    },
    TaskSpec {
        task: Task::Mnli,
        config: "mnli",
        text_columns: NLI_COLUMNS,
        label_names: NLI3,
        splits: &[
            split("train", 392702),
            split("validation_matched", 9815),
            split("validation_mismatched", 9832),
            split("test_matched", 9796),
            split("test_mismatched", 9847),
        ],
        train_split: Some("train"),
        eval_splits: &["validation_matched", "validation_mismatched"],
        submissions: &[
            Submission {
                split: "test_matched",
                file_name: "MNLI-m.tsv",
            },
            Submission {
                split: "test_mismatched",
                file_name: "MNLI-mm.tsv",
            },
        ],
        metrics: ACC,
    },
    TaskSpec {
        task: Task::MnliMatched,
        config: "mnli_matched",
        text_columns: NLI_COLUMNS,
        label_names: NLI3,
        splits: &[split("validation", 9815), split("test", 9796)],
        train_split: None,
        eval_splits: &["validation"],
        submissions: &[Submission {
            split: "test",
            file_name: "MNLI-m.tsv",
        }],
        metrics: ACC,
    },
    TaskSpec {
        task: Task::MnliMismatched,
        config: "mnli_mismatched",
        text_columns: NLI_COLUMNS,
        label_names: NLI3,
        splits: &[split("validation", 9832), split("test", 9847)],
        train_split: None,
        eval_splits: &["validation"],
        submissions: &[Submission {
            split: "test",
            file_name: "MNLI-mm.tsv",
        }],
        metrics: ACC,
    },
    TaskSpec {
        task: Task::Mrpc,
        config: "mrpc",
        text_columns: PAIR,
        label_names: &["not_equivalent", "equivalent"],
        splits: &[
            split("train", 3668),
            split("validation", 408),
            split("test", 1725),
        ],
        train_split: Some("train"),
        eval_splits: &["validation"],
        submissions: &[Submission {
            split: "test",
            file_name: "MRPC.tsv",
        }],
        metrics: ACC_F1,
    },
    TaskSpec {
        task: Task::Qnli,
        config: "qnli",
        text_columns: &["question", "sentence"],
        label_names: &["entailment", "not_entailment"],
        splits: &[
            split("train", 104743),
            split("validation", 5463),
            split("test", 5463),
        ],
        train_split: Some("train"),
        eval_splits: &["validation"],
        submissions: &[Submission {
            split: "test",
            file_name: "QNLI.tsv",
        }],
        metrics: ACC,
    },
    TaskSpec {
        task: Task::Qqp,
        config: "qqp",
        text_columns: &["question1", "question2"],
        label_names: &["not_duplicate", "duplicate"],
        splits: &[
            split("train", 363846),
            split("validation", 40430),
            split("test", 390965),
        ],
        train_split: Some("train"),
        eval_splits: &["validation"],
        submissions: &[Submission {
            split: "test",
            file_name: "QQP.tsv",
        }],
        metrics: ACC_F1,
    },
    TaskSpec {
        task: Task::Rte,
        config: "rte",
        text_columns: PAIR,
        label_names: &["entailment", "not_entailment"],
        splits: &[
            split("train", 2490),
            split("validation", 277),
            split("test", 3000),
        ],
        train_split: Some("train"),
        eval_splits: &["validation"],
        submissions: &[Submission {
            split: "test",
            file_name: "RTE.tsv",
        }],
        metrics: ACC,
    },
    TaskSpec {
        task: Task::Sst2,
        config: "sst2",
        text_columns: &["sentence"],
        label_names: &["negative", "positive"],
        splits: &[
            split("train", 67349),
            split("validation", 872),
            split("test", 1821),
        ],
        train_split: Some("train"),
        eval_splits: &["validation"],
        submissions: &[Submission {
            split: "test",
            file_name: "SST-2.tsv",
        }],
        metrics: ACC,
    },
    TaskSpec {
        task: Task::Stsb,
        config: "stsb",
        text_columns: PAIR,
        label_names: &[],
        splits: &[
            split("train", 5749),
            split("validation", 1500),
            split("test", 1379),
        ],
        train_split: Some("train"),
        eval_splits: &["validation"],
        submissions: &[Submission {
            split: "test",
            file_name: "STS-B.tsv",
        }],
        metrics: &[Metric::Pearson, Metric::Spearmanr],
    },
    TaskSpec {
        task: Task::Wnli,
        config: "wnli",
        text_columns: PAIR,
        // The hub's order, unlike rte/qnli: index 0 is not_entailment.
        label_names: &["not_entailment", "entailment"],
        splits: &[
            split("train", 635),
            split("validation", 71),
            split("test", 146),
        ],
        train_split: Some("train"),
        eval_splits: &["validation"],
        submissions: &[Submission {
            split: "test",
            file_name: "WNLI.tsv",
        }],
        metrics: ACC,
    },
];

impl Task {
    pub const ALL: [Task; 12] = [
        Task::Ax,
        Task::Cola,
        Task::Mnli,
        Task::MnliMatched,
        Task::MnliMismatched,
        Task::Mrpc,
        Task::Qnli,
        Task::Qqp,
        Task::Rte,
        Task::Sst2,
        Task::Stsb,
        Task::Wnli,
    ];

    /// The test sets a model fine-tuned on this task predicts for the leaderboard:
    /// its own, and for MNLI also the diagnostic set AX (which has no training data).
    pub fn leaderboard_sets(self) -> Vec<(Task, &'static Submission)> {
        let own = self.spec().submissions.iter().map(move |s| (self, s));
        let ax = (self == Task::Mnli).then(|| (Task::Ax, &Task::Ax.spec().submissions[0]));
        own.chain(ax).collect()
    }

    /// The nine GLUE tasks with training data, in the leaderboard's order (the GLUE
    /// average is over these; AX is scored by the MNLI model).
    pub const GLUE: [Task; 9] = [
        Task::Cola,
        Task::Sst2,
        Task::Mrpc,
        Task::Stsb,
        Task::Qqp,
        Task::Mnli,
        Task::Qnli,
        Task::Rte,
        Task::Wnli,
    ];

    pub fn spec(self) -> &'static TaskSpec {
        // SPECS is in the order of `Task::ALL`; the registry test checks it.
        &SPECS[self as usize]
    }

    pub fn name(self) -> &'static str {
        self.spec().config
    }

    /// Comma-separated names of every task, for error messages.
    pub fn valid_names() -> String {
        Task::ALL.map(Task::name).join(", ")
    }

    /// Parses a comma-separated list; `all` means every config.
    pub fn parse_list(list: &str) -> Result<Vec<Task>, DataError> {
        if list.trim() == "all" {
            return Ok(Task::ALL.to_vec());
        }
        let mut tasks = Vec::new();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let task: Task = name.parse()?;
            if !tasks.contains(&task) {
                tasks.push(task);
            }
        }
        if tasks.is_empty() {
            return Err(DataError::InvalidArgument(format!(
                "no task given; valid tasks: {}, or all",
                Task::valid_names()
            )));
        }
        Ok(tasks)
    }
}

impl FromStr for Task {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        // Accept the GLUE paper spellings too (sst-2, sts-b).
        let wanted = match wanted.as_str() {
            "sst_2" => "sst2".to_string(),
            "sts_b" => "stsb".to_string(),
            _ => wanted,
        };
        Task::ALL
            .into_iter()
            .find(|t| t.name() == wanted)
            .ok_or_else(|| DataError::UnknownTask {
                name: s.to_string(),
                valid: Task::valid_names(),
            })
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaderboard_rules_live_in_the_registry() {
        // GLUE server format: NLI tasks by class name, the others by index.
        assert_eq!(
            Task::Rte.spec().submission_label(1).as_deref(),
            Some("not_entailment")
        );
        assert_eq!(
            Task::Mnli.spec().submission_label(2).as_deref(),
            Some("contradiction")
        );
        assert_eq!(Task::Mrpc.spec().submission_label(1).as_deref(), Some("1"));
        assert_eq!(Task::Mrpc.spec().submission_label(2), None);
        let files: Vec<&str> = Task::Mnli
            .leaderboard_sets()
            .iter()
            .map(|(_, s)| s.file_name)
            .collect();
        assert_eq!(files, ["MNLI-m.tsv", "MNLI-mm.tsv", "AX.tsv"]);
        assert_eq!(Task::Mnli.spec().eval_suffix(1), "_mm");
    }

    #[test]
    fn specs_follow_task_order() {
        for task in Task::ALL {
            assert_eq!(task.spec().task, task);
        }
    }

    #[test]
    fn parses_names_and_lists() {
        assert_eq!("MRPC".parse::<Task>().unwrap(), Task::Mrpc);
        assert_eq!("sst-2".parse::<Task>().unwrap(), Task::Sst2);
        assert_eq!(
            Task::parse_list("mrpc, sst2,mrpc").unwrap(),
            vec![Task::Mrpc, Task::Sst2]
        );
        assert_eq!(Task::parse_list("all").unwrap().len(), 12);
        let err = Task::parse_list("mrpc,foo").unwrap_err().to_string();
        assert!(err.contains("unknown GLUE task `foo`"), "{err}");
        assert!(err.contains("cola") && err.contains("wnli"), "{err}");
    }

    #[test]
    fn label_facts_from_the_card() {
        assert_eq!(
            Task::Wnli.spec().label_names,
            &["not_entailment", "entailment"]
        );
        assert!(Task::Stsb.spec().is_regression());
        assert_eq!(Task::Stsb.spec().num_labels(), 1);
        assert_eq!(Task::Mnli.spec().num_labels(), 3);
        assert_eq!(Task::Mnli.spec().eval_splits.len(), 2);
    }
}
