"""Everything before the model: tokenizers, corpora and the packed token rows a batch is drawn from.

Downloads and DATA_DIR are in lib/download.py, the GLUE tasks in lib/glue.py; the two maskers
(MLM corruption, JEPA spans) in masks.py.
"""
import dataclasses
import hashlib
import itertools
import json
import os
import re
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from lib.cli import UserError, atomic_write, parse_flags, run_cli
from lib.download import data_dir, download, exclusive, fetch_archive, progress
from lib.glue import glue_summary

# ----------------------------------------------------------------------------- tokenizers

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
VOCAB_URL = "https://huggingface.co/bert-base-uncased/resolve/main/vocab.txt"
VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
BERT_SPECIAL_IDS = dict(pad=0, unk=100, cls=101, sep=102, mask=103)  # its special_ids()


def _bert_pipeline(model: models.WordPiece) -> Tokenizer:
    """BERT's uncased pipeline, token for token as Google's tokenization.py. The library's
    BertNormalizer alone differs in three ways, patched here: it also deletes private-use and
    unassigned characters (Google only Cc/Cf), lowercases without Python's final-sigma rule
    ("ΟΔΟΣ" -> "οδος"), and its CJK ranges miss U+2B820-2B91F."""
    tok, cased, skip = Tokenizer(model), r"[\p{Cased}&&\P{Case_Ignorable}]", r"\p{Case_Ignorable}*"
    tok.normalizer = normalizers.Sequence([
        normalizers.Replace(Regex(r"[\x00\x{FFFD}\p{Cc}\p{Cf}&&[^\t\n\r]]"), ""),
        normalizers.Replace(Regex(rf"(?<={cased}{skip})Σ(?!{skip}{cased})"), "ς"),
        normalizers.BertNormalizer(clean_text=False, strip_accents=True, lowercase=True)])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.BertPreTokenizer(),
        pre_tokenizers.Split(Regex(r"[\x{2B820}-\x{2B91F}]"), "isolated")])
    tok.decoder = decoders.WordPiece()
    return tok


# Vocabularies this code trained, shipped with the project as vocab/<corpus>-wordpiece-N.json.
# WordPiece training is not deterministic (huggingface/tokenizers#1794: two trainings on the same
# text differ), so a study is reproducible from a clone only on a shipped vocabulary.
SHIPPED = Path(__file__).resolve().parent / "vocab"


def load_tokenizer(name: str, corpus: str | None = None) -> Tokenizer:
    """`bert-base-uncased` (Google's 30,522-token vocab.txt) or `wordpiece-N` (N tokens of corpus:
    the shipped vocab/<corpus>-wordpiece-N.json where there is one, else trained on its train
    split), kept as tokenizer.json in the corpus's token folder. Neither adds [CLS]/[SEP]."""
    if name == "bert-base-uncased":
        vocab = data_dir() / "tokenizers/bert-base-uncased/vocab.txt"
        return _bert_pipeline(models.WordPiece.from_file(
            str(download(VOCAB_URL, vocab, VOCAB_SHA256)), unk_token="[UNK]",
            max_input_chars_per_word=100))
    if not (m := re.fullmatch(r"wordpiece-(\d+)", name)):
        raise UserError(f"unknown tokenizer {name!r}; use bert-base-uncased or wordpiece-N "
                        "(e.g. wordpiece-8000)")
    if corpus is None:
        raise UserError(f"tokenizer {name} is trained on a corpus: pass one (--corpus=...)")
    path, shipped = data_dir() / "tokens" / _slug(corpus) / name / "tokenizer.json", None
    if corpus in CORPORA and (SHIPPED / f"{corpus}-{name}.json").is_file():
        shipped = SHIPPED / f"{corpus}-{name}.json"
    if not path.exists() and shipped is None:
        _corpus_files(corpus, "train")  # an unknown corpus fails here, before any folder is made
    with exclusive(path):  # training is not deterministic: it must happen once, then be shared
        if not path.exists() and shipped is not None:
            atomic_write(path, lambda f: f.write(shipped.read_bytes()))
        elif not path.exists():
            tok = _bert_pipeline(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
            # Specials first, so [PAD] = 0 as in BERT. Characters rarer than the 1000 most common
            # become [UNK] rather than take two slots each (x and ##x) in a small vocabulary.
            trainer = trainers.WordPieceTrainer(vocab_size=int(m[1]), special_tokens=list(SPECIALS),
                                                limit_alphabet=1000, show_progress=False)
            lines = _lines(corpus, "train", {}, f"training {name} on {corpus}")
            tok.train_from_iterator((line for line in lines if line is not None), trainer)
            atomic_write(path, lambda f: f.write(tok.to_str().encode()))
    if shipped is not None and path.read_bytes() != shipped.read_bytes():
        raise UserError(f"{path} is another {name} than the one the project ships "
                        f"(vocab/{shipped.name}); its tokens in {path.parent} were made with it: "
                        "delete that folder and re-run, to train on the shipped one")
    return Tokenizer.from_file(str(path))


def tokenizer_sha256(tok: Tokenizer) -> str:
    """Which vocabulary, exactly: runs, prepared tokens and probe caches record it."""
    return hashlib.sha256(tok.to_str().encode()).hexdigest()


def special_ids(tok: Tokenizer) -> dict:
    return {k: tok.token_to_id(s) for k, s in zip(("pad", "unk", "cls", "sep", "mask"), SPECIALS)}


# ----------------------------------------------------------------------------- corpora

CORPORA = ("wikitext-103", "wikitext-2", "enwiki")  # or the path of a local text file or folder
WIKITEXT_SHA256 = {  # the raw (untokenised) zips at https://wikitext.smerity.com/
    "wikitext-103": "91c00ae287f0d699e18605c84afc9e45c192bc6b7797ff8837e5474655a33794",
    "wikitext-2": "ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11"}
ENWIKI = "corpus/enwiki-20150515-wikiextractor"
VAL_EVERY = 100  # corpora without a validation file hold out documents 0, 100, 200, ... (1%)
BATCH_LINES = 1000  # lines per encode_batch call: bounded memory, every core busy


def _slug(corpus: str) -> str:
    if corpus in CORPORA:
        return corpus
    path = Path(corpus).expanduser().resolve()  # name for humans, hash of the full path for unicity
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.name)
    return f"{name}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"


