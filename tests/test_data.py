"""data.py: GLUE parsers, the MRPC rebuild, tokenizer parity with Google's BERT, packed corpora and
the resumable batch order. Tests taking the `mirror` fixture need DATA_DIR=../shared/data."""
import os
import random
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

import data
from lib import glue
from lib.cli import UserError
from lib.download import data_dir


def write(path, text: str | bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)


def tsv(*rows) -> str:
    return "".join("\t".join(row) + "\n" for row in rows)


# ----------------------------------------------------------------------------- GLUE

MNLI_TRAIN_HEAD = ("index promptID pairID genre sentence1_binary_parse sentence2_binary_parse "
                   "sentence1_parse sentence2_parse sentence1 sentence2 label1 gold_label").split()
MNLI_DEV_HEAD = MNLI_TRAIN_HEAD[:-1] + "label2 label3 label4 label5 gold_label".split()
STSB_HEAD = "index genre filename year old_index source1 source2 sentence1 sentence2 score".split()
MRPC_HEAD = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")


def mnli_row(i, s1, s2, label, dev=False):
    return [str(i), "1", f"{i}e", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)", s1, s2,
            *[label] * (5 if dev else 1), label]


@pytest.fixture
def glue_dir(tmp_path, monkeypatch):
    """Tiny copies of each task's files in the official formats, under DATA_DIR=tmp_path."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    g = tmp_path / "glue"
    write(g / "SST-2/train.tsv", tsv(("sentence", "label"), ('the " quote stays unbalanced ', "1"),
                                     ("a dull , lifeless film ", "0")))
    write(g / "SST-2/dev.tsv", tsv(("sentence", "label"), ('it \'s "charming" ', "1")))
    write(g / "CoLA/train.tsv", tsv(("gj04", "1", "", "Our friends won't buy this analysis."),
                                    ("gj04", "0", "*", "They drank the pub.")))
    write(g / "CoLA/dev.tsv", "gj04\t1\t\tThe sailors rode the breeze.")  # no final newline
    sts = ("0", "main-captions", "MSRvid", "2012test", "0001", "none", "none",
           "A plane takes off.", "A jet takes off.", "4.800")
    for split in ("train", "dev"):
        write(g / f"STS-B/{split}.tsv", tsv(STSB_HEAD, sts))
        write(g / f"MRPC/{split}.tsv",
              "\ufeff" + tsv(MRPC_HEAD, ("1", "702876", "702977", "He said .", "He did .")))
    write(g / "MNLI/train.tsv", tsv(MNLI_TRAIN_HEAD,
                                    mnli_row(0, "A man sleeps.", "A man rests.", "entailment"),
                                    mnli_row(1, "A man sleeps.", "A man runs.", "contradiction")))
    write(g / "MNLI/dev_matched.tsv",
          tsv(MNLI_DEV_HEAD, mnli_row(2, "Rain fell.", "It was cold.", "neutral", dev=True)))
    write(g / "MNLI/dev_mismatched.tsv",
          tsv(MNLI_DEV_HEAD, mnli_row(3, "Hi.", "Hello.", "entailment", dev=True)))
    return g


def test_glue_parsers_read_each_official_format(glue_dir):
    sst2 = glue.glue_task("sst2")
    assert sst2["train"][0] == ('the " quote stays unbalanced ', None, 1)  # QUOTE_NONE keeps "
    assert sst2["dev"][0].text_a == 'it \'s "charming" '
    cola = glue.glue_task("cola")  # no header: label in column 1, sentence in column 3
    assert cola["train"] == [("Our friends won't buy this analysis.", None, 1),
                             ("They drank the pub.", None, 0)]
    assert cola["dev"] == [("The sailors rode the breeze.", None, 1)]
    stsb = glue.glue_task("stsb")["dev"][0]
    assert stsb == ("A plane takes off.", "A jet takes off.", 4.8) and type(stsb.label) is float
    assert glue.glue_task("mrpc")["train"] == [("He said .", "He did .", 1)]  # BOM + "Quality"
    mnli = glue.glue_task("mnli")
    assert list(mnli) == ["train", "dev_matched", "dev_mismatched"]
    assert [e.label for e in mnli["train"]] == [0, 2] and mnli["dev_matched"][0].label == 1


@pytest.mark.faults
def test_glue_row_with_wrong_column_count_names_file_and_line(glue_dir):
    write(glue_dir / "SST-2/train.tsv", tsv(("sentence", "label"), ("fine", "1"), ("a", "b", "c")))
    with pytest.raises(UserError, match=r"SST-2/train\.tsv:3: 3 tab-separated columns instead"):
        glue.glue_task("sst2")


@pytest.mark.faults
def test_glue_label_outside_the_task_set_is_rejected(glue_dir):
    write(glue_dir / "CoLA/train.tsv", tsv(("gj04", "1", "", "Fine."), ("gj04", "2", "", "Odd.")))
    with pytest.raises(UserError, match=r"CoLA/train\.tsv:2: label '2'"):
        glue.glue_task("cola")
    write(glue_dir / "MNLI/dev_mismatched.tsv", tsv(MNLI_DEV_HEAD, mnli_row(3, "a", "b", "-", 1)))
    with pytest.raises(UserError, match=r"dev_mismatched\.tsv:2: label '-'"):
        glue.glue_task("mnli")


@pytest.mark.faults
def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(UserError, match="sst2, mrpc, qqp, mnli, cola, stsb"):
        glue.glue_task("rte")


def test_mrpc_is_rebuilt_like_download_glue_data(tmp_path):
    folder = tmp_path / "glue/MRPC"
    write(folder / "msr_paraphrase_train.txt", "\ufeff" + tsv(
        MRPC_HEAD,
        ("1", "702876", "702977", "Amrozi accused his brother .", "Referring to him ."),
        ("0", "2108705", "2108831", "Yucaipa owned Dominick 's .", "Yucaipa bought it . "),
        ("1", "1330381", "1330521", 'He said "no" .', "He said no .")))
    write(folder / "dev_ids.tsv", "2108705\t2108831\n")
    glue.build_mrpc(folder)
    head = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"  # BOM kept, as the script does
    assert (folder / "dev.tsv").read_text(encoding="utf-8") == (
        head + "0\t2108705\t2108831\tYucaipa owned Dominick 's .\tYucaipa bought it .\n")  # strip
    assert (folder / "train.tsv").read_text(encoding="utf-8") == head + (
        "1\t702876\t702977\tAmrozi accused his brother .\tReferring to him .\n"
        '1\t1330381\t1330521\tHe said "no" .\tHe said no .\n')


def test_official_glue_sizes(mirror):
    sizes = {"sst2": (67349, 872), "cola": (8551, 1043), "stsb": (5749, 1500), "mrpc": (3668, 408)}
    for task, (train, dev) in sizes.items():
        splits = glue.glue_task(task)
        assert (len(splits["train"]), len(splits["dev"])) == (train, dev), task


def test_mrpc_rebuilt_from_the_msr_files_is_byte_identical(mirror, tmp_path, monkeypatch):
    for name in ("msr_paraphrase_train.txt", "msr_paraphrase_test.txt", "dev_ids.tsv"):
        write(tmp_path / "glue/MRPC" / name, (mirror / "glue/MRPC" / name).read_bytes())
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    assert len(glue.glue_task("mrpc")["dev"]) == 408
    for split in ("train", "dev"):
        rebuilt = (tmp_path / f"glue/MRPC/{split}.tsv").read_bytes()
        assert rebuilt == (mirror / f"glue/MRPC/{split}.tsv").read_bytes()


# ----------------------------------------------------------------------------- tokenizers
# A reference written from the description of Google's tokenization.py (BasicTokenizer, then
# WordpieceTokenizer), character by character, to check the tokenizers-library pipeline against.

CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
       (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def ref_basic_tokens(text: str) -> list[str]:
    cat = unicodedata.category
    is_cjk = lambda c: any(a <= ord(c) <= b for a, b in CJK)
    is_punct = lambda c: (33 <= ord(c) <= 47 or 58 <= ord(c) <= 64 or 91 <= ord(c) <= 96
                          or 123 <= ord(c) <= 126 or cat(c).startswith("P"))
    kept = [c for c in text
            if c not in "\x00\ufffd" and (c in "\t\n\r" or cat(c) not in ("Cc", "Cf"))]
    text = "".join(" " if c in "\t\n\r" or cat(c) == "Zs" else f" {c} " if is_cjk(c) else c
                   for c in kept)
    tokens = []
    for word in text.split():
        word = "".join(c for c in unicodedata.normalize("NFD", word.lower()) if cat(c) != "Mn")
        piece = ""
        for c in word:
            if is_punct(c):
                tokens += [piece, c] if piece else [c]
                piece = ""
            else:
                piece += c
        tokens += [piece] if piece else []
    return tokens


def ref_wordpiece(word: str, vocab) -> list[str]:
    if len(word) > 100:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):  # longest match first
            piece = ("##" if start else "") + word[start:end]
            if piece in vocab:
                pieces.append(piece)
                start = end
                break
        else:
            return ["[UNK]"]
    return pieces


def ref_tokenize(text: str, vocab) -> list[str]:
    return [p for word in ref_basic_tokens(text) for p in ref_wordpiece(word, vocab)]


TRICKY = [
    "Hello, World! It's a test.", "naïve café Ångström résumé façade", "Straße ŒUVRE İstanbul ǅ",
    "ΟΔΟΣ Σίσυφος ΑΣ. Σ ὈΔΥΣΣΕΎΣ", "中文字符 and 日本語のテキスト 한국어 𫠠𫠡", "tab\tnew\nline\rreturn",
    "zero\u200bwidth soft\u00adhyphen \ufeffbom control\x00\x01\x7f\x85chars",
    "private\ue000use \U000f0000", "don't 'single' \"double\" `back` «guillemets» „low“",
    "3.14 1,000,000 2nd 10:30 -5 ½ ①", "x" * 101, "y" * 100, "supercalifragilistic" * 4,
    "mail@example.com http://x.org/a?b=c#d", "", "   \n ", "unaffable", "A\u0301ccent cafe\u0301",
    "¿Qué? ¡Sí! — dash … ellipsis ‰", "emoji 😀 math ∑∫ ℃ ﬁ ligature", "replacement \ufffd char",
    "line\u2028sep\u3000ideographic\u00a0nbsp", "ALL CAPS Ünïcödé ÀÉÎÕÜ",
    "$100 & 50% off #1 @user ^_^ ~tilde~ |pipe| {braces} [brackets]",
]


def assert_matches_reference(tok, texts):
    vocab = set(tok.get_vocab())
    for text in texts:
        ours = tok.encode(text, add_special_tokens=False).tokens
        assert ours == ref_tokenize(text, vocab), repr(text)


def test_bert_tokenizer_matches_google_reference_on_tricky_strings(mirror):
    tok = data.load_tokenizer("bert-base-uncased")
    assert tok.get_vocab_size() == 30522
    assert data.special_ids(tok) == {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
    assert tok.encode("The", add_special_tokens=False).ids == [1996]  # no [CLS]/[SEP] added
    assert_matches_reference(tok, TRICKY)


def test_bert_tokenizer_matches_google_reference_on_real_text(mirror):
    lines = [e.text_a for e in glue.glue_task("sst2")["train"][::45]]  # 1,497 sentences
    wiki = (mirror / data.ENWIKI / "AA/wiki_00").read_text(encoding="utf-8").splitlines()
    wiki = [line for line in wiki if line and not line.startswith(("<doc ", "</doc>"))]
    wiki = [w for w in wiki if not w.isascii()][:250] + [w for w in wiki if w.isascii()][:250]
    assert len(lines) + len(wiki) >= 1900
    assert_matches_reference(data.load_tokenizer("bert-base-uncased"), lines + wiki)


WORDS = ("the of and to in a is was for on as with by he at from his an were are which this be "
         "or has had one not but first new their also after who two its her they have been "
         "unaffable Σίσυφος ΟΔΟΣ café naïve Straße 中文 don't 3.14").split()


def make_corpus(folder, docs=250, seed=0) -> list[str]:
    """Blank-line-separated documents over three files, with three non-UTF-8 bytes (doc 5), a
    100,000-character line (doc 7) and runs of blank lines; returns each document's text."""
    rng, texts = random.Random(seed), []
    for i in range(docs):
        lines = [f"Document {i} begins."] + [" ".join(rng.choices(WORDS, k=rng.randint(3, 12)))
                                             + "." for _ in range(rng.randint(1, 4))]
        if i == 5:
            lines.append("bad bytes caf\udce9 \udcff\udcfe and a real \ufffd")
        if i == 7:
            lines.append(("the long line " * 7200)[:100_000])
        texts.append("\n".join(lines))
    for k, name in enumerate(("a.txt", "b/c.txt", "b/d.txt")):  # read in this (sorted) order
        chunk = "\n\n\n   \n".join(texts[k * docs // 3:(k + 1) * docs // 3])
        write(folder / name, chunk.encode("utf-8", "surrogateescape"))  # lone surrogates -> bytes
    return [t.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for t in texts]


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    folder = tmp_path / "corpus"
    return str(folder), make_corpus(folder)


def test_wordpiece_vocabulary_is_trained_saved_and_reloaded(corpus):
    name, _ = corpus
    tok = data.load_tokenizer("wordpiece-300", name)
    vocab = tok.get_vocab()
    assert len(vocab) <= 300 and [vocab[s] for s in data.SPECIALS] == [0, 1, 2, 3, 4]
    saved = data_dir() / "tokens" / data._slug(name) / "wordpiece-300/tokenizer.json"
    again = data.load_tokenizer("wordpiece-300", name)
    assert saved.exists() and again.get_vocab() == vocab
    assert again.encode(TRICKY[0]).ids == tok.encode(TRICKY[0]).ids
    assert not tok.encode("hello there", add_special_tokens=True).tokens[0].startswith("[")


def test_trained_wordpiece_matches_google_reference(corpus):
    tok = data.load_tokenizer("wordpiece-300", corpus[0])
    assert_matches_reference(tok, TRICKY + corpus[1][:20])


@pytest.mark.faults
def test_unknown_tokenizer_lists_valid_forms():
    with pytest.raises(UserError, match="bert-base-uncased or wordpiece-N"):
        data.load_tokenizer("gpt2")


# ----------------------------------------------------------------------------- packed corpora

def expected_stream(tok, texts, split):
    """The split's documents (every 100th is validation), tokenised whole, joined by [SEP]."""
    sep, stream = data.special_ids(tok)["sep"], []
    for i, text in enumerate(texts):
        if (i % 100 == 0) == (split == "val"):
            stream += ([sep] if stream else []) + tok.encode(text, add_special_tokens=False).ids
    return stream


@pytest.mark.faults
def test_packed_rows_are_cls_chunk_sep_in_stream_order(corpus):
    name, texts = corpus
    summary = data.prepare_corpus(name, "wordpiece-300", seq_len=32)
    tok = data.load_tokenizer("wordpiece-300", name)
    ids = data.special_ids(tok)
    for split in ("train", "val"):  # each split holds exactly its own documents, in order
        rows = data.load_rows(name, "wordpiece-300", 32, split)
        assert rows.dtype == np.uint16 and rows.shape == (summary[split]["rows"], 32)
        assert (rows[:, 0] == ids["cls"]).all() and (rows[:, -1] == ids["sep"]).all()
        stream, content = expected_stream(tok, texts, split), rows[:, 1:-1].ravel().tolist()
        assert content == stream[:len(content)] and len(stream) - len(content) < 30  # tail dropped
    assert summary["val"]["documents"] == 3 and summary["documents"] == len(texts)
    assert summary["decode_errors"] == 3  # the three bad bytes; the real U+FFFD is not counted
    assert summary["rows"] == summary["train"]["rows"] + summary["val"]["rows"]


def test_validation_split_is_deterministic(corpus, tmp_path, monkeypatch):
    name, _ = corpus
    data.prepare_corpus(name, "wordpiece-300", seq_len=16)
    first = (data.corpus_dir(name, "wordpiece-300", 16) / "val.bin").read_bytes()
    # Same tokenizer: WordPiece training itself is not deterministic (tokenizers issue #1794).
    trained = data_dir() / "tokens" / data._slug(name) / "wordpiece-300/tokenizer.json"
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "elsewhere"))
    write(data_dir() / "tokens" / data._slug(name) / "wordpiece-300/tokenizer.json",
          trained.read_bytes())
    data.prepare_corpus(name, "wordpiece-300", seq_len=16)
    assert (data.corpus_dir(name, "wordpiece-300", 16) / "val.bin").read_bytes() == first


