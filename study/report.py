"""The study's report.md: our numbers next to the original's published ones, every number of ours
with the JSON or log file it comes from. Written from the run folders and analysis.json alone."""
import json
from pathlib import Path

import numpy as np

import features
from lib import figures, glue, markdown
from lib.runs import read_log, wall_time
from study.arms import CURVE_TASKS, arm_folder, arm_of, parse_arm

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

def pair_columns(analysis: dict | None) -> list[str]:
    """Column names of every comparison of the analysis: difference [CI], raw and adjusted p."""
    return [c for p in (analysis or {}).get("pairs", [])
            for c in (f"{p['label']}: a - b [95% CI]", "p", "p adj")]


def pair_cells(analysis: dict, task: str, pool: str, metric: str) -> list[str]:
    out = []
    for p in analysis["pairs"]:
        c = next((c for c in analysis["comparisons"] if (c["pair"], c["task"], c["pool"],
                  c["metric"]) == (p["label"], task, pool, metric)), {})
        out += [markdown.with_ci(dict(value=c.get("diff"), ci=c.get("ci"))),
                markdown.fmt_p(c.get("p")), markdown.fmt_p(c.get("p_adj"))]
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
    return (f"{markdown.fmt(np.mean(values))} ± {markdown.fmt(np.std(values, ddof=1))} "
            f"({len(values)})")


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


def learning_curve(cfg, runs: dict, analysis: dict | None) -> tuple[list, dict]:
    """Seed 0 of each arm at its kept fractions and at the end: tokens, and the mean-pooling
    probe score of each CURVE_TASK -> (table lines, {arm: [(fraction, {task: score})]})."""
    points = {}
    for name, run in runs.items():
        if name != arm_folder(arm_of(cfg, name), cfg.preset):
            continue  # seed 0 only
        conf, log = json.loads((run / "config.json").read_text()), read_log(run)
        for f in (*cfg.curve, 1.0):
            folder = run / "probe" if f == 1.0 else run / f"curve-{f:g}"
            scores = {t: json.loads(p.read_text())["metrics"][glue.TASKS[t].primary]
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


def report(cfg, budget: float, runs: dict, skipped: dict, errors: dict,
           analysis: dict | None) -> str:
    models = {name: arm_of(cfg, name) for name in runs}
    if "random" in cfg.baselines:
        models.update({features.random_encoder(cfg.preset, s)[1]: "random"
                       for s in range(cfg.seeds)})
    groups = {}  # an arm (or random) -> its runs: one column, mean ± sd over its seeds
    for name, arm in models.items():
        groups.setdefault(arm, []).append(name)
    names = list(groups)
    lines = [f"# Predict and Reconstruct at preset {cfg.preset}", "",
             "Generated by study/study.py (`make paper`). Every number of ours is read from the "
             "JSON or log file named next to it; the original's numbers are quoted with their "
             "source file.", "",
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
                                    "lambda_mode", "lambda along training", "final loss", "code",
                                    "source"])]
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
                     f"{last['loss']:.4f} | {markdown.code_cell(conf)} | "
                     f"{run / 'log.jsonl'}, {run / 'config.json'} |")
    lines += markdown.trajectory({name: read_log(run) for name, run in runs.items()})
    curve, points = learning_curve(cfg, runs, analysis)
    figs = figures.paper_figures({n: read_log(r) for n, r in runs.items()}, points, analysis,
                                 groups, Path(cfg.out))
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
                lines.append(f"| {task} | {glue.TASKS[task].primary} | ours | {pool} | "
                             + " | ".join(ours) + " |")
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
