"""Fault injection: kills at any moment, signals, corrupt checkpoints. Every test here is marked
`faults` (`make faults` runs them with the fault tests of the other files)."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from synthetic import TINY_ARGS, write_corpus

import model
from lib.cli import UserError

pytestmark = pytest.mark.faults
ROOT = Path(__file__).resolve().parents[1]
STEPS = 40
ARGS = TINY_ARGS + ["--mode=hybrid", f"--max_steps={STEPS}", "--ckpt_every=5"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("faults")
    corpus = write_corpus(base / "corpus")
    return dict(os.environ, DATA_DIR=str(base / "data")), base, corpus


def start(env, out, *extra, script="train.py"):
    environ, base, corpus = env
    return subprocess.Popen([sys.executable, script, *ARGS, f"--corpus={corpus}",
                             f"--out={out}", *extra], cwd=ROOT, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def straight(env):
    out = env[1] / "straight"
    p = start(env, out)
    assert p.wait(timeout=120) == 0, p.stderr.read()
    return model.load_checkpoint(out / "ckpt.pt")


def logged_steps(out) -> int:
    try:
        return len((out / "log.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def wait_for(condition, proc, timeout=60):
    t = time.time()
    while not condition():
        assert proc.poll() is None, f"the run ended before the fault: {proc.stderr.read()}"
        assert time.time() - t < timeout, "timed out waiting for the run"
        time.sleep(0.005)


def assert_same_parameters(a, b):
    assert a["step"] == b["step"] == STEPS
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key


def test_kill_9_anywhere_then_resume_is_bit_identical(env, straight):
    out, rng = env[1] / "killed", random.Random(0)
    kills = ["random", "mid-checkpoint", "random", "mid-checkpoint"]
    for kill in kills:
        resume = ["--resume"] if (out / "ckpt.pt").exists() or (out / "ckpt-prev.pt").exists() \
            else []
        p = start(env, out, *resume, script="tests/slow_checkpoint_train.py")
        if kill == "random":
            n = logged_steps(out) + rng.randint(1, 3)
            wait_for(lambda: logged_steps(out) >= n and (out / "ckpt.pt").exists(), p)
            time.sleep(rng.uniform(0, 0.3))
        else:
            wait_for(lambda: any(out.glob("ckpt.pt.*.tmp")), p)
            time.sleep(0.1)  # the first half is on disk, the second not yet
        p.send_signal(signal.SIGKILL)
        p.wait()
        ckpt = model.load_checkpoint(out / "ckpt.pt")  # never without a loadable checkpoint
        assert ckpt["step"] % 5 == 0 and ckpt["step"] < STEPS
    p = start(env, out, "--resume")
    assert p.wait(timeout=120) == 0, p.stderr.read()
    assert_same_parameters(straight, model.load_checkpoint(out / "ckpt.pt"))
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "the log reads as one uninterrupted run"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_checkpoints_exits_distinctly_and_resumes_exactly(env, straight, sig):
    out = env[1] / f"signal{sig}"
    p = start(env, out)
    wait_for(lambda: logged_steps(out) >= 3, p)
    p.send_signal(sig)
    assert p.wait(timeout=60) == 128 + sig
    stderr = p.stderr.read()
    stopped_at = int(stderr.split("at step ")[1].split(";")[0])
    assert f"stopped by signal {int(sig)}" in stderr
    assert model.load_checkpoint(out / "ckpt.pt")["step"] == stopped_at
    p = start(env, out, "--resume")
    assert p.wait(timeout=120) == 0, p.stderr.read()
    assert f"resuming at {stopped_at}" in p.stdout.read()
    assert_same_parameters(straight, model.load_checkpoint(out / "ckpt.pt"))


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, capsys):
    good = {"format": model.CKPT_FORMAT, "step": 5}
    torch.save(good, tmp_path / "ckpt-prev.pt")
    torch.save({"format": model.CKPT_FORMAT, "step": 10}, tmp_path / "ckpt.pt")
    data = (tmp_path / "ckpt.pt").read_bytes()
    (tmp_path / "ckpt.pt").write_bytes(data[: len(data) // 2])  # cut short
    assert model.load_checkpoint(tmp_path / "ckpt.pt")["step"] == 5
    assert "unreadable" in capsys.readouterr().err
    (tmp_path / "ckpt-prev.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="ckpt-prev.pt: unreadable"):
        model.load_checkpoint(tmp_path / "ckpt.pt")


def test_a_checkpoint_of_another_project_or_a_missing_one_is_refused(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a checkpoint of this project"):
        model.load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(UserError, match="missing.pt: no such file"):
        model.load_encoder(tmp_path / "missing.pt")


# ----------------------------------------------------------------------------- the probe's cache

@pytest.fixture
def probe_env(tmp_path):
    from probe_fixtures import save_checkpoint, write_glue
    write_glue(tmp_path / "data", tasks=("mrpc",))
    (tmp_path / "run").mkdir()
    ckpt = save_checkpoint(tmp_path / "run" / "ckpt.pt")
    argv = [sys.executable, "probe.py", "--task=mrpc", f"--ckpt={ckpt}", "--pool=mean,weighted",
            "--json", "--max_iter=30", "--l2_grid=1e-2,1", "--bootstrap=50"]
    return argv, dict(os.environ, DATA_DIR=str(tmp_path / "data")), tmp_path / "run/probe"


def probe_results(stdout: str) -> list:
    return [{k: r[k] for k in ("task", "pool", "metrics")} for r in map(json.loads,
                                                                     stdout.splitlines())]


def test_two_probes_at_once_share_the_feature_cache_intact(probe_env):
    argv, environ, folder = probe_env
    procs = [subprocess.Popen(argv, cwd=ROOT, env=environ, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert probe_results(outs[0][0]) == probe_results(outs[1][0])
    files = sorted((folder / "cache").glob("*"))
    # (train, dev) x (mean, max, token states): one pass makes every kind; no temp file left over
    assert len(files) == 6 and all(f.suffix == ".pt" for f in files)
    for f in files:  # each one whole: it loads, with both sentences of the pairs
        c = torch.load(f, weights_only=True)
        assert set(c) == {"tokenizer", "a", "b"} and len(c["a"]) == len(c["b"]) > 0


def test_a_cut_short_cache_file_is_encoded_again_not_read(probe_env):
    argv, environ, folder = probe_env
    first = subprocess.run(argv, cwd=ROOT, env=environ, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    victim = sorted((folder / "cache").glob("*-mean-*.pt"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    again = subprocess.run(argv, cwd=ROOT, env=environ, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"{victim} is unreadable; encoding again" in again.stderr
    assert probe_results(again.stdout) == probe_results(first.stdout)
    assert len(torch.load(victim, weights_only=True)["a"]) > 0


@pytest.mark.faults
def test_a_rank_that_fails_ends_every_rank_within_seconds(tmp_path):
    """Rank 0 fails writing a checkpoint while rank 1 waits for it in the barrier: two plain
    processes (no torchrun agent to kill the rest), gloo. Rank 0 exits with its one-line error;
    rank 1, whose barrier breaks when rank 0's connection closes, with one line naming that."""
    import socket
    corpus = write_corpus(tmp_path / "corpus")
    with socket.socket() as s:  # a free port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, DATA_DIR=str(tmp_path / "data"), OMP_NUM_THREADS="1")
    argv = [sys.executable, str(ROOT / "train.py"), *TINY_ARGS, f"--corpus={corpus}"]
    subprocess.run([*argv, "--max_steps=1", f"--out={tmp_path / 'prep'}"], env=env,
                   capture_output=True, check=True, timeout=120)  # tokens prepared once
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2")
    argv += [f"--out={tmp_path / 'run'}", "--max_steps=40", "--ckpt_every=10", "--fail_at=10"]
    procs = [subprocess.Popen(argv, env=dict(env, RANK=str(r), LOCAL_RANK=str(r)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    errors = [p.communicate(timeout=120)[1] for p in procs]  # a hang: NCCL's 10 minutes
    assert [p.returncode for p in procs] == [2, 2], errors
    assert errors[0].strip().splitlines()[-1] == ("error: --fail_at=10: rank 0 fails writing the "
                                                  "checkpoint")
    last = errors[1].strip().splitlines()[-1]
    assert last.startswith("error: rank 1: a collective failed because another rank ended"), last
