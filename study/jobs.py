"""`make curve`: the compute curve as independent jobs, and their merge.

    python -m study.jobs --jobs=hybrid:0,mlm:0 [--budget=2e14] [--corpus=enwiki] [--out=out/curve]
    python -m study.jobs --jobs=none     # run none: merge the complete job folders only

A job is one seed of an arm (<arm>:<seed>, e.g. hybrid:1, hybrid:fixed:0.5:2) or one random-weight
init (random:<seed>), and writes a folder of its own, <out>/<arm>-s<seed>:
    run/                 train.py's run: checkpoints kept at --fractions of it, config.json, log
    points/f<fraction>/  per checkpoint (f1: the end; f0: a random init): probe.py's results
                         (<task>-mean.json, the per-example dev predictions in <task>-mean.npz)
                         and geometry.json (uniformity, effective rank, RankMe of the vectors)
    job.json             written last: what the job is, its settings, its points, its wall times
A folder with a job.json is complete; everything the merge (study/curve.py) needs is in the small
files of the complete folders, so a clone re-makes the report from committed folders with no
checkpoint. Jobs share only the corpus and the vocabulary: they run in any order, in several
sittings (an interrupted job resumes its run and redoes no finished probe), or on several
machines, one plain command each (docs/commands.md: an array job). No scheduler of our own.
"""
import dataclasses
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import analyze  # first: it limits the BLAS threads before numpy is imported
import numpy as np
import torch

import config
import data
import features
import model
import probe
from lib import glue, stats
from lib.cli import UserError, atomic_write, parse_flags, run_cli
from lib.runs import code_state, read_log, wall_time
from study import curve
from study.curve import GEOMETRY
from study.arms import CURVE_TASKS, PROBE_ARGS, arm_method, parse_arm, train_argv, train_run

GEOMETRY_SEED = 0  # the subset: analyze.py's (its --seed=0), so the numbers compare with it


@dataclass
class CurveConfig:
    jobs: tuple[str, ...] = ("all",)  # <arm>:<seed> | random:<seed>; all = every arm x seed and
                                      # every random init, seed by seed; none (or empty): merge only
    arms: tuple[str, ...] = ("hybrid", "mlm")   # the arms of --jobs=all
    seeds: int = 3                  # seeds per arm and random inits of --jobs=all
    preset: str = "tiny"
    budget: float = 2e14            # training FLOPs per run (train.py --max_flops)
    corpus: str = ""                # train.py --corpus; empty = the preset's
    fractions: tuple[float, ...] = (0.125, 0.25, 0.5)  # kept checkpoints (and the end)
    tasks: tuple[str, ...] = CURVE_TASKS  # probed with mean pooling at every point
    n: int = 1000                   # dev examples of the geometry subset
    train_args: str = ""            # more train.py flags, space-separated
    probe_args: str = PROBE_ARGS    # probe.py flags, space-separated
    merge: bool = True              # merge the complete folders into curve.json and report.md
    out: str = "out/curve"


def job_names(cfg: CurveConfig) -> list[str]:
    if cfg.jobs in ((), ("none",)):
        return []
    if cfg.jobs != ("all",):
        return list(cfg.jobs)
    return ([f"random:{s}" for s in range(cfg.seeds)]
            + [f"{arm}:{s}" for s in range(cfg.seeds) for arm in cfg.arms])


def parse_job(name: str) -> tuple[str, int]:
    """'<arm>:<seed>' | 'random:<seed>' -> (arm or 'random', seed)."""
    arm, _, seed = name.rpartition(":")
    if not arm or not seed.isdigit():
        raise UserError(f"--jobs={name}: expected <arm>:<seed> or random:<seed>, e.g. hybrid:1, "
                        "hybrid:fixed:0.5:2, random:0")
    if arm != "random":
        parse_arm(arm)
    return arm, int(seed)


def job_folder(cfg: CurveConfig, arm: str, seed: int) -> Path:
    return Path(cfg.out) / f"{arm.replace(':', '-')}-s{seed}"  # no colons: not portable in paths


def settings(cfg: CurveConfig) -> dict:
    """What makes two jobs points of one curve; the merge leaves out a job made otherwise."""
    return dict(preset=cfg.preset, budget=cfg.budget, corpus=cfg.corpus,
                fractions=list(cfg.fractions), tasks=list(cfg.tasks), n=cfg.n,
                train_args=cfg.train_args, probe_args=cfg.probe_args,
                geometry_seed=GEOMETRY_SEED)


# ----------------------------------------------------------------------------- one point

def geometry(pcfg, source, task: str, splits: dict, n: int) -> dict:
    """GEOMETRY of the mean-pooled dev vectors (the first sentence of a pair) on the seeded subset
    of n dev examples analyze.py uses."""
    vectors, _ = probe.pooled(pcfg, source, task, "mean", splits)
    dev = vectors[glue.TASKS[task].dev_splits[0]][0]
    x = dev[np.sort(np.random.default_rng(GEOMETRY_SEED).permutation(len(dev))[:n])]
    spectral = stats.spectral(x)
    return dict(n=len(x), uniformity=float(stats.uniformity(x)[0]),
                effective_rank=float(spectral["effective_rank"][0]),
                rankme=float(spectral["rankme"][0]))


