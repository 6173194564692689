"""Writes tests/golden/metrics.json: GLUE metric values from scikit-learn and scipy.

These are the functions behind HF `evaluate.load("glue", ...)`: accuracy_score,
f1_score (binary, pos_label=1), matthews_corrcoef, scipy.stats.pearsonr and
spearmanr. Cases cover ties, constant predictions and one-class labels; a value
scipy returns as NaN is written as null (the Rust side must return an error there).

Run: .venv-ref/bin/python scripts/golden_metrics.py
"""
import json
import math
import random
import warnings
from pathlib import Path

import scipy
import sklearn
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

ROOT = Path(__file__).resolve().parent.parent
warnings.simplefilter("ignore")


def num(x):
    x = float(x)
    return None if math.isnan(x) else x


def classification_cases():
    rng = random.Random(0)
    cases = {
        "binary_random": ([rng.randint(0, 1) for _ in range(200)], [rng.randint(0, 1) for _ in range(200)]),
        "binary_mostly_right": (
            [1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1, 0],
            [1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 1, 0],
        ),
        "constant_predictions_ones": ([1] * 10, [0, 1, 1, 0, 1, 0, 1, 1, 0, 1]),
        "constant_predictions_zeros": ([0] * 10, [0, 1, 1, 0, 1, 0, 1, 1, 0, 1]),
        "all_labels_one": ([1, 0, 1, 1, 0, 1], [1] * 6),
        "all_labels_zero_no_positive": ([0] * 6, [0] * 6),
        "perfect": ([0, 1, 1, 0], [0, 1, 1, 0]),
        "inverse": ([1, 0, 0, 1], [0, 1, 1, 0]),
        "three_class": ([rng.randint(0, 2) for _ in range(300)], [rng.randint(0, 2) for _ in range(300)]),
        "three_class_skewed": ([0, 0, 1, 2, 2, 2, 1, 0, 2, 1], [0, 1, 1, 2, 2, 0, 1, 0, 2, 2]),
    }
    out = []
    for name, (pred, ref) in cases.items():
        binary = set(pred) | set(ref) <= {0, 1}
        out.append(
            {
                "name": name,
                "predictions": pred,
                "references": ref,
                "accuracy": num(accuracy_score(ref, pred)),
                "f1": num(f1_score(ref, pred)) if binary else None,
                "matthews_correlation": num(matthews_corrcoef(ref, pred)),
            }
        )
    return out


def regression_cases():
    rng = random.Random(1)
    ref = [round(rng.uniform(0, 5), 1) for _ in range(150)]
    pred_noisy = [r + rng.gauss(0, 1) for r in ref]
    cases = {
        "stsb_like_noisy": (pred_noisy, ref),
        "ties_in_both": ([1.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0, 0.5], [0.0, 2.5, 2.5, 2.5, 4.0, 4.0, 5.0, 1.0]),
        "rounded_predictions": ([round(p) for p in pred_noisy], ref),
        "anti_correlated": ([5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.5]),
        "constant_predictions": ([2.5] * 8, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 1.5, 2.5]),
    }
    out = []
    for name, (pred, ref) in cases.items():
        out.append(
            {
                "name": name,
                "predictions": pred,
                "references": ref,
                "pearson": num(pearsonr(pred, ref)[0]),
                "spearmanr": num(spearmanr(pred, ref)[0]),
            }
        )
    return out


def main():
    out = {
        "generator": "scripts/golden_metrics.py",
        "scikit-learn": sklearn.__version__,
        "scipy": scipy.__version__,
        "classification": classification_cases(),
        "regression": regression_cases(),
    }
    target = ROOT / "tests" / "golden" / "metrics.json"
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
