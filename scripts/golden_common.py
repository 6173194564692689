"""What the tiny-model golden scripts (golden_distilbert.py, golden_roberta.py,
golden_deberta.py) share: paths, number rounding, and weights recorded as JSON."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIRROR = Path(os.environ.get("GLUE_MIRROR", ROOT.parent / "shared" / "glue-mirror"))
OUT = ROOT / "tests" / "golden"


def r6(t):
    return [round(float(x), 6) for x in t.flatten().tolist()]


def weights_of(folder):
    """model.safetensors as JSON (the tests write it back out), and the file removed:
    the repository holds no binary weights."""
    from safetensors.numpy import load_file

    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    path.unlink()
    return {k: {"shape": list(v.shape), "values": [float(x) for x in v.flatten().tolist()]}
            for k, v in sorted(tensors.items())}
