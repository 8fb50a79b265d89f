"""gpu_check.py's checks, each run here on the CPU (its CPU half: what a GPU run can then only
fail on is CUDA itself): the bench, the resume (stopped at a step, resumed, bit-exact), DDP over
gloo, probe features CPU against CPU (the same bits; a SKIP at once without the data), the
attention-kernel report; the CLI without CUDA; the test session pinned to the CPU; and the GPU
peak table. The tests marked gpu are the CUDA halves: `GPU_TESTS=1 make test` on a CUDA machine."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import lib.download
import model
from lib import hardware
from tools import gpu_check

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def work(tmp_path):
    """(corpus, work folder, env) of the checks that start train.py: a generated corpus, and a
    DATA_DIR of their own for the WordPiece train.py trains on it."""
    corpus = gpu_check.synthetic_corpus(tmp_path / "corpus")
    return corpus, tmp_path, dict(os.environ, DATA_DIR=str(tmp_path / "data"))


# ----------------------------------------------------------------------------- the session

def test_the_test_session_pins_the_cpu():
    """conftest.py hides the GPUs (make test on a GPU machine must not run the bit-exactness
    tests on CUDA), in this process and in the subprocesses the tests start."""
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == "", "conftest.py sets it unless GPU_TESTS=1"
    assert not torch.cuda.is_available()
    child = subprocess.run([sys.executable, "-c", "import os; print(repr(os.environ.get("
                            "'CUDA_VISIBLE_DEVICES')))"],
                           capture_output=True, text=True, timeout=60)
    assert child.stdout.strip() == "''"


def test_gpu_tests_env_runs_the_gpu_tests_alone_and_leaves_the_gpus_visible():
    listed = {}
    for gpu_tests in ("", "1"):
        env = dict(os.environ, GPU_TESTS=gpu_tests, CUDA_VISIBLE_DEVICES="0")
        out = subprocess.run([sys.executable, "-m", "pytest", "--co", "-q",
                              "tests/test_gpu_check.py"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        listed[gpu_tests] = {x.split("::")[1].split("[")[0] for x in out.stdout.splitlines()
                             if "::" in x}
    gpu = {"test_gpu_probe_features_cuda_against_cpu", "test_gpu_resume_and_kernels_on_cuda"}
    assert listed["1"] == gpu
    assert gpu < listed[""] and "test_the_test_session_pins_the_cpu" in listed[""]


# ----------------------------------------------------------------------------- the CLI

def test_without_cuda_every_check_is_a_skip_with_the_reason(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tools.gpu_check", "--device=cuda",
                          f"--out={tmp_path / 'g.json'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "g.json").read_text())
    assert [r["status"] for r in report["results"]] == ["SKIP"] * 5
    assert all("no CUDA device" in r["detail"] for r in report["results"])
    assert "SKIP  attention kernel" in out.stdout


def test_without_cuda_the_cli_runs_the_cpu_halves_and_skips_the_cuda_ones(tmp_path, monkeypatch,
                                                                         capsys):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "empty"))  # the probe check SKIPs: no data
    code = gpu_check.main(["--checks=probe,kernels", f"--out={tmp_path / 'g.json'}"])
    assert code == 0
    report = json.loads((tmp_path / "g.json").read_text())
    got = [(r["check"], r["device"], r["status"]) for r in report["results"]]
    assert got == [("probe features", "cpu+cpu", "SKIP"), ("attention kernel", "cpu", "PASS"),
                   ("probe features", "cpu+cuda", "SKIP"), ("attention kernel", "cuda", "SKIP")]
    assert report["checked_on"] == "cpu"
    assert "SKIP  attention kernel  cuda" in capsys.readouterr().out
    with pytest.raises(gpu_check.UserError, match="--checks=flash: expected some of bench"):
        gpu_check.main(["--checks=flash"])


# ---------------------------------------------------------------------------- each check's CPU half

def test_the_bench_check_runs_every_mode_on_cpu():
    results = gpu_check.check_bench(gpu_check.CheckConfig(), "cpu")
    assert [r["check"] for r in results] == ["bench mlm", "bench jepa", "bench hybrid"]
    for r in results:
        assert r["status"] == "PASS", r
        assert r["device"] == "cpu" and r["dtype"] == "float32" and not r["compiled"]
        assert r["tokens_per_s"] > 0 and "eager, recompiles 0" in r["detail"]


@pytest.mark.faults
def test_the_resume_check_stops_at_its_step_and_is_exact_on_cpu(work):
    """--stop_at stops the run after exactly step 5 of 10 (a log step: the log has no step after
    it until the resume), whatever the speed of the machine; the resume is bit-exact."""
    corpus, tmp_path, env = work
    cc = gpu_check.CheckConfig(steps=10)
    [r] = gpu_check.check_resume(cc, corpus, tmp_path, env, "cpu", dets=("true",))
    assert r["status"] == "PASS" and r["max_abs_diff"] == 0.0 and r["stopped_at"] == 5, r
    straight, resumed = tmp_path / "straight-cpu-true", tmp_path / "resumed-cpu-true"
    steps = [json.loads(x)["step"] for x in (resumed / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 5, 10], "the interrupted run logs its stop step, then the resume goes on"
    assert gpu_check.max_difference(straight, resumed) == 0.0
    # and it does see a difference: one weight moved by 1e-3
    ckpt = torch.load(straight / "ckpt.pt", weights_only=True)
    ckpt["model"]["encoder.ln_f.bias"][0] += 1e-3
    (tmp_path / "moved").mkdir()
    torch.save(ckpt, tmp_path / "moved" / "ckpt.pt")
    assert gpu_check.max_difference(straight, tmp_path / "moved") == pytest.approx(1e-3, rel=1e-2)


@pytest.mark.faults
def test_the_resume_check_fails_when_the_run_does_not_stop(work):
    """A run that ends before its --stop_at step (exit 0, not 143) is an error, not a PASS."""
    corpus, tmp_path, env = work
    cc = gpu_check.CheckConfig(steps=4)
    with pytest.raises(RuntimeError, match="--stop_at=2: exited 0, not 143"):
        gpu_check.check_resume(cc, corpus, tmp_path, env, "cpu", dets=("true",),
                               extra=["--max_steps=1"])  # the last flag wins: 1 step, no stop


def test_the_ddp_check_runs_two_gloo_processes_against_one_on_cpu(work):
    corpus, tmp_path, env = work
    [r] = gpu_check.check_ddp(corpus, tmp_path, env, "cpu", modes=("hybrid",))
    assert r["check"] == "ddp gloo hybrid" and r["status"] == "PASS", r
    assert r["max_rel_loss_diff"] < 1e-4


def test_probe_features_cpu_against_cpu_are_the_same_bits(mirror):
    """The probe check's CPU half: features.encode as probe.py calls it, twice on the CPU."""
    [r] = gpu_check.check_probe_features(gpu_check.CheckConfig(sentences=64), "cpu", "cpu")
    assert r["status"] == "PASS", r
    assert r["device"] == "cpu+cpu" and r["max_abs_diff"] == 0.0
    assert r["min_cosine"] == pytest.approx(1.0) and r["acc_a"] == r["acc_b"]
    assert "64 SST-2 sentences, random-weight small encoder" in r["detail"]


