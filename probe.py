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
same protocol. Numbers are percent: mean over probe seeds, bootstrap 95% CI over dev examples.
Results: <results>/<task>-<pool>.json and summary.md; features cached in <results>/cache/.
"""
import hashlib
import itertools
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from tokenizers import Tokenizer
from torch.nn.utils.rnn import pad_sequence

import data
import model as M
from data import UserError


@dataclass
class ProbeConfig:
    task: tuple[str, ...] = ("sst2",)       # sst2 mrpc qqp mnli cola stsb, or all
    ckpt: str = "out/hybrid-tiny/ckpt.pt"   # a checkpoint, or random | majority | bow
    pool: tuple[str, ...] = ("mean",)       # mean max weighted attention, or all
    encoder: str = "online"                 # online | target (the EMA copy: hybrid, jepa runs)
    preset: str = "tiny"                    # architecture of --ckpt=random (train.py's presets)
    seeds: int = 1                          # probe seeds: held-out split and pooler init
    max_train: int = 0                      # use a seeded subset of this many train examples
    pooler_cap: int = 20_000                # default max_train of trained poolers: token states
    l2_grid: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
    heldout: float = 0.1                    # fraction of train that chooses the L2 strength
    max_iter: int = 200                     # L-BFGS iterations per fit
    bow_vocab: int = 10_000                 # bag-of-words baseline: the K most frequent tokens
    bootstrap: int = 1000                   # resamples of dev examples for the 95% CI
    batch_size: int = 128                   # sequences per encoder forward
    device: str = ""                        # cpu | cuda; empty = cuda when available
    out: str = ""                           # results folder; empty = <ckpt folder>/probe
    json: bool = False                      # print one JSON object per result instead of a line


POOLS = ("mean", "max", "weighted", "attention")
TRAINED_POOLS = ("weighted", "attention")
BASELINES = ("majority", "bow")
MAX_LEN = 128           # tokens per sentence, [CLS] and [SEP] included
RANDOM_INIT_SEED = 0    # --ckpt=random: the weights train.py would start from with --seed=0
SUBSET_SEED = 0         # one train subset for every seed and pooling, so they share the cache
BOOTSTRAP_SEED = 0      # the same resamples for every model: CIs of two models are paired
METRICS = {"sst2": ("acc",), "mrpc": ("f1", "acc"), "qqp": ("f1", "acc"), "mnli": ("acc",),
           "cola": ("mcc",), "stsb": ("pearson", "spearman")}


# ----------------------------------------------------------------------------- metrics
# Fractions in, fractions out; vectorised over leading axes so one call scores every bootstrap
# resample. An undefined value (a constant prediction) is 0, as sklearn reports it.

def _safe_div(num, den):
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0.0)[()]


def accuracy(pred, gold):
    return (np.asarray(pred) == np.asarray(gold)).mean(-1)


def f1(pred, gold):
    """F1 of the positive class (label 1), as GLUE reports it for MRPC and QQP."""
    p, g = np.asarray(pred) == 1, np.asarray(gold) == 1
    tp, fp, fn = (p & g).sum(-1), (p & ~g).sum(-1), (~p & g).sum(-1)
    return _safe_div(2.0 * tp, 2.0 * tp + fp + fn)


def mcc(pred, gold):
    """Matthews correlation of binary labels (CoLA)."""
    p, g = np.asarray(pred) == 1, np.asarray(gold) == 1
    tp, tn = (p & g).sum(-1) * 1.0, (~p & ~g).sum(-1) * 1.0
    fp, fn = (p & ~g).sum(-1) * 1.0, (~p & g).sum(-1) * 1.0
    return _safe_div(tp * tn - fp * fn, np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))


def pearson(x, y):
    x, y = np.asarray(x, float), np.asarray(y, float)
    constant = (x.max(-1) == x.min(-1)) | (y.max(-1) == y.min(-1))  # rounding would not give 0
    x, y = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    den = np.sqrt((x * x).sum(-1) * (y * y).sum(-1))
    return _safe_div((x * y).sum(-1), np.where(constant, 0.0, den))


def spearman(x, y):
    return pearson(rankdata(x, axis=-1), rankdata(y, axis=-1))


METRIC_FNS = {"acc": accuracy, "f1": f1, "mcc": mcc, "pearson": pearson, "spearman": spearman}


def metric_specs(task: str) -> list:
    """(name, dev split, output, function) of every reported number; MNLI gets one per dev split.
    STS-B adds the zero-shot cos(u, v) Spearman: no head, just the pooled vectors."""
    splits = data.TASKS[task].dev_splits
    specs = [(m if len(splits) == 1 else f"{m}_{s.removeprefix('dev_')}", s, "pred", METRIC_FNS[m])
             for s in splits for m in METRICS[task]]
    return specs + ([("cos_spearman", "dev", "cos", spearman)] if task == "stsb" else [])


def summarize(task: str, outputs: list[dict], gold: dict, resamples: int):
    """Mean over seeds of each metric, per-seed values, and a percentile bootstrap 95% CI over
    dev examples in which each resample averages the metric over the seeds."""
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    idx = {s: rng.integers(0, len(g), (resamples, len(g))) for s, g in gold.items()}
    metrics, ci, per_seed = {}, {}, {}
    for name, split, key, fn in metric_specs(task):
        if key not in outputs[0][split]:
            continue  # the majority baseline has no vectors, hence no cosine
        i, g = idx[split], gold[split]
        per_seed[name] = [round(100 * float(fn(o[split][key], g)), 4) for o in outputs]
        boots = 100 * np.mean([fn(o[split][key][i], g[i]) for o in outputs], axis=0)
        metrics[name] = round(float(np.mean(per_seed[name])), 4)
        ci[name] = [round(float(v), 4) for v in np.percentile(boots, [2.5, 97.5])]
    return metrics, ci, per_seed


# ----------------------------------------------------------------------------- feature sources

@dataclass
class Source:
    """Where features come from: an encoder (a checkpoint or random weights) or a baseline."""
    name: str                   # --ckpt as given
    kind: str                   # encoder | majority | bow
    results: Path
    encoder: torch.nn.Module | None = None
    tok: Tokenizer | None = None
    key: str = ""               # identifies the weights in cache keys
    tok_hash: str = ""
    device: str = "cpu"
    max_len: int = MAX_LEN      # fewer if the encoder has fewer position embeddings


def open_source(cfg: ProbeConfig) -> Source:
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") or device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device={device}: expected cpu, or cuda on a machine that has CUDA")
    if cfg.ckpt in BASELINES:  # counts need a tokenizer: the one a random encoder uses
        tok = data.load_tokenizer("bert-base-uncased") if cfg.ckpt == "bow" else None
        return Source(cfg.ckpt, cfg.ckpt, Path(cfg.out or "out/baselines/probe"), tok=tok)
    if cfg.ckpt == "random":
        from train import PRESETS
        if cfg.preset not in PRESETS:
            raise UserError(f"--preset={cfg.preset}: expected one of {', '.join(PRESETS)}")
        if cfg.encoder != "online":
            raise UserError("--encoder=target: a random-weight encoder has no EMA copy; "
                            "use --encoder=online with --ckpt=random")
        tok = data.load_tokenizer("bert-base-uncased")
        sizes = {k: PRESETS[cfg.preset][k]
                 for k in ("d_model", "n_layers", "n_heads", "pred_dim", "pred_depth")}
        mcfg = M.ModelConfig(vocab_size=tok.get_vocab_size(), mode="mlm", **sizes)
        with torch.random.fork_rng():  # the project's init (std 0.02, depth-scaled residuals)
            torch.manual_seed(RANDOM_INIT_SEED)
            encoder = M.PredictReconstruct(mcfg).encoder
        key = f"random-{cfg.preset}-{RANDOM_INIT_SEED}"
        results = Path(cfg.out or f"out/random-{cfg.preset}/probe")
    else:
        encoder, tok, _ = M.load_encoder(cfg.ckpt, cfg.encoder)
        with open(cfg.ckpt, "rb") as f:
            key = f"{hashlib.file_digest(f, 'sha256').hexdigest()[:16]}-{cfg.encoder}"
        results = Path(cfg.out or Path(cfg.ckpt).parent / "probe")
    return Source(cfg.ckpt, "encoder", results, encoder.eval().requires_grad_(False).to(device),
                  tok, key, hashlib.sha256(tok.to_str().encode()).hexdigest()[:16], device,
                  min(MAX_LEN, encoder.pos_emb.num_embeddings))


def content_ids(tok, texts: list[str], max_len: int = MAX_LEN) -> list[list[int]]:
    """Token ids without specials, cut so that [CLS] ids [SEP] fits in max_len."""
    return [e.ids[: max_len - 2] for e in tok.encode_batch(texts, add_special_tokens=False)]


# ----------------------------------------------------------------------------- encoding

def pool_tokens(kind: str, h, mask, param=None):
    """Token states h (B, T, d) -> (B, d) over real tokens only (mask (B, T), True = real), so
    padding never changes a pooled vector. weighted: param = (MAX_LEN,) one learned logit per
    position; attention: param = (d,) one learned query, scaled dot product. Both are a softmax
    over the real tokens and equal mean pooling when param = 0."""
    if kind == "mean":
        m = mask[..., None].to(h.dtype)
        return (h * m).sum(1) / m.sum(1)
    if kind == "max":
        return h.masked_fill(~mask[..., None], float("-inf")).amax(1)
    scores = (param[: h.shape[1]].expand(mask.shape) if kind == "weighted"
              else h @ param / math.sqrt(h.shape[-1]))
    return torch.einsum("bt,btd->bd", scores.masked_fill(~mask, float("-inf")).softmax(-1), h)


@torch.inference_mode()
def encode(source: Source, ids: list[list[int]], kind: str, batch_size: int):
    """Content ids -> pooled vectors (N, d) float32, or for kind='tokens' the real-token states
    of all sequences concatenated ((sum of lengths, d) float16, to halve RAM) with the lengths.
    Batches hold sequences of similar length, so there is little padding to compute."""
    sp = data.special_ids(source.tok)
    seqs = [[sp["cls"]] + s + [sp["sep"]] for s in ids]
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # longest first: peak RAM early
    out = [None] * len(seqs)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=source.device == "cuda")
    for lo in range(0, len(order), batch_size):
        batch = order[lo:lo + batch_size]
        x = pad_sequence([torch.tensor(seqs[i]) for i in batch], True, sp["pad"])  # (B, T)
        mask = torch.arange(x.shape[1]) < torch.tensor([len(seqs[i]) for i in batch])[:, None]
        with autocast:
            h = source.encoder(x.to(source.device), pad_mask=mask.to(source.device)).float().cpu()
        pooled = h.half() if kind == "tokens" else pool_tokens(kind, h, mask)
        for r, i in enumerate(batch):
            out[i] = pooled[r, :len(seqs[i])] if kind == "tokens" else pooled[r]
    if kind == "tokens":
        return torch.cat(out), torch.tensor([len(s) for s in seqs])
    return torch.stack(out)


def load_cache(path: Path) -> dict | None:
    """A cache file, or None when there is none or it is unreadable (cut short by a crash of an
    older version, a bad disk): then it is encoded again and replaced. Writers replace files
    atomically, so a concurrent probe never sees one half-written."""
    if not path.exists():
        return None
    try:
        c = torch.load(path, weights_only=True)
        if isinstance(c, dict) and {"tokenizer", "a", "b"} <= set(c):
            return c
    except Exception:  # torch raises RuntimeError, EOFError or pickle errors for a broken file
        pass
    print(f"warning: {path} is unreadable; encoding again", file=sys.stderr)
    return None


def cached(cfg, source: Source, task: str, split: str, pool: str, texts_a, texts_b):
    """Features (a, b) of one split, encoded once per (weights, task, split, pooling)."""
    key = hashlib.sha256(f"{source.key}|{task}|{split}|{pool}".encode()).hexdigest()[:16]
    path = source.results / "cache" / f"{task}-{split}-{pool}-{key}.pt"
    c = load_cache(path)
    if c is not None:
        if c["tokenizer"] != source.tok_hash:
            raise UserError(f"{path} holds features made with another tokenizer ({c['tokenizer']}"
                            f") than {source.name}'s ({source.tok_hash}); delete the folder "
                            f"{path.parent} and run again")
        return c["a"], c["b"]
    t0 = time.time()
    n = len(texts_a) * (2 if texts_b else 1)
    print(f"{task} {split}: encoding {n:,} sequences ({pool})", end="", file=sys.stderr, flush=True)
    a = encode(source, content_ids(source.tok, texts_a, source.max_len), pool, cfg.batch_size)
    b = texts_b and encode(source, content_ids(source.tok, texts_b, source.max_len), pool,
                           cfg.batch_size)
    print(f" {time.time() - t0:.1f}s", file=sys.stderr)
    data.atomic_write(path, lambda f: torch.save(dict(tokenizer=source.tok_hash, a=a, b=b), f))
    return a, b


# ----------------------------------------------------------------------------- probe inputs
# A "part" is one split ready for the head: fixed vectors (a, b, and X = their pair features) or,
# for trained poolers, token states in length-sorted padded chunks (a, b) pooled at every step.

def pair_features(u, v):
    """Bi-encoder pair features (SentenceBERT / InferSent): [u, v, |u-v|, u*v]."""
    return torch.cat([u, v, (u - v).abs(), u * v], dim=1)


def fixed_part(a, b=None) -> dict:
    X = a if b is None else pair_features(a, b)
    return dict(a=a, b=b, X=X, dim=X.shape[1])


def padded_chunks(states, lengths, chunk: int = 256) -> list:
    """Flat token states -> [(h (B, T, d) float32, mask (B, T), example rows)] by length."""
    pieces = states.split(lengths.tolist())
    order = torch.argsort(lengths, descending=True, stable=True)
    return [(pad_sequence([pieces[i].float() for i in rows], True), torch.arange(
             lengths[rows[0]]) < lengths[rows, None], rows) for rows in order.split(chunk)]


def token_part(a, b=None) -> dict:
    d = a[0].shape[1]
    return dict(a=padded_chunks(*a), b=None if b is None else padded_chunks(*b), d=d,
                dim=d * (1 if b is None else 4))


def flat(seqs) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64)


def bow_parts(tok, texts: dict, k: int) -> dict:
    """Bag-of-words baseline: log(1 + count) of the k most frequent train tokens, sparse; pairs
    get the same layout as encoders, [a, b, |a-b|, a*b] (a*b: the words both sentences share)."""
    ids = {s: [None if t is None else content_ids(tok, t) for t in ab] for s, ab in texts.items()}
    counts = np.bincount(np.concatenate([flat(seqs) for seqs in ids["train"] if seqs is not None]),
                         minlength=tok.get_vocab_size())
    vocab = np.argsort(-counts, kind="stable")[:k]
    vocab = vocab[counts[vocab] > 0]
    column = np.full(tok.get_vocab_size(), -1)
    column[vocab] = np.arange(len(vocab))

    def bag(seqs):
        rows = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
        cols = column[flat(seqs)]
        keep = cols >= 0
        return torch.sparse_coo_tensor(  # coalesce() sums the repeats of a token into its count
            torch.tensor(np.stack([rows[keep], cols[keep]])), torch.ones(int(keep.sum())),
            (len(seqs), len(vocab)), check_invariants=True).coalesce().log1p()

    return {s: fixed_part(bag(a), None if b is None else bag(b)) for s, (a, b) in ids.items()}


def vectors(part: dict, kind: str, param):
    """The pooled sentence vectors (u, v or None) of a part."""
    if "X" in part:  # already pooled
        return part["a"], part["b"]

    def pooled(chunks):  # (N, d) in example order
        out = torch.cat([pool_tokens(kind, h, mask, param) for h, mask, _ in chunks])
        return out[torch.argsort(torch.cat([rows for _, _, rows in chunks]))]

    return pooled(part["a"]), None if part["b"] is None else pooled(part["b"])


def featurize(part: dict, pool: str, param):
    if "X" in part:
        return part["X"]
    u, v = vectors(part, pool, param)
    return u if v is None else pair_features(u, v)


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
    then refit on all of train with it -> (probe, held-out score).

    A trained pooler is fitted jointly with the head once, on the non-held-out rows, at the L2
    the held-out rows choose for its initial (near-mean) pooling; it is then frozen and the head
    alone goes through the same selection. Joint L-BFGS steps cost ~50x a head step (they pool
    every token state), so the whole L2 path is run on fixed vectors only."""
    perm = np.random.default_rng(seed).permutation(len(y))
    n_held = max(1, round(cfg.heldout * len(y)))
    held, rest = np.sort(perm[:n_held]), np.sort(perm[n_held:])
    num_labels = data.TASKS[task].num_labels
    if pool in TRAINED_POOLS:
        start = init_param(pool, part, seed)
        l2 = l2_path(fixed_part(*vectors(part, pool, start)), y, held, rest, task, seed, cfg)[0]
        param = fit(part, y, rest, l2["l2"], pool, num_labels, seed, cfg.max_iter)["param"]
        probe, score = select_and_fit(fixed_part(*vectors(part, pool, param)), y, task, "mean",
                                      seed, cfg)
        return dict(probe, pool=pool, param=param), score
    best, score = l2_path(part, y, held, rest, task, seed, cfg)
    return fit(part, y, np.arange(len(y)), best["l2"], pool, num_labels, seed, cfg.max_iter,
               init=best), score


