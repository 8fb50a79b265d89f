"""Fixtures for probe tests: a tiny WordPiece tokenizer, a tiny checkpoint in the project's format
and GLUE files in the official layouts (SST-2, STS-B, MRPC, CoLA) under <root>/glue/."""
import dataclasses
import random

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

import data
import model

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FILLER = ["the", "a", "movie", "film", "plot", "actor", "story", "was", "is", "very", "quite",
          "long", "short", "music", "scene", "end", "cat", "dog", "runs", "eats", "red", "blue",
          "man", "woman", "plays", "guitar", "on", "stage", "with", "friends", "."]
WORDS = FILLER + ["good", "bad"]
STSB_HEADER = ("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\t"
               "sentence2\tscore")
MRPC_HEADER = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String"
MNLI_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
               "sentence1_parse\tsentence2_parse\tsentence1\tsentence2")
MNLI_LABELS = ("entailment", "neutral", "contradiction")


def make_tokenizer() -> Tokenizer:
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


def save_checkpoint(path, tok=None, mode="hybrid", seed=0, d_model=32):
    """A randomly initialised tiny PredictReconstruct saved like train.py saves checkpoints."""
    tok = tok or make_tokenizer()
    cfg = model.ModelConfig(vocab_size=tok.get_vocab_size(), seq_len=128, d_model=d_model,
                        n_layers=2, n_heads=4, pred_dim=16, pred_depth=1, mode=mode)
    torch.manual_seed(seed)
    net = model.PredictReconstruct(cfg)
    torch.save(dict(format=model.CKPT_FORMAT, config=dict(mode=mode),
                    model_config=dataclasses.asdict(cfg), model=net.state_dict(),
                    tokenizer=tok.to_str(), step=0), path)
    return path


def bert_random_like(path):
    """A checkpoint for --random_like: random weights of a d128 L2 encoder over the mirror's
    bert-base-uncased vocab (the tiny preset's wordpiece-8192 is trained on wikitext-103, which
    the mirror lacks, and preset small's d512 L6 encoder is slow to run on real GLUE)."""
    return save_checkpoint(path, data.load_tokenizer("bert-base-uncased"), mode="mlm",
                           d_model=128)


def sentence(rng, n=None):
    return " ".join(rng.choice(FILLER) for _ in range(n or rng.randint(3, 8)))


def sst2_rows(rng, n):
    """One word decides the label: 'good' -> 1, 'bad' -> 0, at a random place."""
    rows = []
    for _ in range(n):
        label = rng.random() < 0.6
        words = sentence(rng).split()
        words.insert(rng.randint(0, len(words)), "good" if label else "bad")
        rows.append((" ".join(words) + " ", int(label)))
    return rows


def stsb_rows(rng, n):
    """Sentence pairs scored by word overlap, in [0, 5]."""
    rows = []
    for _ in range(n):
        a = sentence(rng, 6).split()
        keep = rng.randint(0, 6)
        b = a[:keep] + sentence(rng, 6 - keep).split()
        rows.append((" ".join(a), " ".join(b), 5.0 * keep / 6))
    return rows


def mrpc_rows(rng, n):
    """Paraphrase = the same words with one replaced; otherwise an unrelated sentence."""
    rows = []
    for _ in range(n):
        a = sentence(rng, 7).split()
        label = int(rng.random() < 0.65)
        b = a[:3] + [rng.choice(FILLER)] + a[4:] if label else sentence(rng, 7).split()
        rows.append((label, " ".join(a), " ".join(b)))
    return rows


def write_glue(root, n_train=60, n_dev=24, seed=0, flip_dev=False, tasks=("sst2", "stsb", "mrpc")):
    """GLUE files in the official formats; flip_dev inverts the dev labels (and dev scores)."""
    rng = random.Random(seed)
    glue = root / "glue"
    if "sst2" in tasks:
        (glue / "SST-2").mkdir(parents=True)
        for split, n in (("train", n_train), ("dev", n_dev)):
            rows = sst2_rows(rng, n)
            if split == "dev" and flip_dev:
                rows = [(t, 1 - y) for t, y in rows]
            (glue / "SST-2" / f"{split}.tsv").write_text(
                "sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    if "stsb" in tasks:
        (glue / "STS-B").mkdir(parents=True)
        for split, n in (("train", n_train), ("dev", n_dev)):
            rows = stsb_rows(rng, n)
            if split == "dev" and flip_dev:
                rows = [(a, b, 5.0 - s) for a, b, s in rows]
            (glue / "STS-B" / f"{split}.tsv").write_text(STSB_HEADER + "\n" + "".join(
                f"{i}\tmain-captions\tMSRvid\t2012test\t{i:04d}\tnone\tnone\t{a}\t{b}\t{s:.3f}\n"
                for i, (a, b, s) in enumerate(rows)))
    if "mrpc" in tasks:
        (glue / "MRPC").mkdir(parents=True)
        for split, n in (("train", n_train), ("dev", n_dev)):
            rows = mrpc_rows(rng, n)
            if split == "dev" and flip_dev:
                rows = [(1 - y, a, b) for y, a, b in rows]
            (glue / "MRPC" / f"{split}.tsv").write_text(MRPC_HEADER + "\n" + "".join(
                f"{y}\t{1000 + i}\t{2000 + i}\t{a}\t{b}\n" for i, (y, a, b) in enumerate(rows)),
                encoding="utf-8")
    if "mnli" in tasks:  # train has label1 + gold_label, dev five annotator labels + gold_label
        (glue / "MNLI").mkdir(parents=True)
        for split, n, votes in (("train", n_train, 1), ("dev_matched", n_dev, 5),
                                ("dev_mismatched", n_dev, 5)):
            rows = []
            for i in range(n):
                a, label = sentence(rng, 6), rng.randrange(3)
                b = (a if label == 0 else sentence(rng, 6)) + (" bad" if label == 2 else "")
                parses = "\t".join(["(x)"] * 4)
                rows.append(f"{i}\t{i}\t{i}n\tfiction\t{parses}\t{a}\t{b}\t"
                            + "\t".join([MNLI_LABELS[label]] * (votes + 1)) + "\n")
            labels = "\t".join(f"label{k + 1}" for k in range(votes))
            (glue / "MNLI" / f"{split}.tsv").write_text(
                f"{MNLI_HEADER}\t{labels}\tgold_label\n" + "".join(rows))
    return root
