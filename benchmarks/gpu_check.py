"""The GPU check: one script, one GPU, under 8 minutes. Run it when a GPU is lent; README quotes it.

    python benchmarks/gpu_check.py --data-root DATA [--data-label "CIFAR-10 (JPEG copy)"] --out DIR

1. the CUDA tests (tests/test_training.py, ``-k cuda``: bf16 and fp16, one short epoch, resume);
2. the ``gpu`` preset (VGG-16-BN, 30 epochs) with a test curve, for the time to 94 % test accuracy
   and the seconds per epoch (the curve is for this figure only; the preset was not chosen on it);
3. ``DIR/gpu_check.json``: both, with the run card.

Needs PyTorch with CUDA and pytest; ``vggedu`` is used from this checkout (no install needed).
Each step has a deadline, so the script ends within ``--minutes`` even if training is slow.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, help="folder holding cifar-10-batches-py")
    parser.add_argument("--data-label", help="how to name the data in the results, e.g. 'CIFAR-10 (JPEG copy)'")
    parser.add_argument("--no-verify", action="store_true", help="accept a copy whose checksums differ")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "gpu_check")
    parser.add_argument("--minutes", type=float, default=7.5, help="the whole check's deadline")
    parser.add_argument("--target", type=float, default=0.94, help="test accuracy whose time is reported")
    args = parser.parse_args()
    deadline = time.monotonic() + 60 * args.minutes
    args.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "PYTHONUNBUFFERED": "1"}
    report: dict = {"target_accuracy": args.target}

    import torch

    report["cuda"] = torch.cuda.is_available()
    report["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    report["torch"] = torch.__version__
    print(f"torch {torch.__version__}, GPU: {report['gpu']}", flush=True)

    # 1. The CUDA tests (the project's pytest options name nbval, which a bare image may lack).
    tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "-k", "cuda"]
    started = time.monotonic()
    done = subprocess.run(
        [*tests, "tests/test_training.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=150
    )
    print(done.stdout[-2000:], done.stderr[-2000:], flush=True)
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    report["cuda_tests"] = {"exit_code": done.returncode, "summary": summary, "seconds": time.monotonic() - started}

    # 2. The gpu preset, with a test curve for the time-to-accuracy figure.
    result_file = args.out / "gpu_preset.json"
    train = [sys.executable, "-m", "vggedu.train", "--preset", "gpu", "--data-root", args.data_root]
    train += ["--no-progress", "--test-curve", "--json", str(result_file)]
    train += ["--no-verify"] if args.no_verify else []
    train += ["--data-label", args.data_label] if args.data_label else []
    budget = deadline - time.monotonic() - 15
    try:
        done = subprocess.run(train, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(budget, 30))
        print(done.stdout[-6000:], done.stderr[-3000:], flush=True)
        report["training_exit_code"] = done.returncode
    except subprocess.TimeoutExpired as error:
        print((error.stdout or b"")[-6000:], flush=True)
        report["training_exit_code"] = f"stopped at the deadline ({budget:.0f} s)"
    if result_file.exists():
        run = json.loads(result_file.read_text())
        history, elapsed, reached = run["history"], 0.0, None
        for row in history:
            elapsed += row["seconds"]
            if reached is None and row.get("test_accuracy", 0) >= args.target:
                reached = {"epoch": row["epoch"], "seconds": round(elapsed, 1)}
        epoch_seconds = sorted(row["seconds"] for row in history)
        report.update(
            time_to_target=reached,  # None: the target was not reached in this run
            seconds_per_epoch_median=epoch_seconds[len(epoch_seconds) // 2],
            epochs=len(history),
            val_accuracy=run["val_accuracy"],
            test_accuracy=run["test_accuracy"],
            test_accuracy_tta=run["test_accuracy_tta"],
            train_seconds=run["train_seconds"],
            card=run["card"],
        )
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "card"}, indent=2))
    return 0 if report["cuda_tests"]["exit_code"] == 0 and report.get("training_exit_code") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