def l2_path(part: dict, y, held, rest, task: str, seed: int, cfg: ProbeConfig):
    """Fits on `rest` from the strongest L2 to the weakest, each starting where the previous one
    ended (a regularisation path: far fewer L-BFGS steps) -> (best fit on `held`, its score);
    a tie keeps the stronger, simpler one."""
    num_labels, score_fn = data.TASKS[task].num_labels, METRIC_FNS[METRICS[task][0]]
    probe, best, score = None, None, -math.inf
    for l2 in sorted(cfg.l2_grid, reverse=True):
        probe = fit(part, y, rest, l2, "mean", num_labels, seed, cfg.max_iter, init=probe)
        s = float(score_fn(predict(probe, part)[held], y[held]))
        if s > score:
            best, score = probe, s
    return best, score


def cosine(u, v) -> np.ndarray:
    """Row-wise cos(u, v) of dense or sparse (bag-of-words) vectors."""
    def dot(x, z):
        return torch.sparse.sum(x * z, 1).to_dense() if x.is_sparse else (x * z).sum(1)
    return (dot(u, v) / (dot(u, u) * dot(v, v)).sqrt().clamp_min(1e-12)).numpy()


# ----------------------------------------------------------------------------- one task

def labels(examples) -> np.ndarray:
    return np.array([e.label for e in examples])


