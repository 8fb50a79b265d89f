"""Geometry of frozen sentence vectors (SPEC 4): metrics x poolings x GLUE dev sets x models, with
bootstrap CIs and paired tests of the differences between two sides (groups of runs), corrected
for multiplicity -> analysis.json, report.md and figures.

    python analyze.py --runs=out/hybrid-tiny,out/mlm-tiny --tasks=sst2,stsb --pools=mean,max
    python analyze.py --runs=a/hybrid-s0,a/hybrid-s1,a/mlm-s0,a/mlm-s1 --compare=hybrid/mlm

Models: every run folder given (its mode read from config.json) and, unless --random=false, the
random-weight encoder of the same preset (probe.py's). All are measured on one seeded subset of N
dev examples per task. Vectors are pooled as probe.py pools them (weighted/attention poolers fitted
on train); pair tasks use the first sentence's vector, and both for alignment. The definition of
every metric and statistic is in DEFINITIONS, STATISTICS and TESTS below (the formulas in
stats.py), which analysis.json and report.md repeat. Nothing is fitted on the dev examples it is
scored on. The same inputs give a bit-identical analysis.json: it holds no clock, and every
random draw is seeded. It records the settings it was made with (lib/provenance.py): the study reuses
it only when they match exactly.
"""
import os

# OpenBLAS spins threads even for 256 x 256 eigenproblems; on a busy 2-core machine that made each
# one 30x slower than a single thread. Must be set before numpy is first imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import dataclasses  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

import data  # noqa: E402
import features  # noqa: E402
import probe  # noqa: E402
from lib import compare  # noqa: E402
from lib import figures  # noqa: E402
from lib import glue  # noqa: E402
from lib import markdown  # noqa: E402
from lib import provenance  # noqa: E402
from lib import stats  # noqa: E402
from lib.cli import UserError, atomic_write, parse_flags, run_cli  # noqa: E402
from lib.compare import num, rounded  # noqa: E402
from lib.download import portable  # noqa: E402
from lib.stats import ridge_scores  # noqa: E402


@dataclass
class AnalyzeConfig:
    runs: tuple[str, ...] = ("out/hybrid-tiny", "out/mlm-tiny")  # folders: config.json, ckpt.pt
    tasks: tuple[str, ...] = ("sst2", "mrpc", "mnli", "cola", "stsb")
    pools: tuple[str, ...] = features.POOLS
    random: bool = True         # also measure random-weight encoders of the runs' architecture
    random_seeds: int = 1       # ... this many: the inits of train.py --seed=0, 1, ...
    preset: str = "tiny"        # its preset when no run is given
    encoder: str = "online"     # online | target (the EMA copy)
    n: int = 2000               # dev examples per task: one seeded subset for every model
    probe_args: str = ""        # probe.py flags (e.g. --max_train=10000) of the probes run here
                                # and of the pooled vectors: the probes' own reuse their caches
    lex_k: int = 100            # lexical probe: the K tokens that occur in most train texts
    lex_train: int = 5000       # lexical probe: train examples it is fitted on
    bootstrap: int = 200        # resamples per 95% CI and bootstrap test
    permutations: int = 10_000  # per sign-flip test; its smallest possible p is 1 / (1 + this)
    compare: tuple[str, ...] = ()  # A/B pairs of sides, a side = runs or methods joined by +
                                # (e.g. hybrid/mlm, hybrid-s0+hybrid-s1/mlm); empty: every
                                # hybrid method vs MLM
    correction: str = "holm"    # holm | bh: multiple-comparison correction over each pair's tests
    seed: int = 0
    out: str = "out/analysis"
    figures: bool = True        # PNGs, when matplotlib is installed


