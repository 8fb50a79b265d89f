import os
import sys
from pathlib import Path

import pytest

# The tests use tiny models, for which one thread is fastest, and some start subprocesses that
# share the machine's cores. Set before torch is imported anywhere (subprocesses inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The tests pin the CPU: the bit-exactness they assert is promised on the CPU only
# (docs/reproducibility.md), so on a GPU machine `make test` must not run them on CUDA. An empty
# CUDA_VISIBLE_DEVICES hides every GPU from torch in this process and in every subprocess it
# starts (train.py, gpu_check, torchrun), as it would on a machine without one. GPU_TESTS=1
# (`GPU_TESTS=1 make test` on a CUDA machine) leaves the GPUs visible and runs the tests marked
# `gpu` alone; without it those are skipped.
GPU_TESTS = os.environ.get("GPU_TESTS") == "1"
if not GPU_TESTS:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
if os.environ.get("DATA_DIR"):  # .ci/run gives ../shared/data; some tests chdir into tmp_path
    os.environ["DATA_DIR"] = str(Path(os.environ["DATA_DIR"]).resolve())


@pytest.fixture
def mirror() -> Path:
    """The offline data mirror (../shared/data) DATA_DIR points at; skips the test otherwise."""
    path = Path(os.environ.get("DATA_DIR") or "/nonexistent")
    if not (path / "glue").is_dir():
        pytest.skip("needs the data mirror: set DATA_DIR to a folder with glue/ (../shared/data)")
    return path


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs CUDA; runs only with GPU_TESTS=1, which runs "
                                       "these alone (the others pin the CPU)")


def pytest_collection_modifyitems(config, items):
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if GPU_TESTS:  # the GPU tests alone: every other test assumes the CPU
        config.hook.pytest_deselected(items=[item for item in items if item not in gpu])
        items[:] = gpu
        return
    for item in gpu:
        item.add_marker(pytest.mark.skip(reason="a GPU test: GPU_TESTS=1 make test runs it on "
                                                "a CUDA machine"))
