"""Shared by the benchmark scripts: argument parsing, data, timing, results."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from vggedu.data import load_splits, write_synthetic_cifar10
from vggedu.devices import pick_device
from vggedu.runs import run_card
from vggedu.training import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results"


def parser(description: str, *, rounds: bool = True) -> argparse.ArgumentParser:
    """The options every benchmark takes; ``rounds=False`` leaves out ``--rounds`` (a script that runs once)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-root", help="folder with cifar-10-batches-py (default: synthetic data, for a dry run)")
    p.add_argument("--no-verify", action="store_true", help="accept a copy that does not match the checksums")
    p.add_argument("--data-label", help="describe the data in the results, e.g. 'CIFAR-10 (JPEG copy)'")
    p.add_argument("--device", default="auto")
    if rounds:
        p.add_argument("--rounds", type=int, default=3, help="alternating measurement rounds (median reported)")
    p.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/<script>-<device>.json)")
    return p


def load(args, tmp: Path, *, both: bool = False):
    """The training split (``both=True``: the training and test splits) of ``--data-root``.

    Without ``--data-root``: synthetic data written to ``tmp`` (10,000 training and 1,000 test
    images), for a dry run only.
    """
    if args.data_root is None:
        write_synthetic_cifar10(tmp, n_train=10_000, n_test=1000)
        root, verify = tmp, False
    else:
        root, verify = args.data_root, not args.no_verify
    splits = load_splits(root, verify=verify, label=args.data_label)
    return splits if both else splits[0]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def median(values):
    return statistics.median(values)


def compare_rates(
    runs: dict,
    device: torch.device,
    rounds: int,
    *,
    faster: str,
    baseline: str,
    ratios: dict[str, tuple[str, str]] | None = None,
) -> dict:
    """Time each run in alternating rounds (so all see the same machine load) and report images/s.

    ``runs`` maps a name to ``(function, images per call)``. Returns the median rate of each
    run, every round's rate, and the speed-up of ``faster`` over ``baseline``; prints the rates.
    ``ratios`` names further quotients of median rates, ``{name: (numerator, denominator)}``;
    they are returned under ``"ratios"``.
    """
    rates = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (fn, images) in runs.items():
            rates[name].append(images / timed(fn, device))
    results = {name: round(median(values)) for name, values in rates.items()}
    results["speedup"] = round(results[faster] / results[baseline], 2)
    if ratios:
        results["ratios"] = {name: round(results[a] / results[b], 2) for name, (a, b) in ratios.items()}
    results["all_rounds"] = {name: [round(r) for r in values] for name, values in rates.items()}
    width = max(map(len, runs))
    for name in runs:
        print(f"{name:{width}s} {results[name]:>9,} images/s")
    return results


def save(
    name: str,
    device: torch.device,
    data: str,
    n_images: int,
    results: dict,
    out: Path | None,
    config: TrainConfig | None = None,
    *,
    amp_dtype: torch.dtype | None = None,
    precision: str | dict | None = None,
    card: dict | None = None,
) -> Path:
    """Write ``{"benchmark", "results", "card"}`` to ``out`` (default ``results/<name>-<device>.json``).

    The card is ``card`` (a run's own, e.g. :attr:`vggedu.runs.TrainResult.card`) or a fresh
    :func:`vggedu.runs.run_card` for ``config``, whose precision is ``amp_dtype`` (None: float32).
    ``precision`` overrides the card's precision: a benchmark with several arms passes one entry
    per arm (``{"plain_loop": "float32", "trainer": "bfloat16"}``), so no arm is misdescribed.
    """
    if card is None:
        card = run_card(
            config or TrainConfig(),
            device,
            data=data,
            train_images=n_images,
            test_images=0,
            mode="benchmark",
            amp_dtype=amp_dtype,
        )
        if config is None:  # no model in this benchmark
            card["config"] = card["precision"] = None
    else:
        card = dict(card)
    if precision is not None:
        card["precision"] = precision
    out = out or RESULTS / f"{name}-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": name, "results": results, "card": card}, indent=2))
    return out