def load_splits(task: str) -> dict:
    """The task's train and dev splits, checked: no empty split, no label outside the task's set."""
    t, splits = data.TASKS[task], data.glue_task(task)
    for split, examples in splits.items():
        y = labels(examples)
        bad = ~np.isfinite(y) if t.num_labels == 0 else ~np.isin(y, range(t.num_labels))
        what = "no examples" if not len(y) else f"label {y[bad][0]:g}" if bad.any() else ""
        if what:
            raise UserError(f"{task} {split}: {what} in {data.data_dir() / 'glue' / t.folder}; "
                            "restore the official file (or delete it to download it again)")
    return splits


def train_subset(cfg: ProbeConfig, pool: str, train: list):
    """(examples, cap or None): --max_train, else for trained poolers --pooler_cap, because their
    token states are held in memory."""
    cap = cfg.max_train or (cfg.pooler_cap if pool in TRAINED_POOLS else 0)
    if not cap or cap >= len(train):
        return train, None
    keep = np.sort(np.random.default_rng(SUBSET_SEED).permutation(len(train))[:cap])
    return [train[i] for i in keep], cap


def build_parts(cfg, source: Source, task: str, splits: dict, pool: str, cap) -> dict:
    pair = data.TASKS[task].pair
    texts = {s: ([e.text_a for e in ex], [e.text_b for e in ex] if pair else None)
             for s, ex in splits.items()}
    if source.kind == "bow":
        return bow_parts(source.tok, texts, cfg.bow_vocab)
    kind = "tokens" if pool in TRAINED_POOLS else pool
    parts = {}
    for s, (a, b) in texts.items():
        a, b = cached(cfg, source, task, f"train{cap}" if s == "train" and cap else s, kind, a, b)
        parts[s] = token_part(a, b) if kind == "tokens" else fixed_part(a, b)
    return parts