def test_second_prepare_reads_meta_and_does_no_work(corpus, monkeypatch):
    first = data.prepare_corpus(corpus[0], "wordpiece-300", seq_len=32)
    monkeypatch.setattr(data, "_pack", lambda *a: pytest.fail("tokenised again"))
    assert data.prepare_corpus(corpus[0], "wordpiece-300", seq_len=32) == first


# A DDP rank of test_concurrent_preparations_build_once_and_agree: it waits at a barrier (a file
# per rank in argv[2], until all argv[3] are there) right before it takes the corpus's lock, that
# is after it has seen that no rank has prepared the corpus yet.
RANK = """import data, hashlib, json, os, sys, time
from pathlib import Path
barrier, ranks, real = Path(sys.argv[2]), int(sys.argv[3]), data.exclusive
def exclusive_after_barrier(path):
    data.exclusive = real  # the first lock only (the corpus's; the tokenizer's comes inside it)
    (barrier / str(os.getpid())).touch()
    t = time.time()
    while len(list(barrier.iterdir())) < ranks:
        assert time.time() - t < 60, 'the other ranks never came'
        time.sleep(0.005)
    return real(path)
data.exclusive = exclusive_after_barrier
meta = data.prepare_corpus(sys.argv[1], 'wordpiece-300')
tok = data.load_tokenizer('wordpiece-300', sys.argv[1]).to_str().encode()
print(json.dumps(meta), hashlib.sha256(tok).hexdigest())"""


