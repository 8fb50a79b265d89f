"""Everything before the model: downloads, corpora, tokenizers, packed token files, GLUE tasks.

The two maskers (MLM corruption, JEPA spans) live in masks.py; the command-line plumbing shared
by every stage (flags, user errors, atomic writes) in cli.py.
"""
import contextlib
import csv
import dataclasses
import fcntl
import hashlib
import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import time
import typing
import zipfile
import zlib
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
import requests
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from cli import UserError, atomic_write, make_folder, parse_flags, run_cli  # noqa: F401 (data.X)


# ----------------------------------------------------------------------------- paths

def data_dir() -> Path:
    """Where downloads and prepared files live: $DATA_DIR, else ~/.cache/predict-reconstruct."""
    return Path(os.environ.get("DATA_DIR") or "~/.cache/predict-reconstruct").expanduser()


# ----------------------------------------------------------------------------- downloads

RETRY_BACKOFF = 1.0  # seconds before the 2nd attempt, doubled after each failure (tests set 0)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def _exclusive(path: Path):
    """Hold a lock tied to path, so that processes preparing the same thing at once (every DDP
    rank calls load_rows) do it one after the other, and the later ones find it done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _progress(what: str, done: int, total: int):
    """A self-overwriting status line on stderr; the caller ends it with a newline."""
    pct = f" ({100 * done / total:.0f}%)" if total else ""
    print(f"\r{what}: {done / 1e6:.1f} MB{pct}", end="", file=sys.stderr, flush=True)


def download(url: str, dest: Path, sha256: str | None = None, size: int | None = None,
             retries: int = 3, timeout: float = 30.0) -> Path:
    """Fetch url to dest unless a good copy is there. Streams into dest.part, checks size and
    sha256, renames: dest is complete or absent, never half-written. Connection errors and 5xx
    are retried with backoff; other HTTP errors and bad checksums are not (same answer again)."""
    dest, why = Path(dest), "no attempt"
    if dest.exists() and (sha256 is None or _sha256(dest) == sha256):
        return dest
    stale = " (the file there now has another sha256)" if dest.exists() else ""
    part = dest.with_suffix(dest.suffix + ".part")
    try:
        for attempt in range(retries):
            time.sleep(RETRY_BACKOFF * 2 ** (attempt - 1) if attempt else 0)
            try:
                with requests.get(url, stream=True, timeout=timeout) as r:
                    why = f"HTTP {r.status_code}"
                    if r.status_code >= 500:
                        continue
                    if r.status_code != 200:
                        break
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    total = size or int(r.headers.get("Content-Length", 0))
                    h, n = hashlib.sha256(), 0
                    with open(part, "wb") as f:
                        for block in r.iter_content(1 << 20):
                            f.write(block)
                            h.update(block)
                            n += len(block)
                            _progress(f"downloading {dest.name}", n, total)
                    print(file=sys.stderr)
            except requests.RequestException as e:  # refused, reset, timed out, cut short
                why = type(e).__name__
                continue
            if size is not None and n != size:
                why = f"got {n} bytes, expected {size}"
            elif sha256 is not None and h.hexdigest() != sha256:
                why = f"sha256 mismatch: got {h.hexdigest()}"
            else:
                os.replace(part, dest)
                return dest
            break
    finally:
        part.unlink(missing_ok=True)
    check = f" (sha256 {sha256})" if sha256 else f" ({size} bytes)" if size else ""
    raise UserError(f"could not download {url} ({why}); place the file by hand at {dest}{check}"
                    f"{stale} or set DATA_DIR to a folder that has it")


def fetch_archive(url: str, zip_name: str, sha256: str, expect: list[str]) -> Path:
    """Make sure the files `expect` (paths under data_dir() in the official extracted layout,
    e.g. glue/SST-2/train.tsv) exist, else download the zip into data_dir()/downloads and
    extract it. Returns data_dir()."""
    root = data_dir()
    if all((root / p).exists() for p in expect):
        return root
    archive = download(url, root / "downloads" / zip_name, sha256)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        try:
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise UserError(f"{archive} is not a readable zip ({e}); "
                            "delete it and re-run") from None
        # The zip holds SST-2/train.tsv where we want glue/SST-2/train.tsv: find that prefix.
        parts = Path(expect[0]).parts
        prefix = next((Path(*parts[:i]) for i in range(len(parts))
                       if (tmp / Path(*parts[i:])).is_file()), None)
        for f in sorted(tmp.rglob("*")) if prefix is not None else []:
            target = root / prefix / f.relative_to(tmp)
            if f.is_file() and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, target)  # a rename per file: nobody ever sees half a file
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if missing := [p for p in expect if not (root / p).exists()]:
        raise UserError(f"{archive} has no {missing[0]}; delete the zip and re-run")
    return root


# ----------------------------------------------------------------------------- tokenizers

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
VOCAB_URL = "https://huggingface.co/bert-base-uncased/resolve/main/vocab.txt"
VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"


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


def load_tokenizer(name: str, corpus: str | None = None) -> Tokenizer:
    """`bert-base-uncased` (Google's 30,522-token vocab.txt) or `wordpiece-N` (N tokens trained on
    corpus's train split, kept as tokenizer.json in its token folder). Neither adds [CLS]/[SEP]."""
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
    path = data_dir() / "tokens" / _slug(corpus) / name / "tokenizer.json"
    if not path.exists():
        _corpus_files(corpus, "train")  # an unknown corpus fails here, before any folder is made
    with _exclusive(path):  # training is not deterministic: it must happen once, then be shared
        if not path.exists():
            tok = _bert_pipeline(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
            # Specials first, so [PAD] = 0 as in BERT. Characters rarer than the 1000 most common
            # become [UNK] rather than take two slots each (x and ##x) in a small vocabulary.
            trainer = trainers.WordPieceTrainer(vocab_size=int(m[1]), special_tokens=list(SPECIALS),
                                                limit_alphabet=1000, show_progress=False)
            lines = _lines(corpus, "train", {}, f"training {name} on {corpus}")
            tok.train_from_iterator((line for line in lines if line is not None), trainer)
            atomic_write(path, lambda f: f.write(tok.to_str().encode()))
    return Tokenizer.from_file(str(path))


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
                    _progress(what, read + len(raw), total)
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
    _progress(what, read, total)
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
        with _exclusive(out):
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
                dtype=dtype, **{k: sum(s[k] for s in splits.values()) for k in splits["val"]})
    meta.update(seconds=round(time.time() - start, 1), **splits)
    atomic_write(out / "meta.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))


def load_rows(corpus: str, tokenizer: str, seq_len: int, split: str) -> np.ndarray:
    """The split's rows, a read-only memmap (N, seq_len) of uint16 (uint32 past 65,536 tokens);
    prepares the corpus on first use."""
    if split not in ("train", "val"):
        raise UserError(f"unknown split {split!r}; use train or val")
    meta, out = prepare_corpus(corpus, tokenizer, seq_len), corpus_dir(corpus, tokenizer, seq_len)
    redo = (f"delete {out} and re-run `python data.py corpus --corpus={corpus} "
            f"--tokenizer={tokenizer} --seq_len={seq_len}`")
    if meta["vocab_size"] != (vocab_size := load_tokenizer(tokenizer, corpus).get_vocab_size()):
        raise UserError(f"{out} was built with {meta['vocab_size']} tokens but {tokenizer} "
                        f"has {vocab_size}; {redo}")
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


# ----------------------------------------------------------------------------- GLUE

class Example(typing.NamedTuple):
    text_a: str
    text_b: str | None
    label: int | float


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    folder: str  # data_dir()/glue/<folder>, as the official archives name it
    pair: bool
    num_labels: int  # 0 = regression (stsb)
    dev_splits: tuple[str, ...] = ("dev",)


TASKS = {t.name: t for t in (
    Task("sst2", "SST-2", False, 2), Task("mrpc", "MRPC", True, 2), Task("qqp", "QQP", True, 2),
    Task("mnli", "MNLI", True, 3, ("dev_matched", "dev_mismatched")),
    Task("cola", "CoLA", False, 2), Task("stsb", "STS-B", True, 0))}
GLUE_URL = "https://dl.fbaipublicfiles.com/glue/data/"
GLUE_ZIPS = {  # sha256s from HF datasets. Some copies of download_glue_data.py swap QQP and STS-B.
    "sst2": ("SST-2.zip", "d67e16fb55739c1b32cdce9877596db1c127dc322d93c082281f64057c16deaa"),
    "cola": ("CoLA.zip", "f212fcd832b8f7b435fb991f101abf89f96b933ab400603bf198960dfc32cbff"),
    "stsb": ("STS-B.zip", "e60a6393de5a8b5b9bac5020a1554b54e3691f9d600b775bd131e613ac179c85"),
    "qqp": ("QQP-clean.zip", "40e7c862c04eb26ee04b67fd900e76c45c6ba8e6d8fab4f8f1f8072a1a3fbae0"),
    "mnli": ("MNLI.zip", "e7c1d896d26ed6caf700110645df426cc2d8ebf02a5ab743d5a5c68ac1c83633")}
MRPC_RAW = {  # no GLUE zip for MRPC: train/dev are rebuilt from the MSR corpus and GLUE's dev ids
    "msr_paraphrase_train.txt": (
        "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt",
        "60a9b09084528f0673eedee2b69cb941920f0b8cd0eeccefc464a98768457f89"),
    "dev_ids.tsv": ("https://dl.fbaipublicfiles.com/glue/data/mrpc_dev_ids.tsv",
                    "971d7767d81b997fd9060ade0ec23c4fc31cbb226a55d1bd4a1bac474eb81dc7")}
COLUMNS = {  # (text_a, text_b, label): header names, or positions in CoLA, which has no header
    "sst2": ("sentence", None, "label"), "cola": (3, None, 1),
    "stsb": ("sentence1", "sentence2", "score"), "mrpc": ("#1 String", "#2 String", "Quality"),
    "qqp": ("question1", "question2", "is_duplicate"),
    "mnli": ("sentence1", "sentence2", "gold_label")}
LABELS = {"mnli": {"entailment": 0, "neutral": 1, "contradiction": 2}}  # else "0"/"1"; stsb floats


def _read_tsv(path: Path, task: Task) -> list[Example]:
    labels, examples = LABELS.get(task.name, {"0": 0, "1": 1}), []
    # QUOTE_NONE: quotes are text (some sentences hold an unbalanced "); utf-8-sig drops MRPC's BOM
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = None if task.name == "cola" else next(reader, [])
        width, cols = len(header) if header is not None else 4, COLUMNS[task.name]
        if header is not None and not set(cols) - {None} <= set(header):
            raise UserError(f"{path}: the header lacks one of {cols}; delete the file and re-run")
        a, b, y = (c if header is None or c is None else header.index(c) for c in cols)
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if len(row) != width:
                raise UserError(f"{where}: {len(row)} tab-separated columns instead of {width}; "
                                "delete the file and re-run")
            try:
                label = labels[row[y]] if task.num_labels else float(row[y])
            except (KeyError, ValueError):
                valid = ", ".join(labels) if task.num_labels else "a number"
                raise UserError(f"{where}: label {row[y]!r} is not {valid}") from None
            examples.append(Example(row[a], None if b is None else row[b], label))
    return examples


def build_mrpc(folder: Path):
    """MRPC's train.tsv and dev.tsv from msr_paraphrase_train.txt, as download_glue_data.py builds
    them: a stripped row goes to dev when its (#1 ID, #2 ID) is in dev_ids.tsv, else to train;
    both files start with the raw header line, byte-order mark included."""
    with open(folder / "dev_ids.tsv", encoding="utf-8") as f:
        dev_ids = {tuple(line.strip().split("\t")) for line in f}
    split = {"train": [], "dev": []}
    with open(folder / "msr_paraphrase_train.txt", encoding="utf-8") as f:
        header = f.readline()
        for number, line in enumerate(f, 2):
            if len(fields := line.strip().split("\t")) != 5:
                raise UserError(f"{f.name}:{number}: {len(fields)} tab-separated fields instead "
                                "of 5; delete the file and re-run")
            split["dev" if tuple(fields[1:3]) in dev_ids else "train"].append("\t".join(fields))
    for name, rows in split.items():
        atomic_write(folder / f"{name}.tsv", lambda f: f.write(
            (header + "".join(row + "\n" for row in rows)).encode()))


def glue_task(name: str) -> dict[str, list[Example]]:
    """The task's train split and official dev split(s), as Examples; downloads on first use."""
    if name not in TASKS:
        raise UserError(f"unknown GLUE task {name!r}; valid tasks: {', '.join(TASKS)}")
    task = TASKS[name]
    files = {s: f"glue/{task.folder}/{s}.tsv" for s in ("train", *task.dev_splits)}
    if name == "mrpc" and not all((data_dir() / f).exists() for f in files.values()):
        for raw, (url, sha256) in MRPC_RAW.items():
            download(url, data_dir() / "glue/MRPC" / raw, sha256)
        build_mrpc(data_dir() / "glue/MRPC")
    elif name != "mrpc":
        fetch_archive(GLUE_URL + GLUE_ZIPS[name][0], *GLUE_ZIPS[name], list(files.values()))
    return {s: _read_tsv(data_dir() / f, task) for s, f in files.items()}


# ----------------------------------------------------------------------------- command line

@dataclasses.dataclass
class CorpusArgs:
    corpus: str = "wikitext-103"
    tokenizer: str = "bert-base-uncased"
    seq_len: int = 128


@dataclasses.dataclass
class GlueArgs:
    task: str = "sst2"


def glue_summary(name: str) -> dict:
    splits = {}
    for split, examples in glue_task(name).items():
        y = [e.label for e in examples]
        splits[split] = {"n": len(y), **({"labels": dict(sorted(Counter(y).items()))}
                                         if TASKS[name].num_labels else
                                         {"mean": round(float(np.mean(y)), 4), "min": min(y),
                                          "max": max(y)})}
    return {"task": name, "splits": splits}


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
