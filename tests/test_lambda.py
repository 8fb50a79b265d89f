"""The mixing weight lambda: lambda_mode=balanced settles where neither objective dominates,
whatever their scales, while `learned` runs to the smaller loss; its statistics are checkpointed
(resume is exact), its weight is never decayed, it compiles and runs under DDP; lambda variants
are arms of `make paper`."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from synthetic import TINY_ARGS
from test_paper import flags, train_in_process  # noqa: F401 (a fixture)
from test_train import ROOT, corpus_env, crash_at, read_log, run_train  # noqa: F401

import model
import train
from lib import figures, markdown
from lib.cli import UserError
from lib.runs import read_log
from study import arms, study


def weighting(lambda_mode):
    """A hybrid model whose mix() is driven by synthetic losses instead of its encoder's."""
    return model.PredictReconstruct(model.ModelConfig(
        vocab_size=8, seq_len=8, d_model=4, n_layers=1, n_heads=1, pred_dim=4, pred_depth=1,
        lambda_mode=lambda_mode))


def optimise(lambda_mode, losses, steps, logit0=0.0, lr=0.01):
    """Adam (train.py's betas) on the weight and on a parameter theta shared by the two losses,
    losses(theta) -> (L_JEPA, L_MLM); the step's losses are observed as train.py does.
    -> [(lam on the mode's own scale, L_JEPA, L_MLM)] per step."""
    m = weighting(lambda_mode)
    theta = nn.Parameter(torch.zeros(()))
    speed = model.BALANCE_SPEED if m.balanced else 1.0
    with torch.no_grad():
        m.w.fill_(logit0 / speed)
    opt = torch.optim.Adam([theta, m.w], lr=lr, betas=(0.9, 0.98))
    trace = []
    for _ in range(steps):
        loss_jepa, loss_mlm = losses(theta)
        loss, stats = m.mix(loss_jepa, loss_mlm)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if m.balanced:
            m.observe_losses(torch.stack([loss_jepa, loss_mlm]).detach(), torch.tensor(False))
        trace.append((stats.get("lam_rel", stats["lam"]).item(), loss_jepa.item(),
                      loss_mlm.item()))
    return trace


def tug_of_war(a, b):
    """Two losses of scales a and b pulling one parameter to opposite optima (+1 and -1)."""
    return lambda t: (a * ((t - 1) ** 2 + 0.1), b * ((t + 1) ** 2 + 0.1))


@pytest.mark.parametrize("a, b", [(0.5, 8.0), (8.0, 0.5)])
def test_balanced_settles_where_neither_dominates_while_learned_runs_to_the_smaller(a, b):
    learned = optimise("learned", tug_of_war(a, b), 1000)
    lam, loss_jepa, loss_mlm = learned[-1]
    small_is_jepa = loss_jepa < loss_mlm
    assert (lam > 0.97) if small_is_jepa else (lam < 0.03), "learned: a corner, the smaller loss"
    first = learned[0]
    abandoned = max(loss_jepa / first[1], loss_mlm / first[2])
    assert abandoned > 3, "the other objective ends far above where it started"
    # balanced, started far off (lam 0.95): back to the compromise and stays there
    balanced = optimise("balanced", tug_of_war(a, b), 1000, logit0=3.0)
    tail = [lam for lam, _, _ in balanced[500:]]
    assert 0.49 < min(tail) and max(tail) < 0.51
    _, loss_jepa, loss_mlm = balanced[-1]
    assert loss_jepa / a == pytest.approx(loss_mlm / b, rel=0.05), "equal relative losses"


def test_balanced_does_not_depend_on_the_losses_scales():
    one = optimise("balanced", tug_of_war(0.5, 8.0), 300, logit0=3.0)
    other = optimise("balanced", tug_of_war(80.0, 0.05), 300, logit0=3.0)
    assert [lam for lam, _, _ in one] == pytest.approx([lam for lam, _, _ in other], abs=1e-4)


@pytest.mark.parametrize("tau", [0.5, 0.25])
@pytest.mark.parametrize("logit0", [-3.0, 3.0])
def test_balanced_fixed_point_is_sigmoid_of_the_ratio_gap_over_tau(tau, logit0):
    """Losses at 30% and 70% of their first values: lam* = sigmoid((0.3 - 0.7) / tau), from
    either side, whatever the raw scales (0.5 and 8)."""
    first = []

    def losses(_):
        ratio = (1.0, 1.0) if not first else (0.3, 0.7)
        first.append(1)
        return torch.tensor(0.5 * ratio[0]), torch.tensor(8.0 * ratio[1])
    trace = optimise(f"balanced:{tau}", losses, 400, logit0=logit0)
    expected = 1 / (1 + math.exp(0.4 / tau))
    assert trace[-1][0] == pytest.approx(expected, abs=0.01)
    assert all(0.04 < lam < 0.96 for lam, _, _ in trace)