@pytest.mark.faults
def test_concurrent_preparations_build_once_and_agree(corpus, tmp_path):
    """Every DDP rank calls load_tokenizer and load_rows at start-up, at the same moment. Forced
    here: each rank stops at a barrier after finding no meta.json, so all of them would build;
    the lock lets exactly one train the tokenizer and pack the rows (its stderr alone shows
    it), the others wait and read its files. Without the lock all three build at once."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    logs = [tmp_path / f"rank{i}.err" for i in range(3)]
    ranks = [subprocess.Popen([sys.executable, "-c", RANK, corpus[0], str(barrier), "3"],
                              env=os.environ, cwd=Path(data.__file__).parent,
                              stdout=subprocess.PIPE, stderr=log.open("w")) for log in logs]
    outputs = {rank.communicate(timeout=120)[0] for rank in ranks}
    errs = [log.read_text() for log in logs]
    assert [rank.returncode for rank in ranks] == [0, 0, 0], errs
    assert len(outputs) == 1 and len(list(barrier.iterdir())) == 3
    assert sum("training wordpiece-300 on" in e for e in errs) == 1, errs  # the tokenizer, once
    assert sum(f"tokenising {corpus[0]} train" in e for e in errs) == 1, errs  # the rows, once


@pytest.mark.faults
def test_truncated_token_file_is_refused(corpus):
    data.prepare_corpus(corpus[0], "wordpiece-300", seq_len=32)
    path = data.corpus_dir(corpus[0], "wordpiece-300", 32) / "train.bin"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(UserError, match="truncated or stale; delete .* `python data.py corpus"):
        data.load_rows(corpus[0], "wordpiece-300", 32, "train")


@pytest.mark.faults
def test_a_tokenizer_that_does_not_match_the_token_file_is_refused(corpus):
    data.prepare_corpus(corpus[0], "wordpiece-300", seq_len=32)
    data.load_tokenizer("wordpiece-200", corpus[0])  # another vocabulary, saved beside it
    folder = data_dir() / "tokens" / data._slug(corpus[0])
    (folder / "wordpiece-300/tokenizer.json").write_bytes(
        (folder / "wordpiece-200/tokenizer.json").read_bytes())
    with pytest.raises(UserError, match=r"built with \d+ tokens but wordpiece-300 has \d+; delete"):
        data.load_rows(corpus[0], "wordpiece-300", 32, "train")


def test_wikitext_articles_and_wikiextractor_docs_are_the_documents(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    article = lambda t: f" = {t} = \n \n {t} is a topic . \n \n = = Part = = \n \n More on {t} . \n"
    raw = tmp_path / "wikitext-2-raw"
    write(raw / "wiki.train.raw", " \n" + "".join(article(f"T{i}") for i in range(5)))
    write(raw / "wiki.valid.raw", " \n" + article("Valid"))
    summary = data.prepare_corpus("wikitext-2", "wordpiece-120", seq_len=8)  # no download needed
    assert (summary["train"]["documents"], summary["val"]["documents"]) == (5, 1)
    doc = '<doc id="{0}" url="x?curid={0}" title="T{0}">\nT{0}\n\nT{0} is a topic.\n\n</doc>\n'
    write(tmp_path / data.ENWIKI / "AA/wiki_00", "".join(doc.format(i) for i in range(150)))
    summary = data.prepare_corpus("enwiki", "wordpiece-120", seq_len=8)
    assert (summary["train"]["documents"], summary["val"]["documents"]) == (148, 2)  # docs 0, 100
    val = data.load_rows("enwiki", "wordpiece-120", 8, "val")[:, 1:-1].ravel().tolist()
    text = data.load_tokenizer("wordpiece-120", "enwiki").decode(val)
    assert text.startswith("t0 t0 is a topic.")  # tag lines dropped, title line kept


@pytest.mark.faults
def test_unknown_corpus_lists_valid_ones_and_leaves_no_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    with pytest.raises(UserError, match="wikitext-103, wikitext-2, enwiki"):
        data.prepare_corpus("no-such-corpus", "wordpiece-100")
    assert not (tmp_path / "tokens").exists()



@pytest.mark.faults
def test_a_too_short_seq_len_is_refused_before_any_work(corpus):
    with pytest.raises(UserError, match="--seq_len=7: must be at least 8"):
        data.prepare_corpus(corpus[0], "wordpiece-300", seq_len=7)
    assert not (data_dir() / "tokens").exists()

# ----------------------------------------------------------------------------- batch order

def test_batch_rows_is_a_pure_function_of_seed_and_step():
    rows = np.arange(100 * 4, dtype=np.uint16).reshape(100, 4)
    assert (data.batch_rows(rows, 7, 8, seed=1) == data.batch_rows(rows, 7, 8, seed=1)).all()
    assert (data.batch_rows(rows, 7, 8, seed=1) != data.batch_rows(rows, 7, 8, seed=2)).any()
    assert data.batch_rows(rows, 0, 8, seed=1).dtype == np.int64


def test_one_epoch_visits_every_row_once_and_batches_straddle_epochs():
    rows = np.arange(10)[:, None].repeat(3, 1)
    first = np.concatenate([data.batch_rows(rows, s, 5, seed=0)[:, 0] for s in range(2)])
    assert sorted(first) == list(range(10))
    straddle = data.batch_rows(rows, 2, 4, seed=0)[:, 0]  # positions 8..11: end of epoch 0, then 1
    order0 = np.random.default_rng([0, 0]).permutation(10)
    order1 = np.random.default_rng([0, 1]).permutation(10)
    assert straddle.tolist() == [*order0[8:], *order1[:2]]


def test_resuming_at_step_k_continues_the_same_sequence():
    rows = np.arange(37)[:, None]
    straight = [data.batch_rows(rows, s, 6, seed=3) for s in range(20)]
    data._epoch_order.cache_clear()  # as in a fresh process after a restart
    resumed = [data.batch_rows(rows, s, 6, seed=3) for s in range(11, 20)]
    assert all((a == b).all() for a, b in zip(straight[11:], resumed))


@pytest.mark.faults
def test_fewer_rows_than_a_batch_is_a_user_error():
    with pytest.raises(UserError, match="only 3 rows for a batch of 4"):
        data.batch_rows(np.zeros((3, 8)), 0, 4, seed=0)


def test_the_bert_special_ids_are_those_of_the_bert_vocabulary(mirror, monkeypatch):
    """tools/bench.py builds rows with data.BERT_SPECIAL_IDS without loading the vocabulary."""
    monkeypatch.setenv("DATA_DIR", str(mirror))
    assert data.special_ids(data.load_tokenizer("bert-base-uncased")) == data.BERT_SPECIAL_IDS
