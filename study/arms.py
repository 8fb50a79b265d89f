"""The arms of the study: their names (an arm is a mode, or a hybrid with a lambda mode), their run
folders, the random-weight encoders beside them, and whether an arm's run is new, unfinished or
done. The study (study.py) and its report (report.py) share these."""
import dataclasses
import json
import shlex
import subprocess
import sys
from pathlib import Path

import torch

import analyze
import config
import data
import model
from lib import provenance
from lib.cli import UserError

ROOT = Path(__file__).resolve().parents[1]  # the repository
CURVE_TASKS = ("sst2", "stsb")  # the learning curve's probes (mean pooling)
# Trained poolers are fitted on token states (3 encoders x 2 poolers x 4 tasks, in the probes and
# again in the analysis): a weighted pooler on 2,000 STS-B pairs took up to 6 minutes per probe
# on a busy 2-core CPU. 1,000 examples and 50 L-BFGS steps keep them within the 90 minutes.
PROBE_ARGS = "--pooler_cap=1000 --max_iter=50"


def train_argv(arm: str, seed: int, preset: str, budget: float, run: Path, corpus: str = "",
               keep_at=(), train_args: str = "") -> list[str]:
    """train.py's flags for one seed of an arm at a FLOP budget, into folder `run`."""
    mode, lambda_mode = parse_arm(arm)
    return [f"--mode={mode}", f"--preset={preset}", f"--max_flops={budget:g}", f"--out={run}",
            f"--seed={seed}", *([f"--corpus={corpus}"] if corpus else []),
            *([f"--keep_at={','.join(map(str, keep_at))}"] if keep_at else []),
            *shlex.split(train_args),
            *([f"--lambda_mode={lambda_mode}"] if lambda_mode else [])]  # last: it wins


def train_run(argv: list[str], what: str) -> str:
    """Train the run of train.py flags `argv` (its --out) unless it is done, resuming an unfinished
    one, in a process of its own so that a crash costs this run only -> "" once it is done, else
    why not."""
    run = Path(next(a for a in reversed(argv) if a.startswith("--out="))[len("--out="):])
    status = arm_status(run, argv)
    if status == "done":
        return ""
    cmd = [sys.executable, str(ROOT / "train.py"), *argv,
           *(["--resume"] if status == "unfinished" else [])]
    shown = shlex.join(cmd).replace(f"{ROOT}/", "")  # no machine paths in logs
    print(f"{what} ({status}): {shown}", file=sys.stderr, flush=True)
    code = subprocess.run(cmd).returncode
    return "" if code == 0 else (f"train.py exited with status {code}; see above, then re-run "
                                 "to resume it")


def arm_status(run: Path, argv: list[str]) -> str:
    """new | unfinished | done: the run in folder `run` against the train.py flags `argv` that
    would make it now. A run made otherwise (any resolved training setting: the preset's recipe,
    the corpus, extra flags, the machine's dtype; or another vocabulary) is never reused as if
    it were this one: a UserError names what differs."""
    if not (run / "ckpt.pt").exists():
        return "new"
    conf = json.loads((run / "config.json").read_text())
    want = dataclasses.asdict(config.resolve_config(argv, torch.cuda.is_available())[0])
    ignore = config.RESUME_MAY_CHANGE - {"max_flops"}  # how it runs, not what it trains
    diff = provenance.differences({k: v for k, v in conf["config"].items() if k not in ignore},
                                  {k: list(v) if isinstance(v, tuple) else v
                                   for k, v in want.items() if k not in ignore})
    tok = data.load_tokenizer(want["tokenizer"], want["corpus"])
    if conf.get("tokenizer_sha256") != data.tokenizer_sha256(tok):
        diff.append(f"tokenizer {want['tokenizer']}: sha256 {conf.get('tokenizer_sha256')} -> "
                    f"{data.tokenizer_sha256(tok)}")
    if diff:
        raise UserError(f"{run} holds a run made with other settings ({'; '.join(diff)}); "
                        "delete it or pass another --out")
    step = model.load_checkpoint(run / "ckpt.pt")["step"]
    return "done" if step >= conf["planned_steps"] else "unfinished"


def parse_arm(arm: str) -> tuple[str, str]:
    """'<mode>[:<lambda_mode>]' -> (mode, lambda_mode or '' for train.py's default): a lambda
    variant is an arm of its own, e.g. hybrid:uncertainty, hybrid:fixed:0.5, hybrid:balanced."""
    mode, _, lambda_mode = arm.partition(":")
    if mode not in model.MODES:
        raise UserError(f"--arms={arm}: expected <mode>[:<lambda_mode>] with a mode in "
                        f"{', '.join(model.MODES)}, e.g. hybrid:uncertainty")
    if lambda_mode and mode != "hybrid":
        raise UserError(f"--arms={arm}: only a hybrid arm mixes two losses; a lambda_mode "
                        "goes with hybrid (hybrid:<lambda_mode>)")
    if lambda_mode:
        try:
            model.parse_lambda_mode(lambda_mode)
        except ValueError as e:
            raise UserError(f"--arms={arm}: {e}") from None
    return mode, lambda_mode


def arm_folder(arm: str, preset: str, seed: int = 0) -> str:
    """The run folder name of an arm's seed, also its model name in the analysis: hybrid:fixed:0.5
    at tiny -> hybrid-fixed-0.5-tiny (no colons: they are not portable in paths); seed k > 0 adds
    -s<k>, so that a 1-seed study is the first seed of a 3-seed one."""
    return f"{arm.replace(':', '-')}-{preset}" + (f"-s{seed}" if seed else "")


def arm_of(cfg, name: str) -> str:
    """The arm a run folder name belongs to."""
    return next(a for a in cfg.arms for s in range(cfg.seeds)
                if arm_folder(a, cfg.preset, s) == name)


def arm_method(arm: str) -> str:
    """analyze.py's method name of an arm (what its seeds are runs of)."""
    mode, lambda_mode = parse_arm(arm)
    return analyze.method(dict(mode=mode, lambda_mode=lambda_mode or "learned"))
