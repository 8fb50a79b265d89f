"""Frozen-encoder features for the probes: where they come from (a checkpoint, random weights or
a baseline), pooling over real tokens only, encoding in length-sorted batches, the feature cache,
and the inputs of the probe's head (pair features, token states of trained poolers, bags of
words). probe.py fits the heads on them; analyze.py pools the same vectors.

Features are cached per (weights, task, split, its texts, pooling, device, dtype) in
<results>/cache/: a second run of the same probe only fits.
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
import model as M
import provenance as R
from data import UserError

BASELINES = ("majority", "bow")
MAX_LEN = 128           # tokens per sentence, [CLS] and [SEP] included
RANDOM_INIT_SEED = 0    # --ckpt=random: the weights train.py would start from with --seed=0


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
    if cfg.ckpt == "random":
        from config import PRESETS
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
                  "bfloat16" if device == "cuda" else "float32",
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
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=source.dtype == "bfloat16")
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
    """Features (a, b) of one split, encoded once per (weights, task, split, its texts, pooling,
    device, dtype): bf16 CUDA features and fp32 CPU ones differ, so they never stand in for
    each other."""
    texts = R.content_hash([texts_a, texts_b])
    key = hashlib.sha256(f"{source.key}|{task}|{split}|{texts}|{pool}|{source.device}|"
                         f"{source.dtype}".encode()).hexdigest()[:16]
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
