"""glue-rs's MRPC accuracies over seeds against HF Trainer's over the same seeds.

HF's side is tests/golden/hf_trainer_mrpc.json (scripts/hf_trainer_mrpc.py SEED ...);
glue-rs's the all_results.json that scripts/glue_rs_mrpc.sh SEED ... leaves in
/tmp/glue-rs-mrpc-SEED (or --runs DIR, with one glue-rs-mrpc-SEED folder per seed).
Prints both per seed, HF's range and how many glue-rs seeds land in it, each side's
mean and standard deviation, and Welch's t for the difference of the means: a seed is
not the same run on both sides (glue-rs draws its own dropout masks), so what can agree
is the distribution, not seed by seed.

Run: python3 scripts/seed_band.py [--runs /tmp] [SEED ...]   (default: the golden's seeds)
"""
import argparse
import json
import math
import statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="/tmp", help="folder with glue-rs-mrpc-SEED run folders")
    parser.add_argument("seeds", nargs="*", type=int)
    args = parser.parse_args()
    golden = json.loads((ROOT / "tests" / "golden" / "hf_trainer_mrpc.json").read_text())
    hf = {r["seed"]: r["eval_accuracy"] for r in golden["runs"]}
    seeds = args.seeds or sorted(hf)
    ours = {}
    for seed in seeds:
        path = Path(args.runs) / f"glue-rs-mrpc-{seed}" / "all_results.json"
        if path.exists():
            ours[seed] = json.loads(path.read_text())["eval_accuracy"]
    missing_hf = [s for s in seeds if s not in hf]
    missing_ours = [s for s in seeds if s not in ours]
    if missing_hf or missing_ours:
        raise SystemExit(
            f"no HF run for seeds {missing_hf} (scripts/hf_trainer_mrpc.py SEED ...), "
            f"no glue-rs run for seeds {missing_ours} (scripts/glue_rs_mrpc.sh SEED ...)")
    lo, hi = min(hf[s] for s in seeds), max(hf[s] for s in seeds)
    print(f"{'seed':>5} {'HF':>7} {'glue-rs':>8}")
    for s in seeds:
        mark = "" if lo <= ours[s] <= hi else ("  above HF's range" if ours[s] > hi else "  below HF's range")
        print(f"{s:>5} {hf[s]:>7.4f} {ours[s]:>8.4f}{mark}")
    a, b = [hf[s] for s in seeds], [ours[s] for s in seeds]
    inside = sum(lo <= x <= hi for x in b)
    print(f"HF's range {lo:.4f}-{hi:.4f}: {inside} of {len(b)} glue-rs seeds inside")
    if len(seeds) > 1:
        ma, mb, sa, sb = statistics.mean(a), statistics.mean(b), statistics.stdev(a), statistics.stdev(b)
        se = math.sqrt(sa**2 / len(a) + sb**2 / len(b))
        t = (mb - ma) / se if se > 0 else float("nan")
        print(f"mean (sd): HF {ma:.4f} ({sa:.4f}), glue-rs {mb:.4f} ({sb:.4f}); "
              f"difference {mb - ma:+.4f} ({(mb - ma) * 408:+.1f} of MRPC's 408 pairs), Welch t {t:.2f}")


if __name__ == "__main__":
    main()