def corpus_dir(corpus: str, tokenizer: str, seq_len: int) -> Path:
    return data_dir() / "tokens" / _slug(corpus) / tokenizer / f"seq{seq_len}"


def local_corpora() -> list[str]:
    """The named corpora whose text (or prepared tokens) is already in DATA_DIR: usable offline."""
    root = data_dir()
    here = [c for c in WIKITEXT_SHA256 if (root / f"{c}-raw" / "wiki.train.raw").is_file()]
    here += ["enwiki"] if (root / ENWIKI).is_dir() else []
    return [c for c in CORPORA if c in here or (root / "tokens" / c).is_dir()]


def _corpus_files(corpus: str, split: str) -> tuple[list[Path], str]:
    """The files of a split, and their layout: wikitext | wikiextractor | blocks."""
    if corpus in WIKITEXT_SHA256:
        zip_name, raw = f"{corpus}-raw-v1.zip", f"{corpus}-raw/wiki.{{}}.raw"
        root = fetch_archive(f"https://wikitext.smerity.com/{zip_name}", zip_name,
                             WIKITEXT_SHA256[corpus], [raw.format("train"), raw.format("valid")])
        return [root / raw.format("train" if split == "train" else "valid")], "wikitext"
    path, layout = Path(corpus).expanduser(), "blocks"
    if corpus == "enwiki":
        path, layout = data_dir() / ENWIKI, "wikiextractor"
        if not path.is_dir():
            raise UserError(f"enwiki cannot be downloaded: put the WikiExtractor output folders "
                            f"(AA/wiki_00, ...) at {path}, or set DATA_DIR to a folder with them")
    elif not path.exists():
        raise UserError(f"unknown corpus {corpus!r}: use one of {', '.join(CORPORA)} "
                        "or the path of a text file or folder")
    if path.is_file():
        return [path], layout
    return sorted(f for f in path.rglob("*") if f.is_file()
                  and not any(p.startswith(".") for p in f.relative_to(path).parts)), layout


