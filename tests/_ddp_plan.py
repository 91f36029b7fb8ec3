"""Run by tests/test_runs.py under torchrun: a time-budgeted run in each process; each writes the plan it made."""

import json
import sys
from pathlib import Path

from vggedu import distributed as dist
from vggedu.data import load_splits
from vggedu.devices import pick_device
from vggedu.runs import train
from vggedu.training import TrainConfig

root, out = sys.argv[1], Path(sys.argv[2])
device = dist.setup(pick_device("cpu"))
try:
    config = TrainConfig(
        model="A", width=0.125, batch_size=50, epochs=40, train_size=200, val_size=100, time_budget=6.0
    )
    result = train(config, *load_splits(root, verify=False), device=device, progress=False, measure_test=False)
    plan = result.card["time_budget"]
    (out / f"rank{dist.rank()}.json").write_text(json.dumps({"plan": plan, "epochs_run": len(result.history)}))
finally:
    dist.cleanup()
