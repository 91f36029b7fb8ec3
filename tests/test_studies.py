"""The stored studies, read (vggedu.studies): summaries and claims, by hand and on the shipped files."""

import json
import math

import numpy as np
import pytest

from vggedu.studies import (
    DEPTH_CLAIMS,
    column_summary,
    judge_claim,
    load_study,
    pack_correct,
    runs_by_column,
    unpack_correct,
)


def _run(model, seed, val, train_curve):
    history = [{"epoch": i + 1, "train_accuracy": t, "val_accuracy": val} for i, t in enumerate(train_curve)]
    config = {"model": model, "seed": seed, "width": 0.125, "batch_norm": True}
    return {"config": config, "val_accuracy": val, "history": history}


def _study(rows):
    return {f"{m}-{s}": _run(m, s, v, t) for m, s, v, t in rows}


def test_a_column_summary_by_hand():
    study = _study(
        [
            ("A", 0, 0.70, [0.50, 0.60, 0.64, 0.66, 0.69]),
            ("A", 1, 0.72, [0.50, 0.61, 0.65, 0.68, 0.71]),
            ("E", 0, 0.75, [0.40, 0.70, 0.74, 0.75, 0.75]),
        ]
    )
    study["E-diverged"] = {"config": {"model": "E", "seed": 1}, "val_accuracy": None, "history": []}
    a, e = column_summary(study, last=3)
    assert (a["column"], a["seeds"], e["seeds"]) == ("A", [0, 1], [0])  # the diverged run is left out
    assert a["val"] == pytest.approx(71.0) and a["val sd"] == pytest.approx(math.sqrt(2))
    assert a["train"] == pytest.approx(70.0) and a["gap"] == pytest.approx(-1.0)
    # rising over the last 3 epochs: (69 - 60) / 3 = 3 and (71 - 61) / 3 = 3.33 points an epoch
    assert a["rising"] == pytest.approx((3 + 10 / 3) / 2)
    assert e["rising"] == pytest.approx((75 - 70) / 3) and e["val sd"] == 0.0
    assert a["weight layers"] == 11 and e["weight layers"] == 19 and e["params"] > a["params"]


def test_a_claim_is_paired_by_seed_and_its_verdict_turns_with_the_sign():
    study = _study(
        [("A", s, 0.70 + 0.01 * s, [0.7]) for s in range(3)]
        + [("B", s, 0.72 + 0.01 * s + 0.001 * s, [0.7]) for s in range(3)]
    )
    study["B-only"] = _run("B", 7, 0.99, [0.9])  # a seed A lacks: not paired, not used
    claim = judge_claim(study, "A", "B", "greater")
    assert claim["seeds"] == [0, 1, 2] and claim["differences"] == pytest.approx([2.0, 2.1, 2.2])
    assert claim["verdict"] == "supports the paper" and claim["low"] > 0
    assert claim["line"].startswith("supports the paper: +2.1 points")
    assert judge_claim(study, "B", "A", "greater")["verdict"] == "contradicts the paper"
    assert judge_claim(study, "A", "B", "equal", margin=1.0)["verdict"] == "contradicts the paper"
    assert judge_claim(study, "A", "B", "equal", margin=5.0)["verdict"] == "supports the paper"
    one = judge_claim(_study([("A", 0, 0.7, [0.7]), ("B", 0, 0.8, [0.8])]), "A", "B", "greater")
    assert one["verdict"] == "not resolved at this size" and math.isnan(one["low"])
    with pytest.raises(KeyError, match="no finished run of C"):
        judge_claim(study, "A", "C", "greater")


def test_a_missing_study_says_what_to_give():
    with pytest.raises(FileNotFoundError, match="python -m vggedu.experiments"):
        load_study("no-such-study")


def test_the_shipped_converged_study_is_one_recipe_with_curves():
    study = load_study("depth-converged-cpu")
    columns = runs_by_column(study)
    assert set(columns) == {"A", "A-LRN", "B", "C", "D", "E", "B-5x5"}
    # the grid is complete: every column at the same three seeds, so every claim pairs three differences
    assert {column: sorted(runs) for column, runs in columns.items()} == {c: [0, 1, 2] for c in columns}
    assert len(study) == 21 and not any(run.get("diverged") for run in study.values())
    recipe = {k: v for k, v in next(iter(study.values()))["config"].items() if k not in ("model", "seed")}
    for run in study.values():
        assert {k: v for k, v in run["config"].items() if k not in ("model", "seed")} == recipe
        assert len(run["history"]) == recipe["epochs"] == 15 and recipe["train_size"] == 0
        assert all({"train_accuracy", "val_accuracy"} <= set(row) for row in run["history"])
        assert run["card"]["mode"] == "CPU study, converged (fp32)" and run["card"]["precision"] == "float32"
    rows = {r["column"]: r for r in column_summary(study)}
    for column, runs in columns.items():  # the notebook's table is the runs' own numbers
        assert rows[column]["val"] == pytest.approx(100 * sum(r["val_accuracy"] for r in runs.values()) / len(runs))
    assert [claim[0] for claim in DEPTH_CLAIMS] == ["A", "A", "B", "C", "D", "A", "B-5x5"]


