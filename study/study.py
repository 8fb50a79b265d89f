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
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import analyze  # first: it limits the BLAS threads before numpy is imported
from lib import figures
import model
import numpy as np
import probe
from lib import markdown
from lib import glue
from lib.cli import UserError, atomic_write, parse_flags, run_cli

ROOT = Path(__file__).resolve().parents[1]  # the repository
# Trained poolers are fitted on token states (3 encoders x 2 poolers x 4 tasks, in the probes and
# again in the analysis): a weighted pooler on 2,000 STS-B pairs took up to 6 minutes per probe
# on a busy 2-core CPU. 1,000 examples and 50 L-BFGS steps keep them within the 90 minutes.
PROBE_ARGS = "--pooler_cap=1000 --max_iter=50"


@dataclass
class PaperConfig:
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
    pools: tuple[str, ...] = probe.POOLS
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
# The original's published numbers (hybrid, MLM), quoted from the files named in `source`.
README = "../shared/seeds/000_46df8af9111881c7.txt (the original README)"
ABSTRACT = "../shared/seeds/001_7a464a4681f30c4f.txt (the arXiv abstract)"
REPO = "aymen-000/predict-reconstruct-language-models"  # the original repository's files:
MRPC_FILES = (f"{REPO}: outputs/text_jepa/paraphrase/*_210209.*, "
              "outputs/text_jepa_mlm/paraphrase/*_183414.*")
QQP_FILES = (f"{REPO}: outputs/text_jepa/paraphrase/*_234639_qqp.*, "
             "paraphrase_results_mlm_qqp.csv")
ORIGINAL_PROBES = [  # task, metric, hybrid, mlm, source, note
    ("sst2", "acc", 67.55, 68.69, README, ""),
    ("mrpc", "f1", 63.09, 59.84, README, "labelled MRPC in the README table; SPEC 5: MRPC and "
                                         "QQP are swapped there, so these are QQP's"),
    ("mrpc", "f1", 83.46, 82.73, MRPC_FILES, "the MRPC numbers once the swap is undone"),
    ("qqp", "f1", 63.09, 59.84, QQP_FILES, "= the README's 'MRPC' row"),
    ("mnli", "acc_matched", 50.82, 51.36, README, "README: 'Accuracy', split not named"),
    ("stsb", "spearman", 28.1, 28.3, README, "published as 0.281 / 0.283"),
]
ORIGINAL_UNIFORMITY = [("sst2", "attention", -0.448, -0.055), ("cola", "attention", -0.955, -0.083),
                       ("stsb", "attention", -0.577, -0.069)]  # README
ABSTRACT_CLAIM = "uniformity less than -0.16 vs -0.05 for MLM"


# ----------------------------------------------------------------------------- stages

def arm_status(run: Path, budget: float, seed: int = 0) -> str:
    """new | unfinished | done, from the run's checkpoint and resolved config."""
    if not (run / "ckpt.pt").exists():
        return "new"
    conf = json.loads((run / "config.json").read_text())
    for key, want in (("max_flops", budget), ("seed", seed)):
        if conf["config"][key] != want:
            raise UserError(f"{run} was trained with --{key}={conf['config'][key]:g}, not "
                            f"{want:g}; delete it or pass another --out")
    step = model.load_checkpoint(run / "ckpt.pt")["step"]
    return "done" if step >= conf["planned_steps"] else "unfinished"


def parse_arm(arm: str) -> tuple[str, str]:
    """'<mode>[:<lambda_mode>]' -> (mode, lambda_mode or '' for train.py's default): a lambda
    variant is an arm of its own, e.g. hybrid:uncertainty, hybrid:fixed:0.5, hybrid:balanced."""
    mode, _, lambda_mode = arm.partition(":")
    if mode not in model.MODES:
        raise UserError(f"--arms={arm}: expected <mode>[:<lambda_mode>] with a mode in "
                        f"{', '.join(model.MODES)}, e.g. hybrid:uncertainty")
    if lambda_mode and mode != "hybrid":
        raise UserError(f"--arms={arm}: only a hybrid arm mixes two losses; a lambda_mode "
                        "goes with hybrid (hybrid:<lambda_mode>)")
    if lambda_mode:
        try:
            model.parse_lambda_mode(lambda_mode)
        except ValueError as e:
            raise UserError(f"--arms={arm}: {e}") from None
    return mode, lambda_mode


