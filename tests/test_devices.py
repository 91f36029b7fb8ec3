"""Stand-ins for the devices CI does not have: what Apple's mps and NCCL refuse, checked on the CPU.

* mps has no float64: :class:`NoFloat64` is a dispatch mode that fails on any float64 tensor
  an operation makes while the training step, the evaluation, the prediction, the planner or the
  evaluation module runs (here the run's device is the CPU, so every float64 tensor counts).
* torch 2.3 refuses ``torch.autocast("mps", enabled=False)``: :func:`refuse_autocast` makes any
  autocast construction fail, which fp32 code must never need.
* NCCL refuses CPU tensors: :func:`nccl_stand_in` puts every tensor made without naming a device
  on ``meta`` (standing for host memory; the run's device, the CPU here, stands for the GPU) and
  replaces the collectives by ones that refuse a ``meta`` tensor, as NCCL refuses a host tensor,
  in a pretend group of two identical processes.
"""

from __future__ import annotations

import contextlib
import time

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

import vggedu.distributed
from vggedu import evaluation, runs
from vggedu.data import load_cifar10
from vggedu.devices import native_cpu_bf16
from vggedu.training import TrainConfig, evaluate, make_optimizer, predict, train_one_epoch

SMALL = dict(model="A", width=0.125, batch_size=50, lr=0.05, dropout=0.0, val_size=100, epochs=2, train_size=200)


class NoFloat64(TorchDispatchMode):
    """Fail on the first operation that makes a float64 tensor (what mps cannot hold)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                raise AssertionError(f"{func} made a float64 tensor on {t.device}: Apple's mps has no float64")
        return out


@contextlib.contextmanager
def refuse_autocast(monkeypatch):
    """torch 2.3 on mps: constructing torch.autocast for that device raises, enabled or not."""

    def refused(*args, **kwargs):
        raise RuntimeError("User specified an unsupported autocast device_type 'mps'")

    with monkeypatch.context() as m:
        m.setattr(torch, "autocast", refused)
        yield


class RefusedByNCCL(AssertionError):
    pass


@contextlib.contextmanager
def nccl_stand_in(monkeypatch, world: int = 2):
    """Collectives that refuse host tensors, in a pretend group of ``world`` identical processes."""

    def check(tensor):
        if tensor.device.type == "meta":
            raise RefusedByNCCL("a collective was given a tensor made on the host (no device named): NCCL refuses it")

    def all_reduce(tensor, op=None, **kwargs):
        check(tensor)
        tensor.mul_(world)  # every process holds the same values

    def broadcast(tensor, src=0, **kwargs):
        check(tensor)

    with monkeypatch.context() as m:
        m.setattr(vggedu.distributed, "world_size", lambda: world)
        m.setattr(torch.distributed, "all_reduce", all_reduce)
        m.setattr(torch.distributed, "broadcast", broadcast)
        m.setattr(torch.distributed, "barrier", lambda **kwargs: None)
        torch.set_default_device("meta")
        try:
            yield
        finally:
            torch.set_default_device(None)


@pytest.fixture(scope="module")
def run(synthetic_root):
    splits = (
        load_cifar10(synthetic_root, train=True, verify=False),
        load_cifar10(synthetic_root, train=False, verify=False),
    )
    return runs.setup_run(TrainConfig(time_budget=600.0, **SMALL), *splits, device="cpu")


@pytest.fixture(scope="module")
def fp32_run(synthetic_root):
    """The same run with mixed precision off: fp32 on every CPU kind (the default autocasts where bf16 is native)."""
    splits = (
        load_cifar10(synthetic_root, train=True, verify=False),
        load_cifar10(synthetic_root, train=False, verify=False),
    )
    return runs.setup_run(TrainConfig(time_budget=600.0, mixed_precision=False, **SMALL), *splits, device="cpu")


def _everything_a_run_does_on_its_device(run, tmp_path):
    """The step, the evaluation with and without TTA, a prediction, the finite check, the planner."""
    optimizer = make_optimizer(run.net, run.config)
    train_one_epoch(run.net, run.train_loader, optimizer, amp_dtype=run.amp_dtype, label_smoothing=0.1)
    evaluate(run.net, run.val_loader, amp_dtype=run.amp_dtype)
    evaluate(run.net, run.val_loader, tta=True, amp_dtype=run.amp_dtype)
    predict(run.net, run.val_loader, tta=True, amp_dtype=run.amp_dtype)
    runs.check_finite(run, {"epoch": 1, "train_loss": 1.0}, None)
    runs.plan_epochs(run, started=time.perf_counter(), checkpoint=tmp_path / "plan.pt")


def test_nothing_a_run_does_on_its_device_makes_a_float64(run, tmp_path):
    with NoFloat64():
        _everything_a_run_does_on_its_device(run, tmp_path)


def test_the_float64_stand_in_catches_a_float64_accumulator():
    """The stand-in can fail: the accumulator evaluate had before (float64 sums on the device)."""
    with pytest.raises(AssertionError, match="float64.*mps"), NoFloat64():
        sums = torch.zeros(3, dtype=torch.float64)
        sums[0] += torch.ones(()).double()


def test_the_evaluation_module_makes_no_float64(run):
    fcn = evaluation.fully_convolutional(run.net.eval())
    x, _ = next(iter(run.val_loader))
    with NoFloat64():
        dense = evaluation.dense_probabilities(fcn, x)
        multi = evaluation.multi_scale_probabilities(fcn, x, (32, 64))
        crops = evaluation.multi_crop_probabilities(run.net, x, (32, 40), grid=2)
        evaluation.fuse([dense, multi, crops])
        evaluation.scheme_accuracy(lambda images: evaluation.dense_probabilities(fcn, images), run.val_loader)


def test_fp32_never_constructs_an_autocast(fp32_run, monkeypatch, tmp_path):
    assert fp32_run.amp_dtype is None
    with refuse_autocast(monkeypatch):
        _everything_a_run_does_on_its_device(fp32_run, tmp_path)
    with pytest.raises(RuntimeError, match="unsupported autocast"), refuse_autocast(monkeypatch):
        torch.autocast("mps", dtype=None, enabled=False)  # the stand-in can fail


def test_the_default_autocasts_on_the_cpu_exactly_where_bf16_is_native(run):
    assert run.amp_dtype == (torch.bfloat16 if native_cpu_bf16() else None)


def test_every_collective_gets_a_tensor_on_the_runs_device(run, monkeypatch, tmp_path):
    with nccl_stand_in(monkeypatch):
        _everything_a_run_does_on_its_device(run, tmp_path)
        assert runs._due(61.0, 60.0, run.device) and not runs._due(1.0, 60.0, run.device)
        vggedu.distributed.broadcast_buffers(run.net)


def test_the_nccl_stand_in_refuses_a_host_tensor(monkeypatch):
    """The stand-in can fail: the planner's old all-reduce of timings made on the host."""
    with pytest.raises(RefusedByNCCL), nccl_stand_in(monkeypatch):
        vggedu.distributed.all_reduce_sum(torch.tensor([0.1, 0.2]))


@pytest.mark.parametrize("threads, words", [(1, "1 thread,"), (2, "2 threads,")])
def test_the_run_card_counts_threads_in_words(threads, words):
    from vggedu.devices import device_name

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert words in device_name(torch.device("cpu"))
    finally:
        torch.set_num_threads(before)
