"""`make paper` reuses a finished run only when it is the run it would make now: the whole resolved
training config (the preset's recipe, the corpus, extra train.py flags) and the vocabulary. Any
difference is refused with a one-line reason naming it (study/arms.py:arm_status)."""
import json
import shutil
import sys
from pathlib import Path

import pytest
from synthetic import TINY_ARGS, write_corpus
from test_paper import train_in_process

import config
import data
from lib.cli import UserError
from study import arms


@pytest.fixture
def finished(tmp_path, monkeypatch):
    """(run folder, the train.py flags that made it): a tiny MLM run trained to its end."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    corpus = write_corpus(tmp_path / "corpus")
    run = tmp_path / "run"
    argv = [*TINY_ARGS, "--mode=mlm", "--max_flops=1e9", f"--corpus={corpus}", f"--out={run}"]
    assert train_in_process([sys.executable, "train.py", *argv]).returncode == 0
    return run, argv


def test_the_same_run_is_done_and_an_empty_folder_is_new(finished, tmp_path):
    run, argv = finished
    assert arms.arm_status(run, argv) == "done"
    assert arms.arm_status(tmp_path / "nothing", argv) == "new"


def test_another_preset_recipe_is_refused(finished, monkeypatch):
    run, argv = finished
    monkeypatch.setitem(config.PRESETS, "tiny", dict(config.PRESETS["tiny"], mask_prob=0.2))
    with pytest.raises(UserError, match=r"other settings \(mask_prob: 0.15 -> 0.2\)"):
        arms.arm_status(run, argv)


def test_another_corpus_is_refused(finished, tmp_path):
    run, argv = finished
    other = write_corpus(tmp_path / "other", seed=1)
    with pytest.raises(UserError, match=r"corpus: .*corpus -> .*other"):
        arms.arm_status(run, [a for a in argv if not a.startswith("--corpus=")]
                        + [f"--corpus={other}"])


def test_other_train_flags_are_refused(finished):
    run, argv = finished
    with pytest.raises(UserError, match=r"lr: 0.003 -> 0.001.*delete it or pass another --out"):
        arms.arm_status(run, argv + ["--lr=1e-3"])


def test_another_vocabulary_is_refused(finished, tmp_path):
    """Same name (wordpiece-200), same corpus, another trained vocabulary on disk."""
    run, argv = finished
    corpus = next(a.partition("=")[2] for a in argv if a.startswith("--corpus="))
    mine = data.data_dir() / "tokens" / data._slug(corpus) / "wordpiece-200" / "tokenizer.json"
    other = write_corpus(tmp_path / "other", seed=1)
    data.load_tokenizer("wordpiece-200", str(other))
    shutil.copy(data.data_dir() / "tokens" / data._slug(str(other)) / "wordpiece-200" /
                "tokenizer.json", mine)
    with pytest.raises(UserError, match=r"tokenizer wordpiece-200: sha256 [0-9a-f]{64} -> "):
        arms.arm_status(run, argv)


def test_a_run_made_before_the_vocabulary_was_recorded_is_refused(finished):
    run, argv = finished
    conf = json.loads((run / "config.json").read_text())
    del conf["tokenizer_sha256"]
    (run / "config.json").write_text(json.dumps(conf))
    with pytest.raises(UserError, match="sha256 None -> "):
        arms.arm_status(run, argv)


def test_a_run_records_its_vocabulary_and_code_state(finished):
    run, _ = finished
    conf = json.loads((run / "config.json").read_text())
    tok = data.load_tokenizer("wordpiece-200", conf["config"]["corpus"])
    assert conf["tokenizer_sha256"] == data.tokenizer_sha256(tok)
    assert set(conf) >= {"git", "git_dirty", "git_diff_sha256"}
    assert conf["git_dirty"] == bool(conf["git_diff_sha256"])
    assert Path(conf["config"]["out"]) == run


# --------------------------------------------------------------------------- the shipped vocabulary

def test_the_shipped_vocabulary_is_used_without_the_corpus(tmp_path, monkeypatch):
    """A fresh DATA_DIR gets vocab/enwiki-wordpiece-8192.json as it is: no training, so no
    corpus text is needed for it, and every clone tokenises with the same ids."""
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    shipped = data.SHIPPED / "enwiki-wordpiece-8192.json"
    tok = data.load_tokenizer("wordpiece-8192", "enwiki")
    assert tok.to_str() == data.load_tokenizer("wordpiece-8192", "enwiki").to_str()
    placed = tmp_path / "tokens/enwiki/wordpiece-8192/tokenizer.json"
    assert placed.read_bytes() == shipped.read_bytes()
    assert tok.get_vocab_size() == 8192 and data.special_ids(tok)["pad"] == 0
    assert config.PRESETS["tiny"]["tokenizer"] == "wordpiece-8192"  # the tiny preset's


def test_another_vocabulary_where_the_shipped_one_belongs_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    placed = tmp_path / "tokens/enwiki/wordpiece-8192/tokenizer.json"
    placed.parent.mkdir(parents=True)
    corpus = write_corpus(tmp_path / "corpus")
    placed.write_bytes(data.load_tokenizer("wordpiece-200", str(corpus)).to_str().encode())
    with pytest.raises(UserError, match=r"another wordpiece-8192 than the one the project ships "
                                        r"\(vocab/enwiki-wordpiece-8192.json\).*delete"):
        data.load_tokenizer("wordpiece-8192", "enwiki")


def test_tokens_prepared_with_another_vocabulary_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    corpus = str(write_corpus(tmp_path / "corpus"))
    data.load_rows(corpus, "wordpiece-200", 32, "train")
    meta = data.corpus_dir(corpus, "wordpiece-200", 32) / "meta.json"
    m = json.loads(meta.read_text())
    assert m["tokenizer_sha256"] == data.tokenizer_sha256(data.load_tokenizer("wordpiece-200",
                                                                              corpus))
    meta.write_text(json.dumps(dict(m, tokenizer_sha256="0" * 64)))
    with pytest.raises(UserError, match="built with another wordpiece-200.*delete"):
        data.load_rows(corpus, "wordpiece-200", 32, "train")
