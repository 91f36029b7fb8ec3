"""A student edition of the notebooks: each solution emptied to a stub, written answers taken out, outputs cleared.

    python -m vggedu.student OUT_DIR                          # notebooks/ of the current folder -> OUT_DIR
    python -m vggedu.student OUT_DIR --notebooks path/to/notebooks --force

A solution is a code cell tagged ``solution`` (its first line ``# Solution k.``); it becomes a
visible cell holding only a comment, so the copy still runs top to bottom and the learner writes
the answer there. A written answer (a markdown cell tagged ``answer``) becomes an empty
"Your answer" cell. Every output and execution count is cleared; every other cell is left
exactly as it is. The teacher's notebooks are never written to: ``OUT_DIR`` must be another
folder, and existing copies there are replaced only with ``--force``.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

__all__ = ["student_copy", "write_student_edition", "main"]

STUB = "# Exercise {k}: your solution here (the teacher's edition has one that checks itself).\n"
ANSWER = "*Your answer:*\n"


def _hide_keys(metadata: dict) -> dict:
    """The cell's metadata without what collapses it (JupyterLab's and Colab's), its tag renamed."""
    metadata = copy.deepcopy(metadata)
    metadata.pop("cellView", None)
    metadata.get("jupyter", {}).pop("source_hidden", None)
    if not metadata.get("jupyter", True):
        metadata.pop("jupyter")
    metadata.pop("execution", None)
    return metadata


def student_copy(notebook: dict) -> dict:
    """The student edition of one notebook (a parsed ``.ipynb``), the original unchanged."""
    out = copy.deepcopy(notebook)
    for cell in out["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] == "code" and "solution" in tags:
            match = re.match(r"# Solution (\d+)\.", source)
            if match is None:
                raise ValueError(f"a solution cell must start '# Solution k.'; this one starts {source[:40]!r}")
            cell["source"] = STUB.format(k=match[1])
            cell["metadata"] = _hide_keys(cell["metadata"])
            cell["metadata"]["tags"] = [t if t != "solution" else "student-solution" for t in tags]
        elif cell["cell_type"] == "markdown" and "answer" in tags:
            cell["source"] = ANSWER
            cell["metadata"] = _hide_keys(cell["metadata"])
            cell["metadata"]["tags"] = [t if t != "answer" else "student-answer" for t in tags]
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
            cell["metadata"].pop("execution", None)
    return out


def write_student_edition(
    out_dir: str | Path, notebooks: str | Path = "notebooks", *, force: bool = False
) -> list[Path]:
    """Write the student edition of every ``NN_*.ipynb`` in ``notebooks`` to ``out_dir``; return the files."""
    source_dir, out_dir = Path(notebooks), Path(out_dir)
    paths = sorted(source_dir.glob("[0-9][0-9]_*.ipynb"))
    if not paths:
        raise FileNotFoundError(
            f"no notebooks (NN_*.ipynb) in {source_dir.resolve()}: run from the repository root, or pass --notebooks"
        )
    if out_dir.resolve() == source_dir.resolve():
        raise ValueError(f"{out_dir} holds the teacher's notebooks: write the student edition to another folder")
    existing = [out_dir / p.name for p in paths if (out_dir / p.name).exists()]
    if existing and not force:
        raise FileExistsError(
            f"{out_dir} already has {len(existing)} of these notebooks (e.g. {existing[0].name}); they are left "
            "untouched. Give another folder, or --force to replace them."
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        target = out_dir / path.name
        target.write_text(json.dumps(student_copy(json.loads(path.read_text())), indent=1, ensure_ascii=False) + "\n")
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vggedu.student", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="where the student edition goes (not the notebooks folder)")
    parser.add_argument("--notebooks", type=Path, default=Path("notebooks"), help="the teacher's notebooks")
    parser.add_argument("--force", action="store_true", help="replace copies already in OUT_DIR")
    args = parser.parse_args(argv)
    try:
        written = write_student_edition(args.out_dir, args.notebooks, force=args.force)
    except (FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(written)} student notebooks to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