DEFINITIONS = {  # x: pooled vectors of the N subset examples, z = x / ||x||, d their dimension
    "semantic_probe": "probe.py's score of the task (primary metric, percent) on the full dev "
                      "split, from its result JSON and saved dev predictions (the probe is run "
                      "when there is none made with these settings)",
    "lexical_auc": "macro mean, over the K tokens (no specials; the first model's tokenizer, so "
                   "every model has the same labels) found in most train texts, of the ROC AUC of "
                   "a ridge probe predicting from x whether the token occurs in the text (first "
                   "sentence); fitted on a seeded train subset, ridge strength chosen on a "
                   "held-out 10% of it; scored on the dev subset; majority baseline 0.5",
    "lexical_f1": "micro-F1 of that probe thresholded at 0.5; majority baseline: predict each "
                  "token iff it occurs in most train texts",
    "probe_gap": "(s - s_maj) / (100 - s_maj) - (AUC - 0.5) / 0.5, s the semantic probe, s_maj "
                 "the majority baseline's score: the share of the headroom above its own "
                 "baseline each probe reaches, semantic minus lexical",
    "spectral_entropy": "-sum_k p_k ln p_k / ln d, p = eigenvalues of the centred covariance of "
                        "x divided by their sum (1 = isotropic)",
    "effective_rank": "exp(-sum_k q_k ln q_k), q = singular values of the centred N x d matrix "
                      "divided by their sum (Roy & Vetterli 2007)",
    "rankme": "the same on the raw, uncentred N x d matrix, as Garrido et al. 2023 apply it",
    "uniformity": "log mean_{i != j} exp(-2 ||z_i - z_j||^2) over pairs of distinct examples "
                  "(Wang & Isola 2020): d orthonormal vectors give exactly -4",
    "uniformity_centred": "uniformity of x - mean(x), the mean over the subset",
    "alignment": "mean ||z(u) - z(v)||^2 over true positive pairs (MRPC/QQP paraphrases, STS-B "
                 "score >= 4, MNLI entailment), squared distance, no further power",
    "anisotropy": "mean_{i != j} cos(x_i, x_j)",
    "class_separation": "mean ||z_i - z_j|| over same-label pairs / the same over different-label "
                        "pairs (single-sentence classification tasks; < 1: classes apart)",
}
METRICS = tuple(DEFINITIONS)
STATISTICS = (
    "95% CI: the estimate +- 1.96 standard deviations of its value over B bootstrap resamples of "
    "the examples (not percentiles: a resample's duplicated examples lower its spectral "
    "metrics, and their percentile interval would miss the estimate). Every model sees the same "
    "resamples, so the CI of a difference is paired; a side with several runs is their mean. "
    "Pair metrics of a resample average over pairs of distinct examples; uniformity_centred keeps "
    "each model's subset mean. The semantic probe is resampled over its full dev split from the "
    "per-example predictions probe.py saves (the mean over its probe seeds). probe_gap combines "
    "resamples of two example sets (full dev split, subset): a CI, and only the test over runs.")
TESTS = {  # which test gives a comparison's p, and its null hypothesis (stats.py)
    "sign_flip": "alignment and accuracy probes (means over examples of a per-example value): "
                 + stats.NULLS["sign_flip"],
    "bootstrap": "every other metric (set-level: spectra, uniformity, anisotropy, class "
                 "separation, lexical scores; F1, MCC and Spearman probes): "
                 + stats.NULLS["bootstrap"],
    "welch": "when both sides have at least 2 runs (seeds), p (and the CI, a t interval) is this "
             "instead, for every metric: " + stats.NULLS["welch"],
}
ALPHA = 0.05


# ----------------------------------------------------------------------------- the metrics
# Their formulas are in stats.py; W (R, n) holds weighted sets of the examples, one per row.

def measures(rows: dict, W) -> dict:
    """Every metric but the semantic probe's, for the weighted sets W of rows -> {metric: (R,)}."""
    x = rows["x"]
    m = stats.spectral(x, W)
    m.update(uniformity=stats.uniformity(x, W), uniformity_centred=stats.uniformity(rows["xc"], W),
             anisotropy=stats.anisotropy(x, W), lexical_auc=stats.auc(rows["scores"], rows["Y"], W),
             lexical_f1=stats.micro_f1(rows["scores"] > 0.5, rows["Y"], W))
    if rows["y"] is not None:
        m["class_separation"] = stats.class_separation(x, rows["y"], W)
    if rows["v"] is not None:
        m["alignment"] = stats.alignment(x, rows["v"], rows["positive"], W)
    return m


def per_example(rows: dict) -> dict:
    """{metric: (n,) per-example values} of the metrics that are means over examples (NaN where
    an example does not count): the ones the sign-flip test applies to."""
    if rows["v"] is None:
        return {}
    return dict(alignment=np.where(rows["positive"], stats.pair_sq_dist(rows["x"], rows["v"]),
                                   np.nan))


