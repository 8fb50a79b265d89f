"""Geometry of frozen sentence vectors (SPEC 4): metrics x poolings x GLUE dev sets x models, with
bootstrap CIs and paired permutation tests -> analysis.json, report.md and figures.

    python analyze.py --runs=out/hybrid-tiny,out/mlm-tiny --tasks=sst2,stsb --pools=mean,max

Models: every run folder given (its mode read from config.json) and, unless --random=false, the
random-weight encoder of the same preset (probe.py's). All are measured on one seeded subset of N
dev examples per task. Vectors are pooled as probe.py pools them (weighted/attention poolers fitted
on train); pair tasks use the first sentence's vector, and both for alignment. The definition of
every metric and statistic is in DEFINITIONS and STATISTICS below, which analysis.json and
report.md repeat. Nothing is fitted on the dev examples it is scored on. The same inputs give a
bit-identical analysis.json: it holds no clock, and every random draw is seeded.
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
import torch  # noqa: E402

import data  # noqa: E402
import probe as P  # noqa: E402
from data import UserError  # noqa: E402


@dataclass
class AnalyzeConfig:
    runs: tuple[str, ...] = ("out/hybrid-tiny", "out/mlm-tiny")  # folders: config.json, ckpt.pt
    tasks: tuple[str, ...] = ("sst2", "mrpc", "mnli", "cola", "stsb")
    pools: tuple[str, ...] = P.POOLS
    random: bool = True         # also measure the random-weight encoder of the runs' preset
    preset: str = "tiny"        # its preset when no run is given
    encoder: str = "online"     # online | target (the EMA copy)
    n: int = 2000               # dev examples per task: one seeded subset for every model
    probe_args: str = ""        # probe.py flags (e.g. --max_train=10000) of the probes run here
                                # and of the pooled vectors: the probes' own reuse their caches
    lex_k: int = 100            # lexical probe: the K tokens that occur in most train texts
    lex_train: int = 5000       # lexical probe: train examples it is fitted on
    bootstrap: int = 200        # resamples per 95% CI
    permutations: int = 200     # per paired test; the smallest possible p is 1 / (1 + this)
    seed: int = 0
    out: str = "out/analysis"
    figures: bool = True        # PNGs, when matplotlib is installed


DEFINITIONS = {  # x: pooled vectors of the N subset examples, z = x / ||x||, d their dimension
    "semantic_probe": "probe.py's score of the task (primary metric, percent) on the full dev "
                      "split, from its result JSON (the probe is run when there is none)",
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
    "the subset's examples (not percentiles: a resample's duplicated examples lower its spectral "
    "metrics, and their percentile interval would miss the estimate). Every model sees the same "
    "resamples, so the CI of a difference is paired. Pair metrics of a resample average over "
    "pairs of distinct examples; uniformity_centred keeps each model's subset mean. p: two-sided "
    "paired permutation test: each example's vectors (and lexical scores) are swapped between "
    "the two models with probability 1/2, the difference recomputed, p = (1 + #{|perm diff| >= "
    "|diff|}) / (1 + P). semantic_probe and probe_gap have no p, and their semantic part is not "
    "resampled: probe.py's JSON holds no per-example predictions; the CI shown is the probe's "
    "own, resp. the lexical part's. consistent: the difference has one sign in every task x "
    "pooling cell.")
PRIMARY = {"sst2": "acc", "mrpc": "f1", "qqp": "f1", "mnli": "acc_matched", "cola": "mcc",
           "stsb": "spearman"}
POSITIVE = {"mrpc": lambda y: y == 1, "qqp": lambda y: y == 1, "stsb": lambda y: y >= 4,
            "mnli": lambda y: y == 0}  # true paraphrase / similar / entailed pairs
RIDGE = (1e4, 1e3, 1e2, 10.0, 1.0, 0.1)  # strongest first: a tie keeps the simpler probe


# ----------------------------------------------------------------------------- estimators
# Each estimator scores weighted sets of examples: W (R, n) holds one set per row (ones = the
# subset itself, counts = a bootstrap resample, 0/1 over two models' stacked rows = a
# permutation) and the result is (R,) values. W=None: the subset itself.

def unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _sets(W, n):
    return np.ones((1, n)) if W is None else W


def pair_mean(K, W, mask=None):
    """sum_{i!=j} w_i w_j m_ij K_ij / sum_{i!=j} w_i w_j m_ij for each row w of W: the mean of
    K over pairs of distinct examples (where mask m is true) of a weighted set."""
    if mask is None:
        den = W.sum(1) ** 2 - (W * W).sum(1)
    else:
        K, m = K * mask, mask.astype(float)
        den = ((W @ m) * W).sum(1) - (W * W) @ np.diag(m)
    return (((W @ K) * W).sum(1) - (W * W) @ np.diag(K)) / np.where(den > 0, den, np.nan)


def sq_dists(z):
    return np.maximum(2 - 2 * z @ z.T, 0)  # ||z_i - z_j||^2 of unit vectors


def uniformity(x, W=None):
    return np.log(pair_mean(np.exp(-2 * sq_dists(unit(x))), _sets(W, len(x))))


def anisotropy(x, W=None):
    z = unit(x)
    return pair_mean(z @ z.T, _sets(W, len(x)))


def class_separation(x, y, W=None):
    W, d, same = _sets(W, len(x)), np.sqrt(sq_dists(unit(x))), y[:, None] == y[None, :]
    return pair_mean(d, W, same) / pair_mean(d, W, ~same)


def alignment(u, v, positive=None, W=None):
    W, a = _sets(W, len(u)), ((unit(u) - unit(v)) ** 2).sum(1)
    keep = np.ones(len(u)) if positive is None else positive.astype(float)
    return (W @ (a * keep)) / np.where(W @ keep > 0, W @ keep, np.nan)


def entropy(p):
    p = p / p.sum(-1, keepdims=True)
    return -(p * np.log(np.where(p > 0, p, 1))).sum(-1)


def spectral(x, W=None) -> dict:
    """spectral_entropy, effective_rank, rankme (R,) and the normalised centred spectrum (R, d),
    from the eigenvalues of each set's covariance and raw second moment (= singular values^2/n)."""
    W, mean = _sets(W, len(x)), x.mean(0)
    xc = x - mean  # moments of centred data: no cancellation in the covariance below
    cov, raw = np.empty((2, len(W), x.shape[1], x.shape[1]))
    for r, w in enumerate(W):
        keep = w > 0
        xs, ws = xc[keep], w[keep] / w.sum()
        m2, mu = (xs * ws[:, None]).T @ xs, ws @ xs
        cov[r] = m2 - np.outer(mu, mu)
        raw[r] = m2 + np.outer(mean, mu) + np.outer(mu, mean) + np.outer(mean, mean)
    lam, lam_raw = (np.linalg.eigvalsh(m)[:, ::-1] for m in (cov, raw))
    # under 1e-12 of the largest is eigensolver noise: counted, it gives a rank-1 set rank 1.0000001
    lam, lam_raw = (np.where(v > 1e-12 * v[:, :1], v, 0) for v in (lam, lam_raw))
    return dict(spectral_entropy=entropy(lam) / np.log(x.shape[1]),
                effective_rank=np.exp(entropy(np.sqrt(lam))),
                rankme=np.exp(entropy(np.sqrt(lam_raw))), spectrum=lam / lam.sum(1, keepdims=True))


