"""`make paper`: the whole study in one resumable command, and its report.

    python -m study.study [--preset=tiny] [--budget=1.5e14] [--arms=hybrid,mlm] [--corpus=enwiki]

1. pre-trains every arm at the same FLOP budget (train.py --max_flops), each in its own process so
   that a crash costs one arm only, into <out>/<arm>-<preset> (an arm hybrid:fixed:0.5 into
   hybrid-fixed-0.5-<preset>);
2. probes every task x pooling of each arm (into the run's probe/) and of the baselines: the
   random-weight encoder (out/random-<preset>/probe) and majority and bag-of-words
   (out/baselines/probe), probe.py's own folders, which analyze.py reads too;
3. analyses them all (analyze.py) into <out>/analysis;
4. writes <out>/report.md: our numbers next to the original's published ones, every number of ours
   with the JSON or log file it comes from.
Re-running skips what is done: an arm whose checkpoint reached its planned steps (an unfinished one
is resumed), a probe or an analysis whose result was made with exactly the same settings (flags,
weights, data, code; anything else is redone, saying why). Tasks whose data is missing offline
are skipped and reported.
"""
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import analyze  # first: it limits the BLAS threads before numpy is imported
import features
import model
import probe
from lib import glue
from lib.cli import UserError, atomic_write, parse_flags, run_cli
from lib.download import portable
from study.arms import (CURVE_TASKS, PROBE_ARGS, arm_folder, arm_method, arm_of, parse_arm,
                        train_argv, train_run)
from study.report import report



@dataclass
class StudyConfig:
    preset: str = "tiny"
    budget: float = 0.0             # training FLOPs per arm; 0 = BUDGETS[preset]
    arms: tuple[str, ...] = ("hybrid", "mlm")   # modes, or hybrid:<lambda_mode> (hybrid:balanced)
    seeds: int = 1                  # pre-training seeds per arm (train.py --seed=0..N-1), and as
                                    # many random-weight inits
    curve: tuple[float, ...] = (0.25, 0.5)  # learning curve: seed 0 of each arm keeps
                                    # checkpoints at these fractions of its run (train.py
                                    # --keep_at), probed on CURVE_TASKS with mean pooling
    corpus: str = ""                # train.py --corpus; empty = the preset's
    tasks: tuple[str, ...] = tuple(glue.TASKS)
    pools: tuple[str, ...] = features.POOLS
    baselines: tuple[str, ...] = ("random", "majority", "bow")
    n: int = 1000                   # analysis: dev examples per task
    bootstrap: int = 200
    permutations: int = 10_000      # sign-flip tests: the smallest p is 1e-4, so that a
                                    # corrected threshold (0.05 / ~200 tests) is reachable
    compare: tuple[str, ...] = ()   # analyze.py --compare: A/B pairs of runs or arms (methods)
    correction: str = "holm"        # analyze.py --correction: holm | bh
    train_args: str = ""            # more train.py flags, space-separated (e.g. model sizes)
    probe_args: str = PROBE_ARGS    # probe.py flags, space-separated; analysis uses them too
    out: str = "out/paper"


# tiny: ~7 min per arm and seed on a 2-core CPU (the recipe search's budget,
# results/recipe-search); wall times of a whole study in results/tiny-cpu.
BUDGETS = {"tiny": 5e13}


# ----------------------------------------------------------------------------- stages

def train_arms(cfg: StudyConfig, budget: float, errors: dict) -> dict[str, Path]:
    """Each arm x seed in a train.py process (resumed if a checkpoint exists) -> {folder name:
    finished run}; seed 0 keeps the learning-curve checkpoints."""
    finished = {}
    for arm in cfg.arms:
        for seed in range(cfg.seeds):
            run = Path(cfg.out) / arm_folder(arm, cfg.preset, seed)
            argv = train_argv(arm, seed, cfg.preset, budget, run, cfg.corpus,
                              cfg.curve if not seed else (), cfg.train_args)
            why = train_run(argv, f"paper: training {arm} seed {seed}")
            if why:
                errors[f"train {run.name}"] = why
                continue
            finished[run.name] = run
    return finished


def probe_jobs(cfg: StudyConfig, runs: list[Path]) -> list[tuple]:
    """(ckpt, result folder, JSON name stems, tasks or None for all) of every arm, baseline and
    learning-curve checkpoint."""
    jobs = [(str(run / "ckpt.pt"), run / "probe", cfg.pools, None) for run in runs]
    if "random" in cfg.baselines:
        jobs += [(ckpt, Path(f"out/{folder}/probe"), cfg.pools, None) for ckpt, folder in
                 (features.random_encoder(cfg.preset, s) for s in range(cfg.seeds))]
    jobs += [(b, Path("out/baselines/probe"), (b,), None) for b in cfg.baselines
             if b in features.BASELINES]
    jobs += [(str(path), path.parent / f"curve-{f:g}", ("mean",), CURVE_TASKS)
             for f, path in curve_points(cfg, runs)]
    return jobs


def curve_points(cfg: StudyConfig, runs: list[Path]) -> list[tuple]:
    """(fraction, checkpoint) kept by seed 0 of each arm (train.py --keep_at)."""
    return [(f, run / f"ckpt-f{f:g}.pt") for run in runs for f in cfg.curve
            if (run / f"ckpt-f{f:g}.pt").exists()]


