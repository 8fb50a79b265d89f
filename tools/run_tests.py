"""`make test`: the suite as two pytest processes at once, each test file in one of them.

    python -m tools.run_tests [pytest arguments]     # what `make test ARGS=...` runs

conftest.py runs the tests' torch work on one thread, and many tests wait on the train.py
processes they start, so one pytest keeps about one core of two busy; two of them halve the wall
time (docs/commands.md has the numbers). The files go, slowest first, to the shard with the least
expected time so far (`expected`: SECONDS, each file's time in one measured run; a file not
listed counts DEFAULT_SECONDS). The first shard prints as it runs, the others when they end; each has its own
temporary folder (pytest's --basetemp), kept when it fails. The exit status is 0 when every shard
passed (one that selected no test, exit 5, passes if another ran tests), else the first failing
shard's. Arguments go to every shard; an argument that names a file or a test
(tests/test_masks.py::test_x) runs one plain pytest instead, as does a one-core machine.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARDS = 2
# Seconds per file in `make test` from a fresh clone with a cold Inductor cache on the 2-core VM,
# the two shards running at once (pytest --durations=0 summed per file, 2026-12-04; 477 s in all).
# Only the balance uses them.
SECONDS = {"test_train.py": 159, "test_faults.py": 68, "test_gpu_check.py": 67,
           "test_lambda.py": 46, "test_paper.py": 29, "test_analyze.py": 23, "test_probe.py": 19,
           "test_make.py": 19, "test_bench.py": 18, "test_stats.py": 11, "test_curve.py": 8}
DEFAULT_SECONDS = 2
NO_TESTS = 5  # pytest's exit status when a shard's files hold no selected test


def expected(file: str) -> float:
    """A test file's expected seconds."""
    return SECONDS.get(Path(file).name, DEFAULT_SECONDS)


def assign(files: list[str], shards: int) -> list[list[str]]:
    """The files split into shards of about equal expected time (greedy, slowest first)."""
    out, load = [[] for _ in range(shards)], [0.0] * shards
    for f in sorted(files, key=lambda f: (-expected(f), f)):
        i = load.index(min(load))
        out[i].append(f)
        load[i] += expected(f)
    return [sorted(s) for s in out if s]


def combine(codes: list[int]) -> int:
    """One exit status for the shards: 0 if each passed or selected nothing while another ran."""
    failed = [c for c in codes if c not in (0, NO_TESTS)]
    if failed:
        return failed[0]
    return 0 if 0 in codes else NO_TESTS


VALUED = ("-k", "-m", "-p", "-o", "-c", "-W", "--deselect", "--ignore", "--durations")


def names_tests(args: list[str]) -> bool:
    """Whether an argument is a test file or folder, or a test id (a path with ::), not the
    value of an option (`-k data`: data/ may be a folder)."""
    return any(not a.startswith("-") and prev not in VALUED
               and (Path(a.split("::")[0]).exists() or "::" in a)
               for prev, a in zip(["", *args], args))


def main(args: list[str]) -> int:
    pytest = [sys.executable, "-m", "pytest", "-q"]
    shards, named = min(SHARDS, os.cpu_count() or 1), names_tests(args)
    if shards == 1 or named:
        return subprocess.call([*pytest, *(args if named else ["tests", *args])], cwd=ROOT)
    files = assign([str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests").glob("test_*.py"))],
                   shards)
    start, procs = time.time(), []
    for i, group in enumerate(files):
        tmp = Path(tempfile.mkdtemp(prefix=f"pytest-shard{i + 1}-"))
        log = None if i == 0 else open(tmp / "output.txt", "w+")
        print(f"shard {i + 1}/{len(files)}: {' '.join(Path(f).stem[5:] for f in group)}",
              flush=True)
        procs.append((subprocess.Popen([*pytest, *group, f"--basetemp={tmp / 'tmp'}", *args],
                                       cwd=ROOT, stdout=log, stderr=subprocess.STDOUT), tmp, log))
    try:
        codes = [p.wait() for p, _, _ in procs]
    except KeyboardInterrupt:
        for p, _, _ in procs:
            p.wait()
        return 130
    for i, ((p, tmp, log), code) in enumerate(zip(procs, codes)):
        if log is not None:
            log.seek(0)
            print(f"\n---- shard {i + 1}/{len(files)} ----\n{log.read()}", end="", flush=True)
            log.close()
        if code in (0, NO_TESTS):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"shard {i + 1} failed (exit {code}); its temporary files are in {tmp}")
    print(f"\n{len(files)} shards, {time.time() - start:.0f} s wall: exit "
          f"{', '.join(map(str, codes))}")
    return combine(codes)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