def dtype_name(dtype: torch.dtype | None) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``; None (no autocast) -> ``"float32"``."""
    return str(dtype).removeprefix("torch.") if dtype else "float32"


FMA_UNITS_PER_CORE = 2  # an assumption: true of most x86 server and desktop cores since Haswell / Zen 2


def _cpuinfo() -> dict[str, str]:
    """The first processor block of /proc/cpuinfo, as key -> value."""
    info: dict[str, str] = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            if not line.strip():
                break
            key, _, value = line.partition(":")
            info[key.strip()] = value.strip()
    return info


def _max_clock_ghz() -> tuple[float | None, str]:
    """The CPU's clock in GHz and where it came from: cpufreq's maximum if readable, else /proc/cpuinfo."""
    try:  # what lscpu reports as "CPU max MHz" (kHz here); virtual machines often do not expose it
        khz = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").read_text()
        return int(khz) / 1e6, "cpufreq cpuinfo_max_freq, lscpu's 'CPU max MHz'"
    except (OSError, ValueError):
        pass
    try:
        mhz = float(_cpuinfo()["cpu MHz"])
    except (OSError, KeyError, ValueError):
        return None, "neither cpufreq nor /proc/cpuinfo 'cpu MHz' readable"
    return mhz / 1e3, "/proc/cpuinfo 'cpu MHz', the current clock rather than the boost clock"


def cpu_fp32_peak(device: torch.device | None = None) -> dict:
    """The CPU's theoretical fp32 peak: cores x FMA units x SIMD lanes x 2 (an FMA is 2 FLOPs) x clock.

    Cores are the ones PyTorch computes on (``torch.get_num_threads()``, at most the CPUs this
    process may run on, divided by the hardware threads per core); SIMD lanes from the
    /proc/cpuinfo flags (avx512f: 16 fp32 lanes, avx2 with fma: 8); FMA units per core are an
    assumption (:data:`FMA_UNITS_PER_CORE`). Returns ``flops_per_second`` (None on a GPU, off
    Linux or without AVX2+FMA, with the ``reason``), each factor, and ``how_computed``.
    """
    if device is not None and device.type != "cpu":
        return {"flops_per_second": None, "reason": f"the run is on {device.type}, not the CPU"}
    if platform.system() != "Linux":
        return {"flops_per_second": None, "reason": f"reads /proc/cpuinfo, which {platform.system()} does not have"}
    try:
        info = _cpuinfo()
    except OSError as error:
        return {"flops_per_second": None, "reason": f"/proc/cpuinfo not readable ({error})"}
    flags = set(info.get("flags", "").split())
    if "avx512f" in flags:
        lanes, simd = 16, "avx512f: 512-bit registers, 16 fp32 lanes"
    elif {"avx2", "fma"} <= flags:
        lanes, simd = 8, "avx2 + fma: 256-bit registers, 8 fp32 lanes"
    else:
        return {"flops_per_second": None, "reason": "no AVX2+FMA (or not x86): the formula's FMA width is unknown"}
    logical = min(torch.get_num_threads(), len(os.sched_getaffinity(0)))
    try:  # hardware threads per core: "siblings" logical CPUs share "cpu cores" physical ones
        smt = max(1, int(info["siblings"]) // int(info["cpu cores"]))
    except (KeyError, ValueError, ZeroDivisionError):
        smt = 1
    cores = max(1, logical // smt)
    ghz, clock_source = _max_clock_ghz()
    if ghz is None:
        return {"flops_per_second": None, "reason": f"clock unknown: {clock_source}"}
    peak = cores * FMA_UNITS_PER_CORE * lanes * 2 * ghz * 1e9
    return {
        "flops_per_second": round(peak),
        "cores": cores,
        "threads_per_core": smt,
        "fma_units_per_core": FMA_UNITS_PER_CORE,
        "simd_lanes_fp32": lanes,
        "clock_ghz": round(ghz, 3),
        "how_computed": (
            f"{cores} cores (torch threads {torch.get_num_threads()}, affinity {len(os.sched_getaffinity(0))} "
            f"CPUs, {smt} thread(s) per core) x {FMA_UNITS_PER_CORE} FMA units per core (assumed) x {lanes} "
            f"fp32 lanes ({simd}) x 2 FLOPs per FMA x {ghz:.3f} GHz ({clock_source}) = {peak / 1e9:.1f} GFLOP/s"
        ),
        "assumptions": (
            f"{FMA_UNITS_PER_CORE} FMA units per core, all busy every cycle at that clock; some CPUs run AVX-512 "
            "at half that rate or at a lower clock, and a virtual machine's clock may not be the real one"
        ),
    }


__all__ = [
    "parser",
    "load",
    "timed",
    "median",
    "compare_rates",
    "save",
    "pick_device",
    "sync",
    "dtype_name",
    "cpu_fp32_peak",
]
