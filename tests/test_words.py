"""The product speaks of itself: no words only its authors know, no pointers outside the repository."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Spelled in pieces, so this file does not match itself.
PHRASES = [
    "seed" + " walkthrough",
    "seed" + " recipe",
    "second" + " seed",
    "the seed" + "'s",
    r"\.\./" + "shared",
]
PATTERN = re.compile("|".join(PHRASES), re.IGNORECASE)


def _product_files():
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    names = listed.stdout.split() if listed.returncode == 0 else []
    if not names:  # not a git checkout (an unpacked archive): every text file of the tree
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts]
    suffixes = {".py", ".md", ".ipynb", ".txt", ".toml", ".yml", ".yaml", ".cfg", ".sh", ""}
    return [ROOT / n for n in names if Path(n).suffix in suffixes and (ROOT / n).is_file()]


def test_there_are_files_to_read():
    assert len(_product_files()) > 20


@pytest.mark.parametrize("path", _product_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_words_a_reader_cannot_know(path):
    text = path.read_text(errors="replace")
    hits = [m.group(0) for m in PATTERN.finditer(text)]
    assert not hits, f"{path.name} says {hits}: name the thing itself (e.g. 'the classic CIFAR-10 VGG recipe')"
