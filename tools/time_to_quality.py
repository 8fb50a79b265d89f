"""`make bench ARGS=--time_to_quality`: the wall time the tiny MLM recipe takes to reach a fixed
validation MLM loss (study/recipe_search.py's), the number a small-budget pre-training user cares
about (docs/performance.md). It trains the recipe in a train.py process, keeping checkpoints at
KEEP_AT of the run, and interpolates between the two around the crossing."""
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import model
from lib.cli import UserError

ROOT = Path(__file__).resolve().parents[1]  # the repository
# The validation MLM loss the recipe must reach, fixed once (so that times compare) from a measured
# run, results/tiny-cpu-1seed's mlm-tiny (the tiny recipe at 5e13 FLOPs, 8.9 min on a busy 2-core
# CPU): validation loss 6.6805 at 1/4 of the run, 6.4957 at 1/2, 6.3466 at the end. 6.40 is
# reached in the last half, so in ~5-9 minutes here.
TARGET_VAL_LOSS = 6.40
KEEP_AT = tuple(i / 10 for i in range(1, 10))  # kept checkpoints: the curve's points (+ the end)


def ttq_train_command(bc, out: Path) -> list[str]:
    """train.py's flags for the recipe: MLM at the bench's preset, corpus and FLOP budget, kept
    checkpoints at KEEP_AT; the bench's --dtype/--compile/--deterministic/--batch_size, then
    --train_args (which win)."""
    args = ["--mode=mlm", f"--preset={bc.preset}", f"--corpus={bc.corpus}",
            f"--max_flops={bc.max_flops:g}", f"--keep_at={','.join(f'{f:g}' for f in KEEP_AT)}",
            f"--out={out}"]
    args += [f"--compile={bc.compile}"] if bc.compile != "auto" else []
    args += [f"--deterministic={bc.deterministic}"] if bc.deterministic != "auto" else []
    args += [f"--dtype={bc.dtype}"] if bc.dtype else []
    args += [f"--batch_size={bc.batch_size}"] if bc.batch_size else []
    return args + shlex.split(bc.train_args)


def elapsed_at(log: list[dict], step: int) -> tuple[float, bool]:
    """(seconds since the run's start at the end of `step`, whether interpolated): the log line
    of that step, else linear between the log lines around it (log steps every --log_every)."""
    recs = sorted((r for r in log if "elapsed" in r), key=lambda r: r["step"])
    for r in recs:
        if r["step"] == step:
            return float(r["elapsed"]), False
    before = [r for r in recs if r["step"] < step]
    after = [r for r in recs if r["step"] > step]
    if not before or not after:
        raise UserError(f"no log line at or around step {step} in the run's log.jsonl")
    a, b = before[-1], after[0]
    w = (step - a["step"]) / (b["step"] - a["step"])
    return a["elapsed"] + w * (b["elapsed"] - a["elapsed"]), True


def crossing(curve: list[dict], target: float) -> dict:
    """When the validation loss first reaches `target` (<=): linear in (elapsed, loss) between
    the last point above it and the first at or below it; at or before the first point if that
    one is already there (no earlier point to interpolate from); None if never."""
    for i, p in enumerate(curve):
        if p["val_mlm_loss"] <= target:
            if i == 0:
                return dict(reached=True, seconds=p["elapsed_s"], step=p["step"],
                            between=[None, 0], note="at or before the first kept checkpoint")
            a = curve[i - 1]
            w = (a["val_mlm_loss"] - target) / (a["val_mlm_loss"] - p["val_mlm_loss"])
            return dict(reached=True, seconds=round(a["elapsed_s"] + w * (p["elapsed_s"]
                                                                          - a["elapsed_s"]), 3),
                        step=round(a["step"] + w * (p["step"] - a["step"]), 2),
                        between=[i - 1, i], note="interpolated")
    return dict(reached=False, seconds=None, step=None, between=None, note="not reached")


def time_to_quality(bc) -> dict:
    """Train the recipe in a fresh train.py process (its output goes to stderr) into --ttq_out,
    or reuse the run there (--ttq_reuse); then the validation MLM loss
    (study/recipe_search.py's validation_loss) of every kept checkpoint and the final one, with
    the wall time the run's log.jsonl gives at its step, and when it first reaches the target."""
    from lib.runs import read_log
    from study import recipe_search
    out = Path(bc.ttq_out)
    args = ttq_train_command(bc, out)
    if not bc.ttq_reuse:
        if out.exists():  # the bench's own folder: a new measurement replaces the old one
            shutil.rmtree(out)
        print(f"time to quality: python train.py {shlex.join(args)}", file=sys.stderr,
              flush=True)
        rc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args],  # this cwd:
                            stdout=2).returncode  # paths as given; fd 2: --json's stdout clean
        if rc != 0:
            raise UserError(f"time to quality: train.py exited with status {rc} (its output is "
                            f"above): python train.py {shlex.join(args)}")
    elif not (out / "ckpt.pt").exists():
        raise UserError(f"--ttq_reuse: no run in --ttq_out={out}; run --time_to_quality without "
                        f"--ttq_reuse first")
    log = read_log(out)
    conf = json.loads((out / "config.json").read_text())
    rows = bc.val_rows or recipe_search.VAL_ROWS
    points = [(f, out / f"ckpt-f{f:g}.pt") for f in KEEP_AT] + [(1.0, out / "ckpt.pt")]
    curve, seen = [], set()
    for fraction, path in points:
        if not path.exists():
            continue
        step = int(model.load_checkpoint(path)["step"])
        if step in seen:  # a short run: two fractions on one step keep one file
            continue
        seen.add(step)
        elapsed, interpolated = elapsed_at(log, step)
        curve.append(dict(fraction=fraction, step=step, elapsed_s=round(elapsed, 3),
                          elapsed_interpolated=interpolated,
                          **recipe_search.validation_loss(path, rows)))
    curve.sort(key=lambda p: p["step"])
    return dict(command=f"python train.py {shlex.join(args)}", out=str(out), corpus=bc.corpus,
                max_flops=bc.max_flops, planned_steps=conf["planned_steps"],
                wall_s=round(log[-1]["elapsed"], 3), target_val_loss=bc.target_val_loss,
                target_is_the_fixed_one=bc.target_val_loss == TARGET_VAL_LOSS,
                curve=curve, **crossing(curve, bc.target_val_loss))


def print_time_to_quality(t: dict):
    print(f"time to quality ({t['command']}): {t['planned_steps']} steps in "
          f"{t['wall_s'] / 60:.1f} min; validation MLM loss by checkpoint:")
    for p in t["curve"]:
        print(f"  step {p['step']:>6} ({p['fraction']:.1f})  {p['elapsed_s']:8.1f} s"
              f"{'*' if p['elapsed_interpolated'] else ' '}  val loss {p['val_mlm_loss']:.4f}")
    placeholder = "" if t["target_is_the_fixed_one"] else " (not the fixed target)"
    if t["reached"]:
        print(f"  val loss {t['target_val_loss']:g}{placeholder} reached at {t['seconds']:.1f} s "
              f"= {t['seconds'] / 60:.2f} min (step {t['step']:g}, {t['note']})")
    else:
        print(f"  val loss {t['target_val_loss']:g}{placeholder}: not reached")
    print("  (* elapsed interpolated between the log lines around the step)")
