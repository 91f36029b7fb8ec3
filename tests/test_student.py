"""The student edition: no solution code, no written answers, no outputs, everything else as it was; it runs."""

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


@pytest.mark.slow
def test_a_student_copy_of_notebook_01_runs_top_to_bottom(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    (path,) = write_student_edition(tmp_path, ROOT / "notebooks", force=True)[:1]
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    assert all(c.get("execution_count") for c in notebook.cells if c.cell_type == "code" and c.source.strip())