def probe_task(cfg: ProbeConfig, source: Source, task: str, pool: str, splits=None) -> dict:
    """Probe one (task, pooling) with cfg.seeds seeds -> the result dict written as JSON."""
    t0, t = time.time(), data.TASKS[task]
    splits = splits or load_splits(task)
    train, cap = train_subset(cfg, pool, splits["train"])
    y, gold = labels(train), {s: labels(splits[s]) for s in t.dev_splits}
    outputs, extra = [], dict(l2=[], heldout_score=[], l2_grid=list(cfg.l2_grid))
    if source.kind == "majority":
        value = y.mean() if t.num_labels == 0 else np.bincount(y.astype(int)).argmax()
        outputs.append({s: {"pred": np.full(len(g), value)} for s, g in gold.items()})
        extra = dict(note="constant prediction: correlations are undefined, reported as 0"
                     if t.num_labels == 0 else "the train majority class for every example")
    else:
        if source.kind == "bow":
            extra["note"] = (f"log(1 + count) of the {cfg.bow_vocab:,} most frequent train "
                             "tokens; pairs [a, b, |a-b|, a*b]")
        parts = build_parts(cfg, source, task, {"train": train, **{s: splits[s] for s in gold}},
                            pool, cap)
        for seed in range(cfg.seeds):
            probe, score = select_and_fit(parts["train"], y, task, pool, seed, cfg)
            outputs.append({s: {"pred": predict(probe, parts[s])} for s in gold})
            if task == "stsb":
                with torch.no_grad():
                    u, v = vectors(parts["dev"], pool, probe["param"])
                outputs[-1]["dev"]["cos"] = cosine(u, v)
            extra["l2"].append(probe["l2"])
            extra["heldout_score"].append(round(100 * score, 4))
    metrics, ci, per_seed = summarize(task, outputs, gold, cfg.bootstrap)
    return dict(task=task, pool="-" if source.kind != "encoder" else pool, ckpt=source.name,
                encoder=cfg.encoder if source.kind == "encoder" else "-", metrics=metrics, ci=ci,
                per_seed=per_seed, n_train=len(train), n_dev=sum(len(g) for g in gold.values()),
                dev_sizes={s: len(g) for s, g in gold.items()}, n_train_full=len(splits["train"]),
                max_train=cap, seeds=list(range(len(outputs))), **extra, unit="percent",
                ckpt_key=source.key, seconds=round(time.time() - t0, 2))


