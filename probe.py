"""Linear probes of a frozen encoder on GLUE, with the baselines every table needs.

    python probe.py --task=sst2 --ckpt=out/hybrid-tiny/ckpt.pt --pool=mean
    python probe.py --task=all --ckpt=random --pool=all --seeds=3
    python probe.py --task=all --ckpt=majority        # or bow; pooling does not apply to these

Protocol (SPEC 3; SPEC 5 lists what the original got wrong): the frozen encoder sees
[CLS] text [SEP] (max 128 tokens) and is pooled over real tokens only; pairs are bi-encoded into
[u, v, |u-v|, u*v]. The head (multinomial logistic regression; least squares for STS-B) sees
features standardised with train statistics and is fitted by full-batch L-BFGS; its L2 strength
is chosen on a held-out 10% of TRAIN, then it is refitted on all of train. The dev split is used
once, for the reported number. `weighted` and `attention` poolers are trained with the head by the
same protocol; the L2 grid is extended (10x a step) while the choice sits on its edge. Numbers
are percent: mean over probe seeds, bootstrap 95% CI over dev examples (stats.py).
Results: <results>/<task>-<pool>.json with the settings that made it (lib/provenance.py), its dev
predictions per seed in <task>-<pool>.npz (for analyze.py's paired tests), and summary.md; the
features (features.py) cached in <results>/cache/, keyed by weights, texts, pooling, device and
dtype.
"""
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from features import (MAX_LEN, POOLS, TRAINED_POOLS, Source, build_parts, featurize, fixed_part,
                      open_source, train_subset, vectors)
from lib import glue, markdown, provenance, stats
from lib.cli import UserError, atomic_write, parse_flags, run_cli
from lib.download import data_dir


@dataclass
class ProbeConfig:
    task: tuple[str, ...] = ("sst2",)       # sst2 mrpc qqp mnli cola stsb, or all
    ckpt: str = "out/hybrid-tiny/ckpt.pt"   # a checkpoint, or random[:<seed>] | majority | bow
    random_like: str = ""                   # --ckpt=random: copy this checkpoint's architecture
                                            # and tokenizer (default: the preset's)
    pool: tuple[str, ...] = ("mean",)       # mean max weighted attention, or all
    encoder: str = "online"                 # online | target (the EMA copy: hybrid, jepa runs)
    preset: str = "tiny"                    # architecture of --ckpt=random (train.py's presets)
    seeds: int = 1                          # probe seeds: held-out split and pooler init
    max_train: int = 0                      # use a seeded subset of this many train examples
    pooler_cap: int = 20_000                # default max_train of trained poolers: token states
    l2_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
    l2_extend: int = 3                      # 10x steps beyond the grid when it chooses an edge
    heldout: float = 0.1                    # fraction of train that chooses the L2 strength
    max_iter: int = 200                     # L-BFGS iterations per fit
    bow_vocab: int = 10_000                 # bag-of-words baseline: the K most frequent tokens
    bootstrap: int = 1000                   # resamples of dev examples for the 95% CI
    batch_size: int = 128                   # sequences per encoder forward
    device: str = ""                        # cpu | cuda; empty = cuda when available
    out: str = ""                           # results folder; empty = <ckpt folder>/probe
    json: bool = False                      # print one JSON object per result instead of a line


BOOTSTRAP_SEED = 0      # the same resamples for every model: CIs of two models are paired


# ----------------------------------------------------------------------------- metrics

def metric_specs(task: str, pool: str = "mean") -> list:
    """(name, dev split, output, function) of every reported number; MNLI gets one per dev split.
    STS-B adds the cos(u, v) Spearman of the pooled vectors, no head: zero-shot for mean and max
    pooling, but a trained pooler was fitted on STS-B's train labels, so there it is named
    cos_spearman_trained_pooler."""
    splits = glue.TASKS[task].dev_splits
    specs = [(m if len(splits) == 1 else f"{m}_{s.removeprefix('dev_')}", s, "pred",
              stats.METRIC_FNS[m]) for s in splits for m in glue.TASKS[task].metrics]
    cos = "cos_spearman_trained_pooler" if pool in TRAINED_POOLS else "cos_spearman"
    return specs + ([(cos, "dev", "cos", stats.spearman)] if task == "stsb" else [])


