"""The compute curve's merge: the complete job folders of `make curve` (study/jobs.py) ->
curve.json and report.md, read from their small files alone (job.json, each point's
geometry.json and probe JSONs), so that a clone re-makes both from committed folders, byte for
byte (no clock, no machine path, every draw seeded).

Per arm and fraction of the run: each metric's mean and sd over the seeds; the random inits' level;
at each point, arm vs arm and arm vs random with the seed as the unit (Welch; Holm over the tests of
that comparison, its family); the smallest difference each test finds with 80% power at Holm's
strictest level (stats.welch_detectable); and the first point where each arm's probe score is
above the random level.
"""
import json
from collections import Counter
from pathlib import Path

import numpy as np

import analyze  # first: it limits the BLAS threads before numpy is imported
from lib import figures, glue, markdown, stats
from lib.cli import atomic_write
from lib.compare import num, num_p

GEOMETRY = ("uniformity", "effective_rank", "rankme")  # per point, on a seeded dev subset
METRICS = ("probe", *GEOMETRY)
ALPHA, POWER = 0.05, 0.8
RANDOM = "random"


# ----------------------------------------------------------------------------- the job folders

def point_values(folder: Path, point: dict) -> dict:
    """{task: {metric: value}} of one point, from the probe JSONs and geometry.json it names."""
    points = folder / "points"
    geo = json.loads((points / point["geometry"]).read_text())["tasks"]
    return {t: dict(probe=json.loads((points / p["file"]).read_text())["metrics"][p["metric"]],
                    **{m: geo[t][m] for m in GEOMETRY}) for t, p in point["probe"].items()}


def load_jobs(out: Path) -> tuple[list[dict], dict]:
    """(the complete jobs of one curve, {folder: why it is left out}). The curve's settings are
    those most jobs share (ties: the first folder's); a job made with others, or on another
    vocabulary, is left out with the difference named."""
    jobs, left = [], {}
    for folder in sorted(p for p in out.iterdir() if p.is_dir()):
        if not (folder / "job.json").exists():
            if (folder / "run").exists() or (folder / "points").exists():
                left[folder.name] = "no job.json yet: running, or interrupted (run its job again)"
            continue
        job = json.loads((folder / "job.json").read_text())
        for point in job["points"]:
            point["values"] = point_values(folder, point)
        jobs.append(dict(job, folder=folder.name))
    key = lambda j: json.dumps([j["settings"], j["tokenizer_sha256"]], sort_keys=True)  # noqa: E731
    if jobs:
        common = Counter(map(key, jobs)).most_common(1)[0][0]
        for j in [j for j in jobs if key(j) != common]:
            ref = next(r for r in jobs if key(r) == common)
            diff = [f"{k} {j['settings'].get(k)!r} (the curve's: {v!r})"
                    for k, v in ref["settings"].items() if j["settings"].get(k) != v]
            if j["tokenizer_sha256"] != ref["tokenizer_sha256"]:
                diff.append(f"vocabulary sha256 {j['tokenizer_sha256'][:12]} (the curve's: "
                            f"{ref['tokenizer_sha256'][:12]})")
            left[j["folder"]] = "made with other settings: " + "; ".join(diff)
        jobs = [j for j in jobs if key(j) == common]
    return jobs, left


# ----------------------------------------------------------------------------- the numbers

def summary(values: list) -> dict:
    v = np.asarray(values, float)
    return dict(values=[num(x) for x in v], n=len(v), mean=num(v.mean()),
                sd=num(v.std(ddof=1)) if len(v) > 1 else None)


def curve_points(jobs: list[dict]) -> list[dict]:
    """One entry per arm x fraction (the random inits: one, at fraction 0): seeds, mean FLOPs and
    tokens, and {task: {metric: summary over the seeds}}."""
    groups = {}
    for j in jobs:
        for p in j["points"]:
            groups.setdefault((j["arm"], p["fraction"]), []).append((j["seed"], p))
    out = []
    for (arm, fraction), seeds in sorted(groups.items(), key=lambda kv: (kv[0][0] != RANDOM,
                                                                         kv[0])):
        seeds.sort(key=lambda sp: sp[0])
        tasks = list(seeds[0][1]["values"])
        out.append(dict(arm=arm, fraction=fraction, seeds=[s for s, _ in seeds],
                        flops=num(np.mean([p["flops"] for _, p in seeds])),
                        tokens=num(np.mean([p["tokens"] for _, p in seeds])),
                        metrics={t: {m: summary([p["values"][t][m] for _, p in seeds])
                                     for m in METRICS} for t in tasks}))
    return out


def families(points: list[dict], jobs: list[dict]) -> list[tuple[str, str]]:
    """The comparisons (a, b): every hybrid method vs MLM, then every arm vs the random inits."""
    method = {j["arm"]: j["method"] for j in jobs}
    arms = list(dict.fromkeys(p["arm"] for p in points if p["arm"] != RANDOM))
    mlm = [a for a in arms if method[a] == "mlm"]
    pairs = [(a, mlm[0]) for a in arms if method[a].startswith("hybrid") and mlm]
    return pairs + [(a, RANDOM) for a in arms if any(p["arm"] == RANDOM for p in points)]


