"""The GPU check: one script, one GPU, under 6 minutes. Run it when a GPU is lent; README quotes it.

    python benchmarks/gpu_check.py --data-root DATA [--data-label "CIFAR-10 (JPEG copy)"] --out DIR

1. the CUDA tests (tests/test_training.py, ``-k cuda``: bf16 and fp16, one short epoch, resume);
2. the ``gpu`` preset (VGG-16-BN, 30 epochs) with a test curve, for the time to 94 % test accuracy
   and the seconds per epoch (the curve is for this figure only; the preset was not chosen on it);
   stopped at the deadline less the next step's share, it reports the epochs it finished;
3. the time budget: the ``gpu`` recipe once more with a short budget (``--budget-seconds``,
   default 90, less if the deadline is nearer; at most 100 epochs, so the budget binds), through
   :func:`time_budget.run_time_budget`: planned against actual epoch seconds and wall seconds;
4. ``DIR/gpu_check.json``: all of them, with the run cards; written after every step, so a
   check stopped part way keeps what it had.

Each step runs in its own ``try``: a failing step records its error and the next one still runs.
Needs PyTorch with CUDA and pytest; ``vggedu`` is used from this checkout (no install needed).
Each step has a deadline, so the script ends within ``--minutes`` even if training is slow.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIME_BUDGET_MIN = 45.0  # seconds: a shorter budget fits too few epochs of VGG-16 to test the planner
TIME_BUDGET_OVERHEAD = 30.0  # seconds the time-budget step needs beyond its budget (data, CUDA start)


def _tail(text: str | bytes | None, n: int) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "")[-n:]


def cuda_tests(env: dict, timeout: float) -> dict:
    """Step 1 (the project's pytest options name nbval, which a bare image may lack: they are cleared)."""
    tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-k", "cuda"]
    started = time.monotonic()
    done = subprocess.run(
        [*tests, "tests/test_training.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )
    print(_tail(done.stdout, 2000), _tail(done.stderr, 2000), flush=True)
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    return {"exit_code": done.returncode, "summary": summary, "seconds": round(time.monotonic() - started, 1)}


def _curve(history: list[dict], target: float) -> dict:
    """The time to ``target`` test accuracy (None: not reached) and the median seconds per epoch."""
    elapsed, reached = 0.0, None
    for row in history:
        elapsed += row["seconds"]
        if reached is None and row.get("test_accuracy", 0) >= target:
            reached = {"epoch": row["epoch"], "seconds": round(elapsed, 1)}
    epoch_seconds = sorted(row["seconds"] for row in history)
    return {
        "time_to_target": reached,
        "seconds_per_epoch_median": epoch_seconds[len(epoch_seconds) // 2] if history else None,
        "epochs": len(history),
    }


def gpu_preset(args, env: dict, timeout: float) -> dict:
    """Step 2: ``python -m vggedu.train --preset gpu --test-curve``, stopped at ``timeout`` seconds.

    The run checkpoints every 15 s, so a run stopped at the deadline still reports the epochs it
    finished (``partial``: True) from its checkpoint's history.
    """
    result_file, checkpoint = args.out / "gpu_preset.json", args.out / "gpu_preset.pt"
    for stale in (result_file, checkpoint):  # files from an earlier check must not pass for this one's
        stale.unlink(missing_ok=True)
    train = [sys.executable, "-m", "vggedu.train", "--preset", "gpu", "--data-root", args.data_root]
    train += ["--no-progress", "--test-curve", "--json", str(result_file)]
    train += ["--checkpoint", str(checkpoint), "--checkpoint-every", "15"]
    train += ["--no-verify"] if args.no_verify else []
    train += ["--data-label", args.data_label] if args.data_label else []
    report: dict = {}
    try:
        done = subprocess.run(train, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        print(_tail(done.stdout, 6000), _tail(done.stderr, 3000), flush=True)
        report["exit_code"] = done.returncode
        if done.returncode:
            report["stderr_tail"] = _tail(done.stderr, 2000)
    except subprocess.TimeoutExpired as error:
        print(_tail(error.stdout, 6000), flush=True)
        report["exit_code"] = f"stopped at the deadline ({timeout:.0f} s)"
    if result_file.exists():
        run = json.loads(result_file.read_text())
        report.update(
            _curve(run["history"], args.target),
            partial=False,
            val_accuracy=run["val_accuracy"],
            test_accuracy=run["test_accuracy"],
            test_accuracy_tta=run["test_accuracy_tta"],
            train_seconds=run["train_seconds"],
            card=run["card"],
        )
    elif checkpoint.exists():
        sys.path.insert(0, str(ROOT))
        from vggedu.checkpoints import load_checkpoint

        state = load_checkpoint(checkpoint)
        report.update(_curve(state["history"], args.target), partial=True, card=state["card"])
    checkpoint.unlink(missing_ok=True)  # VGG-16 weights and momentum: too large to keep with the results
    return report


def time_budget_step(args, budget: float) -> dict:
    """Step 3: the ``gpu`` recipe with a ``budget``-second time budget, in this process (time_budget.py's code)."""
    sys.path.insert(0, str(ROOT))  # vggedu from this checkout; benchmarks/ is already on the path
    import torch
    from time_budget import budget_config, run_time_budget

    from vggedu.data import load_splits
    from vggedu.devices import pick_device

    train_split, test_split = load_splits(args.data_root, verify=not args.no_verify, label=args.data_label)
    config = budget_config(budget, recipe="gpu", max_epochs=100, mixed_precision=True)
    with tempfile.TemporaryDirectory() as tmp:
        figures, result = run_time_budget(
            config, train_split, test_split, device=pick_device("cuda"), checkpoint=Path(tmp) / "time_budget.pt"
        )
    figures["card"] = result.card
    del result
    torch.cuda.empty_cache()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="folder holding cifar-10-batches-py")
    parser.add_argument("--data-label", help="how to name the data in the results, e.g. 'CIFAR-10 (JPEG copy)'")
    parser.add_argument("--no-verify", action="store_true", help="accept a copy whose checksums differ")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_check")
    parser.add_argument("--minutes", type=float, default=6.0, help="the whole check's deadline (default 6)")
    parser.add_argument("--target", type=float, default=0.94, help="test accuracy whose time is reported")
    parser.add_argument(
        "--budget-seconds", type=float, default=90.0, help="the time-budget step's budget (default 90; less if late)"
    )
    args = parser.parse_args()
    deadline = time.monotonic() + 60 * args.minutes
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "PYTHONUNBUFFERED": "1"}
    report: dict = {"target_accuracy": args.target, "deadline_minutes": args.minutes, "steps": {}}

    def write() -> None:
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))

    def step(name: str, fn) -> None:
        """Run one step; record its result or its error (with the traceback's end), then write the report.

        A step is ``ok`` if it raised nothing and, where it ran a command, the command exited with 0.
        """
        started = time.monotonic()
        try:
            report[name] = result = fn()
            failed = isinstance(result, dict) and result.get("exit_code", 0) != 0  # a command that ran and failed
            report["steps"][name] = {"ok": not failed, "seconds": round(time.monotonic() - started, 1)}
        except Exception as error:  # a failed step must not stop the next one
            report["steps"][name] = {
                "ok": False,
                "error": f"{type(error).__name__}: {error}",
                "traceback": traceback.format_exc()[-3000:],
                "seconds": round(time.monotonic() - started, 1),
            }
            print(f"step {name} failed: {type(error).__name__}: {error}", flush=True)
        write()

    def environment() -> dict:
        import torch

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        print(f"torch {torch.__version__}, GPU: {gpu}", flush=True)
        return {"cuda": torch.cuda.is_available(), "gpu": gpu, "torch": torch.__version__}

    step("environment", environment)
    step("cuda_tests", lambda: cuda_tests(env, timeout=150))

    # The preset gets what is left after the time-budget step's share; the time budget adapts to what is left then.
    reserve = TIME_BUDGET_OVERHEAD + args.budget_seconds + 15
    step("gpu_preset", lambda: gpu_preset(args, env, timeout=max(deadline - time.monotonic() - reserve, 30)))

    budget = min(args.budget_seconds, deadline - time.monotonic() - TIME_BUDGET_OVERHEAD)
    if budget >= TIME_BUDGET_MIN:
        step("time_budget", lambda: time_budget_step(args, budget))
    else:
        report["steps"]["time_budget"] = {"ok": False, "error": f"skipped: {budget:.0f} s left before the deadline"}
        write()

    no_cards = lambda part: {k: v for k, v in part.items() if k != "card"} if isinstance(part, dict) else part
    summary = {name: no_cards(part) for name, part in report.items()}
    print(json.dumps(summary, indent=2, default=str)[-6000:])
    return 0 if all(part["ok"] for part in report["steps"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
