"""The statistics that judge the notebooks' comparisons: is a difference real, and which way does it go?

Two kinds of noise, two kinds of test:

* **One model, two ways of scoring it, the same images** (dense vs multi-crop, one vs several test
  scales). The noise is *which images flip*. :func:`mcnemar` counts the images only one scheme gets
  right and asks whether the split could be a coin toss; :func:`paired_bootstrap` gives an interval
  for the accuracy difference; :func:`paired_over_images` does both for every trained seed and says
  whether the seeds agree.
* **Two trainings** (depth, recipe, augmentation). The noise is the seed. :func:`seed_paired_interval`
  pairs the runs by seed and gives a Student t-interval over the per-seed differences.

:func:`verdict` turns an interval into one of three symmetric words ("supports the paper",
"contradicts the paper", "not resolved at this size"); :func:`judge` writes it as one line;
:func:`judge_over_images` gives a same-model comparison a verdict per seed and one for all seeds.

Every difference is **B minus A**: put the paper's baseline in A and the thing it says is better in B.
Used by notebooks 05, 06, 07 and 09.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.stats
from numpy.typing import ArrayLike

__all__ = [
    "mcnemar",
    "paired_bootstrap",
    "seed_paired_interval",
    "verdict",
    "judge",
    "paired_over_images",
    "judge_over_images",
    "CHANGE_WORDS",
]

SUPPORTS, CONTRADICTS, UNRESOLVED = "supports the paper", "contradicts the paper", "not resolved at this size"
# The same three verdicts for a claim that is not the paper's (notebook 05: "this change helps").
CHANGE_WORDS = ("helps", "hurts", UNRESOLVED)
_CHUNK_ELEMENTS = 1 << 22  # resampled indices held at once in paired_bootstrap (32 MiB of int64)


def _correctness(correct_a: ArrayLike, correct_b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Check two per-image correctness vectors and return them as bool arrays."""
    out = []
    for name, x in (("correct_a", correct_a), ("correct_b", correct_b)):
        x = np.asarray(x)
        if x.ndim != 1 or x.size == 0:
            raise ValueError(f"{name} must be a non-empty 1-D vector, one entry per image; got shape {x.shape}")
        if x.dtype != bool and not (np.issubdtype(x.dtype, np.number) and np.isin(x, (0, 1)).all()):
            raise ValueError(f"{name} must hold only 0/1 or True/False (was each image right?); got {x[:5]} ...")
        out.append(x.astype(bool))
    if out[0].size != out[1].size:
        raise ValueError(
            f"correct_a has {out[0].size} images and correct_b {out[1].size}: "
            "both must score the same images, in the same order"
        )
    return out[0], out[1]


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be a fraction between 0 and 1 (e.g. 0.95); got {confidence}")


def mcnemar(correct_a: ArrayLike, correct_b: ArrayLike) -> dict:
    """Exact McNemar test: do schemes A and B score the *same images* equally well?

    ``correct_a`` and ``correct_b`` are (N,) vectors of 0/1 or bool, one entry per image (was it
    classified right?), in the same image order. Images both schemes get right (or both wrong) say
    nothing about which is better; only the discordant ones count: ``b`` images only A gets right,
    ``c`` only B. If the schemes were equally good each discordant image would be a fair coin toss,
    so the two-sided p-value is the exact binomial test of ``b`` successes in ``b + c`` tosses
    (1.0 when no image is discordant).

    Returns ``{"a_only": b, "b_only": c, "n": N, "p_value": p, "difference": acc_b - acc_a}``,
    the difference as a fraction (0.012 = 1.2 points). Introduced in notebook 06.
    """
    a, b = _correctness(correct_a, correct_b)
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p = 1.0 if a_only + b_only == 0 else float(scipy.stats.binomtest(a_only, a_only + b_only, 0.5).pvalue)
    return {"a_only": a_only, "b_only": b_only, "n": a.size, "p_value": p, "difference": (b_only - a_only) / a.size}


