"""A whole run: what it computes is the plain algorithm, bit for bit; the planner leaves no trace; processes agree."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from vggedu import runs
from vggedu.data import channel_stats, load_cifar10
from vggedu.loaders import DeviceLoader
from vggedu.training import TrainConfig, build_model, split_validation

ROOT = Path(__file__).resolve().parents[1]
# fp32: the algorithm written out below is fp32, and a CPU with native bf16 would otherwise autocast.
RECIPE = dict(
    model="A",
    width=0.125,
    batch_size=50,
    lr=0.05,
    dropout=0.5,
    val_size=100,
    label_smoothing=0.1,
    mixed_precision=False,
)


@pytest.fixture(scope="module")
def splits(synthetic_root):
    return load_cifar10(synthetic_root, train=True, verify=False), load_cifar10(
        synthetic_root, train=False, verify=False
    )


def _by_hand(config: TrainConfig, train_split) -> dict:
    """The one-cycle algorithm written out, with nothing of vggedu.runs: the weights it ends with."""
    fit, _ = split_validation(train_split, config)
    mean, std = channel_stats(fit.images)
    loader = DeviceLoader(fit, config.batch_size, train=True, seed=config.seed, mean=mean, std=std, channels_last=True)
    net = build_model(config).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=0.9, weight_decay=5e-4)
    total = config.epochs * len(loader)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, config.lr, total_steps=total, pct_start=max(0.25, 1.5 / total), anneal_strategy="linear",
        cycle_momentum=False, div_factor=10.0, final_div_factor=100.0,
    )  # fmt: skip
    for epoch in range(config.epochs):
        torch.manual_seed((config.seed * 1_000_003 + epoch) * 1_009)  # the epoch's dropout masks
        loader.set_epoch(epoch)
        net.train()
        for x, labels in loader:
            loss = nn.functional.cross_entropy(net(x), labels, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return net.state_dict()


def _equal(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.mark.slow
def test_a_run_computes_exactly_the_algorithm_written_out(splits, tmp_path):
    """Checkpoints, validation, the finite check and the test pass change nothing the run learns."""
    config = TrainConfig(epochs=3, **RECIPE)
    result = runs.train(config, *splits, device="cpu", progress=False, checkpoint=tmp_path / "a.pt", checkpoint_every=0)
    _equal(result.model.state_dict(), _by_hand(config, splits[0]))


@pytest.mark.slow
def test_the_planner_leaves_no_trace_on_the_run(splits, tmp_path):
    """It times real steps on the real model, then restores it: a budgeted run equals an unbudgeted one."""
    budgeted = TrainConfig(epochs=3, time_budget=120.0, **RECIPE)  # 3 small epochs fit: the plan is 3
    result = runs.train(budgeted, *splits, device="cpu", progress=False, checkpoint=tmp_path / "b.pt")
    assert result.card["time_budget"]["epochs"] == 3
    _equal(result.model.state_dict(), _by_hand(TrainConfig(epochs=3, **RECIPE), splits[0]))


@pytest.mark.slow
def test_two_processes_plan_the_same_epochs(synthetic_root, tmp_path):
    """torchrun, two gloo processes, one time budget: every process plans (and trains) the same epochs."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    done = subprocess.run(
        [*torchrun, str(ROOT / "tests" / "_ddp_plan.py"), str(synthetic_root), str(tmp_path)],
        cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    plans = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert plans[0] == plans[1], plans
    assert 1 <= plans[0]["plan"]["epochs"] == plans[0]["epochs_run"] < 40
