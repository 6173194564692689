//! The official GLUE metrics, computed as scikit-learn / scipy compute them
//! (the implementations behind HF `evaluate.load("glue", task)`).
//!
//! ```
//! use glue_metrics::{classification, Metric};
//!
//! let scores = classification(&[Metric::Accuracy, Metric::F1], &[1, 0, 1, 1], &[1, 0, 0, 1]).unwrap();
//! assert_eq!(scores.get("accuracy"), Some(0.75));
//! assert!((scores.get("f1").unwrap() - 0.8).abs() < 1e-12);
//! // Several metrics also give their mean, as HF's run_glue.py reports it.
//! assert!(scores.get("combined_score").is_some());
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Why a metric has no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    #[error("no examples to score")]
    Empty,
    #[error("{predictions} predictions for {references} references; they must be the same length")]
    LengthMismatch {
        predictions: usize,
        references: usize,
    },
    #[error("{metric} is undefined when {reason}")]
    Undefined {
        metric: &'static str,
        reason: &'static str,
    },
    #[error("{metric} needs {needs} values; got a non-finite value at position {position}")]
    NonFinite {
        metric: &'static str,
        needs: &'static str,
        position: usize,
    },
    #[error("{metric} applies to {applies}, not to this task")]
    WrongKind {
        metric: &'static str,
        applies: &'static str,
    },
}

pub type Result<T> = std::result::Result<T, MetricError>;

/// A GLUE metric, named as HF `evaluate`'s glue metric names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Accuracy,
    F1,
    MatthewsCorrelation,
    Pearson,
    Spearmanr,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Accuracy => "accuracy",
            Metric::F1 => "f1",
            Metric::MatthewsCorrelation => "matthews_correlation",
            Metric::Pearson => "pearson",
            Metric::Spearmanr => "spearmanr",
        }
    }

    /// All GLUE metrics are "higher is better".
    pub fn greater_is_better(self) -> bool {
        true
    }
}

/// Metric values by name, plus `combined_score` (their mean) when there are several.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scores(pub BTreeMap<String, f64>);

impl Scores {
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.get(name).copied()
    }

    fn from_values(values: Vec<(Metric, f64)>) -> Self {
        let mut map: BTreeMap<String, f64> = values
            .iter()
            .map(|(m, v)| (m.name().to_string(), *v))
            .collect();
        if values.len() > 1 {
            let mean = values.iter().map(|(_, v)| v).sum::<f64>() / values.len() as f64;
            map.insert("combined_score".to_string(), mean);
        }
        Scores(map)
    }
}

fn check_lengths(predictions: usize, references: usize) -> Result<()> {
    if predictions != references {
        return Err(MetricError::LengthMismatch {
            predictions,
            references,
        });
    }
    if predictions == 0 {
        return Err(MetricError::Empty);
    }
    Ok(())
}

