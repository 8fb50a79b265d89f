"""Frozen-encoder features for the probes: where they come from (a checkpoint, random weights or
a baseline), pooling over real tokens only, encoding in length-sorted batches, the feature cache,
and the inputs of the probe's head (pair features, token states of trained poolers, bags of
words). probe.py fits the heads on them; analyze.py pools the same vectors.

Features are cached per (weights, task, split, its texts, pooling, device, dtype) in
<results>/cache/: a second run of the same probe only fits. One encoder pass per split makes every
pooling a probe run asks for (and mean and max always).
"""
import hashlib
import itertools
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.nn.utils.rnn import pad_sequence

import data
import model
from lib import glue, hardware, provenance
from lib.cli import UserError, atomic_write

BASELINES = ("majority", "bow")
MAX_LEN = 128           # tokens per sentence, [CLS] and [SEP] included
POOLS = ("mean", "max", "weighted", "attention")
TRAINED_POOLS = ("weighted", "attention")  # fitted with the head, on token states
SUBSET_SEED = 0         # one train subset for every seed and pooling, so they share the cache


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
    dtype: str = "float32"      # of the encoder's forward: bfloat16 autocast on CUDA
    max_len: int = MAX_LEN      # fewer if the encoder has fewer position embeddings


def open_source(cfg) -> Source:
    """The feature source of a probe.ProbeConfig (its ckpt, encoder, preset, device, out)."""
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") or device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device={device}: expected cpu, or cuda on a machine that has CUDA")
    if cfg.ckpt in BASELINES:  # counts need a tokenizer: the one a random encoder uses
        tok = data.load_tokenizer("bert-base-uncased") if cfg.ckpt == "bow" else None
        return Source(cfg.ckpt, cfg.ckpt, Path(cfg.out or "out/baselines/probe"), tok=tok,
                      key=cfg.ckpt, dtype="-")
    if is_random(cfg.ckpt):
        if cfg.encoder != "online":
            raise UserError("--encoder=target: a random-weight encoder has no EMA copy; "
                            "use --encoder=online with --ckpt=random")
        seed = random_seed(cfg.ckpt)
        mcfg, tok, what = random_recipe(cfg)
        with torch.random.fork_rng():  # the project's init (std 0.02, depth-scaled residuals)
            torch.manual_seed(seed)
            encoder = model.PredictReconstruct(mcfg).encoder
        arch = hashlib.sha256(f"{sorted(vars(mcfg).items())}|{tok.to_str()}".encode())
        key = f"random-{what}-{arch.hexdigest()[:12]}-{seed}"
        results = Path(cfg.out or f"out/{random_encoder(cfg.preset, seed)[1]}/probe")
    else:
        encoder, tok, _ = model.load_encoder(cfg.ckpt, cfg.encoder)
        with open(cfg.ckpt, "rb") as f:
            key = f"{hashlib.file_digest(f, 'sha256').hexdigest()[:16]}-{cfg.encoder}"
        results = Path(cfg.out or Path(cfg.ckpt).parent / "probe")
    return Source(cfg.ckpt, "encoder", results, encoder.eval().requires_grad_(False).to(device),
                  tok, key, data.tokenizer_sha256(tok)[:16], device,
                  "bfloat16" if device == "cuda" else "float32",
                  min(MAX_LEN, encoder.pos_emb.num_embeddings))


def is_random(ckpt: str) -> bool:
    return ckpt == "random" or ckpt.startswith("random:")


def random_encoder(preset: str, seed: int = 0) -> tuple[str, str]:
    """The random-weight encoder with train.py --seed=<seed>'s init: its --ckpt for probe.py, and
    its name (folder out/<name>, model name in the analysis)."""
    return ("random" if not seed else f"random:{seed}"), f"random-{preset}" + (
        f"-s{seed}" if seed else "")


def random_seed(ckpt: str) -> int:
    """--ckpt=random is the init of train.py --seed=0; random:<k> that of --seed=<k>."""
    seed = ckpt.partition(":")[2] or "0"
    if not seed.isdigit():
        raise UserError(f"--ckpt={ckpt}: expected random or random:<seed>, e.g. random:1")
    return int(seed)