def arm_folder(arm: str, preset: str, seed: int = 0) -> str:
    """The run folder name of an arm's seed, also its model name in the analysis: hybrid:fixed:0.5
    at tiny -> hybrid-fixed-0.5-tiny (no colons: they are not portable in paths); seed k > 0 adds
    -s<k>, so that a 1-seed study is the first seed of a 3-seed one."""
    return f"{arm.replace(':', '-')}-{preset}" + (f"-s{seed}" if seed else "")


def random_name(preset: str, seed: int = 0) -> str:
    """The random-weight encoder with train.py --seed=<seed>'s init: its probe.py --ckpt and
    folder."""
    return ("random" if not seed else f"random:{seed}"), f"random-{preset}" + (
        f"-s{seed}" if seed else "")


def train_arms(cfg: PaperConfig, budget: float, errors: dict) -> dict[str, Path]:
    """Each arm x seed in a train.py process (resumed if a checkpoint exists) -> {folder name:
    finished run}; seed 0 keeps the learning-curve checkpoints."""
    finished = {}
    for arm in cfg.arms:
        mode, lambda_mode = parse_arm(arm)
        for seed in range(cfg.seeds):
            run = Path(cfg.out) / arm_folder(arm, cfg.preset, seed)
            status = arm_status(run, budget, seed)
            if status != "done":  # the arm's lambda_mode last: it wins over one in train_args
                cmd = [sys.executable, str(ROOT / "train.py"), f"--mode={mode}",
                       f"--preset={cfg.preset}", f"--max_flops={budget:g}", f"--out={run}",
                       f"--seed={seed}", *([f"--corpus={cfg.corpus}"] if cfg.corpus else []),
                       *([f"--keep_at={','.join(map(str, cfg.curve))}"] if cfg.curve and not seed
                         else []),
                       *shlex.split(cfg.train_args),
                       *([f"--lambda_mode={lambda_mode}"] if lambda_mode else []),
                       *(["--resume"] if status == "unfinished" else [])]
                shown = shlex.join(cmd).replace(f"{ROOT}/", "")  # no machine paths in logs
                print(f"paper: training {arm} seed {seed} ({status}): {shown}",
                      file=sys.stderr, flush=True)
                code = subprocess.run(cmd).returncode
                if code != 0:
                    errors[f"train {run.name}"] = f"train.py exited with status {code}; see " \
                                                  "above, then re-run to resume it"
                    continue
            finished[run.name] = run
    return finished


def arm_of(cfg: PaperConfig, name: str) -> str:
    """The arm a run folder name belongs to."""
    return next(a for a in cfg.arms for s in range(cfg.seeds)
                if arm_folder(a, cfg.preset, s) == name)


CURVE_TASKS = ("sst2", "stsb")


def probe_jobs(cfg: PaperConfig, runs: list[Path]) -> list[tuple]:
    """(ckpt, result folder, JSON name stems, tasks or None for all) of every arm, baseline and
    learning-curve checkpoint."""
    jobs = [(str(run / "ckpt.pt"), run / "probe", cfg.pools, None) for run in runs]
    if "random" in cfg.baselines:
        jobs += [(ckpt, Path(f"out/{folder}/probe"), cfg.pools, None) for ckpt, folder in
                 (random_name(cfg.preset, s) for s in range(cfg.seeds))]
    jobs += [(b, Path("out/baselines/probe"), (b,), None) for b in cfg.baselines
             if b in probe.BASELINES]
    jobs += [(str(path), path.parent / f"curve-{f:g}", ("mean",), CURVE_TASKS)
             for f, path in curve_points(cfg, runs)]
    return jobs


def curve_points(cfg: PaperConfig, runs: list[Path]) -> list[tuple]:
    """(fraction, checkpoint) kept by seed 0 of each arm (train.py --keep_at)."""
    return [(f, run / f"ckpt-f{f:g}.pt") for run in runs for f in cfg.curve
            if (run / f"ckpt-f{f:g}.pt").exists()]