def embed(ckpt: str, task: str, split: str, pool: str, encoder: str = "online",
          preset: str = "tiny", seed: int = 0, max_train: int | None = None) -> dict:
    """Pooled sentence vectors of a split for analysis: dict(a (N, d), b (N, d) or None, labels).
    weighted/attention: the pooler trained on the task's train split at `seed` by the probe's
    protocol, then applied. Features come from (and go to) the probe's cache."""
    cfg = ProbeConfig(task=(task,), ckpt=ckpt, pool=(pool,), encoder=encoder, preset=preset,
                      max_train=max_train or 0)
    check_names(cfg)
    if ckpt in BASELINES:
        raise UserError(f"embed: {ckpt} has no sentence vectors; pass a checkpoint or random")
    source, splits = open_source(cfg), load_splits(task)
    if split not in splits:
        raise UserError(f"{task} has no split {split!r}; splits: {', '.join(splits)}")
    train, cap = train_subset(cfg, pool, splits["train"])
    wanted = {split: train if split == "train" else splits[split]}
    parts = build_parts(cfg, source, task, dict(wanted, train=train) if pool in TRAINED_POOLS
                        else wanted, pool, cap)
    param = None
    if pool in TRAINED_POOLS:
        param = select_and_fit(parts["train"], labels(train), task, pool, seed, cfg)[0]["param"]
    with torch.no_grad():
        u, v = vectors(parts[split], pool, param)
    return dict(a=u.numpy(), b=None if v is None else v.numpy(), labels=labels(wanted[split]))


