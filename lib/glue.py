"""The GLUE tasks: their files (downloaded on first use, MRPC rebuilt from the MSR corpus) read
into Examples, and every per-task fact the probes and the analysis use (pair task, number of
labels, dev splits, metrics, the headline metric, which pairs are positive)."""
import csv
import dataclasses
import typing
from collections import Counter
from pathlib import Path

import numpy as np

from lib.cli import UserError, atomic_write
from lib.download import data_dir, download, fetch_archive


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
    metrics: tuple[str, ...]  # reported on each dev split; the first chooses the probe's L2
    primary: str  # the headline number: a key of the probe result's metrics
    positive: typing.Callable | None = None  # pair tasks: label -> is a true pair (alignment)
    dev_splits: tuple[str, ...] = ("dev",)


TASKS = {t.name: t for t in (
    Task("sst2", "SST-2", False, 2, ("acc",), "acc"),
    Task("mrpc", "MRPC", True, 2, ("f1", "acc"), "f1", lambda y: y == 1),  # paraphrase
    Task("qqp", "QQP", True, 2, ("f1", "acc"), "f1", lambda y: y == 1),  # duplicate
    Task("mnli", "MNLI", True, 3, ("acc",), "acc_matched", lambda y: y == 0,  # entailed
         ("dev_matched", "dev_mismatched")),
    Task("cola", "CoLA", False, 2, ("mcc",), "mcc"),
    Task("stsb", "STS-B", True, 0, ("pearson", "spearman"), "spearman", lambda y: y >= 4))}
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


def glue_summary(name: str) -> dict:
    splits = {}
    for split, examples in glue_task(name).items():
        y = [e.label for e in examples]
        splits[split] = {"n": len(y), **({"labels": dict(sorted(Counter(y).items()))}
                                         if TASKS[name].num_labels else
                                         {"mean": round(float(np.mean(y)), 4), "min": min(y),
                                          "max": max(y)})}
    return {"task": name, "splits": splits}
