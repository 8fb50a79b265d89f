"""The recipe search's selection signals, all from the train side (never from a reported dev split):

    python -m study.recipe_search --run=out/search/NAME --flags="..." \\
        --out=results/recipe-search/NAME.json
    python -m study.recipe_search --table=results/recipe-search  # README.md: every run, the winner

1. validation MLM loss: the run's encoder + MLM head on the first VAL_ROWS rows of the corpus's
   validation documents, masked at MASK_PROB from fixed seeds (the same positions for every run
   of one tokenizer and sequence length), fp32, no dropout. Comparable between runs of one
   tokenizer; a different vocabulary changes what a token is, so across tokenizers it is only
   shown, never compared.
2. held-out-train probe scores: probe.py's score on its held-out 10% of TRAIN (the one that picks
   the L2 strength), SST-2 accuracy and STS-B Spearman with mean pooling, next to those of the
   same architecture with random weights (what the encoder must beat).

The rule, fixed before the runs: the winner has the highest mean of the two held-out-train
scores (SELECTION); validation loss is reported beside it and breaks ties within one tokenizer.
"""
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import data
import masks
import model
import probe
from lib.cli import UserError, atomic_write, parse_flags, run_cli
from lib.runs import read_log, wall_time
from study.arms import PROBE_ARGS  # the study's probe flags: selected as it will be run

VAL_ROWS = 2048
VAL_SEED = 1234         # mask draws of the validation loss: stream VAL_SEED, chunk i
MASK_PROB = 0.15        # whatever rate the run trained with: a fixed yardstick
SELECTION = (("sst2", "acc"), ("stsb", "spearman"))


@dataclass
class RecipeConfig:
    run: str = ""           # a train.py run folder (its ckpt.pt, config.json, log.jsonl)
    flags: str = ""         # the train.py flags that made it, recorded as given
    out: str = ""           # the run's JSON under results/
    table: str = ""         # a folder of such JSONs -> its README.md
    rows: int = VAL_ROWS


@torch.inference_mode()
def validation_loss(ckpt_path, rows: int = VAL_ROWS) -> dict:
    """Mean MLM cross-entropy over the masked positions of the first `rows` validation rows."""
    ckpt = model.load_checkpoint(ckpt_path)
    mcfg, cfg = model.ModelConfig(**ckpt["model_config"]), ckpt["config"]
    if mcfg.mode == "jepa":
        raise UserError(f"{ckpt_path}: a jepa run has no MLM head; validation MLM loss needs "
                        "an mlm or hybrid run")
    net = model.PredictReconstruct(mcfg)
    net.load_state_dict(ckpt["model"])
    net.eval()
    tok = data.load_tokenizer(cfg["tokenizer"], cfg["corpus"])
    if tok.to_str() != ckpt["tokenizer"]:
        raise UserError(f"{ckpt_path}: its tokenizer differs from {cfg['tokenizer']} on disk")
    val = data.load_rows(cfg["corpus"], cfg["tokenizer"], cfg["seq_len"], "val")[:rows]
    sp = data.special_ids(tok)
    total, count = 0.0, 0
    for i, lo in enumerate(range(0, len(val), 128)):
        tokens = torch.from_numpy(val[lo:lo + 128].astype(np.int64))
        corrupted, pos, labels = masks.mlm_corrupt(
            tokens, list(sp.values()), sp["mask"], tok.get_vocab_size(),
            masks.step_generator(VAL_SEED, i, 0), MASK_PROB)
        total += float(net.loss_mlm(corrupted, pos, labels)) * labels.numel()
        count += labels.numel()
    return dict(val_mlm_loss=round(total / count, 4), val_rows=len(val), val_masked=count)


def heldout_scores(ckpt: str, results: Path, like: str = "") -> dict:
    """probe.py's held-out-train score (mean over its seeds) of each SELECTION task, mean pool;
    ckpt=random with like=a checkpoint: its architecture and tokenizer, with initial weights."""
    cfg = parse_flags(shlex.split(PROBE_ARGS), probe.ProbeConfig(
        task=tuple(t for t, _ in SELECTION), ckpt=ckpt, pool=("mean",), out=str(results),
        random_like=like))[0]
    found, _ = probe.run_probe(cfg, reuse=True)
    return {r["task"]: round(float(np.mean(r["heldout_score"])), 2) for r in found}