def summarize(task: str, pool: str, outputs: list[dict], gold: dict, resamples: int):
    """Mean over seeds of each metric, per-seed values, and a percentile bootstrap 95% CI over
    dev examples in which each resample averages the metric over the seeds."""
    idx = {s: stats.resample_indices(len(g), resamples, [BOOTSTRAP_SEED, i])
           for i, (s, g) in enumerate(gold.items())}
    metrics, ci, per_seed = {}, {}, {}
    for name, split, key, fn in metric_specs(task, pool):
        if key not in outputs[0][split]:
            continue  # the majority baseline has no vectors, hence no cosine
        preds = [o[split][key] for o in outputs]
        per_seed[name] = [round(100 * float(fn(p, gold[split])), 4) for p in preds]
        metrics[name] = round(float(np.mean(per_seed[name])), 4)
        boots = 100 * stats.seed_mean(fn, preds, gold[split], idx[split])
        ci[name] = [round(v, 4) for v in stats.percentile_ci(boots)]
    return metrics, ci, per_seed


# ----------------------------------------------------------------------------- the probe

def moments(X):
    """Per-feature mean and std; the standardisation statistics of the fit rows."""
    if X.is_sparse:  # E[x^2] - mu^2: counts are small, no cancellation to fear
        mu = torch.sparse.sum(X, 0).to_dense() / X.shape[0]
        var = torch.sparse.sum(X * X, 0).to_dense() / X.shape[0] - mu * mu
    else:
        mu, var = X.mean(0), X.var(0, unbiased=False)
    return mu, var.clamp_min(1e-10).sqrt()


def head(X, p: dict):
    """The linear layer on standardised X, with the standardisation folded into the weights:
    one matmul per step, and sparse X stays sparse."""
    return X @ (p["W"] / p["sd"][:, None]) - (p["mu"] / p["sd"]) @ p["W"] + p["b"]


def init_param(pool: str, part: dict, seed: int):
    """A pooler near 0 is near mean pooling; the seed only breaks the tie."""
    g = torch.Generator().manual_seed(seed)
    return 0.02 * torch.randn(MAX_LEN if pool == "weighted" else part["d"], generator=g)


def fit(part: dict, y: np.ndarray, rows, l2: float, pool: str, num_labels: int, seed: int,
        max_iter: int, init=None) -> dict:
    """One fit on train rows: mean cross-entropy (squared error on the standardised score for
    regression) + l2 * ||W||^2, by full-batch L-BFGS, jointly with the pooler if it is trained.
    The pooler (MAX_LEN or d numbers) is not penalised: its units are not the head's, and a
    strong head penalty would pin it to mean pooling. With a trained pooler the standardisation
    statistics are recomputed from the pooled fit rows at every step, so they are part of the
    function being optimised (like full-batch BatchNorm)."""
    if init is None:
        C = max(num_labels, 1)
        init = dict(W=torch.zeros(part["dim"], C), b=torch.zeros(C),
                    param=init_param(pool, part, seed) if pool in TRAINED_POOLS else None)
    W, b = init["W"].clone().requires_grad_(), init["b"].clone().requires_grad_()
    param = None if init["param"] is None else init["param"].clone().requires_grad_()
    params = [W, b] + ([param] if param is not None else [])
    y_mean, y_std = (y[rows].mean(), y[rows].std() or 1.0) if num_labels == 0 else (0.0, 1.0)
    target = torch.as_tensor((y[rows] - y_mean) / y_std if num_labels == 0 else y[rows])
    target = target.float() if num_labels == 0 else target.long()
    rows = torch.as_tensor(rows)
    opt = torch.optim.LBFGS(params, lr=1, max_iter=max_iter, history_size=10,
                            tolerance_grad=1e-6, tolerance_change=1e-9,
                            line_search_fn="strong_wolfe")

    def inputs():
        X = featurize(part, pool, param).index_select(0, rows)
        return (X,) + moments(X)

    frozen = None
    if param is None:  # fixed vectors: stored column-major once, because the weight gradient
        X, mu, sd = inputs()  # X^T @ G of a row-major 60k x 256 X is 4x slower on CPU
        frozen = (X if X.is_sparse else X.t().contiguous().t(), mu, sd)

    def closure():
        opt.zero_grad()
        X, mu, sd = frozen or inputs()
        out = head(X, dict(W=W, b=b, mu=mu, sd=sd))
        loss = F.mse_loss(out[:, 0], target) if num_labels == 0 else F.cross_entropy(out, target)
        loss = loss + l2 * W.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        _, mu, sd = frozen or inputs()
    return dict(W=W.detach(), b=b.detach(), mu=mu.detach(), sd=sd.detach(), pool=pool, l2=l2,
                param=None if param is None else param.detach(), y_mean=y_mean, y_std=y_std,
                num_labels=num_labels)


