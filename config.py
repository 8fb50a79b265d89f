"""Pre-training configuration: the flags (TrainConfig), the model-size presets, and how flags,
preset and machine resolve into one complete config. train.py runs it; the Makefile asks this file
for the default preset (`python config.py default-preset`), so both follow one rule.
"""
import dataclasses
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import masks
import model
from lib.cli import UserError, parse_flags


@dataclass
class TrainConfig:
    mode: str = "hybrid"            # hybrid | mlm | jepa
    preset: str = ""                # tiny | small | base | large; empty: small on CUDA, tiny on CPU
    corpus: str = ""                # wikitext-103 | wikitext-2 | enwiki | a local text file/folder
    tokenizer: str = ""             # bert-base-uncased | wordpiece-N
    seq_len: int = 128
    d_model: int = 0                # model sizes: 0 = the preset's
    n_layers: int = 0
    n_heads: int = 0
    pred_dim: int = 0
    pred_depth: int = 0
    lambda_mode: str = "learned"    # learned | fixed:<v> | uncertainty | balanced[:<tau>]
    jepa_context: str = "corrupted"  # corrupted (the original's) | clean
    mask_prob: float = 0.15
    target_scale: tuple[float, ...] = (0.10, 0.25)   # JEPA target-span length / n
    context_scale: tuple[float, ...] = (0.65, 0.85)  # JEPA context-block length / n
    num_pred_masks: int = 2
    min_keep: int = 4
    batch_size: int = 0             # global rows per step, over all processes and micro-batches
    micro_batch: int = 0            # rows per forward per process; 0 = no accumulation
    lr: float = 0.0
    min_lr: float = 0.0             # 0 = lr / 10
    warmup_steps: int = -1          # -1 = the preset's
    weight_decay: float = 0.01
    betas: tuple[float, ...] = (0.9, 0.98)
    grad_clip: float = 1.0
    ema_momentum: tuple[float, ...] = (0.996, 1.0)   # linear over the run
    max_steps: int = 0              # 0 = the preset's
    max_flops: float = 0.0          # > 0: train this many FLOPs (equal-compute arms) instead
    device: str = ""                # cuda | cpu; empty = cuda when available
    dtype: str = ""                 # float32 | bfloat16; empty = bfloat16 on CUDA and on CPUs
                                    # with bf16 instructions (faster there), else float32
    compile: str = "auto"           # true | false | auto = compile, and run eager with a warning
                                    # where it cannot (no C++ compiler). Tiny on a 2-core CPU:
                                    # 10-20% faster steps for ~25 s of compiling, once
                                    # (docs/performance.md)
    deterministic: str = "auto"     # true | false | auto = true on CPU (costs ~2-4% there,
                                    # docs/reproducibility.md), false on CUDA (speed)
    seed: int = 0
    out: str = ""                   # run folder; empty = out/<mode>-<preset>
    resume: bool = False            # continue the run in --out
    log_every: int = 10             # log (and agree on a stop signal over processes) every N steps
    collapse_every: int = 100       # RankMe/feature-std collapse signals every N steps (a log step)
    ckpt_every: int = 500           # checkpoint every N steps,
    ckpt_minutes: float = 0.0       # ... or when this many minutes passed since the last one (> 0)
    keep_at: tuple[float, ...] = ()  # also keep ckpt-f<f>.pt at these fractions of the run
                                    # (learning curves), e.g. 0.125,0.25,0.5
    skip_nonfinite: int = 0         # tolerate this many steps with a non-finite loss (skipped)
    inject_nan_at: int = -1         # test hook: make the loss of this step NaN
    stop_at: int = -1               # test hook: after this step, stop as if SIGTERM had come
    fail_at: int = -1               # test hook: rank 0 fails writing this step's checkpoint


PRESETS = {  # sizes from SPEC 2; `small` is the original's 512x6 model (34.8M parameters)
    # tiny: the CPU recipe, chosen by the recipe search on train-side signals only
    # (results/recipe-search): sized for ~5e13 FLOPs, GLUE-length rows, a corpus-trained vocab
    "tiny": dict(d_model=128, n_layers=4, n_heads=4, pred_dim=64, pred_depth=2, batch_size=128,
                 lr=2e-3, warmup_steps=100, max_steps=2000, seq_len=64, corpus="wikitext-103",
                 tokenizer="wordpiece-8192"),
    "small": dict(d_model=512, n_layers=6, n_heads=8, pred_dim=192, pred_depth=6, batch_size=256,
                  lr=5e-4, warmup_steps=1000, max_steps=50_000, corpus="wikitext-103",
                  tokenizer="bert-base-uncased"),
    "base": dict(d_model=768, n_layers=12, n_heads=12, pred_dim=384, pred_depth=6,
                 batch_size=256, lr=3e-4, warmup_steps=2000, max_steps=100_000,
                 corpus="wikitext-103", tokenizer="bert-base-uncased"),
    "large": dict(d_model=1024, n_layers=24, n_heads=16, pred_dim=512, pred_depth=6,
                  batch_size=256, lr=2e-4, warmup_steps=4000, max_steps=100_000,
                  corpus="wikitext-103", tokenizer="bert-base-uncased"),
}
RESUME_MAY_CHANGE = {"resume", "out", "max_steps", "max_flops", "log_every", "ckpt_every",
                     "ckpt_minutes", "keep_at", "collapse_every", "compile", "deterministic",
                     "skip_nonfinite", "inject_nan_at", "stop_at", "fail_at", "device"}