# ----------------------------------------------------------------------------- lexical probe

def token_ids(tok, texts) -> list:
    return [np.unique(ids) for ids in features.content_ids(tok, texts)]


def top_tokens(ids: list, specials, k: int, vocab_size: int) -> np.ndarray:
    """The k tokens in most texts (document frequency), specials excluded; ties by id."""
    df = np.bincount(np.concatenate(ids + [np.zeros(0, int)]), minlength=vocab_size)
    df[specials] = 0
    order = np.argsort(-df, kind="stable")[:k]
    return order[df[order] > 0]


def occurs(ids: list, vocab) -> np.ndarray:
    return np.stack([np.isin(vocab, i) for i in ids])  # (n, K) bool


# ----------------------------------------------------------------------------- models and probes

def method(conf: dict) -> str:
    """The method a run's config trains (its seeds are runs of one method): the mode, with the
    lambda mode for a hybrid not using the learned one (hybrid:uncertainty, hybrid:fixed:0.3)."""
    lam = conf.get("lambda_mode", "learned")
    return conf["mode"] if conf["mode"] != "hybrid" or lam == "learned" else f"hybrid:{lam}"


def resolve_models(cfg: AnalyzeConfig) -> list[dict]:
    models = []
    for run in cfg.runs:
        path = Path(run)
        if not (path / "config.json").is_file() or not (path / "ckpt.pt").is_file():
            raise UserError(f"--runs: {run} has no config.json and ckpt.pt; train it with "
                            f"`python train.py --out={run}` or fix the path")
        conf = json.loads((path / "config.json").read_text())["config"]
        models.append(dict(name=path.name, mode=conf["mode"], method=method(conf),
                           ckpt=str(path / "ckpt.pt"), preset=conf["preset"]))
    if cfg.random:
        preset = models[0]["preset"] if models else cfg.preset
        models += [dict(name=name, mode="random", method="random", ckpt=ckpt, preset=preset)
                   for ckpt, name in (features.random_encoder(preset, k)
                                      for k in range(cfg.random_seeds))]
    names = [m["name"] for m in models]
    if not models or len(set(names)) < len(names):
        raise UserError(f"--runs: need at least one model and distinct run folder names, got "
                        f"{names}; rename a folder or pass --random=true")
    return models


def resolve_pairs(cfg: AnalyzeConfig, models: list[dict]) -> list[dict]:
    """The comparisons: [dict(label, a=[model names], b=[...])] from --compare, where a side is
    run names and methods (every run of it) joined by +; default every hybrid method vs mlm."""
    names, methods = [m["name"] for m in models], list(dict.fromkeys(m["method"] for m in models))
    specs = list(cfg.compare) or [f"{h}/mlm" for h in methods
                                  if h.startswith("hybrid") and "mlm" in methods]
    pairs = []
    for spec in specs:
        sides = spec.split("/")
        if len(sides) != 2 or not all(sides):
            raise UserError(f"--compare={spec}: expected two sides A/B, a side being run names "
                            "or methods joined by + (e.g. hybrid/mlm or run1+run2/run3+run4)")
        got = []
        for side in sides:
            runs = []
            for item in side.split("+"):
                found = [item] if item in names else [m["name"] for m in models
                                                       if m["method"] == item]
                if not found:
                    raise UserError(f"--compare={spec}: {item} is neither a run ({', '.join(names)}"
                                    f") nor a method ({', '.join(methods)}); use one of them")
                runs += [r for r in found if r not in runs]
            got.append(runs)
        if set(got[0]) & set(got[1]):
            raise UserError(f"--compare={spec}: {', '.join(set(got[0]) & set(got[1]))} is on "
                            "both sides; a run can be on one side only")
        pairs.append(dict(label=f"{'+'.join(got[0])} vs {'+'.join(got[1])}", a=got[0], b=got[1]))
    return pairs


