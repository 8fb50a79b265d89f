"""gpu_check.py's parts that need no GPU: it skips cleanly without CUDA, and its resume check
(SIGTERM, resume, compare the weights) works, run here on the CPU."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tools import gpu_check

ROOT = Path(__file__).resolve().parents[1]


def test_without_cuda_every_check_is_a_skip_with_the_reason(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: make gpu-check runs the real checks")
    out = subprocess.run([sys.executable, "-m", "tools.gpu_check", f"--out={tmp_path / 'g.json'}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "g.json").read_text())
    assert [r["status"] for r in report["results"]] == ["SKIP"] * 5
    assert all("no CUDA device" in r["detail"] for r in report["results"])
    assert "SKIP  flash attention" in out.stdout


@pytest.mark.faults
def test_the_resume_check_passes_on_an_exact_resume_on_cpu(tmp_path):
    corpus = gpu_check.synthetic_corpus(tmp_path / "corpus")
    env = dict(os.environ, DATA_DIR=str(tmp_path / "data"))
    cc = gpu_check.CheckConfig(steps=10)
    [r] = gpu_check.check_resume(cc, corpus, tmp_path, env, dets=("true",),
                         extra=["--device=cpu", "--compile=false", "--dtype=float32"])
    assert r["status"] == "PASS" and r["max_abs_diff"] == 0.0, r
    assert gpu_check.max_difference(tmp_path / "straight-true", tmp_path / "resumed-true") == 0.0
    # and it does see a difference: one weight moved by 1e-3
    ckpt = torch.load(tmp_path / "straight-true" / "ckpt.pt", weights_only=True)
    ckpt["model"]["encoder.ln_f.bias"][0] += 1e-3
    (tmp_path / "moved").mkdir()
    torch.save(ckpt, tmp_path / "moved" / "ckpt.pt")
    assert gpu_check.max_difference(tmp_path / "straight-true", tmp_path / "moved") == pytest.approx(
        1e-3, rel=1e-2)


def test_ridge_accuracy_separates_separable_data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    X = rng.normal(size=(400, 8)) + 3 * y[:, None]
    assert gpu_check.ridge_accuracy(X[:200], y[:200], X[200:], y[200:]) > 95
    assert 35 < gpu_check.ridge_accuracy(X[:200], rng.permutation(y[:200]), X[200:], y[200:]) < 65
