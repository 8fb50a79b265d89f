"""`make paper` end to end on a synthetic corpus and fixture GLUE tasks: both arms trained at equal
FLOPs in their own processes, probes, analysis and a report traceable to its files; a second run
redoes nothing, and an unfinished arm is resumed while the finished one is left alone."""
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from probe_fixtures import write_glue
from synthetic import TINY_ARGS, write_corpus

import lib.download
import probe
import train
from lib import markdown
from lib.cli import UserError
from lib.runs import wall_time
from study import arms, study

BUDGET = 2e9  # FLOPs per arm: ~20 MLM steps, ~9 hybrid steps of the tiny test model


REAL_RUN = subprocess.run  # arms.subprocess is this module: patching its run patches it here


def train_in_process(cmd, **kwargs):
    """What subprocess.run of paper's train.py command does, in this process: no Python and torch
    to start again (~2 s a run). Other commands (train.py's git) run as usual. The end-to-end
    test keeps the real processes."""
    if len(cmd) < 2 or Path(cmd[1]).name != "train.py":
        return REAL_RUN(cmd, **kwargs)
    det = torch.are_deterministic_algorithms_enabled()
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return subprocess.CompletedProcess(cmd, train.main(cmd[2:]))
    except UserError as e:  # what cli.run_cli makes of it in a process of its own
        print(f"error: {e}", file=sys.stderr)
        return subprocess.CompletedProcess(cmd, 2)
    finally:  # train.main sets these for its run, process-wide
        torch.use_deterministic_algorithms(det)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        for s, handler in handlers.items():
            if handler is not None:  # None: installed from C, cannot be put back
                signal.signal(s, handler)


@pytest.fixture
def flags(tmp_path, monkeypatch):
    write_glue(tmp_path / "data", n_train=60, n_dev=24, tasks=("sst2", "mrpc"))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(lib.download, "RETRY_BACKOFF", 0)  # mnli and bow's vocab are offline
    monkeypatch.chdir(tmp_path)
    corpus = write_corpus(tmp_path / "corpus")
    sizes = " ".join(a for a in TINY_ARGS if not a.startswith("--preset="))
    return [f"--budget={BUDGET:g}", f"--corpus={corpus}", f"--train_args={sizes}",
            "--baselines=majority", "--tasks=sst2,mrpc,mnli", "--pools=mean,attention",
            "--curve=", "--n=20", "--bootstrap=20", "--permutations=20",
            "--probe_args=--max_iter=30 --l2_grid=1e-2,1 --bootstrap=100"]


