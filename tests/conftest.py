import os
import sys
from pathlib import Path

import pytest

# The tests use tiny models, for which one thread is fastest, and some start subprocesses that
# share the machine's cores. Set before torch is imported anywhere (subprocesses inherit it).
os.environ.setdefault("OMP_NUM_THREADS", "1")
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
