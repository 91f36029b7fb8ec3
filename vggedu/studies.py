"""The stored studies, read: per-column summaries and the paper's claims judged on them.

A study is the JSON file :func:`vggedu.experiments.run_grid` writes (``{run name: result}``);
the package ships the ones notebook 07 reads in ``vggedu/results/``. This module turns such a
file into the notebook's tables, so a test can check the notebook against the same numbers:

* :func:`column_summary`: one row per column, over its seeds (validation accuracy, the final
  training accuracy, the train - validation gap, how fast training accuracy was still rising);
* :func:`judge_claim`: one of the paper's Section 4.1 claims (:data:`DEPTH_CLAIMS`), as a
  difference paired by seed with a t-interval (:func:`vggedu.stats.seed_paired_interval`) and a
  symmetric verdict (:func:`vggedu.stats.verdict`);
* :func:`pack_correct` / :func:`unpack_correct`: which images a scheme got right, kept in a study
  file as text (one bit an image: 5,000 images in 836 characters), so a paired test over images
  (:func:`vggedu.stats.mcnemar`) can be recomputed from the file alone.

Accuracies are fractions in the files and percentage points here. Introduced in notebook 07.
"""

from __future__ import annotations

import base64
import json
import statistics
from importlib import resources
from pathlib import Path

import numpy as np

from .analysis import count_macs, count_parameters
from .configs import count_weight_layers
from .stats import judge, seed_paired_interval, verdict

__all__ = [
    "DEPTH_CLAIMS",
    "LEVEL_MARGIN",
    "load_study",
    "runs_by_column",
    "column_summary",
    "judge_claim",
    "pack_correct",
    "unpack_correct",
]

# The smallest gain that counts as one, for the claims that something does not help: 0.5 points, just below the
# smallest step Table 3 reads as a gain (B to C, 28.7 -> 28.1 % top-1 error: 0.6 points).
LEVEL_MARGIN = 0.5

# Section 4.1 of the paper, as (A, B, expected, the paper's words): every difference is B - A in validation
# accuracy; "greater": B is better; "not greater": B gains less than LEVEL_MARGIN (it does not help).
DEPTH_CLAIMS: list[tuple[str, str, str, str]] = [
    ("A", "A-LRN", "not greater", "LRN does not improve on A"),
    ("A", "B", "greater", "B is better than A (depth: 11 -> 13 layers)"),
    ("B", "C", "greater", "C is better than B (1x1 convolutions: more non-linearity)"),
    ("C", "D", "greater", "D is better than C (3x3 where C has 1x1: spatial context)"),
    ("D", "E", "not greater", "the error saturates at 19 layers (E no better than D)"),
    ("A", "E", "greater", "the error falls from 11 layers (A) to 19 (E)"),
    ("B-5x5", "B", "greater", "B is better than its shallow net (each pair of 3x3 as one 5x5)"),
]


def load_study(name: str | Path) -> dict[str, dict]:
    """A study file: a path, or the name of one shipped in ``vggedu/results/`` (e.g. ``"depth-converged-cpu"``)."""
    path = Path(name)
    if not path.suffix:
        path = Path(str(resources.files("vggedu") / "results" / f"{name}.json"))
    if not path.is_file():
        raise FileNotFoundError(
            f"no study at {path}: give a results file written by vggedu.experiments (python -m vggedu.experiments "
            "depth ... --out FILE), or the name of one in vggedu/results/"
        )
    return json.loads(path.read_text())