def probe_config(cfg, task: str, pool: str, ckpt: str, preset="tiny", folder=None):
    """probe.py's config of a model here; a random-weight encoder copies the first run's
    architecture and tokenizer (the preset's when there is no run)."""
    like = str(Path(cfg.runs[0]) / "ckpt.pt") if cfg.runs and features.is_random(ckpt) else ""
    pcfg = probe.ProbeConfig(task=(task,), ckpt=ckpt, pool=(pool,), encoder=cfg.encoder,
                         preset=preset, out=str(folder or ""), random_like=like)
    return parse_flags(shlex.split(cfg.probe_args), pcfg)[0]


def probe_result(cfg, task: str, pool: str, ckpt: str, preset="tiny", source=None,
                 splits=None) -> dict:
    """probe.py's result for (ckpt, task, pool): reused only when it was made with exactly the
    settings this analysis would use, else the probe runs again (and says why). source: the
    encoder's probe.Source; None for the majority and bow baselines (pool "-"). splits: the
    task's, when loaded already."""
    folder = source.results if source else Path("out/baselines/probe")
    pcfg = probe_config(cfg, task, pool if source else "mean", ckpt, preset, folder)
    results, missing = probe.run_probe(pcfg, reuse=True, source=source, loaded={task: splits})
    if missing:
        raise UserError(missing[task])
    return results[0]


def probe_summary(r: dict, task: str) -> dict:
    metric = glue.TASKS[task].primary
    return dict(file=r["file"], metric=metric, value=num(r["metrics"][metric]),
                ci=[num(v) for v in r["ci"][metric]], n_train=r["n_train"], n_dev=r["n_dev"])


def baseline(cfg, task: str, kind: str, splits=None) -> dict:
    try:
        return probe_summary(probe_result(cfg, task, "-", kind, splits=splits), task)
    except UserError as e:  # bow needs the bert-base-uncased vocabulary, which may be offline
        return dict(error=str(e))


def semantic(r: dict, task: str, pool: str, gold: np.ndarray, idx: np.ndarray) -> dict:
    """The probe's primary score (percent, mean over its seeds) from its saved dev predictions:
    the value, its values on the resamples idx, and per example (accuracy only) the share of
    seeds that got it right."""
    _, split, key, fn = next(s for s in probe.metric_specs(task, pool) if s[0] == glue.TASKS[task].primary)
    preds = provenance.load_predictions(r)[split][key]
    if preds.shape[1] != len(gold):
        raise UserError(f"{r['file']}: {preds.shape[1]} dev predictions for {len(gold)} dev "
                        "examples; delete it and run again")
    return dict(value=100 * stats.seed_mean(fn, preds, gold),
                boots=100 * stats.seed_mean(fn, preds, gold, idx),
                per_example=100 * (preds == gold).mean(0) if fn is stats.accuracy else None)


# ----------------------------------------------------------------------------- the analysis

def model_rows(cfg, model, source, task, pool, splits, subset, lexical) -> tuple:
    """Per-example arrays of one model x pooling on the dev subset, lexical scores included."""
    t, (tok, vocab, Y) = glue.TASKS[task], lexical
    pcfg = probe_config(cfg, task, pool, model["ckpt"], model["preset"])
    vectors, train = probe.pooled(pcfg, source, task, pool, splits)
    fit = np.sort(np.random.default_rng([cfg.seed, 3]).permutation(len(train))[:cfg.lex_train])
    Y_fit = occurs(token_ids(tok, [train[i].text_a for i in fit]), vocab)
    u, v = vectors[t.dev_splits[0]]
    x, y = u[subset], probe.labels(splits[t.dev_splits[0]])[subset]
    scores, alpha = ridge_scores(vectors["train"][0][fit], Y_fit, x, cfg.seed)
    rows = dict(x=x, xc=x - x.mean(0), scores=scores, Y=Y,
                y=y if not t.pair and t.num_labels else None,
                v=None if v is None else v[subset], positive=t.positive(y) if t.pair else None)
    return rows, alpha