def test_probe_features_skip_at_once_without_the_data(tmp_path, monkeypatch):
    """No SST-2 and no BERT vocab: a SKIP that names them, without one download attempt."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    calls = []
    monkeypatch.setattr(lib.download.requests, "get",
                        lambda *a, **k: calls.append(a) or (_ for _ in ()).throw(OSError("off")))
    t = time.time()
    [r] = gpu_check.check_probe_features(gpu_check.CheckConfig(), "cpu", "cpu")
    assert r["status"] == "SKIP" and "needs SST-2 and the BERT vocab" in r["detail"]
    assert "glue/SST-2/train.tsv" in r["detail"] and "bert-base-uncased/vocab.txt" in r["detail"]
    assert calls == [] and time.time() - t < 5
    [r] = gpu_check.check_probe_features(gpu_check.CheckConfig(), "cpu", "cuda")
    assert r["status"] == "SKIP" and "no CUDA device" in r["detail"]


def test_the_kernel_report_finds_the_written_out_attention_on_cpu(monkeypatch):
    [r] = gpu_check.check_kernels(gpu_check.CheckConfig(), "cpu")
    assert r["status"] == "PASS" and r["device"] == "cpu", r
    assert r["attention_kernels"] == [] and "aten::_softmax found" in r["detail"]
    # a CPU step that runs SDPA (the old attention) is reported, and fails
    monkeypatch.setattr(model, "attention", lambda q, k, v, m=None:
                        torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m))
    [r] = gpu_check.check_kernels(gpu_check.CheckConfig(), "cpu")
    assert r["status"] == "FAIL"
    assert "aten::_scaled_dot_product_flash_attention_for_cpu" in r["attention_kernels"]


def test_ridge_accuracy_separates_separable_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    X = rng.normal(size=(400, 8)) + 3 * y[:, None]
    assert gpu_check.ridge_accuracy(X[:200], y[:200], X[200:], y[200:]) > 95
    assert 35 < gpu_check.ridge_accuracy(X[:200], rng.permutation(y[:200]), X[200:], y[200:]) < 65


# ----------------------------------------------------------------------------- the GPU peak table

@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
    ("NVIDIA H200", 989e12), ("NVIDIA H200 NVL", 835e12), ("NVIDIA H800", 989e12),
    ("NVIDIA H800 PCIe", 756e12), ("NVIDIA A10G", 70e12), ("NVIDIA A10", 125e12),
    ("NVIDIA L40S", 362e12), ("NVIDIA L4", 121e12), ("Some Future GPU", 0.0)])
def test_gpu_peak_of_each_name(name, peak):
    assert hardware.nvidia_peak(name) == peak


# ----------------------------------------------------------------------------- the CUDA halves

@pytest.mark.gpu
def test_gpu_probe_features_cuda_against_cpu(mirror):
    [r] = gpu_check.check_probe_features(gpu_check.CheckConfig(), "cpu", "cuda")
    assert r["status"] == "PASS", r


@pytest.mark.gpu
def test_gpu_resume_and_kernels_on_cuda(work):
    corpus, tmp_path, env = work
    [r] = gpu_check.check_resume(gpu_check.CheckConfig(steps=10), corpus, tmp_path, env, "cuda",
                                 dets=("true",))
    assert r["status"] == "PASS", r  # the unverified CUDA bit-exactness (docs/reproducibility.md)
    [r] = gpu_check.check_kernels(gpu_check.CheckConfig(), "cuda")
    assert r["status"] == "PASS", r