def auc(scores, Y, W=None):
    """Macro ROC AUC over the columns of Y (n, K) bool: P(s_pos > s_neg) + P(tie) / 2 between
    weighted examples. A label with no positive or no negative in a set is left out."""
    W = _sets(W, len(Y))
    out = np.full((len(W), Y.shape[1]), np.nan)
    for k in range(Y.shape[1]):
        order = np.argsort(scores[:, k], kind="stable")
        s, pos, w = scores[order, k], Y[order, k], W[:, order]
        new = np.r_[True, s[1:] != s[:-1]]  # a run of tied scores starts here
        start, group = np.flatnonzero(new), np.cumsum(new) - 1
        neg = w * ~pos
        below = (np.cumsum(neg, 1) - neg)[:, start]  # negative weight under each tie group
        wins = below[:, group] + 0.5 * np.add.reduceat(neg, start, axis=1)[:, group]
        den = (w * pos).sum(1) * neg.sum(1)
        out[:, k] = (w * pos * wins).sum(1) / np.where(den > 0, den, np.nan)
    seen = np.isfinite(out)
    return np.where(seen.any(1), np.nansum(out, 1) / np.maximum(seen.sum(1), 1), np.nan)


def micro_f1(pred, Y, W=None):
    W = _sets(W, len(Y))
    tp, fp, fn = W @ (pred & Y).sum(1), W @ (pred & ~Y).sum(1), W @ (~pred & Y).sum(1)
    return 2 * tp / np.where(2 * tp + fp + fn > 0, 2 * tp + fp + fn, np.nan)


