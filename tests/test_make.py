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
    # Without the variables of a `make` that runs these tests (`make test ARGS=-x` passes ARGS
    # down to every make below it through MAKEFLAGS), each dry run shows the Makefile's defaults.
    env = {k: v for k, v in (env or os.environ).items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES", "MAKELEVEL")}
    return subprocess.run(["make", "-s", *args], cwd=folder, capture_output=True, text=True,
                          timeout=120, env=env)


def test_by_default_a_target_creates_the_venv_and_runs_its_python(folder):
    dry = make(folder, "-n", "test")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        "python3 -m venv .venv", ".venv/bin/pip install --quiet --upgrade pip",
        ".venv/bin/pip install --quiet -r requirements.txt", "touch .venv/.installed",
        ".venv/bin/pip install --quiet -r requirements-paper.txt", "touch .venv/.paper-installed",
        ".venv/bin/python -m tools.run_tests "]
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


# ----------------------------------------------------------------------------- make test's shards

def test_the_shards_hold_every_test_file_once_and_split_the_slowest():
    from tools import run_tests
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py"))
    shards = run_tests.assign(files, 2)
    assert sorted(f for s in shards for f in s) == files and len(shards) == 2
    cost = [sum(map(run_tests.expected, s)) for s in shards]
    assert abs(cost[0] - cost[1]) <= max(run_tests.SECONDS.values())
    slowest = sorted(run_tests.SECONDS, key=run_tests.SECONDS.get)[-2:]
    assert [sum(Path(f).name in slowest for f in s) for s in shards] == [1, 1]
    assert run_tests.assign(files[:1], 2) == [files[:1]]  # no empty shard


def test_the_exit_status_passes_only_when_every_shard_passed():
    from tools.run_tests import combine
    assert combine([0, 0]) == 0 and combine([0, 5]) == 0  # 5: a shard with no selected test
    assert combine([5, 5]) == 5 and combine([0, 1]) == 1 and combine([2, 1]) == 2


def test_a_named_file_or_test_is_told_from_an_option_value(monkeypatch):
    from tools.run_tests import names_tests
    monkeypatch.chdir(ROOT)
    assert names_tests(["tests/test_masks.py"]) and names_tests(["-x", "tests"])
    assert names_tests(["tests/test_masks.py::test_x"])
    assert not names_tests(["-k", "tools"]), "tools/ is a folder, but here a -k expression"
    assert not names_tests(["-m", "faults", "--durations=0"])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: make test runs one pytest")
def test_make_test_runs_the_shards_and_a_named_test_runs_alone():
    one = "tests/test_masks.py::test_mlm_masks_a_fixed_count_of_non_special_positions"
    run = [sys.executable, "-m", "tools.run_tests", "-p", "no:cacheprovider"]
    sharded = subprocess.run([*run, "-k", "test_mlm_masks_a_fixed_count"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert sharded.returncode == 0, sharded.stdout
    assert "shard 1/2:" in sharded.stdout and "shard 2/2:" in sharded.stdout
    assert sharded.stdout.count("1 passed") == 1, sharded.stdout
    assert "exit 0, 5" in sharded.stdout or "exit 5, 0" in sharded.stdout, sharded.stdout
    nothing = subprocess.run([*run, "-k", "no_test_has_this_name"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert nothing.returncode == 5 and "exit 5, 5" in nothing.stdout
    alone = subprocess.run([*run, one], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert alone.returncode == 0 and "1 passed" in alone.stdout and "shard" not in alone.stdout