def measure_point(cfg: CurveConfig, ckpt: str, folder: Path, splits: dict,
                  random_like: str = "") -> dict:
    """Probe and measure one checkpoint (or random init) into `folder` -> {task: probe file and
    score}; geometry.json beside them. A probe or a geometry made with the same settings (the
    weights' hash included) is reused."""
    pcfg = parse_flags(shlex.split(cfg.probe_args), probe.ProbeConfig(
        task=tuple(cfg.tasks), ckpt=ckpt, pool=("mean",), preset=cfg.preset, out=str(folder),
        random_like=random_like))[0]
    source = features.open_source(pcfg)
    results, missing = probe.run_probe(pcfg, reuse=True, source=source, loaded=splits)
    if missing:
        raise UserError("; ".join(missing.values()))
    want = dict(ckpt_key=source.key, n=cfg.n, seed=GEOMETRY_SEED, probe_args=cfg.probe_args)
    path = folder / "geometry.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    if saved.get("settings") != want:
        saved = dict(settings=want, definitions={m: analyze.DEFINITIONS[m] for m in GEOMETRY},
                     tasks={t: geometry(pcfg, source, t, splits[t], cfg.n) for t in cfg.tasks})
        atomic_write(path, lambda f: f.write(json.dumps(saved, indent=1)), mode="w")
    return {t: dict(file=f"{folder.name}/{Path(r['file']).name}",
                    metric=glue.TASKS[t].primary, value=r["metrics"][glue.TASKS[t].primary])
            for t, r in zip(cfg.tasks, results)}


# ----------------------------------------------------------------------------- one job

def random_like(cfg: CurveConfig, run: Path) -> tuple[str, dict]:
    """A file with the architecture and vocabulary the arms train (from the same train.py flags,
    no weights): the random inits' --random_like -> (its path, what job.json records of it)."""
    argv = train_argv("mlm", 0, cfg.preset, cfg.budget, run, cfg.corpus, (), cfg.train_args)
    tcfg = config.resolve_config(argv, torch.cuda.is_available())[0]
    tok = data.load_tokenizer(tcfg.tokenizer, tcfg.corpus)
    path = run / "like.pt"
    like = dict(format=model.CKPT_FORMAT, tokenizer=tok.to_str(),
                model_config=dataclasses.asdict(config.model_config(tcfg, tok.get_vocab_size())))
    atomic_write(path, lambda f: torch.save(like, f))
    return str(path), dict(tokenizer_sha256=data.tokenizer_sha256(tok),
                           model_config=like["model_config"])


def run_job(cfg: CurveConfig, name: str, splits: dict) -> str:
    """One job, resumed where it stopped -> "" when complete, else why not."""
    arm, seed = parse_job(name)
    folder = job_folder(cfg, arm, seed)
    run, t0 = folder / "run", time.time()
    if arm == "random":
        like, extra = random_like(cfg, run)
        init = features.random_encoder(cfg.preset, seed)[0]  # train.py --seed=<seed>'s init
        points = [dict(fraction=0.0, step=0, flops=0, tokens=0, geometry="f0/geometry.json",
                       probe=measure_point(cfg, init, folder / "points/f0", splits, like))]
        extra.update(code=code_state(), train_minutes=0.0)
    else:
        argv = train_argv(arm, seed, cfg.preset, cfg.budget, run, cfg.corpus, cfg.fractions,
                          cfg.train_args)
        why = train_run(argv, f"curve: training {name}")
        if why:
            return why
        conf, points = json.loads((run / "config.json").read_text()), []
        for f in (*cfg.fractions, 1.0):
            ckpt = run / ("ckpt.pt" if f == 1.0 else f"ckpt-f{f:g}.pt")
            saved = model.load_checkpoint(ckpt)
            points.append(dict(fraction=f, step=saved["step"], flops=saved["flops"],
                               tokens=saved["tokens"],
                               probe=measure_point(cfg, str(ckpt), folder / f"points/f{f:g}",
                                                   splits),
                               geometry=f"f{f:g}/geometry.json"))
        extra = dict(tokenizer_sha256=conf["tokenizer_sha256"], model_config=conf["model_config"],
                     code={k: conf.get(k) for k in ("git", "git_dirty", "git_diff_sha256")},
                     train_minutes=round(wall_time(read_log(run)) / 60, 2))
    job = dict(name=name, arm=arm, seed=seed,
               method="random" if arm == "random" else arm_method(arm),
               settings=settings(cfg), points=points, **extra,
               measure_minutes=round((time.time() - t0) / 60, 2))  # the job, this sitting
    atomic_write(folder / "job.json", lambda f: f.write(json.dumps(job, indent=1)), mode="w")
    print(f"curve: {name} complete -> {folder / 'job.json'}", flush=True)
    return ""


def main(argv):
    cfg, _ = parse_flags(argv, CurveConfig())
    names = job_names(cfg)
    for name in names:
        parse_job(name)
    if not all(0 < f < 1 for f in cfg.fractions) or cfg.budget <= 0 or cfg.seeds < 1:
        raise UserError(f"--fractions={','.join(map(str, cfg.fractions))} --budget={cfg.budget:g} "
                        f"--seeds={cfg.seeds}: expected fractions strictly between 0 and 1, a "
                        "positive budget and seeds >= 1")
    bad = [t for t in cfg.tasks if t not in glue.TASKS]
    if bad:
        raise UserError(f"--tasks={','.join(bad)}: expected some of {', '.join(glue.TASKS)}")
    splits = {t: probe.load_splits(t) for t in cfg.tasks} if names else {}
    errors = {}
    for name in names:
        if why := run_job(cfg, name, splits):
            errors[name] = why
    if cfg.merge:
        curve.merge(Path(cfg.out))
    if errors:
        raise UserError(f"{len(errors)} job(s) failed: "
                        + "; ".join(f"{k}: {v}" for k, v in errors.items()) + "; re-run to resume")
    return 0


if __name__ == "__main__":
    run_cli(main)
