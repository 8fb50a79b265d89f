"""The Makefile with a preinstalled Python and torch (VENV= or PY=): no .venv is created, every
target runs that interpreter after checking its torch version; the default still creates .venv.
Dry runs (make -n) in a copy of the Makefile, so nothing is installed."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("test", "faults", "pretrain", "probe", "analyze", "paper", "recipe-search", "bench",
           "gpu-check", "smoke")


@pytest.fixture
def folder(tmp_path):
    """A folder with the Makefile and the requirements, and no .venv."""
    for name in ("Makefile", "requirements.txt", "requirements-paper.txt"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def make(folder, *args, env=None):
    return subprocess.run(["make", "-s", *args], cwd=folder, capture_output=True, text=True,
                          timeout=120, env=env)


def test_by_default_a_target_creates_the_venv_and_runs_its_python(folder):
    dry = make(folder, "-n", "test")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "python3 -m venv .venv", ".venv/bin/pip install --quiet --upgrade pip",
        ".venv/bin/pip install --quiet -r requirements.txt", "touch .venv/.installed",
        ".venv/bin/pip install --quiet -r requirements-paper.txt", "touch .venv/.paper-installed",
        ".venv/bin/python -m pytest -q tests "]
    assert make(folder, "-n", "gpu-check").stdout.splitlines()[-1].startswith(
        ".venv/bin/python -m tools.gpu_check")


@pytest.mark.parametrize("target", TARGETS)
def test_an_empty_venv_runs_every_target_with_the_python_there(folder, target):
    dry = make(folder, "-n", target, "VENV=")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert not any("-m venv" in x or "pip install" in x or ".installed" in x for x in lines), lines
    assert lines[0].startswith('python3 -c "import importlib.util') and " 2.4 " in lines[0]
    assert "matplotlib" in lines[0] if target in ("test", "paper") else "matplotlib" not in lines[0]
    assert lines[-1].startswith("python3 ") or lines[-1].startswith("PY=python3 bash "), lines
    assert not (folder / ".venv").exists()


def test_py_names_the_interpreter_and_skips_the_venv(folder):
    dry = make(folder, "-n", "gpu-check", f"PY={sys.executable}", "ARGS=--device=cpu")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f'{sys.executable} -c "import importlib')
    assert lines[1] == f"{sys.executable} -m tools.gpu_check  --device=cpu"


def test_the_python_check_passes_this_torch_and_names_an_old_one(folder, tmp_path):
    ok = make(folder, "check-python", f"PY={sys.executable}")
    assert ok.returncode == 0 and ok.stdout == ok.stderr == "", ok.stderr
    fake = tmp_path / "fake"  # an interpreter whose torch is 2.1
    (fake / "torch").mkdir(parents=True)
    (fake / "torch" / "__init__.py").write_text("__version__ = '2.1.0+cu118'\n")
    old = make(folder, "check-python", f"PY={sys.executable}",
               env=dict(os.environ, PYTHONPATH=str(fake)))
    assert old.returncode != 0
    [line] = [x for x in old.stderr.splitlines() if x.startswith("error:")]
    assert f"error: {sys.executable}: torch 2.1.0+cu118 (needs >= 2.4, tested with 2.13.0)" in line
    assert "leave VENV and PY unset to use .venv" in line