def probe_all(cfg: StudyConfig, runs: list[Path], tasks: list, errors: dict):
    """Run every probe the paper uses whose result is missing or was made with other settings
    (the shared random and baseline folders included)."""
    like = str(runs[0] / "ckpt.pt") if runs else ""  # the random encoders' architecture
    for ckpt, folder, stems, only in probe_jobs(cfg, runs):
        for task in [t for t in tasks if only is None or t in only]:
            pcfg = probe.ProbeConfig(task=(task,), ckpt=ckpt,
                                     pool=tuple(stems) if ckpt not in features.BASELINES
                                     else ("mean",), preset=cfg.preset, out=str(folder),
                                     random_like=like if ckpt.startswith("random") else "")
            try:
                probe.run_probe(parse_flags(shlex.split(cfg.probe_args), pcfg)[0], reuse=True)
            except UserError as e:
                errors[f"probe {ckpt} {task}"] = str(e)


def analysis_config(cfg: StudyConfig, runs: list[Path], tasks: list) -> analyze.AnalyzeConfig:
    return analyze.AnalyzeConfig(runs=tuple(str(r) for r in runs), tasks=tuple(tasks),
                                 pools=cfg.pools,
                                 random="random" in cfg.baselines, random_seeds=cfg.seeds,
                                 preset=cfg.preset, n=cfg.n,
                                 probe_args=cfg.probe_args, bootstrap=cfg.bootstrap,
                                 permutations=cfg.permutations,
                                 compare=cfg.compare or default_compare(
                                     cfg, dict.fromkeys(arm_of(cfg, r.name) for r in runs) if runs
                                     else cfg.arms),
                                 correction=cfg.correction, out=str(Path(cfg.out) / "analysis"))

# ----------------------------------------------------------------------------- main

def check_compare(cfg: StudyConfig):
    """The analysis' flags (--compare against the arms' names, --correction, the probe flags),
    checked before hours of training."""
    acfg = analysis_config(cfg, [], list(cfg.tasks))
    analyze.check(acfg)
    models = [dict(name=arm_folder(a, cfg.preset, s), method=arm_method(a)) for a in cfg.arms
              for s in range(cfg.seeds)]
    models += [dict(name=features.random_encoder(cfg.preset, s)[1], method="random")
               for s in range(cfg.seeds) if "random" in cfg.baselines]
    analyze.resolve_pairs(acfg, models)

def default_compare(cfg: StudyConfig, arms) -> tuple[str, ...]:
    """--compare when none is given: every hybrid method vs MLM, then every arm's method vs the
    random-weight encoders (does it beat them?), over the arms given (those that trained)."""
    methods = list(dict.fromkeys(map(arm_method, arms)))
    pairs = [f"{m}/mlm" for m in methods if m.startswith("hybrid") and "mlm" in methods]
    return tuple(pairs + [f"{m}/random" for m in methods if "random" in cfg.baselines])


def available(tasks) -> tuple[list, dict]:
    ok, skipped = [], {}
    for task in tasks:
        try:
            probe.load_splits(task)
            ok.append(task)
        except UserError as e:
            skipped[task] = portable(str(e))
    return ok, skipped


def main(argv):
    cfg, _ = parse_flags(argv, StudyConfig())
    budget = cfg.budget or BUDGETS.get(cfg.preset, 0.0)
    if budget <= 0:
        raise UserError(f"--preset={cfg.preset} has no default budget; pass --budget=FLOPs per arm")
    if not cfg.arms:
        raise UserError(f"--arms is empty: expected some of {', '.join(model.MODES)}")
    for arm in cfg.arms:
        parse_arm(arm)
    if len({arm_folder(a, cfg.preset) for a in cfg.arms}) < len(cfg.arms):
        raise UserError(f"--arms={','.join(cfg.arms)}: an arm is named twice")
    bad = [b for b in cfg.baselines if b not in ("random", *features.BASELINES)]
    if bad:
        raise UserError(f"--baselines={','.join(bad)}: expected some of random, majority, bow")
    if cfg.seeds < 1 or not all(0 < f < 1 for f in cfg.curve):
        raise UserError(f"--seeds={cfg.seeds} --curve={','.join(map(str, cfg.curve))}: expected "
                        "seeds >= 1 and curve fractions strictly between 0 and 1")
    check_compare(cfg)
    t0, errors = time.time(), {}
    tasks, skipped = available(cfg.tasks)
    runs = train_arms(cfg, budget, errors)
    probe_all(cfg, list(runs.values()), tasks, errors)
    analysis = None
    if runs and tasks:
        acfg = analysis_config(cfg, list(runs.values()), tasks)
        try:
            analysis = analyze.analyze(acfg, reuse=True)
        except UserError as e:  # a probe that failed above fails here again: report, go on
            errors["analysis"] = str(e)
    path = Path(cfg.out) / "report.md"
    text = report(cfg, budget, runs, skipped, errors, analysis)
    atomic_write(path, lambda f: f.write(text), mode="w")
    print(f"paper: {path} ({(time.time() - t0) / 60:.1f} min)")
    if errors:
        raise UserError(f"{len(errors)} stage(s) failed: " + "; ".join(errors)
                        + "; re-run to resume them")
    return 0


if __name__ == "__main__":
    run_cli(main)
