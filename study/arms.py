"""The arms of the study: their names (an arm is a mode, or a hybrid with a lambda mode), their run
folders, the random-weight encoders beside them, and whether an arm's run is new, unfinished or
done. The study (study.py) and its report (report.py) share these."""
import json
from pathlib import Path

import analyze
import model
from lib.cli import UserError

CURVE_TASKS = ("sst2", "stsb")  # the learning curve's probes (mean pooling)


def arm_status(run: Path, budget: float, seed: int = 0) -> str:
    """new | unfinished | done, from the run's checkpoint and resolved config."""
    if not (run / "ckpt.pt").exists():
        return "new"
    conf = json.loads((run / "config.json").read_text())
    for key, want in (("max_flops", budget), ("seed", seed)):
        if conf["config"][key] != want:
            raise UserError(f"{run} was trained with --{key}={conf['config'][key]:g}, not "
                            f"{want:g}; delete it or pass another --out")
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


def random_name(preset: str, seed: int = 0) -> str:
    """The random-weight encoder with train.py --seed=<seed>'s init: its probe.py --ckpt and
    folder."""
    return ("random" if not seed else f"random:{seed}"), f"random-{preset}" + (
        f"-s{seed}" if seed else "")


def arm_of(cfg, name: str) -> str:
    """The arm a run folder name belongs to."""
    return next(a for a in cfg.arms for s in range(cfg.seeds)
                if arm_folder(a, cfg.preset, s) == name)


def arm_method(arm: str) -> str:
    """analyze.py's method name of an arm (what its seeds are runs of)."""
    mode, lambda_mode = parse_arm(arm)
    return analyze.method(dict(mode=mode, lambda_mode=lambda_mode or "learned"))