def paired_bootstrap(
    correct_a: ArrayLike, correct_b: ArrayLike, *, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> dict:
    """Paired bootstrap interval for ``acc_b - acc_a`` over images.

    Draws ``n_resamples`` new test sets of N images with replacement, the *same* images for both
    schemes (that is the pairing), and takes the percentile interval of the accuracy difference.
    Deterministic for a given ``seed``; the resamples are drawn in chunks so 10,000 x 10,000 images
    fit in a few tens of MiB. Inputs as :func:`mcnemar`.

    Returns ``{"difference", "low", "high", "confidence"}``, fractions (B minus A). Introduced in notebook 06.
    """
    a, b = _correctness(correct_a, correct_b)
    _check_confidence(confidence)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1; got {n_resamples}")
    per_image = b.astype(np.int8) - a.astype(np.int8)  # +1: only B right, -1: only A right, 0: agree
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // per_image.size)
    differences = np.empty(n_resamples)
    for start in range(0, n_resamples, chunk):
        stop = min(start + chunk, n_resamples)
        indices = rng.integers(0, per_image.size, size=(stop - start, per_image.size))
        differences[start:stop] = per_image[indices].mean(axis=1)
    low, high = np.quantile(differences, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"difference": float(per_image.mean()), "low": float(low), "high": float(high), "confidence": confidence}


def paired_over_images(
    pairs: Sequence[tuple[ArrayLike, ArrayLike]], *, n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> dict:
    """:func:`mcnemar` and :func:`paired_bootstrap` for each trained seed, and whether the seeds agree.

    ``pairs`` holds one ``(correct_a, correct_b)`` per trained network (seed): the same network scored
    two ways on the same images. Seed ``i``'s bootstrap uses ``seed + i``.

    Returns ``{"per_seed": rows, "agree": bool}``: each row is the :func:`mcnemar` dict plus the
    bootstrap's ``"low"``, ``"high"`` and ``"confidence"``; ``agree`` is True when every seed's
    difference has the same sign and none is zero. Introduced in notebook 06.
    """
    if len(pairs) == 0:
        raise ValueError("pairs is empty: give one (correct_a, correct_b) per trained seed")
    rows = []
    for i, (correct_a, correct_b) in enumerate(pairs):
        row = mcnemar(correct_a, correct_b)
        interval = paired_bootstrap(correct_a, correct_b, n_resamples=n_resamples, confidence=confidence, seed=seed + i)
        row.update(low=interval["low"], high=interval["high"], confidence=confidence)
        rows.append(row)
    signs = {int(np.sign(row["difference"])) for row in rows}
    return {"per_seed": rows, "agree": len(signs) == 1 and 0 not in signs}


def seed_paired_interval(a: ArrayLike, b: ArrayLike, *, confidence: float = 0.95) -> dict:
    """Student t-interval for the mean of ``b - a`` over seeds: two trainings paired by seed.

    ``a[i]`` and ``b[i]`` are the accuracies (any unit; the result is in the same one) of the two
    trainings run with seed ``i``: same split, same data order, so each difference ``d_i = b_i - a_i``
    cancels what the seed does to both. The interval is ``mean(d) +/- t * sd(d) / sqrt(n)``, ``sd``
    with ``ddof=1`` and ``t`` the ``(1 + confidence) / 2`` quantile of Student's t with ``n - 1``
    degrees of freedom; identical differences (up to float rounding) give ``[mean, mean]``. With 2-3
    seeds that quantile is large (12.7 and 4.30 at 95 %), so the interval is wide: ``"note"`` says
    so, for the notebook to print next to the verdict.

    Returns ``{"differences", "mean", "low", "high", "confidence", "n_seeds", "sd", "note"}``.
    Needs at least 2 seeds. Introduced in notebook 07.
    """
    _check_confidence(confidence)
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 1 or b.ndim != 1 or a.size != b.size:
        raise ValueError(
            f"a and b must be 1-D with one accuracy per seed, the same seeds; got shapes {a.shape}, {b.shape}"
        )
    if a.size < 2:
        raise ValueError(f"{a.size} seed cannot give an interval: train both runs with at least 2 seeds")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a and b must be finite numbers (is a run missing, stored as NaN?)")
    d = b - a
    n = d.size
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    # Differences equal up to the rounding of b - a (0.3 - 0.2 != 0.2 - 0.1) have no spread: a point interval.
    if np.ptp(d) <= 8 * np.finfo(float).eps * max(np.abs(a).max(), np.abs(b).max()):
        sd = 0.0
    t = float(scipy.stats.t.ppf((1 + confidence) / 2, n - 1))
    half = t * sd / math.sqrt(n)
    level = f"{100 * confidence:g} %"
    if n <= 3:
        note = f"only {n} seeds: the interval is wide and its t quantile large ({t:.2f} at {level})"
    else:
        note = f"{n} seeds: t quantile {t:.2f} at {level}"
    return {
        "differences": d.tolist(),
        "mean": mean,
        "low": mean - half,
        "high": mean + half,
        "confidence": confidence,
        "n_seeds": n,
        "sd": sd,
        "note": note,
    }


def verdict(
    low: float, high: float, *, expected: str = "greater", margin: float = 0.0, words: Sequence[str] | None = None
) -> str:
    """What an interval for ``B - A`` says about the paper's claim, in one of three symmetric phrases.

    ``expected`` is the paper's claim:

    * ``"greater"`` (B beats A): ``"supports the paper"`` if ``low > margin``, ``"contradicts the
      paper"`` if ``high < -margin``, else ``"not resolved at this size"``.
    * ``"less"`` (B is worse): the mirror image, ``verdict(low, high, expected="less") ==
      verdict(-high, -low, expected="greater")``.
    * ``"equal"`` (no difference, e.g. E vs D): an equivalence test within ``margin > 0``. Supports if
      the whole interval is inside ``(-margin, margin)``, contradicts if it is wholly outside (``low >
      margin`` or ``high < -margin``), else not resolved.
    * ``"not greater"`` (B is no better than A, e.g. "LRN does not improve on A"): a non-superiority
      test within ``margin > 0``. Supports if ``high < margin`` (any gain is smaller than the
      margin), contradicts if ``low > margin`` (B is better by more than it), else not resolved. A B
      that is clearly *worse* supports it: the claim is only that B does not help.

    For the directional claims ``margin`` (default 0) is the smallest difference worth calling, on
    either side. Flipping the interval's sign turns "supports" into "contradicts" and back, so a
    result that went the other way is never reported as a success.

    ``words`` replaces the three phrases (supported, contradicted, not resolved) for a claim that is
    not the paper's, e.g. :data:`CHANGE_WORDS` ("helps", "hurts", "not resolved at this size").
    """
    supports, contradicts, unresolved = words if words is not None else (SUPPORTS, CONTRADICTS, UNRESOLVED)
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"the interval must be finite numbers; got [{low}, {high}]")
    if low > high:
        raise ValueError(f"low ({low}) is above high ({high}): pass the interval's lower end first")
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0; got {margin}")
    if expected == "less":
        low, high, expected = -high, -low, "greater"
    if expected == "greater":
        return supports if low > margin else contradicts if high < -margin else unresolved
    if expected == "equal":
        if margin == 0:
            raise ValueError("expected='equal' needs margin > 0: say how close counts as level (e.g. margin=0.01)")
        if -margin < low and high < margin:
            return supports
        return contradicts if low > margin or high < -margin else unresolved
    if expected == "not greater":
        if margin == 0:
            raise ValueError("expected='not greater' needs margin > 0: the smallest gain that would count as one")
        return supports if high < margin else contradicts if low > margin else unresolved
    raise ValueError(f"expected must be 'greater', 'less', 'equal' or 'not greater'; got {expected!r}")


def judge(
    low: float,
    high: float,
    *,
    expected: str,
    margin: float = 0.0,
    estimate: float | None = None,
    unit: str = "points",
    scale: float = 100,
    words: Sequence[str] | None = None,
) -> str:
    """One line for a notebook: the :func:`verdict`, then the estimate and interval.

    ``words`` as :func:`verdict`. ``low``, ``high`` and ``estimate`` (the point estimate, optional) are
    multiplied by ``scale``
    (default 100: fractions printed as percentage points) and written with a sign and one decimal.
    For ``expected="equal"`` the margin is named too. Examples::

        judge(0.009, 0.038, expected="greater", estimate=0.024)
        'supports the paper: +2.4 points [+0.9, +3.8]'
        judge(-0.004, 0.003, expected="equal", margin=0.01)
        'supports the paper (level within ±1.0 points): [-0.4, +0.3] points'
    """
    said = verdict(low, high, expected=expected, margin=margin, words=words)
    if expected == "equal":
        said += f" (level within ±{margin * scale:.1f} {unit})"
    elif expected == "not greater":
        said += f" (no gain of {margin * scale:.1f} {unit} or more)"
    interval = f"[{low * scale:+.1f}, {high * scale:+.1f}]"
    if estimate is None:
        return f"{said}: {interval} {unit}"
    return f"{said}: {estimate * scale:+.1f} {unit} {interval}"


def judge_over_images(
    pairs: Sequence[tuple[ArrayLike, ArrayLike]],
    *,
    expected: str = "greater",
    n_resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """A verdict on a same-model comparison: one per trained seed, and one for all of them.

    ``pairs`` as :func:`paired_over_images` (one ``(correct_a, correct_b)`` per seed, B minus A);
    ``expected`` ``"greater"`` or ``"less"``. Each seed's verdict reads its paired bootstrap interval
    with :func:`verdict`. The overall verdict is the seeds' common one when every seed gives the same,
    else ``"not resolved at this size"``: a finding holds only if it holds for every network trained,
    and a reversal in every seed is reported as one.

    Returns :func:`paired_over_images`'s dict with ``"verdict"`` added to every row, and ``"verdict"``,
    ``"mean"`` (the mean of the per-seed differences, a fraction) and ``"line"`` (the verdict, then each
    seed's difference and interval in points, and its McNemar p). Introduced in notebook 06.
    """
    if expected not in ("greater", "less"):
        raise ValueError(f"expected must be 'greater' or 'less' for a comparison over images; got {expected!r}")
    result = paired_over_images(pairs, n_resamples=n_resamples, confidence=confidence, seed=seed)
    rows = result["per_seed"]
    for row in rows:
        row["verdict"] = verdict(row["low"], row["high"], expected=expected)
    words = {row["verdict"] for row in rows}
    overall = words.pop() if len(words) == 1 else UNRESOLVED
    seeds = "; ".join(
        f"{100 * r['difference']:+.1f} [{100 * r['low']:+.1f}, {100 * r['high']:+.1f}] p={r['p_value']:.2g}"
        for r in rows
    )
    mean = float(np.mean([row["difference"] for row in rows]))
    return result | {"verdict": overall, "mean": mean, "line": f"{overall}: per seed {seeds} points"}