def random_recipe(cfg):
    """(model config, tokenizer, name) of a random-weight encoder: those of the checkpoint
    --random_like when given (the arms it is a baseline for), else of the preset."""
    if cfg.random_like:
        ckpt = model.load_checkpoint(cfg.random_like)
        mcfg = model.ModelConfig(**dict(ckpt["model_config"], mode="mlm"))
        return mcfg, Tokenizer.from_str(ckpt["tokenizer"]), "like"
    import config  # the preset's architecture, resolved as train.py resolves it
    tcfg = config.resolve_config([f"--preset={cfg.preset}", "--mode=mlm"], cuda=False)[0]
    tok = data.load_tokenizer(tcfg.tokenizer, tcfg.corpus)
    return config.model_config(tcfg, tok.get_vocab_size()), tok, cfg.preset


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
def encode(source: Source, ids: list[list[int]], kinds, batch_size: int, token_rows=None) -> dict:
    """Content ids -> {kind: features} from one forward pass: for mean and max the pooled vectors
    (N, d) float32; for 'tokens' the real-token states of the rows token_rows (all when None),
    concatenated ((sum of lengths, d) float16, to halve RAM), with their lengths. Batches hold
    sequences of similar length, so there is little padding to compute."""
    sp = data.special_ids(source.tok)
    seqs = [[sp["cls"]] + s + [sp["sep"]] for s in ids]
    wanted = range(len(seqs)) if token_rows is None else token_rows
    keep = dict.fromkeys(wanted) if "tokens" in kinds else {}
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # longest first: peak RAM early
    pooled_kinds = [k for k in kinds if k != "tokens"]
    out = {k: [None] * len(seqs) for k in pooled_kinds}
    autocast = hardware.autocast(source.device, source.dtype)
    for lo in range(0, len(order), batch_size):
        batch = order[lo:lo + batch_size]
        x = pad_sequence([torch.tensor(seqs[i]) for i in batch], True, sp["pad"])  # (B, T)
        mask = torch.arange(x.shape[1]) < torch.tensor([len(seqs[i]) for i in batch])[:, None]
        with autocast:
            h = source.encoder(x.to(source.device), pad_mask=mask.to(source.device)).float().cpu()
        for kind in pooled_kinds:
            pooled = pool_tokens(kind, h, mask)
            for r, i in enumerate(batch):
                out[kind][i] = pooled[r]
        for r, i in enumerate(batch):
            if i in keep:
                keep[i] = h[r, :len(seqs[i])].half()
    result = {k: torch.stack(v) for k, v in out.items()}
    if "tokens" in kinds:
        result["tokens"] = (torch.cat([keep[i] for i in wanted]),
                            torch.tensor([len(seqs[i]) for i in wanted]))
    return result


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


def cache_path(source: Source, task: str, split: str, kind: str, texts_a, texts_b) -> Path:
    """One file per (weights, task, split, its texts, kind, device, dtype): bf16 CUDA features
    and fp32 CPU ones differ, so they never stand in for each other."""
    texts = provenance.content_hash([texts_a, texts_b])
    key = hashlib.sha256(f"{source.key}|{task}|{split}|{texts}|{kind}|{source.device}|"
                         f"{source.dtype}".encode()).hexdigest()[:16]
    return source.results / "cache" / f"{task}-{split}-{kind}-{key}.pt"