def probe_all(cfg: PaperConfig, runs: list[Path], tasks: list, errors: dict):
    """Run every probe the paper uses whose result is missing or was made with other settings
    (the shared random and baseline folders included)."""
    like = str(runs[0] / "ckpt.pt") if runs else ""  # the random encoders' architecture
    for ckpt, folder, stems, only in probe_jobs(cfg, runs):
        for task in [t for t in tasks if only is None or t in only]:
            pcfg = probe.ProbeConfig(task=(task,), ckpt=ckpt, pool=tuple(stems) if ckpt not in
                                 probe.BASELINES else ("mean",), preset=cfg.preset, out=str(folder),
                                 random_like=like if ckpt.startswith("random") else "")
            try:
                probe.run_probe(parse_flags(shlex.split(cfg.probe_args), pcfg)[0], reuse=True)
            except UserError as e:
                errors[f"probe {ckpt} {task}"] = str(e)


def analysis_config(cfg: PaperConfig, runs: list[Path], tasks: list) -> analyze.AnalyzeConfig:
    return analyze.AnalyzeConfig(runs=tuple(str(r) for r in runs), tasks=tuple(tasks), pools=cfg.pools,
                           random="random" in cfg.baselines, random_seeds=cfg.seeds,
                           preset=cfg.preset, n=cfg.n,
                           probe_args=cfg.probe_args, bootstrap=cfg.bootstrap,
                           permutations=cfg.permutations,
                           compare=cfg.compare or default_compare(
                               cfg, dict.fromkeys(arm_of(cfg, r.name) for r in runs) if runs
                               else cfg.arms),
                           correction=cfg.correction, out=str(Path(cfg.out) / "analysis"))


# ----------------------------------------------------------------------------- the report

def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def wall_time(log: list[dict]) -> float:
    """Seconds of training: `elapsed` restarts at 0 in each resumed process; sum the segments."""
    total, last = 0.0, 0.0
    for rec in log:
        if rec["elapsed"] < last:
            total += last
        last = rec["elapsed"]
    return total + last


def pair_columns(analysis: dict | None) -> list[str]:
    """Column names of every comparison of the analysis: difference [CI], raw and adjusted p."""
    return [c for p in (analysis or {}).get("pairs", [])
            for c in (f"{p['label']}: a - b [95% CI]", "p", "p adj")]


def pair_cells(analysis: dict, task: str, pool: str, metric: str) -> list[str]:
    out = []
    for p in analysis["pairs"]:
        c = next((c for c in analysis["comparisons"] if (c["pair"], c["task"], c["pool"],
                  c["metric"]) == (p["label"], task, pool, metric)), {})
        out += [markdown.with_ci(dict(value=c.get("diff"), ci=c.get("ci"))), markdown.fmt_p(c.get("p")),
                markdown.fmt_p(c.get("p_adj"))]
    return out


def cell(analysis: dict, task: str, pool: str, models: list, metric: str) -> str:
    """One model's value [95% CI]; several (an arm's seeds): mean ± sd over them (n)."""
    got = [c["metrics"].get(metric) for c in analysis["cells"]
           if (c["task"], c["pool"]) == (task, pool) and c["model"] in models]
    values = [m["value"] for m in got if m and m.get("value") is not None]
    if len(models) == 1:
        return markdown.with_ci(got[0]) if got else "-"
    if not values:
        return "-"
    return f"{markdown.fmt(np.mean(values))} ± {markdown.fmt(np.std(values, ddof=1))} ({len(values)})"