@torch.no_grad()
def predict(probe: dict, part: dict) -> np.ndarray:
    out = head(featurize(part, probe["pool"], probe["param"]), probe)
    if probe["num_labels"] == 0:
        return (out[:, 0] * probe["y_std"] + probe["y_mean"]).numpy()
    return out.argmax(1).numpy()


def select_and_fit(part: dict, y: np.ndarray, task: str, pool: str, seed: int,
                   cfg: ProbeConfig):
    """Choose the L2 strength on a seeded held-out share of TRAIN by the task's first metric,
    then refit on all of train with it -> (probe, held-out score); probe["l2_tried"] lists the
    strengths tried.

    A trained pooler is fitted jointly with the head once, on the non-held-out rows, at the L2
    the held-out rows choose for its initial (near-mean) pooling; it is then frozen and the head
    alone goes through the same selection. Joint L-BFGS steps cost ~50x a head step (they pool
    every token state), so the whole L2 path is run on fixed vectors only."""
    perm = np.random.default_rng(seed).permutation(len(y))
    n_held = max(1, round(cfg.heldout * len(y)))
    held, rest = np.sort(perm[:n_held]), np.sort(perm[n_held:])
    num_labels = glue.TASKS[task].num_labels
    if pool in TRAINED_POOLS:
        start = init_param(pool, part, seed)
        l2 = l2_path(fixed_part(*vectors(part, pool, start)), y, held, rest, task, seed, cfg)[0]
        param = fit(part, y, rest, l2["l2"], pool, num_labels, seed, cfg.max_iter)["param"]
        probe, score = select_and_fit(fixed_part(*vectors(part, pool, param)), y, task, "mean",
                                      seed, cfg)
        return dict(probe, pool=pool, param=param), score
    best, score, tried = l2_path(part, y, held, rest, task, seed, cfg)
    probe = fit(part, y, np.arange(len(y)), best["l2"], pool, num_labels, seed, cfg.max_iter,
                init=best)
    return dict(probe, l2_tried=tried), score


def l2_path(part: dict, y, held, rest, task: str, seed: int, cfg: ProbeConfig):
    """Fits on `rest` from the strongest L2 to the weakest, each starting where the previous one
    ended (a regularisation path: far fewer L-BFGS steps) -> (best fit on `held`, its score,
    every strength tried); a tie keeps the stronger, simpler one. While the best is the
    strongest or the weakest tried, the path goes on 10x beyond it (at most cfg.l2_extend
    times), so that the choice is interior wherever that many steps find it."""
    num_labels, score_fn = glue.TASKS[task].num_labels, stats.METRIC_FNS[glue.TASKS[task].metrics[0]]
    tried = {}  # l2 -> (fit, held-out score)

    def step(l2, init):
        probe = fit(part, y, rest, l2, "mean", num_labels, seed, cfg.max_iter, init=init)
        tried[l2] = (probe, float(score_fn(predict(probe, part)[held], y[held])))
        return probe

    def best():
        return max(tried, key=lambda l2: (tried[l2][1], l2))

    probe = None
    for l2 in sorted(set(cfg.l2_grid), reverse=True):
        probe = step(l2, probe)
    for _ in range(cfg.l2_extend):
        b = best()
        if b == max(tried) and b > 0:
            step(b * 10, tried[b][0])
        elif b == min(tried) and b > 0:
            step(b / 10, tried[b][0])
        else:
            break
    return *tried[best()], sorted(tried)


def cosine(u, v) -> np.ndarray:
    """Row-wise cos(u, v) of dense or sparse (bag-of-words) vectors."""
    def dot(x, z):
        return torch.sparse.sum(x * z, 1).to_dense() if x.is_sparse else (x * z).sum(1)
    return (dot(u, v) / (dot(u, u) * dot(v, v)).sqrt().clamp_min(1e-12)).numpy()


# ----------------------------------------------------------------------------- settings
# A result is reused (by analyze.py and the study) only when every setting that made it matches.

NOT_SETTINGS = ("task", "pool", "ckpt", "random_like", "out", "json", "device")  # identity,
# or in Source (its key)
BASELINE_IGNORES = ("encoder", "preset", "pooler_cap", "batch_size")  # no encoder, no pooler