def measures(rows: dict, W) -> dict:
    """Every metric but the semantic probe's, for the weighted sets W of rows."""
    x = rows["x"]
    m = spectral(x, W)
    m.update(uniformity=uniformity(x, W), uniformity_centred=uniformity(rows["xc"], W),
             anisotropy=anisotropy(x, W), lexical_auc=auc(rows["scores"], rows["Y"], W),
             lexical_f1=micro_f1(rows["scores"] > 0.5, rows["Y"], W))
    if rows["y"] is not None:
        m["class_separation"] = class_separation(x, rows["y"], W)
    if rows["v"] is not None:
        m["alignment"] = alignment(x, rows["v"], rows["positive"], W)
    return m


# ----------------------------------------------------------------------------- lexical probe

def token_ids(tok, texts) -> list:
    return [np.unique(ids) for ids in P.content_ids(tok, texts)]


def top_tokens(ids: list, specials, k: int, vocab_size: int) -> np.ndarray:
    """The k tokens in most texts (document frequency), specials excluded; ties by id."""
    df = np.bincount(np.concatenate(ids + [np.zeros(0, int)]), minlength=vocab_size)
    df[specials] = 0
    order = np.argsort(-df, kind="stable")[:k]
    return order[df[order] > 0]


def occurs(ids: list, vocab) -> np.ndarray:
    return np.stack([np.isin(vocab, i) for i in ids])  # (n, K) bool