def _lines(corpus: str, split: str, stats: dict, what: str):
    """Yield the split's non-blank lines, stripped, and None before each document. A document is,
    for wikitext, an article from its ` = Title = ` line (kept); for wikiextractor, a <doc> block
    (tag lines dropped, title line kept); for local text, a run of non-blank lines. Counts
    documents, bytes and UTF-8 replacement characters into stats."""
    files, layout = _corpus_files(corpus, split)
    total, read, index, keep = sum(f.stat().st_size for f in files), 0, -1, False
    stats.update(documents=0, bytes=0, decode_errors=0)
    for path in files:
        new_doc = True  # no document spans two files
        with open(path, "rb") as f:
            for raw in f:
                if (read + len(raw)) >> 23 != read >> 23:  # every 8 MB
                    progress(what, read + len(raw), total)
                read += len(raw)
                try:
                    text, bad = raw.decode().strip(), 0
                except UnicodeDecodeError:
                    text = raw.decode(errors="replace").strip()
                    bad = text.count("\ufffd") - raw.count("\ufffd".encode())
                if layout == "wikiextractor" and (text.startswith("<doc ") or text == "</doc>"):
                    new_doc |= text.startswith("<doc ")
                    continue
                if not text:
                    new_doc |= layout == "blocks"
                    continue
                new_doc |= layout == "wikitext" and re.fullmatch(r"= [^=].* =", text) is not None
                if new_doc:
                    index, new_doc = index + 1, False
                    keep = layout == "wikitext" or (index % VAL_EVERY == 0) == (split == "val")
                    if keep:
                        stats["documents"] += 1
                        yield None
                if keep:
                    stats["bytes"] += len(raw)
                    stats["decode_errors"] += bad
                    yield text
    progress(what, read, total)
    print(file=sys.stderr)


def _pack(lines, tok: Tokenizer, seq_len: int, path: Path, dtype: str) -> tuple[int, int]:
    """Tokenise lines in batches, join documents with one [SEP], cut the stream into chunks of
    seq_len-2 and append each to path as a row [CLS] chunk [SEP]; the last partial chunk is
    dropped (no padding). Returns (rows, content tokens)."""
    ids, width, lines = special_ids(tok), seq_len - 2, iter(lines)
    stream, rows, tokens, sep_due = [], 0, 0, False
    with open(path, "wb") as f:
        while batch := list(itertools.islice(lines, BATCH_LINES)):
            texts = [line for line in batch if line is not None]
            encoded = iter(tok.encode_batch_fast(texts, add_special_tokens=False))
            for line in batch:
                if line is None:  # a new document: [SEP] before its first token, if any came before
                    sep_due = tokens > 0
                    continue
                line_ids = next(encoded).ids
                if line_ids and sep_due:
                    stream.append(ids["sep"])
                    sep_due = False
                stream += line_ids
                tokens += len(line_ids)
            if n := len(stream) // width:
                block = np.empty((n, seq_len), dtype)
                block[:, 0], block[:, -1] = ids["cls"], ids["sep"]
                block[:, 1:-1] = np.reshape(stream[:n * width], (n, width))
                f.write(block.tobytes())
                rows += n
                del stream[:n * width]
    return rows, tokens


def prepare_corpus(corpus: str, tokenizer: str, seq_len: int = 128) -> dict:
    """Tokenise the train and val splits into packed rows, once: a folder with meta.json (written
    last) is ready and only read; one without is rebuilt. Returns meta.json's summary."""
    out = corpus_dir(corpus, tokenizer, seq_len)
    if not (out / "meta.json").exists():
        if seq_len < 8:
            raise UserError(f"--seq_len={seq_len}: must be at least 8 ([CLS], [SEP] and room "
                            "for masked spans)")
        _corpus_files(corpus, "train")  # an unknown corpus fails here, before any folder is made
        with exclusive(out):
            if not (out / "meta.json").exists():  # else another process built it while we waited
                _build_corpus(corpus, tokenizer, seq_len, out)
    return json.loads((out / "meta.json").read_text())


