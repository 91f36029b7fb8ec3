"""How long each notebook takes: every cell and the whole, top to bottom on a fresh kernel, with the device.

    python benchmarks/notebook_times.py notebooks/07_depth_study.ipynb
    python benchmarks/notebook_times.py notebooks/*.ipynb --store      # also keep the executed notebooks

Runs each notebook with nbclient in a new kernel (the current environment's ``python3``), from the
notebook's own folder, in whatever mode the environment sets (``VGGEDU_MODE``, ``VGGEDU_DATA``...;
unset: quick mode without a GPU). A cell's time is the kernel's own (``execute_input`` to
``execute_reply``); the notebook's is the wall time of the whole execution, kernel start included.
Results go to ``results/notebook_times-<device>.json`` (``--out`` to change), merged with the
notebooks already there, each with the device, mode, data label and date, and whether it met the
class goals: **under 3 minutes, no cell over 60 s**. ``--store`` writes the executed notebook back
in place (its outputs are then the ones this run produced).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from vggedu.devices import device_name, pick_device

GOAL_NOTEBOOK, GOAL_CELL = 180.0, 60.0  # seconds: a class period's notebook, a laptop class's longest wait


def _seconds(execution: dict) -> float:
    start, end = execution.get("iopub.execute_input"), execution.get("shell.execute_reply")
    if not (start and end):
        return 0.0
    parse = lambda s: dt.datetime.fromisoformat(s.replace("Z", "+00:00"))  # noqa: E731
    return (parse(end) - parse(start)).total_seconds()


def time_notebook(path: Path, *, timeout: int = 3600, store: bool = False) -> dict:
    """Execute ``path`` on a fresh kernel and return its times (and write it back with ``store``)."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=True,
        resources={"metadata": {"path": str(path.parent)}},
    )
    started = time.perf_counter()
    client.execute()
    wall = time.perf_counter() - started
    cells = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.source.strip():
            first = next((line for line in cell.source.splitlines() if line.strip()), "")
            cells.append(
                {"cell": index, "starts": first[:70], "seconds": round(_seconds(cell.metadata.get("execution", {})), 2)}
            )
    if store:
        nbformat.write(nb, path)
    slowest = max(cells, key=lambda c: c["seconds"]) if cells else {"seconds": 0.0}
    return {
        "seconds": round(wall, 1),
        "slowest_cell": slowest,
        "goal_met": wall < GOAL_NOTEBOOK and slowest["seconds"] <= GOAL_CELL,
        "cells": cells,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, help="results file (default results/notebook_times-<device>.json)")
    parser.add_argument("--store", action="store_true", help="write each executed notebook back in place")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds a cell may take before it fails")
    args = parser.parse_args(argv)
    device = pick_device("auto")
    out = args.out or Path(__file__).parent / "results" / f"notebook_times-{device.type}.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    for path in args.notebooks:
        times = time_notebook(path.resolve(), timeout=args.timeout, store=args.store)
        times.update(
            device=device_name(device),
            mode=os.environ.get("VGGEDU_MODE") or "auto (quick without a GPU)",
            data=os.environ.get("VGGEDU_DATA_LABEL") or os.environ.get("VGGEDU_DATA") or "data",
            date=dt.date.today().isoformat(),
        )
        results[path.name] = times
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        slowest = times["slowest_cell"]
        print(
            f"{path.name}: {times['seconds']:.0f} s, slowest cell {slowest['seconds']:.0f} s "
            f"({slowest.get('starts', '')!r}); goal (< {GOAL_NOTEBOOK:.0f} s, no cell > {GOAL_CELL:.0f} s) "
            f"{'met' if times['goal_met'] else 'NOT met'}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