def test_a_weight_as_fast_as_the_network_circles_the_equilibrium(monkeypatch):
    """Why BALANCE_SPEED is large: descent (network) against ascent (weight) at similar speeds
    circles the fixed point (lam swings 0.25-0.75 here) instead of settling on it."""
    monkeypatch.setattr(model, "BALANCE_SPEED", 3.0)
    tail = [lam for lam, _, _ in optimise("balanced", tug_of_war(0.5, 8.0), 2000, 3.0)[1000:]]
    assert max(tail) - min(tail) > 0.2


def test_balanced_logs_the_raw_share_and_the_common_scale_weight():
    m = weighting("balanced")
    loss, stats = m.mix(torch.tensor(0.5), torch.tensor(8.0))
    assert loss.item() == 1.0 and stats["lam_rel"] == 0.5, "the first step is its own reference"
    assert stats["lam"].item() == pytest.approx(8 / 8.5), "0.5 / 0.5 against 0.5 / 8"
    m.observe_losses(torch.tensor([0.5, 8.0]), torch.tensor(False))
    m.observe_losses(torch.tensor([0.1, 1.0]), torch.tensor(False))  # recorded once only
    assert m.loss_init.tolist() == [0.5, 8.0]
    loss, stats = m.mix(torch.tensor(0.25), torch.tensor(2.0))
    assert loss.item() == pytest.approx(0.5 * 0.5 + 0.5 * 0.25)
    assert m.lam().device == m.w.device and m.lam().item() == pytest.approx(8 / 8.5)


def test_a_skipped_or_non_finite_first_step_is_not_the_reference():
    m = weighting("balanced")
    m.observe_losses(torch.tensor([0.5, 8.0]), torch.tensor(True))
    m.observe_losses(torch.tensor([math.nan, 8.0]), torch.tensor(False))
    assert m.loss_init.tolist() == [0.0, 0.0]
    m.observe_losses(torch.tensor([0.4, 7.0]), torch.tensor(False))
    assert m.loss_init.tolist() == pytest.approx([0.4, 7.0])


def test_balanced_weight_is_never_decayed_and_its_reference_is_a_buffer():
    cfg, _, _ = train.resolve_config(["--mode=hybrid", "--lambda_mode=balanced", "--preset=tiny",
                                      "--d_model=32", "--n_layers=1", "--n_heads=2",
                                      "--pred_dim=16", "--pred_depth=1"], cuda=False)
    run = train.build_run(cfg, vocab_size=120)
    decay, no_decay = ({id(p) for p in g["params"]} for g in run.opt.param_groups)
    assert run.opt.param_groups[1]["weight_decay"] == 0.0
    assert id(run.raw.w) in no_decay and id(run.raw.w) not in decay
    assert "loss_init" in run.raw.state_dict() and "loss_init" not in dict(
        run.raw.named_parameters())


@pytest.mark.parametrize("text", ["balanced:0", "balanced:-1", "balanced:", "balanced:x",
                                  "balanced:inf", "uncertainty:1"])
def test_bad_lambda_modes_are_one_line_errors(text):
    with pytest.raises(ValueError, match=r"^lambda_mode .*balanced\[:<tau>\] with tau > 0"):
        model.parse_lambda_mode(text)
    assert model.parse_lambda_mode("balanced") == ("balanced", model.BALANCE_TAU)
    assert model.parse_lambda_mode("balanced:0.25") == ("balanced", 0.25)


# ----------------------------------------------------------------------------- in training