def default_preset(cuda: bool) -> str:
    """The preset when none is given: the original's model on a GPU, the CPU-sized one without.
    The Makefile's default CKPT/RUNS folders (out/<mode>-<preset>) come from here too."""
    return "small" if cuda else "tiny"


def resolve_config(argv, cuda: bool):
    """Flags -> a complete TrainConfig, plus the keys the user set and why the preset was chosen."""
    cfg, _ = parse_flags(argv, TrainConfig())
    explicit = {a[2:].partition("=")[0].replace("-", "_") for a in argv if a.startswith("--")}
    why = "given"
    if not cfg.preset:
        cfg.preset = default_preset(cuda)
        why = ("CUDA is available: the original's model" if cuda else
               "no CUDA: the CPU-sized model; --preset=small is the original's")
    if cfg.preset not in PRESETS:
        raise UserError(f"--preset={cfg.preset}: expected one of {', '.join(PRESETS)}")
    defaults = TrainConfig()
    for key, value in PRESETS[cfg.preset].items():
        if key not in explicit and getattr(cfg, key) == getattr(defaults, key):
            setattr(cfg, key, value)
    cfg.min_lr = cfg.min_lr or cfg.lr / 10
    cfg.device = cfg.device or ("cuda" if cuda else "cpu")
    cfg.dtype = cfg.dtype or ("bfloat16" if cfg.device == "cuda" or cpu_has_bf16() else "float32")
    if cfg.deterministic == "auto":
        cfg.deterministic = "true" if cfg.device == "cpu" else "false"
    cfg.out = cfg.out or f"out/{cfg.mode}-{cfg.preset}"
    validate(cfg)
    return cfg, explicit, why


def validate(cfg: TrainConfig):
    if cfg.mode not in model.MODES:
        raise UserError(f"--mode={cfg.mode}: expected one of {', '.join(model.MODES)}")
    for key in ("seq_len", "d_model", "n_layers", "n_heads", "pred_dim", "pred_depth",
                "batch_size", "max_steps", "log_every", "ckpt_every", "collapse_every",
                "num_pred_masks"):
        if getattr(cfg, key) <= 0:
            raise UserError(f"--{key}={getattr(cfg, key)}: must be a positive integer")
    for key in ("micro_batch", "min_keep", "warmup_steps", "skip_nonfinite"):
        if getattr(cfg, key) < 0:
            raise UserError(f"--{key}={getattr(cfg, key)}: must not be negative")
    if cfg.lr <= 0 or cfg.max_flops < 0 or not 0 < cfg.mask_prob < 1:
        raise UserError("--lr must be > 0, --max_flops >= 0 and 0 < --mask_prob < 1")
    if cfg.d_model % cfg.n_heads or cfg.pred_dim % cfg.n_heads:
        raise UserError(f"--d_model={cfg.d_model} and --pred_dim={cfg.pred_dim} must be "
                        f"divisible by --n_heads={cfg.n_heads}")
    for key, n in (("target_scale", 2), ("context_scale", 2), ("betas", 2), ("ema_momentum", 2)):
        v = getattr(cfg, key)
        if len(v) != n or not all(0 <= x <= 1 for x in v) or v[0] > v[1] and key != "betas":
            raise UserError(f"--{key}={','.join(map(str, v))}: expected two numbers "
                            "lo,hi in [0, 1]")
    if cfg.device not in ("cpu", "cuda") or cfg.dtype not in ("float32", "bfloat16"):
        raise UserError(f"--device={cfg.device} --dtype={cfg.dtype}: expected cpu|cuda and "
                        "float32|bfloat16")
    if cfg.compile not in ("true", "false", "auto"):
        raise UserError(f"--compile={cfg.compile}: expected true, false or auto")
    if cfg.deterministic not in ("true", "false"):
        raise UserError(f"--deterministic={cfg.deterministic}: expected true, false or auto")
    if not all(0 < f < 1 for f in cfg.keep_at):
        raise UserError(f"--keep_at={','.join(map(str, cfg.keep_at))}: expected fractions of the "
                        "run strictly between 0 and 1, e.g. 0.25,0.5")
    if cfg.ckpt_minutes < 0:
        raise UserError(f"--ckpt_minutes={cfg.ckpt_minutes:g}: must not be negative")
    if cfg.jepa_context not in ("corrupted", "clean"):
        raise UserError(f"--jepa_context={cfg.jepa_context}: expected corrupted or clean")
    try:
        model.parse_lambda_mode(cfg.lambda_mode)
    except ValueError as e:
        raise UserError(f"--{e}") from None
    try:
        masks.jepa_widths(cfg.seq_len, cfg.target_scale, cfg.context_scale, cfg.num_pred_masks,
                          cfg.min_keep)
    except ValueError as e:
        raise UserError(f"--seq_len={cfg.seq_len} --target_scale --context_scale "
                        f"--num_pred_masks --min_keep: {e}") from None


def model_config(cfg: TrainConfig, vocab_size: int) -> model.ModelConfig:
    return model.ModelConfig(vocab_size=vocab_size, **{f.name: getattr(cfg, f.name)
                                                   for f in dataclasses.fields(model.ModelConfig)
                                                   if f.name != "vocab_size"})



def cpu_has_bf16() -> bool:
    """Native bf16 dot products (AVX512-BF16 or AMX, read from Linux's /proc/cpuinfo): there a
    bf16-autocast tiny step ran 1.25-1.4x faster than fp32 (docs/performance.md); elsewhere bf16 is
    emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


if __name__ == "__main__":  # `python config.py default-preset`: for the Makefile
    if sys.argv[1:] != ["default-preset"]:
        sys.exit("usage: python config.py default-preset")
    import torch
    print(default_preset(torch.cuda.is_available()))