def split_features(cfg, source: Source, task: str, split: str, kinds, texts_a, texts_b,
                   token_rows=None, token_split: str = "") -> dict:
    """{kind: (a, b)} of one split for each of kinds (mean, max, tokens), from the cache, or from
    ONE encoder pass that makes every missing kind at once (mean and max too, they cost nothing
    more). Token states are kept for the rows token_rows only (the trained poolers' train
    subset, cached as split token_split); None = every row."""
    def subset(texts):
        return texts if texts is None or token_rows is None else [texts[i] for i in token_rows]

    def path(kind):
        if kind == "tokens":
            return cache_path(source, task, token_split or split, kind, subset(texts_a),
                              subset(texts_b))
        return cache_path(source, task, split, kind, texts_a, texts_b)

    got = {}
    for kind in kinds:
        c = load_cache(path(kind))
        if c is not None:
            if c["tokenizer"] != source.tok_hash:
                raise UserError(f"{path(kind)} holds features made with another tokenizer "
                                f"({c['tokenizer']}) than {source.name}'s ({source.tok_hash}); "
                                f"delete the folder {path(kind).parent} and run again")
            got[kind] = (c["a"], c["b"])
    missing = [k for k in kinds if k not in got]
    if not missing:
        return got
    if missing == ["tokens"] and token_rows is not None:  # the subset alone: a smaller pass
        make, texts, rows = ["tokens"], (subset(texts_a), subset(texts_b)), None
    else:
        make = list(dict.fromkeys(["mean", "max", *missing]))
        texts, rows = (texts_a, texts_b), token_rows
    t0 = time.time()
    n = len(texts[0]) * (2 if texts[1] else 1)
    print(f"{task} {split}: encoding {n:,} sequences ({', '.join(make)})", end="",
          file=sys.stderr, flush=True)
    side = [encode(source, content_ids(source.tok, t, source.max_len), make, cfg.batch_size, rows)
            if t else None for t in texts]
    print(f" {time.time() - t0:.1f}s", file=sys.stderr)
    for kind in make:
        a, b = side[0][kind], side[1] and side[1][kind]
        atomic_write(path(kind), lambda f: torch.save(dict(tokenizer=source.tok_hash, a=a,
                                                                b=b), f))
        if kind in kinds:
            got[kind] = (a, b)
    return got


def cached(cfg, source: Source, task: str, split: str, kind: str, texts_a, texts_b):
    """Features (a, b) of one kind of one split (split_features for a single kind)."""
    return split_features(cfg, source, task, split, (kind,), texts_a, texts_b)[kind]


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


# ----------------------------------------------------------------------------- the head's inputs

def subset_rows(cfg, pool: str, n: int):
    """(sorted rows, cap) of the train examples a pooling is fitted on, or (None, None) for all:
    --max_train, else for trained poolers --pooler_cap, because their token states are held in
    memory."""
    cap = cfg.max_train or (cfg.pooler_cap if pool in TRAINED_POOLS else 0)
    if not cap or cap >= n:
        return None, None
    return np.sort(np.random.default_rng(SUBSET_SEED).permutation(n)[:cap]), cap


def train_subset(cfg, pool: str, train: list):
    """(examples, cap or None) of subset_rows."""
    rows, cap = subset_rows(cfg, pool, len(train))
    return (train, None) if rows is None else ([train[i] for i in rows], cap)


def run_kinds(cfg, pool: str) -> list:
    """The feature kinds every pooling of this probe run needs (one encoder pass makes them)."""
    pools = POOLS if "all" in cfg.pool else [p for p in cfg.pool if p in POOLS]
    return list(dict.fromkeys("tokens" if p in TRAINED_POOLS else p for p in [pool, *pools]))


def build_parts(cfg, source: Source, task: str, splits: dict, pool: str) -> dict:
    """The head's inputs of every split given (train: the whole split; the pooling's subset of
    it is taken here), from features that one encoder pass per split makes for every pooling."""
    pair = glue.TASKS[task].pair
    texts = {s: ([e.text_a for e in ex], [e.text_b for e in ex] if pair else None)
             for s, ex in splits.items()}
    rows, cap = subset_rows(cfg, pool, len(splits.get("train", ())))

    def sub(t):
        return t if t is None or rows is None else [t[i] for i in rows]

    if source.kind == "bow":
        if "train" in texts:
            texts["train"] = tuple(map(sub, texts["train"]))
        return bow_parts(source.tok, texts, cfg.bow_vocab)
    kind = "tokens" if pool in TRAINED_POOLS else pool
    kinds, parts = run_kinds(cfg, pool), {}
    for s, (a, b) in texts.items():
        if s != "train":
            feats = split_features(cfg, source, task, s, kinds, a, b)
        elif cfg.max_train and cap:  # every pooling on the same subset
            feats = split_features(cfg, source, task, f"train{cap}", kinds, sub(a), sub(b))
        else:  # pooled vectors of all of train; token states of the poolers' subset only
            tok_rows, tok_cap = subset_rows(cfg, TRAINED_POOLS[0], len(a))
            feats = split_features(cfg, source, task, "train", kinds, a, b, tok_rows,
                                   f"train{tok_cap}" if tok_cap else "")
        parts[s] = token_part(*feats[kind]) if kind == "tokens" else fixed_part(*feats[kind])
    return parts
