"""bench.py runs end to end in its quick mode, and MFU is the ratio it claims to be."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from lib import hardware

ROOT = Path(__file__).resolve().parents[1]
MODE_FIELDS = {"mode", "device", "dtype", "compiled", "batch_size", "seq_len", "ms_per_step",
               "ms_per_step_repeats", "tokens_per_s", "flops_per_step", "flops_per_token",
               "peak_flops", "mfu", "peak_memory_bytes", "recompiles_after_warmup",
               "deterministic", "host_ms_per_step", "ms_per_step_prefetched",
               "compile_fallbacks", "graph_breaks"}


def test_mfu_is_achieved_flops_over_peak():
    assert hardware.mfu(flops=2e12, seconds=4.0, peak=1e12) == pytest.approx(0.5)
    assert hardware.mfu(flops=1e9, seconds=1.0, peak=0.0) == 0.0, "unknown peak"


def test_quick_bench_reports_every_field():
    out = subprocess.run([sys.executable, "-m", "tools.bench", "--quick", "--compile=false",
                          "--json"],
                         cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert [m["mode"] for m in report["modes"]] == ["mlm", "jepa", "hybrid"]
    for m in report["modes"]:
        assert MODE_FIELDS <= set(m)
        assert m["ms_per_step"] > 0 and 0 < m["mfu"] < 1 and m["peak_memory_bytes"] > 0
        assert m["host_ms_per_step"] > 0 and m["ms_per_step_prefetched"] > 0
        assert m["deterministic"] and m["compile_fallbacks"] == m["graph_breaks"] == 0
        assert m["flops_per_token"] == pytest.approx(
            m["flops_per_step"] / (m["batch_size"] * m["seq_len"]))
    assert report["hybrid_over_mlm"] > 0 and report["features"]["sentences_per_s"] > 0


def test_bench_rejects_an_unknown_mode():
    out = subprocess.run([sys.executable, "-m", "tools.bench", "--quick", "--modes=bert"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--modes=bert: expected some of hybrid, mlm, jepa" in out.stderr
