"""recipe_search.py, the recipe search's train-side signals: the validation MLM loss (fixed rows and
masks, so a better-trained encoder scores lower and the same one scores the same), and the
table's winner by the declared rule."""
import json

import pytest
from synthetic import TINY_ARGS, write_corpus

import train
from lib.cli import UserError
from study import recipe_search


@pytest.fixture
def runs(tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))

    def run(name, *args):
        out = tmp_path / name
        assert train.main(TINY_ARGS + [f"--corpus={corpus}", f"--out={out}", *args]) == 0
        return out
    return run


def test_validation_loss_is_fixed_and_falls_with_training(runs):
    short, longer = (runs("short", "--mode=mlm", "--max_steps=2"),
                     runs("long", "--mode=mlm", "--max_steps=40"))
    a, b = (recipe_search.validation_loss(short / "ckpt.pt"),
            recipe_search.validation_loss(short / "ckpt.pt"))
    assert a == b and a["val_rows"] > 0 and a["val_masked"] > 0
    assert (recipe_search.validation_loss(longer / "ckpt.pt")["val_mlm_loss"]
            < a["val_mlm_loss"] - 0.5)
    jepa = runs("jepa", "--mode=jepa", "--max_steps=2")
    with pytest.raises(UserError, match="a jepa run has no MLM head"):
        recipe_search.validation_loss(jepa / "ckpt.pt")


def test_the_table_names_the_winner_by_the_rule(tmp_path):
    base = dict(config=dict(d_model=128, n_layers=4, tokenizer="t", seq_len=64, batch_size=128,
                            lr=2e-3), params=dict(encoder=1e6), steps=10, tokens=1e6,
                wall_min=1.0, val_mlm_loss=6.0, heldout_random=dict(sst2=60.0, stsb=55.0))
    for name, sst2, stsb in (("a", 70.0, 50.0), ("b", 64.0, 62.0), ("c", 66.0, 40.0)):
        (tmp_path / f"{name}.json").write_text(json.dumps(dict(
            base, name=name, heldout=dict(sst2=sst2, stsb=stsb),
            selection_score=(sst2 + stsb) / 2)))
    rows = [line for line in recipe_search.table(tmp_path).splitlines()
            if line.startswith("| ")][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| b **(winner)**", "| a", "| c"]
    with pytest.raises(UserError, match="no run JSONs"):
        recipe_search.table(tmp_path / "empty")
