"""ruff is part of the test command: the package, the tests and the notebooks stay clean."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_package_does_not_depend_on_torchsummary():
    """torchsummary is for notebook 02 (requirements.txt); the package neither imports nor requires it."""
    import re

    pyproject = (ROOT / "pyproject.toml").read_text()
    dependencies = re.search(r"^dependencies = \[(.*?)\]", pyproject, re.S | re.M).group(1)
    assert "torchsummary" not in dependencies
    assert "torchsummary" in (ROOT / "requirements.txt").read_text()
    for path in (ROOT / "vggedu").glob("*.py"):
        assert not re.search(r"^\s*(import|from) torchsummary", path.read_text(), re.M), path.name


def _imports(path: Path) -> set[str]:
    """The vggedu modules a module imports, at its top or inside a function (both make a circle)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module] if node.module else [a.name for a in node.names]
            found |= {n.split(".")[0] for n in names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vggedu."):
            found.add(node.module.split(".")[1])
    return found - {"__init__"}


def test_the_package_has_no_import_circle_and_one_job_per_file():
    modules = {p.stem: p for p in (ROOT / "vggedu").glob("*.py") if p.stem != "__init__"}
    graph = {name: {m for m in _imports(path) if m in modules} for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(name, trail):
        if state.get(name) == 1:
            raise AssertionError("import circle: " + " -> ".join([*trail, name]))
        if state.get(name) != 2:
            state[name] = 1
            for other in sorted(graph[name]):
                visit(other, [*trail, name])
            state[name] = 2

    for name in sorted(graph):
        visit(name, [])
    long = {name: n for name, path in modules.items() if (n := len(path.read_text().splitlines())) > 420}
    assert not long, f"modules over about 400 lines (split them by job): {long}"


def test_the_circle_finder_finds_a_circle(tmp_path, monkeypatch):
    """The test above can fail: two modules importing each other, one of them inside a function."""
    (tmp_path / "vggedu").mkdir()
    (tmp_path / "vggedu" / "a.py").write_text("from .b import x\n")
    (tmp_path / "vggedu" / "b.py").write_text("def f():\n    from .a import y\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    import pytest

    with pytest.raises(AssertionError, match="import circle: a -> b -> a"):
        test_the_package_has_no_import_circle_and_one_job_per_file()
