"""Settings for `pytest` (unit tests and nbval): notebooks run in quick mode on synthetic data.

nbval starts each notebook's kernel from this process, so the kernels inherit these
variables. Set them yourself to test a notebook on real data, e.g.
VGGEDU_DATA=data VGGEDU_MODE=full pytest notebooks/05_training_vgg.ipynb
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("VGGEDU_MODE", "quick")  # small, CPU-sized runs
os.environ.setdefault("VGGEDU_DATA", "synthetic")  # no network in CI: data written by the notebook itself
os.environ.setdefault("VGGEDU_OFFLINE", "1")  # notebook 08 does not try to download the ImageNet weights (528 MB)
# pytest-xdist (pyproject's -n auto): each worker, and every notebook kernel it starts, on one thread. Two processes
# of one thread each keep 2 cores busier than one process of two threads, and one thread per core never
# oversubscribes (two workers of two threads each ran the suite 28 % slower than one process).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
if "VGGEDU_RUNS" not in os.environ:  # checkpoints and synthetic data of this test session only, removed after it
    os.environ["VGGEDU_RUNS"] = tempfile.mkdtemp(prefix="vggedu-runs-")
    atexit.register(shutil.rmtree, os.environ["VGGEDU_RUNS"], ignore_errors=True)


# Slow tests (whole training runs, subprocesses, torchvision's full-size models) are marked
# @pytest.mark.slow. They run where VGGEDU_SLOW_TESTS=1 (CI sets it: .ci/run) or with --slow;
# a plain `pytest tests` skips them and stays under 90 s on 2 cores.
def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run the tests marked slow (CI runs them all)")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a test of several seconds; runs in CI and with --slow")


def pytest_collection_modifyitems(config, items):
    import pytest

    if config.getoption("--slow") or os.environ.get("VGGEDU_SLOW_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --slow or VGGEDU_SLOW_TESTS=1 (CI runs it)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_xdist_auto_num_workers(config):
    """-n auto: one worker per core, at most 4 (each imports torch, and a notebook's kernel imports it again)."""
    return max(1, min(os.cpu_count() or 1, 4))


def pytest_sessionstart(session):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)  # in case torch was imported before OMP_NUM_THREADS was set