def test_the_shipped_probe_is_the_study_recipe_at_twice_the_epochs():
    study, probe = load_study("depth-converged-cpu"), load_study("depth-probe-cpu")
    assert {(r["config"]["model"], r["config"]["seed"]) for r in probe.values()} == {("A", 0), ("E", 0)}
    short = {r["config"]["model"]: r["config"] for r in study.values() if r["config"]["seed"] == 0}
    for run in probe.values():
        config = run["config"]
        assert {k for k in config if config[k] != short[config["model"]][k]} == {"epochs"} and config["epochs"] == 30
        assert len(run["history"]) == 30 and run["card"]["precision"] == "float32"


@pytest.mark.parametrize("n", [1, 7, 8, 9, 5000])
def test_per_image_correctness_survives_the_file(n):
    correct = np.random.default_rng(n).random(n) < 0.7
    packed = pack_correct(correct)
    again = unpack_correct(json.loads(json.dumps(packed)))
    assert again.dtype == bool and np.array_equal(again, correct)
    assert len(packed["bits"]) == 4 * math.ceil(math.ceil(n / 8) / 3)  # one bit an image, base64: 836 for 5,000
    with pytest.raises(ValueError, match="not the"):
        unpack_correct({**packed, "images": n + 8})


def _scores():
    """A scores file as vggedu.scales writes it, by hand: two settings, three seeds, 100 validation images."""
    rng = np.random.default_rng(0)
    val, chosen = {}, {}
    for setting, base in (("fixed S=36", 0.60), ("jittered S=[36,72]", 0.65)):
        for s in (0, 1, 2):
            one = rng.random(100) < base + 0.01 * s
            multi = one | (rng.random(100) < 0.3)  # multi-scale right wherever one scale is, and more
            val[f"{setting}, seed {s}"] = {
                "dense, one scale": pack_correct(one) | {"accuracy": one.mean()},
                "dense, multi-scale": pack_correct(multi) | {"accuracy": multi.mean()},
            }
            chosen[f"{setting}, seed {s}"] = "dense, multi-scale"
    fused = {f"fixed S=36, seeds {a}+{b}": pack_correct(np.ones(100, bool)) for a, b in ((0, 1), (0, 2), (1, 2))}
    return {"protocol": {"seeds": [0, 1, 2]}, "val": val, "chosen": chosen, "fusion": {"val": fused}}


def test_scale_claims_read_the_scores_file():
    from vggedu.studies import judge_fusion, judge_schemes, judge_training, scheme_correct

    scores = _scores()
    multi = judge_schemes(scores, "fixed S=36", "dense, one scale", "dense, multi-scale")
    assert multi["verdict"] == "supports the paper" and len(multi["per_seed"]) == 3
    for s, row in zip((0, 1, 2), multi["per_seed"]):
        one = scheme_correct(scores, f"fixed S=36, seed {s}", "dense, one scale")
        assert (
            row["a_only"] == 0
            and row["b_only"]
            == (~one).sum() - (~unpack_correct(scores["val"][f"fixed S=36, seed {s}"]["dense, multi-scale"])).sum()
        )
    assert judge_schemes(scores, "fixed S=36", "dense, multi-scale", "dense, one scale")["verdict"] == (
        "contradicts the paper"
    )
    fusion = judge_fusion(scores, "fixed S=36")
    assert fusion["pairs"] == ["fixed S=36, seeds 0+1", "fixed S=36, seeds 0+2", "fixed S=36, seeds 1+2"]
    assert fusion["verdict"] == "supports the paper"  # every image right after fusion
    training = judge_training(scores, "fixed S=36", "jittered S=[36,72]")
    by_hand = [
        100
        * (
            scores["val"][f"jittered S=[36,72], seed {s}"]["dense, one scale"]["accuracy"]
            - scores["val"][f"fixed S=36, seed {s}"]["dense, one scale"]["accuracy"]
        )
        for s in (0, 1, 2)
    ]
    assert np.allclose(training["differences"], by_hand) and training["line"].startswith(training["verdict"])
    with pytest.raises(KeyError, match="no scores for"):
        scheme_correct(scores, "fixed S=36, seed 7", "dense, one scale")