def tests(points: list[dict], jobs: list[dict]) -> list[dict]:
    """Welch's test (seeds as the unit) of a - b per task x metric x fraction of a, with Holm's
    correction over the tests of one comparison (its family), and each test's detectable
    difference at 80% power and Holm's strictest level, alpha / (tests in the family)."""
    at = {(p["arm"], p["fraction"]): p for p in points}
    rows = []
    for a, b in families(points, jobs):
        family = []
        for p in (p for p in points if p["arm"] == a):
            other = at.get((b, 0.0 if b == RANDOM else p["fraction"]))
            for task in (p["metrics"] if other else []):
                for m in METRICS:
                    sa, sb = p["metrics"][task][m], other["metrics"][task][m]
                    pval, ci = stats.welch(sa["values"], sb["values"])
                    family.append(dict(a=a, b=b, task=task, metric=m, fraction=p["fraction"],
                                       n_a=sa["n"], n_b=sb["n"], diff=num(sa["mean"] - sb["mean"]),
                                       ci=[num(c) for c in ci] if ci else None,
                                       p=pval, sd_a=sa["sd"],
                                       sd_b=sb["sd"]))
        adjusted = stats.holm([t["p"] for t in family])
        strictest = ALPHA / max(1, sum(t["p"] is not None for t in family))
        for t, adj in zip(family, adjusted):
            mdd = (stats.welch_detectable(t["sd_a"], t["sd_b"], t["n_a"], t["n_b"], strictest,
                                          POWER) if t["sd_a"] is not None and t["sd_b"] is not None
                   else None)
            rows.append(dict(t, p=num_p(t["p"]), p_adj=num_p(adj), alpha_strictest=num_p(strictest),
                             detectable=num(mdd) if mdd is not None else None))
    return rows


def crossings(points: list[dict], rows: list[dict]) -> list[dict]:
    """Per arm and task, the first fraction at which its probe score is above the random inits':
    in the mean, beyond the spread (every seed above every init), and significantly (Holm-adjusted
    Welch p < ALPHA, a - random > 0); None: not within the run."""
    rand = next((p for p in points if p["arm"] == RANDOM), None)
    if rand is None:
        return []
    out = []
    for arm in dict.fromkeys(p["arm"] for p in points if p["arm"] != RANDOM):
        for task in rand["metrics"]:
            r = rand["metrics"][task]["probe"]
            first = dict(mean=None, spread=None, significant=None)
            for p in sorted((p for p in points if p["arm"] == arm), key=lambda p: p["fraction"]):
                s = p["metrics"][task]["probe"]
                test = next((t for t in rows if (t["a"], t["b"], t["task"], t["metric"],
                             t["fraction"]) == (arm, RANDOM, task, "probe", p["fraction"])), {})
                for key, above in (("mean", s["mean"] > r["mean"]),
                                   ("spread", min(s["values"]) > max(r["values"])),
                                   ("significant", test.get("p_adj") is not None
                                    and test["p_adj"] < ALPHA and test["diff"] > 0)):
                    if above and first[key] is None:
                        first[key] = p["fraction"]
            out.append(dict(arm=arm, task=task, random_mean=r["mean"], **first))
    return out


def merge(out: Path) -> dict:
    """curve.json and report.md (and curve.png with matplotlib) in `out`, from its job folders."""
    jobs, left = load_jobs(out)
    points = curve_points(jobs)
    rows = tests(points, jobs)
    result = dict(
        settings=jobs[0]["settings"] if jobs else {}, alpha=ALPHA, power=POWER,
        definitions={m: analyze.DEFINITIONS[m] for m in GEOMETRY}, test=stats.NULLS["welch"],
        jobs=[{k: j.get(k) for k in ("folder", "name", "arm", "method", "seed", "tokenizer_sha256",
                                     "code", "train_minutes", "measure_minutes")}
              | dict(steps=j["points"][-1]["step"], flops=j["points"][-1]["flops"])
              for j in jobs],
        left_out=left, points=points, tests=rows, crossings=crossings(points, rows))
    atomic_write(out / "curve.json", lambda f: f.write(json.dumps(result, indent=1)), mode="w")
    figs = figures.curve_figure(points, METRICS, out)
    text = report(result, figs)
    atomic_write(out / "report.md", lambda f: f.write(text), mode="w")
    print(f"curve: {len(jobs)} complete job(s) merged -> {out / 'report.md'}"
          + (f"; left out: {', '.join(left)}" if left else ""), flush=True)
    return result


# ----------------------------------------------------------------------------- the report

def spread(s: dict) -> str:
    return (f"{markdown.fmt(s['mean'])} ± {markdown.fmt(s['sd'])} ({s['n']})" if s["n"] > 1
            else f"{markdown.fmt(s['mean'])} (1)")


def fraction(f) -> str:
    return "-" if f is None else f"{f:g}"