def analyze_task(cfg, task, splits, models, sources, result, pairs):
    t0, dev_split = time.time(), glue.TASKS[task].dev_splits[0]
    dev = splits[dev_split]
    subset = np.sort(np.random.default_rng(cfg.seed).permutation(len(dev))[:cfg.n])
    n, tok = len(subset), sources[models[0]["name"]].tok  # one tokenizer: the same labels for all
    train_ids = token_ids(tok, [e.text_a for e in splits["train"]])
    vocab = top_tokens(train_ids, sorted(data.special_ids(tok).values()), cfg.lex_k,
                       tok.get_vocab_size())
    Y = occurs(token_ids(tok, [dev[i].text_a for i in subset]), vocab)
    majority = np.broadcast_to(occurs(train_ids, vocab).mean(0) > 0.5, Y.shape)
    result["tasks"][task] = dict(split=dev_split, n=n, n_dev=len(dev),
                                 lexical_tokens=[tok.id_to_token(int(i)) for i in vocab],
                                 lexical_majority_f1=num(stats.micro_f1(majority, Y)[0]))
    base = result["baselines"][task] = {k: baseline(cfg, task, k, splits)
                                        for k in features.BASELINES}
    # the same resamples for every model: paired. The semantic probe's: of its own split
    W = np.vstack([np.ones(n), stats.resample_counts(n, cfg.bootstrap, [cfg.seed, 1])])
    gold = {s: probe.labels(splits[s]) for s in glue.TASKS[task].dev_splits}
    dev_idx = {s: stats.resample_indices(len(g), cfg.bootstrap, [cfg.seed, 4])
               for s, g in gold.items()}
    primary_split = next(s for name, s, _, _ in probe.metric_specs(task) if name == glue.TASKS[task].primary)
    for pool in cfg.pools:
        values, examples = {}, {}
        for model in models:
            name = model["name"]
            r = probe_result(cfg, task, pool, model["ckpt"], model["preset"], sources[name],
                             splits)
            sem = semantic(r, task, pool, gold[primary_split], dev_idx[primary_split])
            rows, alpha = model_rows(cfg, model, sources[name], task, pool, splits, subset,
                                     (tok, vocab, Y))
            m = values[name] = measures(rows, W)
            spectrum = m.pop("spectrum")[0]
            if (s_maj := base["majority"].get("value")) is not None:
                m["probe_gap"] = (np.r_[sem["value"], sem["boots"]] - s_maj) / (100 - s_maj) \
                    - (2 * m["lexical_auc"] - 1)
            m["semantic_probe"] = np.r_[sem["value"], sem["boots"]]
            examples[name] = dict(per_example(rows), semantic_probe=sem["per_example"])
            metrics = {k: dict(value=num(v[0]), ci=rounded(stats.sd_ci(v[0], v[1:])))
                       for k, v in m.items()}
            summary = probe_summary(r, task)
            metrics["semantic_probe"] = dict(value=summary["value"], ci=summary["ci"])
            result["cells"].append(dict(
                task=task, pool=pool, model=name, probe=summary,
                lexical_ridge=alpha, metrics={k: metrics[k] for k in METRICS if k in metrics},
                spectrum=[float(f"{v:.4g}") for v in spectrum]))
        for pair in pairs:
            for metric in [k for k in METRICS if k in values[pair["a"][0]]]:
                ex = {n: examples[n].get(metric) for n in pair["a"] + pair["b"]}
                c = compare.compare(cfg, pair, {k: v[metric][0] for k, v in values.items()},
                            {k: v[metric][1:] for k, v in values.items()},
                            None if any(e is None for e in ex.values()) else ex)
                if metric == "probe_gap" and c["test"] != "welch":  # two example sets resampled
                    c.update(p=None, test=None)  # apart: a CI, no example-level test
                if metric == "probe_gap":
                    c.update(p_examples=None, test_examples=None)
                result["comparisons"].append(dict(task=task, pool=pool, metric=metric, **c))
        print(f"{task} {pool}: {len(models)} models, {time.time() - t0:.0f}s", file=sys.stderr)


def settings(cfg, models, sources, splits: dict) -> dict:
    """Everything the analysis depends on: its flags, the code, each model's weights, the data,
    and every probe result it reads (by hash; each records its own settings). Made sure of
    first: a probe result made with other settings is redone here."""
    probes = {}
    for task, sp in splits.items():
        for pool in cfg.pools:
            for m in models:
                r = probe_result(cfg, task, pool, m["ckpt"], m["preset"], sources[m["name"]], sp)
                probes[r["file"]] = provenance.file_hash(Path(r["file"]))
        for kind in features.BASELINES:
            if "file" in (b := baseline(cfg, task, kind, sp)):
                probes[b["file"]] = provenance.file_hash(Path(b["file"]))
    flags = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out", "figures")}
    return json.loads(json.dumps(dict(
        flags=flags, code=provenance.code_version(__file__),
        weights={m["name"]: sources[m["name"]].key for m in models},
        data={t: {s: provenance.content_hash(e) for s, e in sp.items()}
              for t, sp in splits.items()},
        probes=probes)))


