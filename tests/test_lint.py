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
