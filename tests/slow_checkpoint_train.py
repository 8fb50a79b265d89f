"""train.py with a slow disk: each checkpoint is written in two halves with a pause between, so a
test can kill the process in the middle of a checkpoint write."""
import io
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train  # noqa: E402
from lib import cli  # noqa: E402

real_save = torch.save


def slow_save(obj, f):
    buf = io.BytesIO()
    real_save(obj, buf)
    data = buf.getvalue()
    f.write(data[: len(data) // 2])
    f.flush()
    time.sleep(0.4)
    f.write(data[len(data) // 2:])


torch.save = slow_save
cli.run_cli(train.main)