def test_balanced_training_logs_lambda_and_resumes_bit_identically(run_train, monkeypatch):
    args = ("--mode=hybrid", "--lambda_mode=balanced", "--max_steps=30", "--ckpt_every=10")
    code, straight = run_train(*args, out="straight")
    assert code == 0
    log = read_log(straight)
    a = model.load_checkpoint(straight / "ckpt.pt")
    init = a["model"]["loss_init"]  # L(0): the first step's losses, in the checkpoint
    assert init.tolist() == pytest.approx([log[0]["loss_jepa"], log[0]["loss_mlm"]], rel=1e-5)
    assert log[0]["loss"] == pytest.approx(1.0) and log[0]["lam_rel"] == 0.5
    for r in log:  # lam: the share of L_JEPA in the raw weights lam_rel / L_J(0), ... / L_M(0)
        share = r["lam_rel"] * init[1] / (r["lam_rel"] * init[1] + (1 - r["lam_rel"]) * init[0])
        assert r["lam"] == pytest.approx(share.item(), abs=2e-6)
    assert len({r["lam_rel"] for r in log}) > 3, "the weight moves"

    crash_at(monkeypatch, 25, run_train, *args, out="crashed")  # resumes from step 20
    code, resumed = run_train(*args, "--resume", out="crashed")
    assert code == 0
    b = model.load_checkpoint(resumed / "ckpt.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    keys = ("loss", "loss_jepa", "loss_mlm", "lam", "lam_rel")
    assert [[r[k] for k in keys] for r in read_log(resumed)] == [[r[k] for k in keys]
                                                                  for r in log]


# ----------------------------------------------------------------------------- study arms

def test_arms_name_a_mode_and_an_optional_lambda_mode():
    assert arms.parse_arm("hybrid") == ("hybrid", "")
    assert arms.parse_arm("mlm") == ("mlm", "")
    assert arms.parse_arm("hybrid:fixed:0.5") == ("hybrid", "fixed:0.5")
    assert arms.parse_arm("hybrid:balanced") == ("hybrid", "balanced")
    assert arms.arm_folder("hybrid:fixed:0.5", "tiny") == "hybrid-fixed-0.5-tiny"
    assert arms.arm_folder("hybrid", "tiny") == "hybrid-tiny"
    for bad, message in (("bert", "--arms=bert"), ("mlm:balanced", "only a hybrid arm"),
                         ("hybrid:fixed:2", "lambda_mode 'fixed:2'")):
        with pytest.raises(UserError, match=message):
            arms.parse_arm(bad)


def test_a_lambda_variant_is_an_arm_of_the_study(flags, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(arms.subprocess, "run", train_in_process)
    assert study.main([*flags, "--arms=hybrid,hybrid:balanced", "--tasks=sst2",
                       "--pools=mean"]) == 0
    out = tmp_path / "out/paper"
    conf = json.loads((out / "hybrid-balanced-tiny/config.json").read_text())
    assert conf["config"]["lambda_mode"] == "balanced"
    assert json.loads((out / "hybrid-tiny/config.json").read_text())["config"][
        "lambda_mode"] == "learned"
    log = read_log(out / "hybrid-balanced-tiny")
    report = (out / "report.md").read_text()
    assert f"| hybrid-balanced-tiny | {log[-1]['step']:,} |" in report  # the trajectory table
    path = markdown.lam_path(log).split(" → ")
    assert len(path) == min(5, len(log)) and path[0] == f"{log[0]['lam']:.3f}" and path[-1] == \
        f"{log[-1]['lam']:.3f}"
    assert f"| balanced | {markdown.lam_path(log)} (lam_rel " in report  # the pre-training table
    assert "| FLOPs | hybrid-tiny | hybrid-balanced-tiny |" in report  # lambda side by side
    names = [m["name"] for m in json.loads((out / "analysis/analysis.json").read_text())["models"]]
    assert {"hybrid-tiny", "hybrid-balanced-tiny"} <= set(names), "distinct models"


def test_two_gloo_processes_match_one_with_the_balanced_weight(
        run_train, corpus_env, tmp_path):  # noqa: F811 (fixtures)
    """L(0) is the global batch's (all-reduced), so the weight is the same on any process count.
    The two processes run compiled (torch.compile(DDP(model)); the backend aot_eager through
    torch's own TORCH_COMPILE_OVERRIDE_BACKENDS: Dynamo traces, guards and breaks as with Inductor,
    without a minute of C++ code generation in each process) against one eager process: the
    same losses and weights to fp32 rounding; one graph and no recompile although
    the L(0) buffer changes after step 0; and no false "partly eager" alarm from DDP's own graph
    breaks, which lib/hardware.compile_counts leaves out (the model's frames: no fallback, no
    break)."""
    args = ["--mode=hybrid", "--lambda_mode=balanced", "--max_steps=10"]
    assert run_train(*args, out="one")[0] == 0
    corpus, data_dir = corpus_env
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          "train.py", *TINY_ARGS, f"--corpus={corpus}", *args, "--compile=true",
                          f"--out={tmp_path / 'two'}"], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, DATA_DIR=str(data_dir), OMP_NUM_THREADS="1",
                                  TORCH_COMPILE_OVERRIDE_BACKENDS=">=0:aot_eager"),
                         timeout=300)
    assert two.returncode == 0, two.stderr
    assert "partly eager" not in two.stderr and "compiled: 1 graphs" in two.stdout
    log = read_log(tmp_path / "two")
    assert [(r["graphs"], r["compile_fallbacks"], r["graph_breaks"], r["recompiles"])
            for r in log] == [(1, 0, 0, 0)] * len(log)
    for r1, r2 in zip(read_log(tmp_path / "one"), read_log(tmp_path / "two"), strict=True):
        for key in ("loss", "lam", "lam_rel"):
            assert r1[key] == pytest.approx(r2[key], rel=1e-4), key
    one, two = (model.load_checkpoint(tmp_path / n / "ckpt.pt")["model"]["loss_init"]
                for n in ("one", "two"))
    assert torch.allclose(one, two, rtol=1e-5)


def test_the_lambda_figure_is_optional(tmp_path, monkeypatch):
    run = tmp_path / "hybrid-tiny"
    run.mkdir()
    (run / "log.jsonl").write_text("".join(json.dumps(dict(
        step=s, flops=s * 1e9, lam=0.5 + s / 100, loss_jepa=1 / s, loss_mlm=9 - s / 10)) + "\n"
        for s in range(1, 11)))
    logs, groups = {run.name: read_log(run)}, {"hybrid": [run.name]}
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert figures.paper_figures(logs, {}, None, groups, tmp_path) is None
    monkeypatch.undo()
    import matplotlib  # noqa: F401 (make test installs requirements-paper.txt: never skipped)
    assert list(figures.paper_figures(logs, {}, None, groups, tmp_path)) == ["lambda.png"]
    assert (tmp_path / "lambda.png").stat().st_size > 0