def report(r: dict, figs: dict | None) -> str:
    s = r["settings"]
    lines = ["# The compute curve", "",
             "Generated by study/curve.py from the job folders beside it (`python -m study.jobs "
             "--jobs=none --out=<this folder>` re-makes it and curve.json from them alone). Every "
             "number is read from curve.json, which is read from each job's job.json, "
             "points/f<fraction>/geometry.json and points/f<fraction>/<task>-mean.json.", ""]
    if s:
        lines += [f"Preset {s['preset']}, {s['budget']:.3g} training FLOPs per run, corpus "
                  f"{s['corpus'] or 'the preset default'}, train.py flags "
                  f"{s['train_args'] or '(none)'}; checkpoints at "
                  f"{', '.join(f'{f:g}' for f in s['fractions'])} of each run and its end; probes "
                  f"{', '.join(s['tasks'])} with mean pooling (probe.py flags "
                  f"{s['probe_args'] or '(none)'}; score in percent on the full dev split); "
                  f"geometry on {s['n']} seeded dev examples.", ""]
    lines += [f"- left out {k}: {why}" for k, why in r["left_out"].items()]
    lines += ["", "## Jobs", "", *markdown.table_head(
        ["job", "seed", "steps", "FLOPs", "training wall (its log)",
         "job wall (its last sitting: training, probes, geometry)", "code", "vocabulary sha256"])]
    for j in r["jobs"]:
        lines.append(f"| {j['folder']} | {j['seed']} | {j['steps']:,} | {j['flops']:.3e} | "
                     f"{j['train_minutes']:.1f} min | {j['measure_minutes']:.1f} min | "
                     f"{markdown.code_cell(j['code'] or {})} | {j['tokenizer_sha256'][:12]} |")
    codes = {markdown.code_cell(j["code"] or {}) for j in r["jobs"] if j["arm"] != RANDOM}
    if len(codes) > 1:
        lines += ["", f"The runs were trained by {len(codes)} versions of the code "
                  f"({', '.join(sorted(codes))}): see each run's config.json."]
    lines += [f"\n![{what}]({file})" for file, what in (figs or {}).items()]
    lines += ["", "## Along training", "",
              "Mean ± sd over the seeds (n); the random row is the random-weight inits "
              "(train.py --seed=k's init, the arms' architecture and vocabulary).", ""]
    tasks = list(r["points"][0]["metrics"]) if r["points"] else []
    for task in tasks:
        lines += [f"{task} ({glue.TASKS[task].primary}):", "", *markdown.table_head(
            ["arm", "fraction", "FLOPs", "tokens", *METRICS])]
        for p in r["points"]:
            lines.append(f"| {p['arm']} | {p['fraction']:g} | {p['flops']:.3g} | "
                         f"{p['tokens']:,.0f} | " + " | ".join(
                             spread(p["metrics"][task][m]) for m in METRICS) + " |")
        lines.append("")
    for a, b in dict.fromkeys((t["a"], t["b"]) for t in r["tests"]):
        family = [t for t in r["tests"] if (t["a"], t["b"]) == (a, b)]
        lines += [f"## {a} vs {b}", "",
                  f"a - b per point, seeds as the unit: {r['test']}. p adj: Holm over the "
                  f"{sum(t['p'] is not None for t in family)} tests of this comparison. "
                  f"Detectable: the difference Welch's test finds with {r['power']:.0%} power "
                  f"at Holm's strictest level ({family[0]['alpha_strictest']:.2g}), for seeds of "
                  "the sds measured (stats.welch_detectable): a difference smaller than it is "
                  "not ruled out by a non-significant p.", "", *markdown.table_head(
                      ["task", "metric", "fraction", "n", "a - b [95% CI]", "p", "p adj",
                       "detectable"])]
        for t in family:
            lines.append(f"| {t['task']} | {t['metric']} | {t['fraction']:g} | {t['n_a']} vs "
                         f"{t['n_b']} | {markdown.with_ci(dict(value=t['diff'], ci=t['ci']))} | "
                         f"{markdown.fmt_p(t['p'])} | {markdown.fmt_p(t['p_adj'])} | "
                         f"{markdown.fmt(t['detectable'])} |")
        lines.append("")
    if r["crossings"]:
        lines += ["## Above the random-weight level", "",
                  "The first fraction of the run at which the arm's probe score is above the "
                  "random inits': in the mean, beyond the spread (every seed above every init), "
                  f"and significantly (p adj < {r['alpha']} above); - : not within the run.", "",
                  *markdown.table_head(["arm", "task", "random mean", "mean", "beyond the spread",
                                        "significant"])]
        lines += [f"| {c['arm']} | {c['task']} | {markdown.fmt(c['random_mean'])} | "
                  f"{fraction(c['mean'])} | {fraction(c['spread'])} | "
                  f"{fraction(c['significant'])} |" for c in r["crossings"]]
    lines += ["", "## Definitions", "", *[f"- {m}: {d}" for m, d in r["definitions"].items()]]
    return "\n".join(lines) + "\n"
