"""Where a run computes and in which precision: the device and precision policy, in one place.

* :func:`pick_device`: ``"auto"`` is a CUDA GPU, else Apple's GPU (``mps``), else the CPU.
* :func:`autocast_dtype`: the mixed-precision type a device runs fast (bf16, fp16) or None (fp32).
* :func:`precision`: the context every forward pass runs in, built once per loop, as nanoGPT
  does: ``torch.autocast`` where there is a faster type, ``nullcontext()`` where there is none.
  (On torch 2.3, ``torch.autocast("mps", enabled=False)`` raises before ``enabled`` is read, so
  fp32 must never construct an autocast at all.)
* :func:`device_name`: what the run card calls the device (the CPU's model and its bf16).

Apple's ``mps`` has no float64: nothing that runs on a run's device may create one (the tests
check it with a stand-in for the device; see ``tests/test_devices.py``). Introduced in notebook 05.
"""

from __future__ import annotations

import contextlib
import platform

import torch

__all__ = ["pick_device", "autocast_dtype", "precision", "device_name", "native_cpu_bf16"]


def pick_device(name: str | torch.device = "auto") -> torch.device:
    """``"auto"``: CUDA if there is a GPU, else Apple's ``mps``, else the CPU.

    A ``torch.device`` is checked the same way as its name. Asking for a device that is not there is
    an error that says so.
    """
    if isinstance(name, torch.device):
        name = str(name)
    mps = getattr(torch.backends, "mps", None)
    mps_available = bool(mps and mps.is_available())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available else "cpu")
    if name not in ("cpu", "cuda", "mps") and not name.startswith("cuda:"):
        raise ValueError(f"unknown device {name!r}; choose 'auto', 'cpu', 'cuda' or 'mps'")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for, but PyTorch sees no GPU; use --device cpu or auto")
    if name == "mps" and not mps_available:
        raise ValueError("device 'mps' (Apple GPU) was asked for, but PyTorch cannot use one here; use --device auto")
    return torch.device(name)


def native_cpu_bf16() -> bool:
    """Whether this CPU has native bf16 instructions (oneDNN says so); emulated bf16 is slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The mixed-precision dtype to use on ``device``, or None for plain fp32.

    CUDA: bf16 where supported (Ampere and newer), else fp16 (with a gradient scaler).
    CPU: bf16 only where the CPU has native bf16 instructions. Apple ``mps``: fp32.
    """
    if not enabled:
        return None
    if device.type == "cuda":  # native bf16 from Ampere (compute capability 8.0) on; a T4 (7.5) emulates it slowly
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    if device.type == "cpu":
        return torch.bfloat16 if native_cpu_bf16() else None
    return None


def precision(device: torch.device | str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """The context a forward pass runs in: ``torch.autocast(device, dtype)``, or ``nullcontext()`` for fp32.

    Reusable: build it once per loop and enter it every step.
    """
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def _cpu_model() -> str:
    try:  # Linux names the processor here; platform.processor() is often empty
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    """The device as a run card names it, e.g. ``CPU (AMD EPYC, 2 threads, no native bf16)``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple GPU (mps)"
    native = "native" if native_cpu_bf16() else "no native"
    threads = torch.get_num_threads()
    return f"CPU ({_cpu_model()}, {threads} thread{'' if threads == 1 else 's'}, {native} bf16)"