def settings(cfg: ProbeConfig, source: Source, task: str, pool: str, splits: dict) -> dict:
    """Everything a result of (task, pool) depends on: the probe's flags, the weights (checkpoint
    hash and encoder, or the random init's recipe), device and dtype, the data (a hash of every
    split's examples), the code."""
    skip = NOT_SETTINGS + (() if source.kind == "encoder" else BASELINE_IGNORES)
    flags = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in skip}
    return json.loads(json.dumps(dict(
        task=task, pool=pool, weights=source.key, device=source.device, dtype=source.dtype,
        flags=flags, data={s: provenance.content_hash(e) for s, e in splits.items()},
        code=provenance.code_version(__file__))))  # tuples -> lists


def result_path(source: Source, task: str, pool: str) -> Path:
    return source.results / f"{task}-{pool if source.kind == 'encoder' else source.kind}.json"


# ----------------------------------------------------------------------------- one task

def labels(examples) -> np.ndarray:
    return np.array([e.label for e in examples])


def load_splits(task: str) -> dict:
    """The task's train and dev splits, checked: no empty split, no label outside the task's set."""
    t, splits = glue.TASKS[task], glue.glue_task(task)
    for split, examples in splits.items():
        y = labels(examples)
        bad = ~np.isfinite(y) if t.num_labels == 0 else ~np.isin(y, range(t.num_labels))
        what = "no examples" if not len(y) else f"label {y[bad][0]:g}" if bad.any() else ""
        if what:
            raise UserError(f"{task} {split}: {what} in {data_dir() / 'glue' / t.folder}; "
                            "restore the official file (or delete it to download it again)")
    return splits


def probe_task(cfg: ProbeConfig, source: Source, task: str, pool: str, splits=None) -> dict:
    """Probe one (task, pooling) with cfg.seeds seeds -> the result dict written as JSON."""
    t0, t = time.time(), glue.TASKS[task]
    splits = splits or load_splits(task)
    train, cap = train_subset(cfg, pool, splits["train"])
    y, gold = labels(train), {s: labels(splits[s]) for s in t.dev_splits}
    outputs = []
    extra = dict(l2=[], l2_tried=[], l2_on_edge=[], heldout_score=[], l2_grid=list(cfg.l2_grid))
    if source.kind == "majority":
        value = y.mean() if t.num_labels == 0 else np.bincount(y.astype(int)).argmax()
        outputs.append({s: {"pred": np.full(len(g), value)} for s, g in gold.items()})
        extra = dict(note="constant prediction: correlations are undefined, reported as 0"
                     if t.num_labels == 0 else "the train majority class for every example")
    else:
        if source.kind == "bow":
            extra["note"] = (f"log(1 + count) of the {cfg.bow_vocab:,} most frequent train "
                             "tokens; pairs [a, b, |a-b|, a*b]")
        parts = build_parts(cfg, source, task, {s: splits[s] for s in ("train", *gold)}, pool)
        for seed in range(cfg.seeds):
            probe, score = select_and_fit(parts["train"], y, task, pool, seed, cfg)
            outputs.append({s: {"pred": predict(probe, parts[s])} for s in gold})
            if task == "stsb":
                with torch.no_grad():
                    u, v = vectors(parts["dev"], pool, probe["param"])
                outputs[-1]["dev"]["cos"] = cosine(u, v)
            extra["l2"].append(probe["l2"])
            extra["l2_tried"].append(probe["l2_tried"])
            extra["l2_on_edge"].append(probe["l2"] in (min(probe["l2_tried"]),
                                                       max(probe["l2_tried"])))
            extra["heldout_score"].append(round(100 * score, 4))
    metrics, ci, per_seed = summarize(task, pool, outputs, gold, cfg.bootstrap)
    predictions = {s: {k: np.stack([o[s][k] for o in outputs]) for k in outputs[0][s]}
                   for s in gold}
    return dict(task=task, pool="-" if source.kind != "encoder" else pool, ckpt=source.name,
                encoder=cfg.encoder if source.kind == "encoder" else "-", metrics=metrics, ci=ci,
                per_seed=per_seed, n_train=len(train), n_dev=sum(len(g) for g in gold.values()),
                dev_sizes={s: len(g) for s, g in gold.items()}, n_train_full=len(splits["train"]),
                max_train=cap, seeds=list(range(len(outputs))), **extra, unit="percent",
                ckpt_key=source.key, settings=settings(cfg, source, task, pool, splits),
                seconds=round(time.time() - t0, 2), predictions=predictions)


