"""bench.py runs end to end in its quick mode, and MFU is the ratio it claims to be."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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


def test_quick_profile_splits_the_step_into_its_phases_and_names_the_top_ops(capsys):
    """--profile: forward + backward + optimizer (+ EMA) cover the profiled step (the rest is lr,
    slicing and stats: small), each phase is there, and the top ops carry their fields."""
    out = subprocess.run([sys.executable, "-m", "tools.bench", "--quick", "--compile=false",
                          "--modes=mlm,hybrid", "--profile", "--profile_steps=2", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    for m in report["modes"]:
        p = m["profile"]
        phases = {"forward", "backward", "optimizer"} | ({"ema"} if m["mode"] == "hybrid"
                                                          else set())
        assert set(p["phases_ms"]) == set(p["phases_pct"]) == phases, m["mode"]
        assert all(v > 0 for v in p["phases_ms"].values())
        step = p["ms_per_step_profiled"]
        assert sum(p["phases_ms"].values()) == pytest.approx(step, rel=0.2), p
        assert sum(p["phases_ms"].values()) + p["other_ms"] == pytest.approx(step, abs=0.01)
        assert p["ms_per_step_timed"] == m["ms_per_step"] and p["steps"] == 2
        assert p["recompiles_during_profile"] == 0 and p["activities"] == ["cpu"]
        assert 0 < len(p["top_ops"]) <= 15
        for op in p["top_ops"]:
            assert set(op) == {"name", "self_cpu_ms", "pct_of_step", "calls_per_step"}
            assert op["name"] and not op["name"].startswith("bench/")
            assert op["self_cpu_ms"] >= 0 and op["calls_per_step"] > 0
            assert op["pct_of_step"] == pytest.approx(100 * op["self_cpu_ms"] / step, abs=0.1)
        ranked = [op["self_cpu_ms"] for op in p["top_ops"]]
        assert ranked == sorted(ranked, reverse=True)
    from tools import bench  # the printed summary: in this process, to save a start-up
    assert bench.main(["--quick", "--compile=false", "--modes=mlm", "--profile",
                       "--profile_steps=1"]) == 0
    text = capsys.readouterr().out
    assert "where a step's time goes" in text and "mlm top ops by self CPU: " in text


def test_time_to_quality_curve_and_crossing(tmp_path, monkeypatch, capsys):
    """--time_to_quality on the synthetic corpus with a tiny budget: a point per kept checkpoint
    and the final one, elapsed rising with the step, and the crossing of a target placed between
    two points interpolated linearly between exactly those two (--ttq_reuse: the same run)."""
    from synthetic import TINY_ARGS, write_corpus

    from tools import bench
    corpus = write_corpus(tmp_path / "corpus")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    flags = ["--modes=", "--time_to_quality", f"--corpus={corpus}", "--max_flops=4e9",
             "--compile=false", f"--train_args={' '.join(TINY_ARGS)}",
             f"--ttq_out={tmp_path / 'ttq'}", "--json"]
    assert bench.main(flags + ["--target_val_loss=1000"]) == 0  # train.py in a subprocess
    report = json.loads(capsys.readouterr().out)
    assert report["modes"] == [] and report["features"] is None
    t = report["time_to_quality"]
    curve = t["curve"]
    assert "--mode=mlm" in t["command"] and "--keep_at=0.1,0.2,0.3" in t["command"]
    assert [p["fraction"] for p in curve] == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    steps, elapsed = [p["step"] for p in curve], [p["elapsed_s"] for p in curve]
    assert steps == sorted(set(steps)) and steps[-1] == t["planned_steps"] >= 30
    assert elapsed == sorted(elapsed) and elapsed[-1] == t["wall_s"] > 0
    assert all(p["val_rows"] > 0 and p["val_mlm_loss"] > 0 for p in curve)
    assert not curve[-1]["elapsed_interpolated"]  # the last step is always logged
    assert t["reached"] and t["seconds"] == elapsed[0] and t["between"] == [None, 0]
    assert not t["target_is_the_fixed_one"]

    def measure(target: float) -> dict:
        assert bench.main(flags + ["--ttq_reuse", f"--target_val_loss={target}"]) == 0
        again = json.loads(capsys.readouterr().out)["time_to_quality"]
        assert again["curve"] == curve  # the same run, the same fixed validation loss
        return again
    losses = [p["val_mlm_loss"] for p in curve]
    # the first point below every earlier one, then a target between it and the last point
    # above the target: the crossing is between points k-1 and k, and nowhere earlier
    k = next(i for i in range(1, len(curve)) if losses[i] < min(losses[:i]) - 0.05)
    target = (min(losses[:k]) + losses[k]) / 2
    a, b = curve[k - 1], curve[k]
    w = (a["val_mlm_loss"] - target) / (a["val_mlm_loss"] - b["val_mlm_loss"])
    got = measure(target)
    assert got["reached"] and got["between"] == [k - 1, k]
    assert got["seconds"] == pytest.approx(a["elapsed_s"] + w * (b["elapsed_s"] - a["elapsed_s"]),
                                           abs=1e-3)
    assert got["step"] == pytest.approx(a["step"] + w * (b["step"] - a["step"]), abs=0.01)
    assert a["elapsed_s"] <= got["seconds"] <= b["elapsed_s"]
    never = measure(min(losses) - 1)
    assert not never["reached"] and never["seconds"] is None and never["note"] == "not reached"


def test_the_cpu_keeps_freed_memory_and_a_gpu_is_left_alone():
    # What it changes (a warm compiled tiny step: ~47,000 minor faults -> ~100) is measured by
    # the bench, not asserted here: fault counts of one step vary with the allocator's history.
    linux = sys.platform.startswith("linux")
    assert hardware.keep_freed_memory(torch.device("cpu")) == linux
    assert hardware.keep_freed_memory(torch.device("meta")) is False