def ridge_scores(X, Y, X_eval, seed: int):
    """Ridge regression from standardised vectors to the 0/1 token indicators (a linear
    probability model: one solve for all K tokens). Strength chosen on a seeded held-out 10% of
    the fit rows by macro AUC, then refitted on all of them. -> (scores (n_eval, K), strength)."""
    def fit(rows, alpha):
        mu, sd = X[rows].mean(0), X[rows].std(0) + 1e-8
        A, y_mean = (X[rows] - mu) / sd, Y[rows].mean(0)
        coef = np.linalg.solve(A.T @ A + alpha * np.eye(X.shape[1]), A.T @ (Y[rows] - y_mean))
        return lambda Z: (Z - mu) / sd @ coef + y_mean

    perm = np.random.default_rng(seed).permutation(len(X))
    held, rest = np.split(perm, [max(1, len(X) // 10)])
    held_auc = [np.nan_to_num(auc(fit(rest, a)(X[held]), Y[held])[0], nan=-1) for a in RIDGE]
    alpha = RIDGE[int(np.argmax(held_auc))]
    return fit(np.arange(len(X)), alpha)(X_eval), alpha


# ----------------------------------------------------------------------------- statistics

def num(v, digits: int = 6):
    return None if v is None or not np.isfinite(v) else round(float(v), digits)


def ci(point: float, samples) -> list | None:
    s = samples[np.isfinite(samples)]
    if len(s) < 2 or not np.isfinite(point):
        return None
    return [num(point - 1.96 * s.std(ddof=1)), num(point + 1.96 * s.std(ddof=1))]


def p_value(diff: float, perm: np.ndarray):
    perm = perm[np.isfinite(perm)]
    if not np.isfinite(diff) or not len(perm):
        return None
    return num((1 + np.sum(np.abs(perm) >= abs(diff) - 1e-12)) / (1 + len(perm)))


def compare(rows_a: dict, rows_b: dict, signs: np.ndarray) -> dict:
    """Every metric on P permuted pairs of sets (set 1 takes model b's rows where signs is 1,
    set 2 the others) -> {metric: (P,) differences set 1 - set 2}."""
    stacked = {k: None if v is None else np.concatenate([v, rows_b[k]]) for k, v in rows_a.items()}
    m = measures(stacked, np.vstack([np.hstack([1 - signs, signs]), np.hstack([signs, 1 - signs])]))
    return {k: v[:len(signs)] - v[len(signs):] for k, v in m.items() if k != "spectrum"}


def consistency(comparisons: list) -> dict:
    out = {}
    for metric in METRICS:
        diffs = [c for c in comparisons if c["metric"] == metric and c["diff"] is not None]
        if diffs:
            up, down = sum(c["diff"] > 0 for c in diffs), sum(c["diff"] < 0 for c in diffs)
            out[metric] = dict(cells=len(diffs), a_greater=up, b_greater=down,
                               significant=sum(c["p"] < 0.05 for c in diffs if c["p"] is not None)
                               if any(c["p"] is not None for c in diffs) else None,  # no test
                               consistent=max(up, down) == len(diffs))
    return out


# ----------------------------------------------------------------------------- models and probes

def resolve_models(cfg: AnalyzeConfig) -> list[dict]:
    models = []
    for run in cfg.runs:
        path = Path(run)
        if not (path / "config.json").is_file() or not (path / "ckpt.pt").is_file():
            raise UserError(f"--runs: {run} has no config.json and ckpt.pt; train it with "
                            f"`python train.py --out={run}` or fix the path")
        conf = json.loads((path / "config.json").read_text())["config"]
        models.append(dict(name=path.name, mode=conf["mode"], ckpt=str(path / "ckpt.pt"),
                           preset=conf["preset"]))
    if cfg.random:
        preset = models[0]["preset"] if models else cfg.preset
        models.append(dict(name=f"random-{preset}", mode="random", ckpt="random", preset=preset))
    names = [m["name"] for m in models]
    if not models or len(set(names)) < len(names):
        raise UserError(f"--runs: need at least one model and distinct run folder names, got "
                        f"{names}; rename a folder or pass --random=true")
    return models


def probe_config(cfg, task: str, pool: str, ckpt: str, preset="tiny", folder=None):
    pcfg = P.ProbeConfig(task=(task,), ckpt=ckpt, pool=(pool,), encoder=cfg.encoder,
                         preset=preset, out=str(folder or ""))
    return data.parse_flags(shlex.split(cfg.probe_args), pcfg)[0]


def probe_result(cfg, task: str, pool: str, ckpt: str, preset="tiny", source=None) -> dict:
    """probe.py's result JSON for (ckpt, task, pool): reused when it exists (and, for an encoder,
    was made from these weights), else the probe is run and writes it. source: the encoder's
    probe.Source; None for the majority and bow baselines (pool "-")."""
    folder = source.results if source else Path("out/baselines/probe")
    path = folder / f"{task}-{pool if source else ckpt}.json"
    if path.exists():
        r = json.loads(path.read_text())
        if source is None or (r.get("ckpt_key") == source.key and r.get("encoder") == cfg.encoder):
            return dict(r, file=str(path))
    P.run_probe(probe_config(cfg, task, pool if source else "mean", ckpt, preset, folder))
    return dict(json.loads(path.read_text()), file=str(path))


def probe_summary(r: dict, task: str) -> dict:
    metric = PRIMARY[task]
    return dict(file=r["file"], metric=metric, value=num(r["metrics"][metric]),
                ci=[num(v) for v in r["ci"][metric]], n_train=r["n_train"], n_dev=r["n_dev"])


def baseline(cfg, task: str, kind: str) -> dict:
    try:
        return probe_summary(probe_result(cfg, task, "-", kind), task)
    except UserError as e:  # bow needs the bert-base-uncased vocabulary, which may be offline
        return dict(error=str(e))


def pooled(pcfg, source, task: str, pool: str, splits: dict) -> tuple:
    """({split: (a, b or None)} pooled vectors of train and the dev split, train examples), as
    probe.embed pools them, but both splits from one fit of a trained pooler: the probe's own
    seed-0 pooler, by its own protocol (embed would fit it again for each split)."""
    dev_split = data.TASKS[task].dev_splits[0]
    train, cap = P.train_subset(pcfg, pool, splits["train"])
    parts = P.build_parts(pcfg, source, task, {"train": train, dev_split: splits[dev_split]},
                          pool, cap)
    param = None
    if pool in P.TRAINED_POOLS:
        param = P.select_and_fit(parts["train"], P.labels(train), task, pool, 0, pcfg)[0]["param"]
    with torch.no_grad():
        return {s: tuple(None if v is None else v.numpy().astype(np.float64)
                         for v in P.vectors(part, pool, param)) for s, part in parts.items()}, train


# ----------------------------------------------------------------------------- the analysis

def model_rows(cfg, model, source, task, pool, splits, subset, lexical) -> tuple:
    """Per-example arrays of one model x pooling on the dev subset, lexical scores included."""
    t, (tok, vocab, Y) = data.TASKS[task], lexical
    pcfg = probe_config(cfg, task, pool, model["ckpt"], model["preset"])
    vectors, train = pooled(pcfg, source, task, pool, splits)
    fit = np.sort(np.random.default_rng([cfg.seed, 3]).permutation(len(train))[:cfg.lex_train])
    Y_fit = occurs(token_ids(tok, [train[i].text_a for i in fit]), vocab)
    u, v = vectors[t.dev_splits[0]]
    x, y = u[subset], P.labels(splits[t.dev_splits[0]])[subset]
    scores, alpha = ridge_scores(vectors["train"][0][fit], Y_fit, x, cfg.seed)
    rows = dict(x=x, xc=x - x.mean(0), scores=scores, Y=Y,
                y=y if not t.pair and t.num_labels else None,
                v=None if v is None else v[subset], positive=POSITIVE[task](y) if t.pair else None)
    return rows, alpha


def analyze_task(cfg, task, splits, models, sources, result, pair):
    t0, dev_split = time.time(), data.TASKS[task].dev_splits[0]
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
                                 lexical_majority_f1=num(micro_f1(majority, Y)[0]))
    base = result["baselines"][task] = {k: baseline(cfg, task, k) for k in P.BASELINES}
    rng = np.random.default_rng([cfg.seed, 1])  # the same resamples for every model: paired
    W = np.vstack([np.ones(n)] + [np.bincount(rng.integers(0, n, n), minlength=n)
                                  for _ in range(cfg.bootstrap)])
    signs = np.random.default_rng([cfg.seed, 2]).integers(0, 2, (cfg.permutations, n))
    for pool in cfg.pools:
        rows, values = {}, {}
        for model in models:
            name = model["name"]
            sem = probe_summary(probe_result(cfg, task, pool, model["ckpt"], model["preset"],
                                             sources[name]), task)
            rows[name], alpha = model_rows(cfg, model, sources[name], task, pool, splits, subset,
                                           (tok, vocab, Y))
            m = values[name] = measures(rows[name], W)
            spectrum = m.pop("spectrum")[0]
            if (s_maj := base["majority"].get("value")) is not None:
                m["probe_gap"] = (sem["value"] - s_maj) / (100 - s_maj) - (2 * m["lexical_auc"] - 1)
            metrics = {k: dict(value=num(v[0]), ci=ci(v[0], v[1:])) for k, v in m.items()}
            metrics["semantic_probe"] = dict(value=sem["value"], ci=sem["ci"])
            result["cells"].append(dict(
                task=task, pool=pool, model=name, probe=sem, lexical_ridge=alpha,
                metrics={k: metrics[k] for k in METRICS if k in metrics},
                spectrum=[float(f"{v:.4g}") for v in spectrum]))
        if pair:
            a, b = pair
            same_d = rows[a]["x"].shape[1] == rows[b]["x"].shape[1]  # else nothing to swap
            perm = compare(rows[a], rows[b], signs) if same_d else {}
            sem = {c["model"]: c["metrics"]["semantic_probe"]["value"]
                   for c in result["cells"][-len(models):]}
            result["comparisons"].append(dict(task=task, pool=pool, metric="semantic_probe", a=a,
                                              b=b, diff=num(sem[a] - sem[b]), ci=None, p=None))
            for metric in [k for k in METRICS if k in values[a]]:
                d = values[a][metric] - values[b][metric]
                p = p_value(d[0], perm[metric]) if metric in perm else None
                result["comparisons"].append(dict(task=task, pool=pool, metric=metric, a=a, b=b,
                                                  diff=num(d[0]), ci=ci(d[0], d[1:]), p=p))
        print(f"{task} {pool}: {len(models)} models, {time.time() - t0:.0f}s", file=sys.stderr)


def analyze(cfg: AnalyzeConfig) -> dict:
    """The analysis -> analysis.json, report.md and figures in cfg.out; returns what the JSON
    holds."""
    check(cfg)
    models = resolve_models(cfg)
    sources = {m["name"]: P.open_source(probe_config(cfg, cfg.tasks[0], "mean", m["ckpt"],
                                                     m["preset"])) for m in models}
    modes = [m["mode"] for m in models]  # the comparison: the first hybrid and MLM runs given
    pair = tuple(models[modes.index(k)]["name"] for k in ("hybrid", "mlm")) \
        if {"hybrid", "mlm"} <= set(modes) else None
    result = dict(config=dataclasses.asdict(cfg), definitions=DEFINITIONS, statistics=STATISTICS,
                  models=[dict(m, d=sources[m["name"]].encoder.tok_emb.embedding_dim,
                               probe_dir=str(sources[m["name"]].results)) for m in models],
                  comparison=dict(a=pair[0], b=pair[1]) if pair else None,
                  tasks={}, skipped={}, baselines={}, cells=[], comparisons=[])
    for task in cfg.tasks:
        try:
            splits = P.load_splits(task)
        except UserError as e:
            result["skipped"][task] = str(e)
            print(f"{task}: skipped ({e})", file=sys.stderr)
            continue
        analyze_task(cfg, task, splits, models, sources, result, pair)
    result["consistency"] = consistency(result["comparisons"])
    out = Path(cfg.out)
    data.atomic_write(out / "analysis.json", lambda f: f.write(json.dumps(result, indent=1)), "w")
    figures = write_figures(result, out) if cfg.figures else []
    data.atomic_write(out / "report.md", lambda f: f.write(report(result, figures)), "w")
    return result


def check(cfg: AnalyzeConfig):
    for kind, names, valid in (("tasks", cfg.tasks, data.TASKS), ("pools", cfg.pools, P.POOLS)):
        if not names or any(n not in valid for n in names):
            raise UserError(f"--{kind}={','.join(names)}: expected one or more of "
                            f"{', '.join(valid)} (comma-separated)")
    if min(cfg.n, cfg.lex_k, cfg.lex_train, cfg.bootstrap, cfg.permutations) < 1:
        raise UserError("--n, --lex_k, --lex_train, --bootstrap and --permutations must be >= 1")
    P.check_names(probe_config(cfg, cfg.tasks[0], cfg.pools[0], "random"))


# ----------------------------------------------------------------------------- report and figures

def fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def with_ci(m: dict | None) -> str:
    if m is None or m.get("value") is None:
        return "-"
    return fmt(m["value"]) + (f" [{fmt(m['ci'][0])}, {fmt(m['ci'][1])}]" if m.get("ci") else "")


def table_head(columns) -> list[str]:
    """A markdown table's header and rule lines."""
    return ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


def consistency_table(consistency: dict, a: str, b: str) -> list[str]:
    """The per-metric sign counts of the a - b differences, as a markdown table."""
    return table_head(["metric", "cells", f"{a} greater", f"{b} greater", "p < 0.05",
                       "consistent?"]) + [
        f"| {k} | {v['cells']} | {v['a_greater']} | {v['b_greater']} | "
        f"{'-' if v['significant'] is None else v['significant']} | "
        f"{'yes' if v['consistent'] else 'no'} |" for k, v in consistency.items()]


def report(r: dict, figures: list | None) -> str:
    """report.md from the analysis dict alone: every number is read from it, none typed."""
    names, pair = [m["name"] for m in r["models"]], r["comparison"]
    cell = {(c["task"], c["pool"], c["model"]): c["metrics"] for c in r["cells"]}
    comp = {(c["task"], c["pool"], c["metric"]): c for c in r["comparisons"]}
    cells = list(dict.fromkeys((c["task"], c["pool"]) for c in r["cells"]))
    lines = ["# Representation analysis", "", "Generated by analyze.py from analysis.json in this "
             "folder; every number below is read from it.", "",
             *table_head(["model", "mode", "checkpoint", "d", "probe results"])]
    lines += [f"| {m['name']} | {m['mode']} | {m['ckpt']} | {m['d']} | {m['probe_dir']} |"
              for m in r["models"]]
    lines += ["", *table_head(["task", "dev split", "examples (of)", "lexical tokens",
                               "lexical majority micro-F1"])]
    lines += [f"| {t} | {v['split']} | {v['n']} ({v['n_dev']}) | {len(v['lexical_tokens'])} | "
              f"{fmt(v['lexical_majority_f1'])} |" for t, v in r["tasks"].items()]
    lines += [""] + [f"Skipped {t}: {why}" for t, why in r["skipped"].items()]
    lines += ["", "## Definitions", ""] + [f"- **{k}**: {v}" for k, v in r["definitions"].items()]
    lines += ["", f"Statistics: {r['statistics']}", ""]
    if pair:
        lines += [f"## Summary: {pair['a']} vs {pair['b']}", "",
                  *consistency_table(r["consistency"], pair["a"], pair["b"])]
    else:
        lines += ["No hybrid-vs-MLM comparison: the runs lack a hybrid or an MLM model."]
    for metric in METRICS:
        rows = [(t, p) for t, p in cells if any(metric in cell[t, p, n] for n in names)]
        baselines = ["majority", "bow"] if metric == "semantic_probe" else []
        head = names + baselines + ([f"{pair['a']} - {pair['b']} [95% CI]", "p"] if pair else [])
        lines += ["", f"## {metric}", "", *table_head(["task", "pool", *head])] if rows else []
        for t, p in rows:
            vals = [with_ci(cell[t, p, n].get(metric)) for n in names]
            vals += [with_ci(r["baselines"][t][k]) for k in baselines]
            if pair:
                c = comp.get((t, p, metric), {})
                vals += [with_ci(dict(value=c.get("diff"), ci=c.get("ci"))), fmt(c.get("p"))]
            lines.append(f"| {t} | {p} | " + " | ".join(vals) + " |")
    files = {c["probe"]["file"] for c in r["cells"]} | {
        b["file"] for v in r["baselines"].values() for b in v.values() if "file" in b}
    lines += ["", "Probe result files: " + ", ".join(sorted(files))]
    lines += [f"Baseline {k} unavailable for {t}: {b['error']}"
              for t, v in r["baselines"].items() for k, b in v.items() if "error" in b]
    lines += ["", "## Figures", ""] + ([f"![{f}]({f})" for f in figures] if figures else [
        "Figures skipped: " + ("matplotlib is not installed (pip install matplotlib)."
                               if figures is None else "--figures=false.")])
    return "\n".join(lines) + "\n"


def write_figures(r: dict, out: Path) -> list | None:
    """Eigenspectra per task, the uniformity-alignment plane, per-metric bars with CIs -> the
    PNG names; None when matplotlib is missing (it is optional)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names, pools, files = [m["name"] for m in r["models"]], r["config"]["pools"], []
    cell = {(c["task"], c["pool"], c["model"]): c for c in r["cells"]}
    for task in r["tasks"]:
        fig, axes = plt.subplots(1, len(pools), figsize=(4 * len(pools), 3.2), squeeze=False)
        for ax, pool in zip(axes[0], pools):
            for name in names:
                ax.semilogy(np.maximum(cell[task, pool, name]["spectrum"], 1e-12), label=name)
            ax.set(title=f"{task} {pool}", xlabel="component", ylabel="eigenvalue / sum")
        axes[0][0].legend(fontsize=7)
        files.append(save(fig, out / f"spectrum-{task}.png"))
    if any("alignment" in c["metrics"] for c in r["cells"]):
        fig, ax = plt.subplots(figsize=(5, 4))
        for name in names:
            own = [c["metrics"] for c in r["cells"]
                   if c["model"] == name and "alignment" in c["metrics"]]
            ax.scatter([m["alignment"]["value"] for m in own],
                       [m["uniformity"]["value"] for m in own], label=name)
        ax.set(xlabel="alignment (lower: positives closer)", ylabel="uniformity (lower: spread)")
        ax.legend(fontsize=7)
        files.append(save(fig, out / "uniformity-alignment.png"))
    cells = list(dict.fromkeys((c["task"], c["pool"]) for c in r["cells"]))
    width = 0.8 / len(names)
    for metric in [m for m in METRICS if any(m in c["metrics"] for c in r["cells"])]:
        fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(cells)), 3.5))
        for i, name in enumerate(names):
            got = [(j + i * width, m["value"], m["ci"] or [m["value"]] * 2)
                   for j, k in enumerate(cells)
                   if (m := cell[(*k, name)]["metrics"].get(metric)) and m["value"] is not None]
            ax.bar([x for x, _, _ in got], [v for _, v, _ in got], width, label=name, capsize=2,
                   yerr=np.clip([[v - c[0] for _, v, c in got], [c[1] - v for _, v, c in got]],
                                0, None).reshape(2, -1))  # 0, not -1e-7, on a rounded CI
        ax.set_xticks(np.arange(len(cells)) + 0.4 - width / 2, [f"{t}\n{p}" for t, p in cells],
                      fontsize=7)
        ax.set(title=metric)
        ax.legend(fontsize=7)
        files.append(save(fig, out / f"bars-{metric}.png"))
    return files


def save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def main(argv):
    cfg, _ = data.parse_flags(argv, AnalyzeConfig())
    t0 = time.time()
    r = analyze(cfg)
    print(f"{len(r['cells'])} cells, {len(r['comparisons'])} comparisons, skipped: "
          f"{', '.join(r['skipped']) or 'none'} -> {Path(cfg.out) / 'report.md'} "
          f"({time.time() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    data.run_cli(main)