/// Scores class predictions (argmax of the logits) against gold class indices.
pub fn classification(
    metrics: &[Metric],
    predictions: &[i64],
    references: &[i64],
) -> Result<Scores> {
    let values = metrics
        .iter()
        .map(|&m| {
            let v = match m {
                Metric::Accuracy => accuracy(predictions, references),
                Metric::F1 => f1_binary(predictions, references),
                Metric::MatthewsCorrelation => matthews_corrcoef(predictions, references),
                Metric::Pearson | Metric::Spearmanr => Err(MetricError::WrongKind {
                    metric: m.name(),
                    applies: "regression (stsb)",
                }),
            }?;
            Ok((m, v))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Scores::from_values(values))
}

/// Scores real-valued predictions (stsb) against gold scores.
pub fn regression(metrics: &[Metric], predictions: &[f64], references: &[f64]) -> Result<Scores> {
    let values = metrics
        .iter()
        .map(|&m| {
            let v = match m {
                Metric::Pearson => pearson(predictions, references),
                Metric::Spearmanr => spearman(predictions, references),
                _ => Err(MetricError::WrongKind {
                    metric: m.name(),
                    applies: "classification",
                }),
            }?;
            Ok((m, v))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Scores::from_values(values))
}

/// [`regression`], except that a metric undefined on these values (constant
/// predictions, say) is NaN, as scipy returns it and HF's Trainer logs it and goes on,
/// instead of an error. Other errors (lengths, non-finite values) stay errors.
pub fn regression_nan_if_undefined(
    metrics: &[Metric],
    predictions: &[f64],
    references: &[f64],
) -> Result<Scores> {
    let values = metrics
        .iter()
        .map(|&m| match regression(&[m], predictions, references) {
            Ok(scores) => Ok((m, scores.get(m.name()).unwrap_or(f64::NAN))),
            Err(MetricError::Undefined { .. }) => Ok((m, f64::NAN)),
            Err(e) => Err(e),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Scores::from_values(values))
}

/// `sklearn.metrics.accuracy_score`.
pub fn accuracy(predictions: &[i64], references: &[i64]) -> Result<f64> {
    check_lengths(predictions.len(), references.len())?;
    let correct = predictions
        .iter()
        .zip(references)
        .filter(|(p, r)| p == r)
        .count();
    Ok(correct as f64 / predictions.len() as f64)
}

/// `sklearn.metrics.f1_score` with `pos_label=1`: 0.0 when there is no positive
/// prediction nor label (sklearn's `zero_division` default).
pub fn f1_binary(predictions: &[i64], references: &[i64]) -> Result<f64> {
    check_lengths(predictions.len(), references.len())?;
    let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
    for (&p, &r) in predictions.iter().zip(references) {
        match (p == 1, r == 1) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    let denom = 2 * tp + fp + fn_;
    Ok(if denom == 0 {
        0.0
    } else {
        (2 * tp) as f64 / denom as f64
    })
}

/// `sklearn.metrics.matthews_corrcoef`, multiclass form; 0.0 when undefined, as sklearn.
pub fn matthews_corrcoef(predictions: &[i64], references: &[i64]) -> Result<f64> {
    check_lengths(predictions.len(), references.len())?;
    let mut classes: Vec<i64> = predictions.iter().chain(references).copied().collect();
    classes.sort_unstable();
    classes.dedup();
    let k = classes.len();
    let pos = |c: i64| classes.binary_search(&c).unwrap_or(0);
    let mut confusion = vec![0f64; k * k];
    for (&p, &r) in predictions.iter().zip(references) {
        confusion[pos(r) * k + pos(p)] += 1.0;
    }
    let t_sum: Vec<f64> = (0..k)
        .map(|i| (0..k).map(|j| confusion[i * k + j]).sum())
        .collect();
    let p_sum: Vec<f64> = (0..k)
        .map(|j| (0..k).map(|i| confusion[i * k + j]).sum())
        .collect();
    let n_correct: f64 = (0..k).map(|i| confusion[i * k + i]).sum();
    let n = predictions.len() as f64;
    let cov_ytyp = n_correct * n - t_sum.iter().zip(&p_sum).map(|(t, p)| t * p).sum::<f64>();
    let cov_ypyp = n * n - p_sum.iter().map(|p| p * p).sum::<f64>();
    let cov_ytyt = n * n - t_sum.iter().map(|t| t * t).sum::<f64>();
    if cov_ypyp * cov_ytyt == 0.0 {
        return Ok(0.0);
    }
    Ok(cov_ytyp / (cov_ytyt * cov_ypyp).sqrt())
}

fn check_finite(metric: &'static str, values: &[f64]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(position) => Err(MetricError::NonFinite {
            metric,
            needs: "finite",
            position,
        }),
        None => Ok(()),
    }
}

fn correlation(metric: &'static str, x: &[f64], y: &[f64]) -> Result<f64> {
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        // scipy returns NaN with a ConstantInputWarning; we say why instead.
        return Err(MetricError::Undefined {
            metric,
            reason: "predictions or references are constant",
        });
    }
    Ok((sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0))
}

/// `scipy.stats.pearsonr(...)[0]`.
pub fn pearson(predictions: &[f64], references: &[f64]) -> Result<f64> {
    check_lengths(predictions.len(), references.len())?;
    check_finite("pearson", predictions)?;
    check_finite("pearson", references)?;
    if predictions.len() < 2 {
        return Err(MetricError::Undefined {
            metric: "pearson",
            reason: "there are fewer than 2 examples",
        });
    }
    correlation("pearson", predictions, references)
}

/// `scipy.stats.spearmanr(...)[0]`: Pearson correlation of average ranks (ties share their mean rank).
pub fn spearman(predictions: &[f64], references: &[f64]) -> Result<f64> {
    check_lengths(predictions.len(), references.len())?;
    check_finite("spearmanr", predictions)?;
    check_finite("spearmanr", references)?;
    if predictions.len() < 2 {
        return Err(MetricError::Undefined {
            metric: "spearmanr",
            reason: "there are fewer than 2 examples",
        });
    }
    correlation(
        "spearmanr",
        &average_ranks(predictions),
        &average_ranks(references),
    )
}

/// `scipy.stats.rankdata(method="average")`: 1-based ranks, ties get their mean rank.
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Positions start..end (0-based) share ranks start+1..=end; their mean:
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degenerate_inputs_are_typed_errors() {
        assert_eq!(accuracy(&[], &[]), Err(MetricError::Empty));
        assert!(matches!(
            accuracy(&[1], &[1, 0]),
            Err(MetricError::LengthMismatch { .. })
        ));
        assert!(matches!(
            pearson(&[1.0, 1.0, 1.0], &[0.0, 1.0, 2.0]),
            Err(MetricError::Undefined { .. })
        ));
        assert!(matches!(
            spearman(&[f64::NAN, 1.0], &[0.0, 1.0]),
            Err(MetricError::NonFinite { .. })
        ));
        assert!(matches!(
            classification(&[Metric::Pearson], &[1], &[1]),
            Err(MetricError::WrongKind { .. })
        ));
    }

    #[test]
    fn ranks_average_ties() {
        assert_eq!(
            average_ranks(&[3.0, 1.0, 3.0, 2.0]),
            vec![3.5, 1.0, 3.5, 2.0]
        );
    }
}