def test_paper_runs_end_to_end_and_resumes_only_what_is_unfinished(flags, tmp_path, monkeypatch):
    assert study.main(flags) == 0
    out = tmp_path / "out/paper"
    report = (out / "report.md").read_text()
    for arm in ("hybrid", "mlm"):
        run = out / f"{arm}-tiny"
        conf = json.loads((run / "config.json").read_text())
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        assert conf["config"]["max_flops"] == BUDGET and log[-1]["step"] == conf["planned_steps"]
        assert 0.8 < log[-1]["flops"] / BUDGET < 1.1  # equal compute, to within a step or so
        assert {p.name for p in (run / "probe").glob("*.json")} >= {
            f"{t}-{p}.json" for t in ("sst2", "mrpc") for p in ("mean", "attention")}
        assert f"| {arm}-tiny | {log[-1]['step']:,} ({conf['planned_steps']:,}) |" in report
        assert f"out/paper/{arm}-tiny/log.jsonl" in report
        last = log[-1]  # the trajectory table ends at the last logged step
        assert f"| {arm}-tiny | {last['step']:,} | {last['loss']:.4f} |" in report
        row = next(r for r in report.splitlines()
                   if r.startswith(f"| {arm}-tiny | {last['step']:,} ("))
        assert f" | {last['flops']:.3e} | {last['tokens']:,} | " in row  # from its log
        assert f" | {markdown.code_cell(conf)} | " in row and conf["git"][:7] in row  # the code
    # the probe table's numbers are the probe JSONs' (value [95% CI]), arm by arm
    row = next(r for r in report.splitlines() if r.startswith("| sst2 | acc | ours | mean | "))
    for arm, cell in zip(("hybrid", "mlm"), row.split(" | ")[4:]):
        r = json.loads((out / f"{arm}-tiny/probe/sst2-mean.json").read_text())
        assert cell == (f"{r['metrics']['acc']:.3f} [{r['ci']['acc'][0]:.3f}, "
                        f"{r['ci']['acc'][1]:.3f}]")
    assert (tmp_path / "out/baselines/probe/sst2-majority.json").exists()
    analysis = json.loads((out / "analysis/analysis.json").read_text())
    assert [(p["a"], p["b"]) for p in analysis["pairs"]] == [(["hybrid-tiny"], ["mlm-tiny"])]
    assert "| p adj |" in report and "paired bootstrap of the difference" in report
    assert set(analysis["tasks"]) == {"sst2", "mrpc"}  # mnli: found missing once, up front
    assert "skipped mnli" in report and "67.55" in report and "-0.448" in report
    assert "000_46df8af9111881c7.txt" in report  # the original's numbers name their source

    stamp = (out / "analysis/analysis.json").stat().st_mtime_ns
    monkeypatch.setattr(arms.subprocess, "run", lambda *a, **k: pytest.fail("trained again"))
    monkeypatch.setattr(probe, "probe_and_save", lambda *a, **k: pytest.fail("probed again"))
    assert study.main(flags) == 0
    assert (out / "analysis/analysis.json").stat().st_mtime_ns == stamp

    conf_path = out / "hybrid-tiny/config.json"  # pretend the hybrid arm stopped early
    conf = json.loads(conf_path.read_text())
    conf["planned_steps"] += 5
    conf_path.write_text(json.dumps(conf))
    calls = []
    monkeypatch.setattr(arms.subprocess, "run", lambda cmd, **k: calls.append(cmd) or
                        subprocess.CompletedProcess(cmd, 0))
    assert study.main(flags) == 0
    assert len(calls) == 1 and "--mode=hybrid" in calls[0] and "--resume" in calls[0]


@pytest.mark.faults
def test_a_crashed_arm_is_reported_and_the_others_go_on(flags, tmp_path, monkeypatch):
    real = train_in_process

    def hybrid_crashes(cmd, **k):
        return subprocess.CompletedProcess(cmd, 1) if "--mode=hybrid" in cmd else real(cmd, **k)
    monkeypatch.setattr(arms.subprocess, "run", hybrid_crashes)
    flags = [f for f in flags if not f.startswith(("--tasks", "--pools"))] + [
        "--tasks=sst2", "--pools=mean"]
    with pytest.raises(study.UserError, match=r"^1 stage\(s\) failed: train hybrid-tiny; re-run"):
        study.main(flags)
    report = (tmp_path / "out/paper/report.md").read_text()
    assert "**failed** train hybrid-tiny: train.py exited with status 1" in report
    assert "| mlm-tiny | " in report and "| hybrid-tiny | " not in report
    assert (tmp_path / "out/paper/mlm-tiny/probe/sst2-mean.json").exists()

    calls = []  # re-running trains only the arm that failed

    def recorded(cmd, **k):
        calls.extend([cmd] if cmd[0] != "git" else [])  # git: train.py's own, in this process
        return real(cmd, **k)
    monkeypatch.setattr(arms.subprocess, "run", recorded)
    assert study.main(flags) == 0
    assert len(calls) == 1 and "--mode=hybrid" in calls[0] and "--resume" not in calls[0]
    assert "| hybrid-tiny | " in (tmp_path / "out/paper/report.md").read_text()


def test_wall_time_adds_the_segments_of_a_resumed_run():
    log = [{"elapsed": e} for e in (1.0, 10.0, 20.0, 2.0, 15.0)]  # resumed after 20 s
    assert wall_time(log) == 35.0