def record(cfg: RecipeConfig) -> dict:
    run = Path(cfg.run)
    conf = json.loads((run / "config.json").read_text())
    log = read_log(run)
    ckpt = str(run / "ckpt.pt")
    trained = heldout_scores(ckpt, run / "probe")
    seed = conf["config"]["seed"]
    random = heldout_scores(f"random:{seed}", run / "probe-random", like=ckpt)
    scores = {t: trained[t] for t, _ in SELECTION}
    return dict(name=run.name, command=f"train.py --mode={conf['config']['mode']} "
                f"--preset={conf['config']['preset']} --corpus={conf['config']['corpus']} "
                f"--max_flops={conf['config']['max_flops']:g} {cfg.flags}".strip(),
                config=conf["config"], params=conf["params"], steps=log[-1]["step"],
                tokens=log[-1]["tokens"], flops=log[-1]["flops"],
                wall_min=round(wall_time(log) / 60, 2),
                final_train_loss=round(log[-1]["loss"], 4), **validation_loss(ckpt, cfg.rows),
                heldout=trained, heldout_random=random,
                selection_score=round(float(np.mean(list(scores.values()))), 2))


def table(folder: Path) -> str:
    runs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    if not runs:
        raise UserError(f"{folder}: no run JSONs; run python -m study.recipe_search --run=... "
                        f"--out={folder}/NAME.json")
    best = max(runs, key=lambda r: r["selection_score"])
    lines = ["# Recipe search (issue 11)", "",
             "Generated by `python -m study.recipe_search --table=results/recipe-search` from the "
             "JSON files here, which `study/recipe_search.sh` made (each JSON: the command, the "
             "resolved config, the signals, the wall time). MLM only, seed 0, enwiki. Signals "
             "are train-side only: validation MLM loss (study/recipe_search.py; comparable within "
             "one tokenizer only) and probe.py's held-out-train score (10% of TRAIN, mean pooling; "
             "random: the same architecture with its initial weights). Dev splits were not "
             "read. Rule: highest mean of the held-out SST-2 accuracy and STS-B Spearman.", "",
             "| run | d x L | tokenizer | seq | batch | lr | params (enc) | steps | tokens | "
             "wall | val MLM loss | SST-2 held-out (random) | STS-B held-out (random) | "
             "selection |", "|---" * 14 + "|"]
    for r in sorted(runs, key=lambda r: -r["selection_score"]):
        c = r["config"]
        lines.append(
            f"| {r['name']}{' **(winner)**' if r is best else ''} | {c['d_model']} x "
            f"{c['n_layers']} | {c['tokenizer']} | {c['seq_len']} | {c['batch_size']} | "
            f"{c['lr']:g} | {r['params']['encoder'] / 1e6:.2f}M | {r['steps']:,} | "
            f"{r['tokens'] / 1e6:.1f}M | {r['wall_min']:.1f} min | {r['val_mlm_loss']:.3f} | "
            f"{r['heldout']['sst2']:.2f} ({r['heldout_random']['sst2']:.2f}) | "
            f"{r['heldout']['stsb']:.2f} ({r['heldout_random']['stsb']:.2f}) | "
            f"{r['selection_score']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv):
    cfg, _ = parse_flags(argv, RecipeConfig())
    if cfg.table:
        text = table(Path(cfg.table))
        atomic_write(Path(cfg.table) / "README.md", lambda f: f.write(text), mode="w")
        print(text)
        return 0
    if not cfg.run or not cfg.out:
        raise UserError("pass --run=RUN_FOLDER --out=FILE.json, or --table=FOLDER")
    if not (Path(cfg.run) / "ckpt.pt").exists():
        raise UserError(f"--run={cfg.run}: no ckpt.pt there; train it first (train.py --out=...)")
    rec = record(cfg)
    atomic_write(Path(cfg.out), lambda f: f.write(json.dumps(rec, indent=1)), mode="w")
    print(json.dumps({k: rec[k] for k in ("name", "val_mlm_loss", "heldout", "heldout_random",
                                          "selection_score", "wall_min")}))
    return 0


if __name__ == "__main__":
    run_cli(main)