def pooled(pcfg, source, task: str, pool: str, splits: dict) -> tuple:
    """Sentence vectors for analysis: ({split: (a, b or None)} float64 pooled vectors of the train
    subset and the dev split, the train examples). A trained pooler is the probe's own seed-0 one,
    fitted on train by the probe's protocol, and applied to both splits."""
    dev_split = glue.TASKS[task].dev_splits[0]
    train, _ = train_subset(pcfg, pool, splits["train"])
    parts = build_parts(pcfg, source, task, {"train": splits["train"],
                                               dev_split: splits[dev_split]}, pool)
    param = None
    if pool in TRAINED_POOLS:
        param = select_and_fit(parts["train"], labels(train), task, pool, 0, pcfg)[0]["param"]
    with torch.no_grad():
        vecs = {s: vectors(part, pool, param) for s, part in parts.items()}
    return {s: tuple(None if v is None else v.numpy().astype(np.float64) for v in uv)
            for s, uv in vecs.items()}, train


# ----------------------------------------------------------------------------- reports and CLI

def write_summary(folder: Path):
    """summary.md regenerated from every result JSON in the folder: one table per task."""
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    atomic_write(folder / "summary.md",
                 lambda f: f.write(markdown.probe_summary(results, glue.TASKS, POOLS)), mode="w")


def check_names(cfg: ProbeConfig):
    tasks = list(glue.TASKS) if "all" in cfg.task else list(cfg.task)
    pools = list(POOLS) if "all" in cfg.pool else list(cfg.pool)
    for kind, names, valid in (("task", tasks, list(glue.TASKS)), ("pool", pools, list(POOLS))):
        bad = [n for n in names if n not in valid]
        if bad or not names:
            raise UserError(f"--{kind}={','.join(bad)}: expected one or more of "
                            f"{', '.join(valid)} or all (comma-separated)")
    if cfg.seeds < 1 or cfg.bootstrap < 1 or cfg.max_train < 0 or cfg.max_iter < 1 \
            or not 0 < cfg.heldout < 1 or not cfg.l2_grid or min(cfg.l2_grid) < 0:
        raise UserError("--seeds, --bootstrap and --max_iter must be >= 1, --max_train >= 0, "
                        "0 < --heldout < 1, --l2_grid non-negative numbers")
    return tasks, pools


def probe_and_save(cfg: ProbeConfig, source: Source, task: str, pool: str, splits) -> dict:
    """Probe one (task, pooling), save it (JSON, predictions, summary.md), print its line."""
    r = provenance.save_result(probe_task(cfg, source, task, pool, splits),
                      result_path(source, task, pool))
    write_summary(source.results)
    print(json.dumps(r) if cfg.json else markdown.probe_line(r), flush=True)
    return dict(r, file=str(result_path(source, task, pool)))


def run_probe(cfg: ProbeConfig, reuse: bool = False, source: Source | None = None,
              loaded: dict | None = None):
    """Every (task, pooling) of cfg -> (results, {task: why it was skipped}); each result is
    printed and saved as it completes, and summary.md is regenerated. reuse: keep a saved
    result made with exactly these settings (see `reusable`), and say why any other is redone.
    source, loaded ({task: load_splits(task)}): what the caller has open already."""
    tasks, pools = check_names(cfg)
    source = source or open_source(cfg)
    results, missing, probed = [], {}, False
    for task in tasks:
        try:
            splits = (loaded or {}).get(task) or load_splits(task)
        except UserError as e:
            missing[task] = str(e)
            continue
        for pool in pools if source.kind == "encoder" else ["-"]:
            path = result_path(source, task, pool)
            r, why = (provenance.reusable(path, settings(cfg, source, task, pool, splits)) if reuse
                      else (None, ""))
            if r is None and reuse and why != "no result yet":
                print(f"probe: {path} is not reused: {why}; probing again", file=sys.stderr)
            results.append(r or probe_and_save(cfg, source, task, pool, splits))
            probed = probed or r is None
    if probed:
        print(f"results: {source.results / 'summary.md'}", file=sys.stderr)
    return results, missing


def main(argv):
    cfg, _ = parse_flags(argv, ProbeConfig())
    _, missing = run_probe(cfg)
    if missing:
        raise UserError(f"{len(missing)} task(s) not probed: "
                        + "; ".join(f"{t}: {why}" for t, why in missing.items()))
    return 0


if __name__ == "__main__":
    run_cli(main)
