"""Several processes, one model: the little that ``torchrun`` + ``DistributedDataParallel`` need.

``torchrun --nproc_per_node=N -m vggedu.train ...`` starts N copies of the command line,
each with ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in its environment. :func:`setup`
joins them into one process group (NCCL between GPUs, gloo on CPUs), gives each its own
device, and the trainer then wraps the model in ``DistributedDataParallel``: every
process computes the gradient of its part of the batch, and DDP averages the gradients
before the optimiser step, so all copies stay identical. README, "Scaling out".

A single process (no ``WORLD_SIZE``, or 1) never touches ``torch.distributed``.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "rank",
    "world_size",
    "is_main",
    "setup",
    "all_reduce_sum",
    "barrier",
    "broadcast_buffers",
    "cleanup",
    "SyncBatchNorm2d",
    "convert_sync_batchnorm",
]


def world_size() -> int:
    """Processes in the group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's place in the group, 0 .. world_size - 1 (0 without one)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """The process that writes checkpoints, JSON and progress (rank 0)."""
    return rank() == 0


def setup(device: torch.device) -> torch.device:
    """Join the process group that ``torchrun`` describes; return this process's device.

    Without ``WORLD_SIZE`` > 1 in the environment this does nothing and returns ``device``.
    On CUDA each process takes the GPU ``LOCAL_RANK`` and the backend is NCCL; on the CPU
    the backend is gloo (what the tests use).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed; run a single process instead")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)  # before the group, so NCCL binds each process to its own GPU
        dist.init_process_group("nccl")
    elif device.type == "cpu":
        dist.init_process_group("gloo")
    else:
        raise ValueError(f"several processes need CUDA (NCCL) or the CPU (gloo), not {device.type!r}")
    return device


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place (a no-op for one process)."""
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    """Wait until every process gets here (a no-op for one process)."""
    if world_size() > 1:
        dist.barrier()


def cleanup() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_buffers(module: nn.Module) -> None:
    """Give every process rank 0's buffers (batch norm's running statistics) before evaluating."""
    if world_size() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward sums the gradients too (each process's loss uses every input)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class SyncBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose statistics are those of the global batch, for CPU processes (gloo).

    PyTorch's ``nn.SyncBatchNorm`` runs on GPUs only. This one computes the mean and then the
    variance of the whole batch, across processes, with two differentiable all-reduces, so
    N processes normalise exactly as one process with the whole batch would. Same parameters
    and buffers as ``BatchNorm2d``: state dicts load either way. Outside a process group, or
    in eval mode, it is a plain ``BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and world_size() > 1):
            return super().forward(x)
        xf = x.float()
        count = _AllReduceSum.apply(torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device))
        mean = _AllReduceSum.apply(xf.sum((0, 2, 3))) / count
        centred = xf - mean[None, :, None, None]
        var = _AllReduceSum.apply(centred.square().sum((0, 2, 3))) / count  # biased: what normalisation uses
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            unbiased = var * count / (count - 1).clamp(min=1)
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(unbiased.detach(), self.momentum)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every ``BatchNorm2d`` by a synchronised one: ``nn.SyncBatchNorm`` on CUDA, else ours."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            sync = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine)
            sync.load_state_dict(child.state_dict())
            setattr(model, name, sync.to(device))
        else:
            convert_sync_batchnorm(child, device)
    return model
