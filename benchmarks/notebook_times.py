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
in place (its outputs are then the ones this run produced). ``--docs`` then writes every measured
notebook's time into README's and TEACHING.md's notebook tables (:func:`update_docs`; with no
notebook named it only does that), so the documented times are the measured ones::

    python benchmarks/notebook_times.py --docs
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from vggedu.devices import device_name, pick_device

GOAL_NOTEBOOK, GOAL_CELL = 180.0, 60.0  # seconds: a class period's notebook, a laptop class's longest wait
ROOT = Path(__file__).resolve().parents[1]
_TIME = re.compile(r"^(TIME|< ?1 min|\d+(?:\.\d+)? (?:s|min))")  # a table cell's leading time (TIME: not yet written)


def doc_time(seconds: float) -> str:
    """A measured time as the docs write it: whole seconds under two minutes, else minutes to one decimal."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def update_docs(results: dict, readme: Path = ROOT / "README.md", teaching: Path = ROOT / "TEACHING.md") -> list[str]:
    """Write each notebook's measured time (``results``: this script's file) into README's table (the first
    words of a row's last cell) and TEACHING.md's (its time column), and TEACHING.md's section tables
    (between its section-times markers); returns the notebooks (and "section times") whose docs changed.
    Rows are found by the notebook's name; text after the time is kept."""
    changed = []
    for path, column in ((readme, -2), (teaching, 4)):
        lines = path.read_text().split("\n")
        for i, line in enumerate(lines):
            name = next((n for n in results if line.startswith("|") and Path(n).stem in line), None)
            if name is None:
                continue
            cells = line.split("|")
            old = cells[column]
            new = " " + _TIME.sub(doc_time(results[name]["seconds"]), old.strip(), count=1) + " "
            if new != old:
                cells[column] = new
                lines[i] = "|".join(cells)
                changed.append(f"{path.name}: {name}")
        text = "\n".join(lines)
        if path == teaching and SECTIONS_START in text:
            head, rest = text.split(SECTIONS_START, 1)
            tables = f"{SECTIONS_START}\n{section_tables(results)}\n{SECTIONS_END}"
            updated = head + tables + rest.split(SECTIONS_END, 1)[1]
            if updated != text:
                changed.append(f"{path.name}: section times")
            text = updated
        path.write_text(text)
    return changed


SECTIONS_START = "<!-- section times: written by benchmarks/notebook_times.py --docs -->"
SECTIONS_END = "<!-- end of section times -->"


def advice(section: str, seconds: float) -> str:
    """What to do with a section in a 50-minute class, from its title and its measured time."""
    title = section.lower()
    if "setup" in title:
        return "run first"
    if "exercise" in title:
        return "homework (solutions collapsed under each exercise)"
    if title.startswith(("summary", "references")):
        return "read together"
    if "imagenet" in title:
        return "run live where the weights are cached; offline it says so and skips"
    if seconds < 15:
        return "run live"
    if seconds <= 60:
        return "run live while you talk, or show the stored output"
    return "show the stored output"


def section_tables(results: dict) -> str:
    """One table per notebook: each section's measured time (its code cells, summed) and what to do with it."""
    parts = []
    for name in sorted(results):
        cells = results[name].get("cells", [])
        if not cells or "section" not in cells[0]:
            continue
        seconds: dict[str, float] = {}
        for cell in cells:
            seconds[cell["section"]] = seconds.get(cell["section"], 0.0) + cell["seconds"]
        total, device = doc_time(results[name]["seconds"]), results[name]["device"]
        parts.append(f"**{Path(name).stem}** ({total} in all, {device})\n")
        parts.append("| section | time | in a 50-minute class |\n|---|---|---|")
        parts += [f"| {title} | {secs:.0f} s | {advice(title, secs)} |" for title, secs in seconds.items()]
        parts.append("")
    return "\n".join(parts).rstrip("\n")


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
    cells, section = [], "(before the first section)"
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            heading = next((line for line in cell.source.splitlines() if line.startswith("## ")), None)
            section = heading[3:].strip() if heading else section
        if cell.cell_type == "code" and cell.source.strip():
            first = next((line for line in cell.source.splitlines() if line.strip()), "")
            seconds = round(_seconds(cell.metadata.get("execution", {})), 2)
            cells.append({"cell": index, "starts": first[:70], "seconds": seconds, "section": section})
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
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, help="results file (default results/notebook_times-<device>.json)")
    parser.add_argument("--store", action="store_true", help="write each executed notebook back in place")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds a cell may take before it fails")
    parser.add_argument("--docs", action="store_true", help="write the measured times into README and TEACHING.md")
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
    if args.docs:
        for row in update_docs(results):
            print("time updated:", row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