def _build_corpus(corpus: str, tokenizer: str, seq_len: int, out: Path):
    start, tok = time.time(), load_tokenizer(tokenizer, corpus)
    vocab_size, splits = tok.get_vocab_size(), {}
    dtype = "uint16" if vocab_size <= 1 << 16 else "uint32"
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        t0, stats, part = time.time(), {}, out / f"{split}.bin.part"
        try:
            lines = _lines(corpus, split, stats, f"tokenising {corpus} {split}")
            rows, tokens = _pack(lines, tok, seq_len, part, dtype)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, out / f"{split}.bin")
        splits[split] = dict(rows=rows, tokens=tokens, **stats, seconds=round(time.time() - t0, 1))
    meta = dict(corpus=corpus, tokenizer=tokenizer, vocab_size=vocab_size, seq_len=seq_len,
                tokenizer_sha256=tokenizer_sha256(tok), dtype=dtype,
                **{k: sum(s[k] for s in splits.values()) for k in splits["val"]})
    meta.update(seconds=round(time.time() - start, 1), **splits)
    atomic_write(out / "meta.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))


def load_training(tokenizer: str, corpus: str, seq_len: int, mode: str, corpus_given: bool):
    """train.py's tokenizer and packed training rows. When the preset's corpus cannot be had
    (offline) but another one is in DATA_DIR, the error says the command that works."""
    try:
        return load_tokenizer(tokenizer, corpus), load_rows(corpus, tokenizer, seq_len, "train")
    except UserError as e:
        here = [c for c in local_corpora() if c != corpus]
        if corpus_given or not here or corpus not in str(e):
            raise
        raise UserError(f"{e}; or train on a corpus that is in {data_dir()}: make pretrain "
                        f"MODE={mode} CORPUS={here[0]} (train.py --corpus={here[0]})") from None


def load_rows(corpus: str, tokenizer: str, seq_len: int, split: str) -> np.ndarray:
    """The split's rows, a read-only memmap (N, seq_len) of uint16 (uint32 past 65,536 tokens);
    prepares the corpus on first use."""
    if split not in ("train", "val"):
        raise UserError(f"unknown split {split!r}; use train or val")
    meta, out = prepare_corpus(corpus, tokenizer, seq_len), corpus_dir(corpus, tokenizer, seq_len)
    redo = (f"delete {out} and re-run `python data.py corpus --corpus={corpus} "
            f"--tokenizer={tokenizer} --seq_len={seq_len}`")
    tok = load_tokenizer(tokenizer, corpus)
    if meta["vocab_size"] != (vocab_size := tok.get_vocab_size()):
        raise UserError(f"{out} was built with {meta['vocab_size']} tokens but {tokenizer} "
                        f"has {vocab_size}; {redo}")
    if meta.get("tokenizer_sha256", tok_sha := tokenizer_sha256(tok)) != tok_sha:
        raise UserError(f"{out} was built with another {tokenizer} (sha256 "
                        f"{meta['tokenizer_sha256'][:12]}...) than the one loaded now "
                        f"({tok_sha[:12]}...); {redo}")
    path, rows, dtype = out / f"{split}.bin", meta[split]["rows"], np.dtype(meta["dtype"])
    if (size := path.stat().st_size if path.exists() else 0) != rows * seq_len * dtype.itemsize:
        raise UserError(f"{path} has {size} bytes, not {rows} rows x {seq_len} x {dtype.itemsize}:"
                        f" it is truncated or stale; {redo}")
    if rows == 0:  # np.memmap refuses empty files
        return np.zeros((0, seq_len), dtype)
    return np.memmap(path, dtype, "r", shape=(rows, seq_len))


@lru_cache(maxsize=2)  # a batch may straddle two epochs: keep both orders at hand
def _epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """Read-only: the cached order is shared by every step of its epoch."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    order.flags.writeable = False
    return order


def batch_rows(rows: np.ndarray, step: int, batch_size: int, seed: int,
               lo: int = 0, hi: int | None = None) -> np.ndarray:
    """Rows lo:hi (default all) of batch number `step`, (hi - lo, seq_len) int64, of an endless
    sample order: epoch e visits the rows in the order default_rng([seed, e]).permutation(N), and
    batches run on across epoch boundaries. A pure function of (seed, batch_size, step): resuming =
    the saved step; a process of a DDP run reads only its own rows lo:hi."""
    if (n := len(rows)) < batch_size:
        raise UserError(f"only {n} rows for a batch of {batch_size}: use a bigger corpus or a "
                        "smaller --batch_size")
    epoch, start = divmod(step * batch_size, n)
    idx = _epoch_order(seed, epoch, n)[start:start + batch_size]
    if len(idx) < batch_size:
        idx = np.concatenate([idx, _epoch_order(seed, epoch + 1, n)[:batch_size - len(idx)]])
    return np.asarray(rows[idx[lo:hi]], dtype=np.int64)


# ----------------------------------------------------------------------------- command line

@dataclasses.dataclass
class CorpusArgs:
    corpus: str = "wikitext-103"
    tokenizer: str = "bert-base-uncased"
    seq_len: int = 128


@dataclasses.dataclass
class GlueArgs:
    task: str = "sst2"


def main(argv: list[str]):
    """python data.py corpus --corpus=NAME --tokenizer=NAME [--seq_len=128] | glue --task=NAME;
    prints one line of JSON on stdout (progress goes to stderr)."""
    commands = {"corpus": CorpusArgs, "glue": GlueArgs}
    if not argv or argv[0] not in commands:
        got = f"unknown command {argv[0]!r}; " if argv else ""
        raise UserError(f"{got}usage: python data.py {{{','.join(commands)}}} --key=value ...")
    args, _ = parse_flags(argv[1:], commands[argv[0]]())
    print(json.dumps(prepare_corpus(args.corpus, args.tokenizer, args.seq_len)
                     if argv[0] == "corpus" else glue_summary(args.task)))


if __name__ == "__main__":
    run_cli(main)