def versus_random(analysis: dict | None, groups: dict) -> list[str]:
    """Does each arm beat the random-weight encoders? SST-2 and STS-B with mean pooling: every
    seed's score, whether the arm's seeds all lie above the random inits' (beyond the spread),
    and the analysis' test of arm vs random with its correction."""
    if not analysis or "random" not in groups:
        return []
    lines = ["", "## Against random weights", "",
             "Mean pooling, percent (probe.py's score on the full dev split; one value per "
             "pre-training seed or random init). 'beyond the spread': every seed of the arm "
             "above every random init. Test: analysis/analysis.json's comparison of the arm's "
             "method with random (Welch over seeds when both sides have >= 2 runs; its null "
             "and correction under 'Every metric, compared').", "",
             *markdown.table_head(["task", "arm", "seeds", "random inits", "beyond the spread",
                            "a - b [95% CI]", "test", "p", "p adj"])]
    for task in [t for t in CURVE_TASKS if t in analysis["tasks"]]:
        def scores(models):
            return [c["metrics"]["semantic_probe"]["value"] for c in analysis["cells"]
                    if (c["task"], c["pool"]) == (task, "mean") and c["model"] in models]
        rand = scores(groups["random"])
        for arm, models in groups.items():
            if arm == "random":
                continue
            own = scores(models)
            label = next((p["label"] for p in analysis["pairs"]  # analyze.py names the pairs
                          if (p["a"], p["b"]) == (models, groups["random"])), None)
            c = next((c for c in analysis["comparisons"] if (c["task"], c["pool"], c["metric"],
                      c["pair"]) == (task, "mean", "semantic_probe", label)), {})
            lines.append(f"| {task} | {arm} | {', '.join(map(markdown.fmt, own))} | "
                         f"{', '.join(map(markdown.fmt, rand))} | "
                         f"{'yes' if own and rand and min(own) > max(rand) else 'no'} | "
                         f"{markdown.with_ci(dict(value=c.get('diff'), ci=c.get('ci')))} | "
                         f"{c.get('test') or '-'} | {markdown.fmt_p(c.get('p'))} | "
                         f"{markdown.fmt_p(c.get('p_adj'))} |")
    return lines


def learning_curve(cfg: PaperConfig, runs: dict, analysis: dict | None) -> tuple[list, dict]:
    """Seed 0 of each arm at its kept fractions and at the end: tokens, and the mean-pooling
    probe score of each CURVE_TASK -> (table lines, {arm: [(fraction, {task: score})]})."""
    points = {}
    for name, run in runs.items():
        if name != arm_folder(arm_of(cfg, name), cfg.preset):
            continue  # seed 0 only
        conf, log = json.loads((run / "config.json").read_text()), read_log(run)
        for f in (*cfg.curve, 1.0):
            folder = run / "probe" if f == 1.0 else run / f"curve-{f:g}"
            scores = {t: json.loads(p.read_text())["metrics"][analyze.PRIMARY[t]]
                      for t in CURVE_TASKS if (p := folder / f"{t}-mean.json").exists()}
            if scores:
                step = max(1, round(f * conf["planned_steps"]))
                rec = min(log, key=lambda r: abs(r["step"] - step))
                points.setdefault(name, []).append((f, rec["tokens"], scores, folder))
    if not points:
        return [], {}
    lines = ["", "## Learning curve", "",
             f"Seed 0 of each arm, probed at the checkpoints train.py --keep_at kept at "
             f"{', '.join(f'{f:g}' for f in cfg.curve)} of its run and at its end: "
             f"{', '.join(CURVE_TASKS)} with mean pooling (percent; <task>-mean.json in the "
             "folder named). Random: the random-weight encoders' mean over their inits.", "",
             *markdown.table_head(["arm", "fraction", "tokens", *CURVE_TASKS, "source"])]
    for name, pts in points.items():
        for f, tokens, scores, folder in pts:
            lines.append(f"| {name} | {f:g} | {tokens:,} | " + " | ".join(
                markdown.fmt(scores.get(t)) for t in CURVE_TASKS) + f" | {folder} |")
    if analysis:
        randoms = [m["name"] for m in analysis["models"] if m["method"] == "random"]
        lines.append("| random | - | 0 | " + " | ".join(
            cell(analysis, t, "mean", randoms, "semantic_probe") for t in CURVE_TASKS
            if t in analysis["tasks"]) + " | analysis/analysis.json |")
    return lines, points