# ----------------------------------------------------------------------------- reports and CLI

def cell(r: dict, name: str) -> str:
    return f"{r['metrics'][name]:.2f} [{r['ci'][name][0]:.2f}, {r['ci'][name][1]:.2f}]"


def format_line(r: dict) -> str:
    scores = "  ".join(f"{name} {cell(r, name)}" for name in r["metrics"])
    cap = f" (cap {r['max_train']:,})" if r["max_train"] else ""
    return (f"{r['task']:<5} {r['pool']:<9} {scores}  n_train {r['n_train']:,}{cap}  "
            f"n_dev {r['n_dev']:,}  {r['seconds']:.1f}s")


def write_summary(folder: Path):
    """summary.md regenerated from every result JSON in the folder: one table per task."""
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    lines = ["# Probe results", "",
             "Frozen-encoder linear probes (probe.py). Percent; mean over probe seeds, [95% "
             "bootstrap CI over dev examples]. Generated from the JSON files in this folder.", ""]
    for task in [t for t in data.TASKS if any(r["task"] == t for r in results)]:
        rows = sorted((r for r in results if r["task"] == task),
                      key=lambda r: (r["ckpt"], (POOLS + ("-",)).index(r["pool"])))
        names = list(dict.fromkeys(n for r in rows for n in r["metrics"]))
        lines += [f"## {task}", "", "| ckpt | encoder | pool | " + " | ".join(names)
                  + " | n_train | n_dev | seeds |", "|---" * (len(names) + 6) + "|"]
        for r in rows:
            cells = [cell(r, n) if n in r["metrics"] else "-" for n in names]
            lines.append(f"| {r['ckpt']} | {r['encoder']} | {r['pool']} | " + " | ".join(cells)
                         + f" | {r['n_train']:,} | {r['n_dev']:,} | {len(r['seeds'])} |")
        lines.append("")
    data.atomic_write(folder / "summary.md", lambda f: f.write("\n".join(lines)), mode="w")