@pytest.mark.faults
@pytest.mark.parametrize("extra, message", [
    (["--preset=small", "--budget=0"], "pass --budget"), (["--arms=bert"], "--arms=bert"),
    (["--baselines=oracle"], "--baselines=oracle"),
    (["--compare=hybrid/bert"], "--compare=hybrid/bert: bert is neither a run")])
def test_bad_flags_are_user_errors(flags, extra, message):
    with pytest.raises(study.UserError, match=message):
        study.main(flags + extra)


def test_seeds_give_each_arm_runs_a_seed_level_test_and_a_learning_curve(flags, tmp_path,
                                                                         monkeypatch):
    """--seeds=2: two resumable run folders per arm (train.py --seed=0, 1), two random inits,
    the analysis compares the arms over seeds (Welch, the seed as unit), seed 0 keeps and
    probes the learning-curve checkpoints, and the report shows mean ± sd per arm."""
    monkeypatch.setattr(arms.subprocess, "run", train_in_process)
    flags = [f for f in flags if not f.startswith(("--baselines", "--tasks", "--pools", "--curve"))]
    assert study.main([*flags, "--seeds=2", "--baselines=random,majority",
                       "--tasks=sst2", "--pools=mean"]) == 0
    out = tmp_path / "out/paper"
    for arm in ("hybrid", "mlm"):
        for seed, name in ((0, f"{arm}-tiny"), (1, f"{arm}-tiny-s1")):
            conf = json.loads((out / name / "config.json").read_text())["config"]
            assert conf["seed"] == seed and (out / name / "probe/sst2-mean.json").exists()
        for f in study.StudyConfig.curve:  # the default learning curve: seed 0 only
            assert (out / f"{arm}-tiny/ckpt-f{f:g}.pt").exists()
            assert not (out / f"{arm}-tiny-s1/ckpt-f{f:g}.pt").exists()
            assert (out / f"{arm}-tiny/curve-{f:g}/sst2-mean.json").exists()
    # two random inits, not one twice: their keys and their features differ (a 24-example dev
    # accuracy can tie by chance, the encoded features cannot)
    random = [tmp_path / f"out/random-tiny{s}/probe" for s in ("", "-s1")]
    keys = [json.loads((r / "sst2-mean.json").read_text())["ckpt_key"] for r in random]
    assert keys[0].endswith("-0") and keys[1].endswith("-1")
    dev = [torch.load(next((r / "cache").glob("sst2-dev-mean-*.pt")))["a"] for r in random]
    assert dev[0].shape == dev[1].shape and not torch.equal(dev[0], dev[1])
    analysis = json.loads((out / "analysis/analysis.json").read_text())
    assert [(p["a"], p["b"]) for p in analysis["pairs"]] == [
        (["hybrid-tiny", "hybrid-tiny-s1"], ["mlm-tiny", "mlm-tiny-s1"]),
        (["hybrid-tiny", "hybrid-tiny-s1"], ["random-tiny", "random-tiny-s1"]),
        (["mlm-tiny", "mlm-tiny-s1"], ["random-tiny", "random-tiny-s1"])]
    probe = [c for c in analysis["comparisons"] if c["metric"] == "semantic_probe"]
    assert probe and all(c["test"] == "welch" for c in probe)
    report = (out / "report.md").read_text()
    assert "## Learning curve" in report and "| hybrid-tiny | 0.25 |" in report
    assert "| mlm-tiny | 0.5 |" in report
    row = next(line for line in report.splitlines() if line.startswith("| sst2 | acc | ours"))
    assert row.count(" ± ") == 3  # hybrid, mlm, random: mean ± sd over 2 seeds
    section = report.split("## Against random weights")[1].split("\n## ")[0]
    versus = [line for line in section.splitlines() if line.startswith("| sst2 |")]
    assert [line.split(" | ")[1] for line in versus] == ["hybrid", "mlm"]
    assert all(" | welch | " in line for line in versus)
