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
  (:func:`vggedu.stats.mcnemar`) can be recomputed from the file alone;
* for notebook 06's scale study (:mod:`vggedu.scales`' scores file): :func:`judge_schemes` (two ways
  of scoring the same models, :data:`SCHEME_CLAIMS`), :func:`judge_fusion` (two seeds averaged
  against the better alone) and :func:`judge_training` (two training settings, paired by seed).

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
from .stats import judge, judge_over_images, seed_paired_interval, verdict

__all__ = [
    "DEPTH_CLAIMS",
    "LEVEL_MARGIN",
    "load_study",
    "runs_by_column",
    "column_summary",
    "judge_claim",
    "pack_correct",
    "unpack_correct",
    "SCHEME_CLAIMS",
    "scheme_correct",
    "judge_schemes",
    "judge_fusion",
    "judge_training",
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


# Sections 4.2 and 4.3 of the paper, each two ways of scoring the same models on the same images, as
# (scheme A, scheme B, the paper's words): B - A, and the paper says B is better.
SCHEME_CLAIMS: list[tuple[str, str, str]] = [
    ("dense, one scale", "dense, multi-scale", "several test scales beat one (Table 4)"),
    ("dense, multi-scale", "multi-crop, multi-scale", "multi-crop beats dense (Table 5)"),
    ("dense, multi-scale", "multi-crop & dense", "multi-crop & dense beats dense alone (Table 5)"),
    ("multi-crop, multi-scale", "multi-crop & dense", "multi-crop & dense beats multi-crop alone (Table 5)"),
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


def _seeds(scores: dict) -> list[int]:
    return list(scores["protocol"]["seeds"])


def scheme_correct(scores: dict, label: str, scheme: str) -> np.ndarray:
    """Which validation images model ``label`` (e.g. ``"jittered S=[36,72], seed 0"``) got right with ``scheme``."""
    try:
        return unpack_correct(scores["val"][label][scheme])
    except KeyError:
        raise KeyError(f"no scores for {label!r} with {scheme!r}; the file has {sorted(scores['val'])}") from None


def judge_schemes(scores: dict, setting: str, a: str, b: str, *, expected: str = "greater") -> dict:
    """Scheme ``b`` against scheme ``a`` for every seed's model of ``setting``, on the same validation images:
    :func:`vggedu.stats.judge_over_images` (an exact McNemar test and a paired bootstrap interval per seed, a
    verdict per seed and one for all)."""
    pairs = [
        (scheme_correct(scores, f"{setting}, seed {s}", a), scheme_correct(scores, f"{setting}, seed {s}", b))
        for s in _seeds(scores)
    ]
    return judge_over_images(pairs, expected=expected)


def judge_fusion(scores: dict, setting: str) -> dict:
    """Fusion (Section 4.4) of every two seeds of ``setting``, each with its scheme chosen on validation,
    against the better of the two alone, on the validation images: :func:`vggedu.stats.judge_over_images`,
    one row per pair (in ``"pairs"``). The paper says the fusion is better."""
    keys, pairs = [], []
    for key, fused in scores["fusion"]["val"].items():
        name, seeds = key.rsplit(", seeds ", 1)
        if name != setting:
            continue
        alone = [f"{setting}, seed {s}" for s in seeds.split("+")]
        best = max(alone, key=lambda m: scores["val"][m][scores["chosen"][m]]["accuracy"])
        pairs.append((scheme_correct(scores, best, scores["chosen"][best]), unpack_correct(fused)))
        keys.append(key)
    if not pairs:
        raise KeyError(f"no fusion of {setting!r} in the file")
    return judge_over_images(pairs) | {"pairs": keys}


def judge_training(
    scores: dict, a: str, b: str, *, scheme: str = "dense, one scale", expected: str = "greater"
) -> dict:
    """Training setting ``b`` against ``a`` (e.g. jittered against fixed S), both scored with ``scheme``:
    validation accuracy paired by seed (same split, same start), a t-interval
    (:func:`vggedu.stats.seed_paired_interval`) and a symmetric verdict, in points."""
    seeds = _seeds(scores)
    acc = {x: [100 * scores["val"][f"{x}, seed {s}"][scheme]["accuracy"] for s in seeds] for x in (a, b)}
    interval = seed_paired_interval(acc[a], acc[b])
    low, high = interval["low"] / 100, interval["high"] / 100
    return interval | {
        "seeds": seeds,
        "verdict": verdict(low, high, expected=expected),
        "line": judge(low, high, expected=expected, estimate=interval["mean"] / 100),
    }