def runs_by_column(study: dict[str, dict]) -> dict[str, dict[int, dict]]:
    """``{column: {seed: run}}`` for the finished runs of a study (a run that diverged has no accuracy)."""
    columns: dict[str, dict[int, dict]] = {}
    for run in study.values():
        if run.get("val_accuracy") is None:
            continue
        config = run["config"]
        columns.setdefault(config["model"], {})[config["seed"]] = run
    return columns


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def column_summary(study: dict[str, dict], *, last: int = 3) -> list[dict]:
    """One row per column (in the study's order): its size and its accuracy over seeds, in points.

    ``val``: mean final validation accuracy (``val sd``: its standard deviation over seeds, 0 for one
    seed); ``train``: mean training accuracy of the last epoch (measured while training: averaged
    over the epoch as the weights improve, on augmented images, batch norm in training mode);
    ``gap``: train - val; ``rising``: how much training accuracy still rose per epoch over the
    ``last`` epochs (points per epoch, mean over seeds): near 0 when training has levelled off.
    """
    rows = []
    for column, runs in runs_by_column(study).items():
        config = next(iter(runs.values()))["config"]
        kw = dict(head="cifar", num_classes=10, width=config["width"], batch_norm=config["batch_norm"])
        val = [100 * r["val_accuracy"] for r in runs.values()]
        train = [100 * r["history"][-1]["train_accuracy"] for r in runs.values()]
        rising = [
            100 * (r["history"][-1]["train_accuracy"] - r["history"][-1 - last]["train_accuracy"]) / last
            for r in runs.values()
            if len(r["history"]) > last
        ]
        rows.append(
            {
                "column": column,
                "weight layers": count_weight_layers(column),
                "params": count_parameters(column, **kw),
                "MACs": count_macs(column, input_size=32, **kw),
                "seeds": sorted(runs),
                "val": _mean(val),
                "val sd": statistics.stdev(val) if len(val) > 1 else 0.0,
                "train": _mean(train),
                "gap": _mean(train) - _mean(val),
                "rising": _mean(rising),
            }
        )
    return rows


def judge_claim(study: dict[str, dict], a: str, b: str, expected: str, *, margin: float | None = None) -> dict:
    """One claim, ``b`` against ``a``, on the seeds both columns finished: differences, interval, verdict.

    ``margin`` (points) defaults to :data:`LEVEL_MARGIN` for ``"equal"`` and ``"not greater"``, else 0.
    Returns ``{"a", "b", "seeds", "differences", "mean", "low", "high", "verdict", "line", "note"}``
    in points; with fewer than 2 shared seeds the verdict is "not resolved at this size" and the
    interval is missing (NaN).
    """
    margin = (LEVEL_MARGIN if expected in ("equal", "not greater") else 0.0) if margin is None else margin
    columns = runs_by_column(study)
    missing = [c for c in (a, b) if c not in columns]
    if missing:
        raise KeyError(f"the study has no finished run of {', '.join(missing)}; it has {', '.join(columns)}")
    seeds = sorted(set(columns[a]) & set(columns[b]))
    acc_a = [100 * columns[a][s]["val_accuracy"] for s in seeds]
    acc_b = [100 * columns[b][s]["val_accuracy"] for s in seeds]
    out = {"a": a, "b": b, "expected": expected, "margin": margin, "seeds": seeds}
    if len(seeds) < 2:
        words = "not resolved at this size"
        nan = float("nan")
        diffs = [y - x for x, y in zip(acc_a, acc_b)]
        line = f"{words}: {len(seeds)} shared seed, no interval yet" + (f" ({diffs[0]:+.2f} points)" if diffs else "")
        return out | {
            "differences": diffs,
            "mean": _mean(diffs),
            "low": nan,
            "high": nan,
            "verdict": words,
            "line": line,
            "note": "an interval needs at least 2 seeds",
        }
    interval = seed_paired_interval(acc_a, acc_b)
    low, high = interval["low"], interval["high"]
    line = judge(low, high, expected=expected, margin=margin, estimate=interval["mean"], scale=1)
    return out | {
        "differences": interval["differences"],
        "mean": interval["mean"],
        "low": low,
        "high": high,
        "verdict": verdict(low, high, expected=expected, margin=margin),
        "line": line,
        "note": interval["note"],
    }


def pack_correct(correct) -> dict:
    """Per-image correctness (booleans, in the images' order) as ``{"images": n, "bits": base64 text}``."""
    flags = np.asarray(correct).astype(bool).ravel()
    return {"images": int(flags.size), "bits": base64.b64encode(np.packbits(flags).tobytes()).decode("ascii")}


def unpack_correct(packed: dict) -> np.ndarray:
    """The booleans :func:`pack_correct` stored, one per image."""
    n = packed["images"]
    flags = np.unpackbits(np.frombuffer(base64.b64decode(packed["bits"]), dtype=np.uint8))
    if flags.size < n or flags.size - n >= 8:
        raise ValueError(f"the stored bits hold {flags.size} flags, not the {n} images the entry says")
    return flags[:n].astype(bool)
