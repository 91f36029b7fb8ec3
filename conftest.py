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
if "VGGEDU_RUNS" not in os.environ:  # checkpoints and synthetic data of this test session only, removed after it
    os.environ["VGGEDU_RUNS"] = tempfile.mkdtemp(prefix="vggedu-runs-")
    atexit.register(shutil.rmtree, os.environ["VGGEDU_RUNS"], ignore_errors=True)