def analyze(cfg: AnalyzeConfig, reuse: bool = False) -> dict:
    """The analysis -> analysis.json, report.md and figures in cfg.out; returns what the JSON
    holds. reuse: keep an analysis.json made with exactly these settings (else say why not)."""
    check(cfg)
    models = resolve_models(cfg)
    pairs = resolve_pairs(cfg, models)
    sources = {m["name"]: features.open_source(probe_config(cfg, cfg.tasks[0], "mean", m["ckpt"],
                                                     m["preset"])) for m in models}
    result = dict(config=dataclasses.asdict(cfg), definitions=DEFINITIONS, statistics=STATISTICS,
                  tests=TESTS, models=[dict(m, d=sources[m["name"]].encoder.tok_emb.embedding_dim,
                                            probe_dir=str(sources[m["name"]].results))
                                       for m in models],
                  pairs=pairs, tasks={}, skipped={}, baselines={}, cells=[], comparisons=[])
    splits = {}
    for task in cfg.tasks:
        try:
            splits[task] = probe.load_splits(task)
        except UserError as e:
            result["skipped"][task] = portable(str(e))
            print(f"{task}: skipped ({e})", file=sys.stderr)
    out = Path(cfg.out)
    result["settings"] = settings(cfg, models, sources, splits)
    if reuse and (out / "analysis.json").exists():
        old = json.loads((out / "analysis.json").read_text())
        if not (why := provenance.stale(old, result["settings"])):
            print(f"analysis: {out / 'analysis.json'} reused (made with these settings)",
                  file=sys.stderr)
            return old
        print(f"analysis: {out / 'analysis.json'} is not reused: {why}; analysing again",
              file=sys.stderr)
    for task, sp in splits.items():
        analyze_task(cfg, task, sp, models, sources, result, pairs)
    compare.adjust(result["comparisons"], pairs, cfg.correction)
    result["pairs"] = [compare.pair_summary(cfg, p, ALPHA) for p in pairs]
    result["consistency"] = {p["label"]: compare.consistency(result["comparisons"], p["label"],
                                                               METRICS, ALPHA)
                             for p in pairs}
    atomic_write(out / "analysis.json", lambda f: f.write(json.dumps(result, indent=1)), "w")
    pngs = figures.write_figures(result, out) if cfg.figures else []
    atomic_write(out / "report.md", lambda f: f.write(markdown.analysis_report(result, pngs)), "w")
    return result


def check(cfg: AnalyzeConfig):
    for kind, names, valid in (("tasks", cfg.tasks, glue.TASKS),
                               ("pools", cfg.pools, features.POOLS)):
        if not names or any(n not in valid for n in names):
            raise UserError(f"--{kind}={','.join(names)}: expected one or more of "
                            f"{', '.join(valid)} (comma-separated)")
    if min(cfg.n, cfg.lex_k, cfg.lex_train, cfg.bootstrap, cfg.permutations,
           cfg.random_seeds) < 1:
        raise UserError("--n, --lex_k, --lex_train, --bootstrap, --permutations and "
                        "--random_seeds must be >= 1")
    if cfg.correction not in stats.ADJUST:
        raise UserError(f"--correction={cfg.correction}: expected {' or '.join(stats.ADJUST)}")
    probe.check_names(probe_config(cfg, cfg.tasks[0], cfg.pools[0], "random"))


def main(argv):
    cfg, _ = parse_flags(argv, AnalyzeConfig())
    t0 = time.time()
    r = analyze(cfg)
    print(f"{len(r['cells'])} cells, {len(r['comparisons'])} comparisons, skipped: "
          f"{', '.join(r['skipped']) or 'none'} -> {Path(cfg.out) / 'report.md'} "
          f"({time.time() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    run_cli(main)
