"""The student edition: no solution code, no written answers, no outputs, everything else as it was; it runs on."""

import ast
import json
from pathlib import Path

import pytest

from vggedu.student import main, student_copy, write_student_edition

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _source(cell):
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_student_copy_has_no_solutions_and_keeps_everything_else(path):
    teacher = json.loads(path.read_text())
    student = student_copy(teacher)
    assert len(student["cells"]) == len(teacher["cells"])
    solutions = 0
    for before, after in zip(teacher["cells"], student["cells"]):
        tags = before.get("metadata", {}).get("tags", [])
        if "solution" in tags:
            solutions += 1
            code = [line for line in _source(after).splitlines() if line.strip() and not line.lstrip().startswith("#")]
            assert code == [], f"solution code left in the student copy: {code}"
            assert not after["metadata"].get("jupyter", {}).get("source_hidden") and "cellView" not in after["metadata"]
        elif "answer" in tags:
            assert _source(after) == "*Your answer:*\n"
        else:
            assert _source(after) == _source(before)  # every other cell exactly as it was
        if after["cell_type"] == "code":
            assert after["outputs"] == [] and after["execution_count"] is None
    assert solutions >= 3 and "# Solution" not in json.dumps(student)
    assert teacher == json.loads(path.read_text())  # the teacher's notebook is not touched


def test_the_command_writes_every_notebook_and_keeps_what_is_there(tmp_path, capsys):
    assert main([str(tmp_path / "student"), "--notebooks", str(ROOT / "notebooks")]) == 0
    assert sorted(p.name for p in (tmp_path / "student").iterdir()) == [p.name for p in NOTEBOOKS]
    assert main([str(tmp_path / "student"), "--notebooks", str(ROOT / "notebooks")]) == 2
    assert "left untouched" in capsys.readouterr().err
    with pytest.raises(ValueError, match="teacher's notebooks"):
        write_student_edition(ROOT / "notebooks", ROOT / "notebooks", force=True)
    with pytest.raises(FileNotFoundError, match="run from the repository root"):
        write_student_edition(tmp_path / "x", tmp_path / "empty")


def _names(source: str) -> tuple[set[str], set[str]]:
    """The names a cell defines (assignments, defs, imports) and the names it reads."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))
    defined, used = set(), set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Name):
            (defined if isinstance(node.ctx, (ast.Store, ast.Del)) else used).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            defined.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.arg):
            defined.add(node.arg)
    return defined, used


def _needs_a_solution(notebook: dict) -> list[tuple[int, str]]:
    """(cell, name) wherever a cell outside the solutions reads a name only a solution above it defines:
    the student copy would stop there with a NameError."""
    solved, shared, broken = set(), set(), []
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] != "code":
            continue
        defined, used = _names(_source(cell))
        if "solution" in cell.get("metadata", {}).get("tags", []):
            solved |= defined
            continue
        broken += [(index, name) for name in sorted(used & solved - shared - defined)]
        shared |= defined
    return broken


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_student_copy_runs_on_without_the_solutions(path):
    """No cell after a solution reads what only the solution defined (every notebook, by reading its code).
    nbval runs the teacher's edition; the student edition differs only in the solution cells."""
    notebook = json.loads(path.read_text())
    assert _needs_a_solution(notebook) == []
    nbformat = pytest.importorskip("nbformat")
    nbformat.validate(nbformat.from_dict(student_copy(notebook)))  # a notebook JupyterLab and Colab can open


def test_the_solution_check_finds_a_cell_that_needs_a_solution():
    cell = lambda source, *tags: {"cell_type": "code", "source": source, "metadata": {"tags": list(tags)}}
    notebook = {"cells": [cell("x = 1"), cell("# Solution 1.\nanswer = x + 1", "solution"), cell("print(answer, x)")]}
    assert _needs_a_solution(notebook) == [(2, "answer")]
    notebook["cells"].insert(2, cell("answer = 2"))
    assert _needs_a_solution(notebook) == []
