"""What nbval does not check: every notebook is stored executed, clean and Colab-ready."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REPO_URL = re.search(r'^Repository = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


def _load(path):
    return json.loads(path.read_text())


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_executed_top_to_bottom_without_errors(path):
    code = [c for c in _load(path)["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]
    counts = [c["execution_count"] for c in code]
    assert None not in counts, "some code cells were never executed"
    assert counts == list(range(1, len(counts) + 1)), "not executed top to bottom in one fresh kernel"
    errors = [o for c in code for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_paths_of_the_machine_and_reasonable_size(path):
    text = path.read_text()
    assert not re.search(r"(/work/|/tmp/|/root/|/home/|/Users/|C:\\\\)", text)
    assert len(text) < 3_000_000


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_badge_and_setup_cell(path):
    cells = _load(path)["cells"]
    slug = REPO_URL.removeprefix("https://github.com/")
    badge = f"https://colab.research.google.com/github/{slug}/blob/main/notebooks/{path.name}"
    assert badge in "".join(cells[0]["source"]), "the Colab badge must point at this notebook"
    setup = next(c for c in cells if "setup" in c.get("metadata", {}).get("tags", []))
    source = "".join(setup["source"])
    assert f'REPO_URL = "{REPO_URL}"' in source, "the setup cell must install from pyproject's Repository URL"
    assert "--no-deps" in source, "Colab keeps its own torch: install vggedu alone"
    assert "find_spec" in source, "install only where vggedu is missing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_anatomy(path):
    markdown = "\n".join("".join(c["source"]) for c in _load(path)["cells"] if c["cell_type"] == "markdown")
    for heading in ("Learning goals", "Prerequisites", "Runtime", "Exercises", "Summary", "References"):
        assert heading in markdown, f"missing {heading}"


def _source(cell):
    return "".join(cell["source"])


LEVELS = ("warm-up", "practice", "stretch")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_have_one_form_and_every_solution_checks_itself(path):
    cells = _load(path)["cells"]
    heading = re.compile(r"^## \d+\. Exercises", re.M)
    start = next(i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and heading.search(_source(c)))
    end = next(i for i in range(start, len(cells)) if "## Summary" in _source(cells[i]))
    block = cells[start + 1 : end]
    exercises = [i for i, c in enumerate(block) if c["cell_type"] == "markdown" and _source(c).startswith("**Exercise")]
    assert 3 <= len(exercises) <= 5, f"{len(exercises)} exercises"
    levels = []
    for k, i in enumerate(exercises, 1):
        match = re.match(rf"\*\*Exercise {k}\*\* \*\(({'|'.join(LEVELS)})\)\*\. \S", _source(block[i]))
        assert match, f"exercise {k} must start '**Exercise {k}** *(level)*. '"
        levels.append(LEVELS.index(match[1]))
        solution = block[i + 1]
        assert solution["cell_type"] == "code" and "solution" in solution["metadata"].get("tags", []), k
        assert solution["metadata"].get("jupyter", {}).get("source_hidden"), f"solution {k} must be collapsed"
        assert solution["metadata"].get("cellView") == "form", f"solution {k} must be hidden in Colab too"
        assert _source(solution).startswith(f"# Solution {k}."), k
        assert "assert" in _source(solution), f"solution {k} must check its answer with an assert"
    assert levels == sorted(levels), "exercises rise in difficulty"


def test_the_teaching_guide_lists_every_notebook_with_a_measured_time():
    guide = (ROOT / "TEACHING.md").read_text()
    for path in NOTEBOOKS:
        row = next((line for line in guide.splitlines() if line.startswith(f"| `{path.stem}`")), None)
        assert row is not None, f"TEACHING.md has no row for {path.name}"
        assert re.search(r"\| (\d+(\.\d+)? (s|min)) \|", row), f"no measured time for {path.name}: {row}"
    assert "{t" not in guide, "a time is still a placeholder"
    assert "TEACHING.md" in (ROOT / "README.md").read_text(), "the README links the guide"


def test_the_documented_times_are_the_measured_ones(tmp_path):
    """README's and TEACHING.md's time for each notebook is the one benchmarks/notebook_times.py measured."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("notebook_times", ROOT / "benchmarks" / "notebook_times.py")
    times = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(times)
    results = json.loads((ROOT / "benchmarks" / "results" / "notebook_times-cpu.json").read_text())
    assert times.doc_time(33.2) == "33 s" and times.doc_time(150) == "2.5 min"
    copies = {name: tmp_path / name for name in ("README.md", "TEACHING.md")}
    for name, copy in copies.items():
        copy.write_text((ROOT / name).read_text())
    assert times.update_docs(results, copies["README.md"], copies["TEACHING.md"]) == [], (
        "the docs' times differ from benchmarks/results/notebook_times-cpu.json: run "
        "python benchmarks/notebook_times.py --docs"
    )
    for name in results:
        assert any(
            Path(name).stem in line and times.doc_time(results[name]["seconds"]) in line
            for line in (ROOT / "TEACHING.md").read_text().splitlines()
        ), name
    tables = times.section_tables(results)
    assert times.SECTIONS_START in (ROOT / "TEACHING.md").read_text(), "TEACHING.md lost its section-times block"
    for path in NOTEBOOKS:  # every notebook, section by section, with what to do with it in class
        assert f"**{path.stem}**" in tables, f"no section times for {path.name}: run notebook_times.py on it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colour_maps_are_readable_and_say_what_colour_means(path):
    """No rainbow-like colour maps; a picture whose colour encodes a value has a colour bar, or its caption
    says how each map is scaled."""
    cells = _load(path)["cells"]
    for i, cell in enumerate(cells):
        if cell["cell_type"] != "code":
            continue
        source = _source(cell)
        assert not re.search(r"""cmap\s*=\s*["'](jet|rainbow|hsv|gist_rainbow|nipy_spectral)""", source), cell.get("id")
        if re.search(r"imshow\([^)]*cmap\s*=", source):
            caption = next((_source(c) for c in cells[i + 1 :] if c["cell_type"] == "markdown"), "")
            assert "colorbar" in source or re.search(r"own scale|scaled to", caption), (
                f"cell {cell.get('id')}: colour encodes a value: add a colour bar, or say in the caption how "
                "each map is scaled"
            )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_figure_has_a_caption(path):
    """Each stored figure is followed by a caption (usable as alt text): a markdown cell starting '*Figure'."""
    cells = _load(path)["cells"]
    for i, cell in enumerate(cells):
        if cell["cell_type"] == "code" and any("image/png" in o.get("data", {}) for o in cell.get("outputs", [])):
            caption = next((_source(c) for c in cells[i + 1 :] if c["cell_type"] == "markdown"), "")
            assert caption.lstrip().startswith("*Figure"), (
                f"cell {cell.get('id', i)} draws a figure with no caption after it"
            )
