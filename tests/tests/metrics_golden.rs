//! glue-metrics against scikit-learn / scipy (tests/golden/metrics.json, written by
//! scripts/golden_metrics.py).

use glue_metrics::{
    accuracy, f1_binary, matthews_corrcoef, pearson, spearman, Metric, MetricError,
};
use serde_json::Value;

fn golden() -> Value {
    glue_testkit::golden("metrics.json")
}

fn ints(v: &Value) -> Vec<i64> {
    glue_testkit::json_i64s(v)
}

fn floats(v: &Value) -> Vec<f64> {
    glue_testkit::json_f64s(v)
}

fn close(name: &str, metric: &str, ours: f64, theirs: f64) {
    assert!(
        (ours - theirs).abs() <= 1e-12,
        "{name} {metric}: ours {ours}, scikit-learn/scipy {theirs}"
    );
}

#[test]
fn classification_metrics_match_scikit_learn() {
    let g = golden();
    let cases = g["classification"].as_array().unwrap();
    assert!(cases.len() >= 8);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (p, r) = (ints(&case["predictions"]), ints(&case["references"]));
        close(
            name,
            "accuracy",
            accuracy(&p, &r).unwrap(),
            case["accuracy"].as_f64().unwrap(),
        );
        close(
            name,
            "matthews_correlation",
            matthews_corrcoef(&p, &r).unwrap(),
            case["matthews_correlation"].as_f64().unwrap(),
        );
        if let Some(f1) = case["f1"].as_f64() {
            close(name, "f1", f1_binary(&p, &r).unwrap(), f1);
        }
    }
}

#[test]
fn correlations_match_scipy_and_nan_becomes_an_error() {
    let g = golden();
    for case in g["regression"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (p, r) = (floats(&case["predictions"]), floats(&case["references"]));
        for (metric, kind, ours) in [
            ("pearson", Metric::Pearson, pearson(&p, &r)),
            ("spearmanr", Metric::Spearmanr, spearman(&p, &r)),
        ] {
            // What the Trainer reports: scipy's NaN itself where it is undefined.
            let lenient = glue_metrics::regression_nan_if_undefined(&[kind], &p, &r)
                .unwrap()
                .get(metric)
                .unwrap();
            match case[metric].as_f64() {
                Some(theirs) => {
                    close(name, metric, ours.unwrap(), theirs);
                    close(name, metric, lenient, theirs);
                }
                None => {
                    assert!(
                        matches!(ours, Err(MetricError::Undefined { .. })),
                        "{name} {metric}: scipy gives NaN, we gave {ours:?}"
                    );
                    assert!(lenient.is_nan(), "{name} {metric}: scipy gives NaN");
                }
            }
        }
    }
}