def check_names(cfg: ProbeConfig):
    tasks = list(data.TASKS) if "all" in cfg.task else list(cfg.task)
    pools = list(POOLS) if "all" in cfg.pool else list(cfg.pool)
    for kind, names, valid in (("task", tasks, list(data.TASKS)), ("pool", pools, list(POOLS))):
        bad = [n for n in names if n not in valid]
        if bad or not names:
            raise UserError(f"--{kind}={','.join(bad)}: expected one or more of "
                            f"{', '.join(valid)} or all (comma-separated)")
    if cfg.seeds < 1 or cfg.bootstrap < 1 or cfg.max_train < 0 or cfg.max_iter < 1 \
            or not 0 < cfg.heldout < 1 or not cfg.l2_grid or min(cfg.l2_grid) < 0:
        raise UserError("--seeds, --bootstrap and --max_iter must be >= 1, --max_train >= 0, "
                        "0 < --heldout < 1, --l2_grid non-negative numbers")
    return tasks, pools


def run_probe(cfg: ProbeConfig):
    """Every (task, pooling) of cfg -> (results, {task: why it was skipped}); each result is
    printed and saved as it completes, and summary.md is regenerated."""
    tasks, pools = check_names(cfg)
    source = open_source(cfg)
    results, missing = [], {}
    for task in tasks:
        try:
            splits = load_splits(task)
        except UserError as e:
            missing[task] = str(e)
            continue
        for pool in pools if source.kind == "encoder" else ["-"]:
            r = probe_task(cfg, source, task, pool, splits)
            name = f"{task}-{pool if source.kind == 'encoder' else source.kind}.json"
            data.atomic_write(source.results / name, lambda f: f.write(json.dumps(r, indent=1)),
                              mode="w")
            write_summary(source.results)
            print(json.dumps(r) if cfg.json else format_line(r), flush=True)
            results.append(r)
    print(f"results: {source.results / 'summary.md'}", file=sys.stderr)
    return results, missing


def main(argv):
    cfg, _ = data.parse_flags(argv, ProbeConfig())
    _, missing = run_probe(cfg)
    if missing:
        raise UserError(f"{len(missing)} task(s) not probed: "
                        + "; ".join(f"{t}: {why}" for t, why in missing.items()))
    return 0


if __name__ == "__main__":
    data.run_cli(main)