def report(cfg: PaperConfig, budget: float, runs: dict, skipped: dict, errors: dict,
           analysis: dict | None) -> str:
    models = {name: arm_of(cfg, name) for name in runs}
    if "random" in cfg.baselines:
        models.update({random_name(cfg.preset, s)[1]: "random" for s in range(cfg.seeds)})
    groups = {}  # an arm (or random) -> its runs: one column, mean ± sd over its seeds
    for name, arm in models.items():
        groups.setdefault(arm, []).append(name)
    names = list(groups)
    lines = [f"# Predict and Reconstruct at preset {cfg.preset}", "",
             "Generated by study/study.py (`make paper`). Every number of ours is read from the JSON or log file "
             "named next to it; the original's numbers are quoted with their source file.", "",
             f"Budget {budget:.3g} FLOPs per arm (train.py --max_flops); corpus "
             f"{cfg.corpus or 'the preset default'}; train.py flags "
             f"{cfg.train_args or '(none)'}; probe.py flags {cfg.probe_args or '(none)'}; "
             f"analysis: {cfg.n} dev examples per task, {cfg.bootstrap} bootstrap resamples, "
             f"{cfg.permutations:,} sign flips per permutation test, {cfg.correction} "
             "correction.", ""]
    lines += [f"- skipped {t}: {why}" for t, why in skipped.items()]
    lines += [f"- **failed** {k}: {why}" for k, why in errors.items()]
    lines += ["", "## Pre-training at equal compute", "",
              *markdown.table_head(["arm", "steps (planned)", "FLOPs", "tokens", "wall time",
                             "lambda_mode", "lambda along training", "final loss", "source"])]
    for name, run in runs.items():
        arm = arm_of(cfg, name)
        log, conf = read_log(run), json.loads((run / "config.json").read_text())
        last = log[-1]
        hybrid = parse_arm(arm)[0] == "hybrid"  # the others log a constant lambda
        lam = markdown.lam_path(log) if hybrid else "-"
        if hybrid and "lam_rel" in last:
            lam += f" (lam_rel {markdown.lam_path(log, 'lam_rel')})"
        lines.append(f"| {run.name} | {last['step']:,} ({conf['planned_steps']:,}) | "
                     f"{last['flops']:.3e} | {last['tokens']:,} | {wall_time(log) / 60:.1f} min | "
                     f"{conf['config']['lambda_mode'] if hybrid else '-'} | {lam} | "
                     f"{last['loss']:.4f} | {run / 'log.jsonl'}, {run / 'config.json'} |")
    lines += markdown.trajectory({name: read_log(run) for name, run in runs.items()})
    curve, points = learning_curve(cfg, runs, analysis)
    figs = figures.paper_figures({n: read_log(r) for n, r in runs.items()}, points, analysis, groups,
                           Path(cfg.out))
    lines += ["", "Figures (matplotlib; `make paper` installs it from requirements-paper.txt):"
              if figs is not None else "No figures: matplotlib is not installed "
              "(pip install -r requirements-paper.txt)."]
    lines += [f"\n![{what}]({file})" for file, what in (figs or {}).items()]
    lines += curve
    folders = ", ".join(m["probe_dir"] for m in analysis["models"]) if analysis else "-"
    lines += versus_random(analysis, groups)
    lines += ["", "## Linear probes next to the original", "",
              "Percent; ours: mean [95% bootstrap CI] on the full dev split (an arm with several "
              "seeds: mean ± sd over its seeds (n)), read from probe.py's "
              f"<task>-<pool>.json in {folders} and <task>-majority.json, <task>-bow.json in "
              "out/baselines/probe. The original does not say which pooling its table used. "
              "Trained poolers (weighted, attention) are fitted on a seeded subset of train when "
              "--pooler_cap in the probe.py flags above says so (n_train in each JSON), so compare "
              "arms within a pooling, not poolings with each other. a - b: the paired test of the "
              "probe difference on the same dev examples (analysis/analysis.json, metric "
              "semantic_probe; tests below).", "",
              *markdown.table_head(["task", "metric", "source", "pool", *names, "majority", "bow",
                             *pair_columns(analysis)])]
    for task in cfg.tasks:  # the original's rows even for tasks we could not run
        for t, metric, hyb, mlm, source, note in ORIGINAL_PROBES:
            if t == task:
                published = [{"hybrid": str(hyb), "mlm": str(mlm)}.get(n, "") for n in names]
                lines.append(f"| {task} | {metric} | original: {source}"
                             f"{'; ' + note if note else ''} | - | " + " | ".join(published)
                             + " | |" + " |" * (len(pair_columns(analysis)) + 1))
        if analysis and task in analysis["tasks"]:
            base = analysis["baselines"][task]
            for pool in cfg.pools:
                ours = [cell(analysis, task, pool, groups[n], "semantic_probe") for n in names]
                ours += [markdown.with_ci(base["majority"]), markdown.with_ci(base["bow"])]
                ours += pair_cells(analysis, task, pool, "semantic_probe")
                lines.append(f"| {task} | {analyze.PRIMARY[task]} | ours | {pool} | " + " | ".join(ours)
                             + " |")
    lines += ["", "## Uniformity next to the original", "",
              f"The abstract, {ABSTRACT}: \"{ABSTRACT_CLAIM}\". The README, {README}, per cell "
              "below (lower is more uniform). "
              "Ours: analysis/analysis.json (definitions in analysis/report.md).", ""]
    if analysis and analysis["pairs"]:
        orig = {(t, p): (h, m) for t, p, h, m in ORIGINAL_UNIFORMITY}
        lines += markdown.table_head(["task", "pool", "original hybrid", "original MLM", *names,
                               *pair_columns(analysis)])
        for t, p in dict.fromkeys((c["task"], c["pool"]) for c in analysis["cells"]):
            h, m = orig.get((t, p), ("-", "-"))
            lines.append(f"| {t} | {p} | {h} | {m} | " + " | ".join(
                [cell(analysis, t, p, groups[n], "uniformity") for n in names]
                + pair_cells(analysis, t, p, "uniformity")) + " |")
        lines += ["", "## Every metric, compared", "",
                  "From analysis/analysis.json (`consistency`). Tests (p: raw; p adj: corrected):",
                  "", *markdown.tests_text(analysis)]
        for pair in analysis["pairs"]:
            lines += ["", f"{pair['label']} (a = {' + '.join(pair['a'])}, b = "
                      f"{' + '.join(pair['b'])}):", "",
                      *markdown.consistency_table(analysis["consistency"][pair["label"]], "a", "b")]
    else:
        lines.append("No analysis with two sides to compare (a hybrid and an MLM arm, or "
                     "--compare): nothing to compare.")
    lines += ["", f"Full tables and figures: {Path(cfg.out) / 'analysis' / 'report.md'}."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main

def check_compare(cfg: PaperConfig):
    """The analysis' flags (--compare against the arms' names, --correction, the probe flags),
    checked before hours of training."""
    acfg = analysis_config(cfg, [], list(cfg.tasks))
    analyze.check(acfg)
    models = [dict(name=arm_folder(a, cfg.preset, s), method=arm_method(a)) for a in cfg.arms
              for s in range(cfg.seeds)]
    models += [dict(name=random_name(cfg.preset, s)[1], method="random")
               for s in range(cfg.seeds) if "random" in cfg.baselines]
    analyze.resolve_pairs(acfg, models)


def arm_method(arm: str) -> str:
    """analyze.py's method name of an arm (what its seeds are runs of)."""
    mode, lambda_mode = parse_arm(arm)
    return analyze.method(dict(mode=mode, lambda_mode=lambda_mode or "learned"))


def default_compare(cfg: PaperConfig, arms) -> tuple[str, ...]:
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
            skipped[task] = analyze.portable(str(e))
    return ok, skipped


def main(argv):
    cfg, _ = parse_flags(argv, PaperConfig())
    budget = cfg.budget or BUDGETS.get(cfg.preset, 0.0)
    if budget <= 0:
        raise UserError(f"--preset={cfg.preset} has no default budget; pass --budget=FLOPs per arm")
    if not cfg.arms:
        raise UserError(f"--arms is empty: expected some of {', '.join(model.MODES)}")
    for arm in cfg.arms:
        parse_arm(arm)
    if len({arm_folder(a, cfg.preset) for a in cfg.arms}) < len(cfg.arms):
        raise UserError(f"--arms={','.join(cfg.arms)}: an arm is named twice")
    bad = [b for b in cfg.baselines if b not in ("random", *probe.BASELINES)]
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
