"""Pre-training: hybrid JEPA + MLM, MLM only, or JEPA only.

    python train.py --mode=hybrid --preset=tiny --max_steps=2000
    torchrun --nproc_per_node=8 train.py --mode=mlm --preset=small --max_flops=1e18

Every schedule is a pure function of the step and every batch (rows and masks) a pure function of
(seed, step), so a checkpoint only needs the step to resume exactly. The run folder holds
config.json, log.jsonl and ckpt.pt (+ ckpt-prev.pt, the one before).
"""
import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

import data
import masks
import model as M
from data import UserError


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
    lambda_mode: str = "learned"    # learned | fixed:<v> | uncertainty
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
                                    # 10-20% faster steps for ~25 s of compiling, once (README)
    seed: int = 0
    out: str = ""                   # run folder; empty = out/<mode>-<preset>
    resume: bool = False            # continue the run in --out
    log_every: int = 10
    ckpt_every: int = 500
    skip_nonfinite: int = 0         # tolerate this many steps with a non-finite loss (skipped)
    inject_nan_at: int = -1         # test hook: make the loss of this step NaN


PRESETS = {  # sizes from SPEC 2; `small` is the original's 512x6 model (34.8M parameters)
    "tiny": dict(d_model=256, n_layers=4, n_heads=4, pred_dim=128, pred_depth=2, batch_size=32,
                 lr=1e-3, warmup_steps=100, max_steps=2000, corpus="wikitext-2",
                 tokenizer="bert-base-uncased"),
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
                     "compile", "skip_nonfinite", "inject_nan_at", "device"}
EXIT_SIGNALLED = 128  # + signal number, like a shell: 130 after Ctrl-C, 143 after SIGTERM


# ----------------------------------------------------------------------------- config

def resolve_config(argv, cuda: bool):
    """Flags -> a complete TrainConfig, plus the keys the user set and why the preset was chosen."""
    cfg, _ = data.parse_flags(argv, TrainConfig())
    explicit = {a[2:].partition("=")[0].replace("-", "_") for a in argv if a.startswith("--")}
    why = "given"
    if not cfg.preset:
        cfg.preset = "small" if cuda else "tiny"
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
    cfg.out = cfg.out or f"out/{cfg.mode}-{cfg.preset}"
    validate(cfg)
    return cfg, explicit, why


def validate(cfg: TrainConfig):
    if cfg.mode not in M.MODES:
        raise UserError(f"--mode={cfg.mode}: expected one of {', '.join(M.MODES)}")
    for key in ("seq_len", "d_model", "n_layers", "n_heads", "pred_dim", "pred_depth",
                "batch_size", "max_steps", "log_every", "ckpt_every", "num_pred_masks"):
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
    if cfg.jepa_context not in ("corrupted", "clean"):
        raise UserError(f"--jepa_context={cfg.jepa_context}: expected corrupted or clean")
    try:
        M.parse_lambda_mode(cfg.lambda_mode)
    except ValueError as e:
        raise UserError(f"--{e}") from None


def model_config(cfg: TrainConfig, vocab_size: int) -> M.ModelConfig:
    return M.ModelConfig(vocab_size=vocab_size, **{f.name: getattr(cfg, f.name)
                                                   for f in dataclasses.fields(M.ModelConfig)
                                                   if f.name != "vocab_size"})


# ----------------------------------------------------------------------------- schedules

def lr_at(step: int, cfg: TrainConfig, total: int) -> float:
    """Linear warm-up, then cosine from lr to min_lr at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


def momentum_at(step: int, cfg: TrainConfig, total: int) -> float:
    """EMA momentum rising linearly from ema_momentum[0] to ema_momentum[1] over the run."""
    m0, m1 = cfg.ema_momentum
    return m0 + (m1 - m0) * min(1.0, step / max(1, total))


# ----------------------------------------------------------------------------- batches

def make_batch(rows, step: int, cfg: TrainConfig, specials: dict, vocab_size: int):
    """The global batch of a step: rows plus both corruptions, each from its own seeded stream,
    so the MLM masks of a step are identical in every mode (arms differ only in their loss)."""
    tokens = torch.from_numpy(data.batch_rows(rows, step, cfg.batch_size, cfg.seed))
    corrupted, mlm_pos, mlm_labels = masks.mlm_corrupt(
        tokens, list(specials.values()), specials["mask"], vocab_size,
        masks.step_generator(cfg.seed, step, 0), cfg.mask_prob)
    context_idx, target_idx = masks.jepa_masks(
        cfg.batch_size, cfg.seq_len, masks.step_generator(cfg.seed, step, 1), cfg.target_scale,
        cfg.context_scale, cfg.num_pred_masks, cfg.min_keep)
    return dict(tokens=tokens, corrupted=corrupted, mlm_pos=mlm_pos, mlm_labels=mlm_labels,
                context_idx=context_idx, target_idx=target_idx)


def batch_flops(mcfg: M.ModelConfig, batch) -> int:
    return M.step_flops(mcfg, batch["tokens"].shape[0], batch["context_idx"].shape[1],
                        batch["target_idx"].shape[1], batch["mlm_pos"].shape[1])


def plan_steps(cfg: TrainConfig, mcfg: M.ModelConfig, specials, vocab_size, rows) -> tuple:
    """(total steps, mean FLOPs per step). With max_flops the step count is the budget divided by
    the mean cost of the first 64 steps' actual masks (mask sizes vary a little per step)."""
    sample = [batch_flops(mcfg, make_batch(rows, s, cfg, specials, vocab_size)) for s in range(64)]
    per_step = float(np.mean(sample))
    if cfg.max_flops > 0:
        return max(1, int(cfg.max_flops // per_step)), per_step
    return cfg.max_steps, per_step


# ----------------------------------------------------------------------------- device helpers

NVIDIA_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "B200": 2250e12, "A100": 312e12,
                    "A10": 125e12, "L4": 121e12, "L40": 181e12, "4090": 165e12, "3090": 71e12}


def cpu_has_bf16() -> bool:
    """Native bf16 dot products (AVX512-BF16 or AMX, read from Linux's /proc/cpuinfo): there a
    bf16-autocast tiny step ran 1.25-1.4x faster than fp32 (README, Performance); elsewhere bf16 is
    emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def device_peak_flops(device: str, dtype: str) -> float:
    """Dense peak FLOP/s: NVIDIA's datasheet for bf16 (TF32 fp32 is half of it), or on CPU a
    matmul measured now for the dtype (the best of ten 1024^3 products after warm-up)."""
    if device == "cuda":
        name = torch.cuda.get_device_name()
        peak = next((NVIDIA_BF16_PEAK[k] for k in sorted(NVIDIA_BF16_PEAK, key=len, reverse=True)
                     if k in name), 0.0)  # longest match first: "L40S" is an L40, not an L4
        return peak if dtype == "bfloat16" else peak / 2
    dt = getattr(torch, dtype)
    a, b = torch.randn(1024, 1024, dtype=dt), torch.randn(1024, 1024, dtype=dt)
    for _ in range(3):  # warm-up: thread pool and oneDNN kernel selection
        a @ b
    best = float("inf")
    for _ in range(10):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 1024 ** 3 / best


def mfu(flops: float, seconds: float, peak: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the device's peak (0 if it is unknown)."""
    return flops / seconds / peak if peak > 0 and seconds > 0 else 0.0


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except OSError:
        return ""


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(out: Path, state: dict):
    """ckpt.pt is replaced atomically; the one it replaces survives as ckpt-prev.pt, so a crash
    at any moment leaves at least one complete checkpoint."""
    tmp = out / "ckpt.pt.tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        if (out / "ckpt.pt").exists():
            os.replace(out / "ckpt.pt", out / "ckpt-prev.pt")
        os.replace(tmp, out / "ckpt.pt")
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"could not write the checkpoint {out / 'ckpt.pt'}: {e.strerror or e}; "
                        "the previous checkpoint is intact; free space or use --out=DIR") from None


def check_resume(cfg: TrainConfig, explicit: set, ckpt: dict) -> TrainConfig:
    """The run's saved config wins; a flag that would change what is being trained is an error."""
    saved = ckpt["config"]
    for key in sorted(explicit - RESUME_MAY_CHANGE):
        value = getattr(cfg, key)
        if isinstance(value, tuple):
            value = list(value)
        if key in saved and saved[key] != value:
            raise UserError(f"--resume: --{key}={value} differs from the run's {saved[key]} "
                            f"(in {cfg.out}/config.json); drop the flag or start a new --out")
    merged = dict(saved, **{k: getattr(cfg, k) for k in RESUME_MAY_CHANGE})
    merged = {k: tuple(v) if isinstance(v, list) else v for k, v in merged.items()}
    return TrainConfig(**merged)


# ----------------------------------------------------------------------------- one step

@dataclass
class Run:
    """What a training process holds: the model, its (DDP-wrapped, compiled) forward, the
    optimizer, and how the global batch is split over processes and micro-batches."""
    cfg: TrainConfig
    mcfg: M.ModelConfig
    raw: M.PredictReconstruct
    net: torch.nn.Module        # raw, or DDP(raw)
    forward: object             # net, or torch.compile(net)
    opt: torch.optim.Optimizer
    device: torch.device
    rank: int = 0
    world: int = 1
    micro: int = 0
    accum: int = 1

    @property
    def compiled(self) -> bool:
        return self.forward is not self.net

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.cfg.dtype == "bfloat16")


def pick_device(cfg: TrainConfig) -> torch.device:
    """This process's device (under torchrun, GPU LOCAL_RANK), set before NCCL starts."""
    if cfg.device != "cuda":
        return torch.device("cpu")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    torch.cuda.set_device(device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return device


def build_run(cfg: TrainConfig, vocab_size: int, rank: int = 0, world: int = 1) -> Run:
    device = pick_device(cfg)
    micro = cfg.micro_batch or cfg.batch_size // world
    accum = cfg.batch_size // (world * micro)
    if accum * world * micro != cfg.batch_size:
        raise UserError(f"--batch_size={cfg.batch_size} must equal processes ({world}) x "
                        f"--micro_batch ({micro}) x an integer")
    mcfg = model_config(cfg, vocab_size)
    torch.manual_seed(cfg.seed)
    raw = M.PredictReconstruct(mcfg).to(device)
    decay = [p for p in raw.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in raw.parameters() if p.requires_grad and p.dim() < 2]  # biases, LN, w
    # fused AdamW: one kernel, and it reads `found_inf` to skip a bad step without a host sync
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=tuple(cfg.betas), fused=True)
    net = raw
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            raw, device_ids=[device.index] if cfg.device == "cuda" else None)
    # auto: a compilation that fails (no C++ compiler, say) warns and runs that code eagerly
    torch._dynamo.config.suppress_errors = cfg.compile == "auto"
    forward = net if cfg.compile == "false" else torch.compile(net)
    return Run(cfg, mcfg, raw, net, forward, opt, device, rank, world, micro, accum)


def train_step(run: Run, batch: dict, step: int, total: int, nan_loss: bool = False):
    """One optimisation step on this process's share of the global batch -> (stats, grad_norm,
    bad). Nothing here waits for the device: a step whose loss or gradient is not finite is
    skipped inside the fused optimizer (found_inf) and only flagged in `bad`."""
    cfg, opt = run.cfg, run.opt
    for group in opt.param_groups:
        group["lr"] = lr_at(step, cfg, total)
    stats = {}
    for i in range(run.accum):
        lo = (run.rank * run.accum + i) * run.micro
        part = {k: v[lo:lo + run.micro] for k, v in batch.items()}
        if run.device.type == "cuda":  # pinned host memory: the copy overlaps the GPU's work
            part = {k: v.pin_memory().to(run.device, non_blocking=True) for k, v in part.items()}
        if run.compiled:  # mask sizes vary per step: compile them as dynamic once
            torch._dynamo.mark_dynamic(part["context_idx"], 1)
            torch._dynamo.mark_dynamic(part["target_idx"], 1)
        last = i == run.accum - 1
        with run.autocast(), (run.net.no_sync() if run.world > 1 and not last
                              else contextlib.nullcontext()):
            loss, micro_stats = run.forward(part)
            if nan_loss:
                loss = loss * float("nan")
            (loss / run.accum).backward()
        micro_stats["loss"] = loss.detach()
        for k, v in micro_stats.items():  # the step's stats: mean over its micro-batches
            stats[k] = stats.get(k, 0) + v.float() / run.accum
    grad_norm = torch.nn.utils.clip_grad_norm_(run.raw.parameters(), cfg.grad_clip)
    bad = ~(torch.isfinite(stats["loss"]) & torch.isfinite(grad_norm))
    opt.found_inf = bad.float()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if run.raw.target_encoder is not None:
        M.ema_update(run.raw.target_encoder, run.raw.encoder, momentum_at(step, cfg, total))
    return stats, grad_norm, bad


# ----------------------------------------------------------------------------- the loop

def main(argv):
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    cfg, explicit, why = resolve_config(argv, torch.cuda.is_available())
    out = Path(cfg.out)
    ckpt = None
    if cfg.resume:
        ckpt = M.load_checkpoint(out / "ckpt.pt")
        cfg = check_resume(cfg, explicit, ckpt)
    elif (out / "ckpt.pt").exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it or "
                        "--out=DIR to start a new one")
    tok = data.load_tokenizer(cfg.tokenizer, cfg.corpus)
    if ckpt is not None and ckpt["tokenizer"] != tok.to_str():
        raise UserError(f"--resume: the tokenizer {cfg.tokenizer} on disk differs from the one "
                        f"the run in {out} was trained with; restore it or start a new --out")
    specials, vocab_size = data.special_ids(tok), tok.get_vocab_size()
    rows = data.load_rows(cfg.corpus, cfg.tokenizer, cfg.seq_len, "train")
    if world > 1:
        pick_device(cfg)
        dist.init_process_group("nccl" if cfg.device == "cuda" else "gloo")
        flag_group = dist.new_group(backend="gloo")  # host-side flags, whatever the backend
    run = build_run(cfg, vocab_size, rank, world)
    raw, opt, mcfg, device = run.raw, run.opt, run.mcfg, run.device
    total, flops_per_step = plan_steps(cfg, mcfg, specials, vocab_size, rows)
    step, flops_done, tokens_done = 0, 0, 0
    if ckpt is not None:
        raw.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        step, flops_done, tokens_done = ckpt["step"], ckpt["flops"], ckpt["tokens"]
        torch.set_rng_state(ckpt["rng"])
    peak = device_peak_flops(cfg.device, cfg.dtype)

    counts = M.param_counts(raw)
    if rank == 0:
        data.make_folder(out)
        print(f"preset {cfg.preset} ({why}) | mode {cfg.mode} | {cfg.device} {cfg.dtype}"
              f"{' compiled' if run.compiled else ''} x{world} | params "
              + " ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items())
              + f" | {cfg.batch_size * cfg.seq_len:,} tokens/step | "
              f"{flops_per_step / 1e9:.1f} GFLOPs/step | budget {total:,} steps = "
              f"{total * flops_per_step:.2e} FLOPs" + (f" | resuming at {step}" if step else ""),
              flush=True)
        if ckpt is None:
            data.atomic_write(out / "config.json", lambda f: f.write(json.dumps(dict(
                config=dataclasses.asdict(cfg), model_config=dataclasses.asdict(mcfg),
                params=counts, planned_steps=total, flops_per_step=flops_per_step,
                device=torch.cuda.get_device_name() if cfg.device == "cuda" else "cpu",
                world=world, torch=torch.__version__, git=git_commit()), indent=2)), mode="w")

    stop_signal = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop_signal.append(signum))

    def checkpoint():
        if rank == 0:
            save_checkpoint(out, dict(
                format=M.CKPT_FORMAT, config=dataclasses.asdict(cfg),
                model_config=dataclasses.asdict(mcfg), model=raw.state_dict(),
                optimizer=opt.state_dict(), step=step, flops=flops_done, tokens=tokens_done,
                rng=torch.get_rng_state(), tokenizer=tok.to_str()))
        if world > 1:
            dist.barrier()

    def check_finite():
        """Bad steps were skipped on the device; stop once more than skip_nonfinite of them
        happened (one host sync, at log and checkpoint steps only)."""
        if int(bad_steps) > cfg.skip_nonfinite:
            raise UserError(f"non-finite loss at step {int(first_bad[0])} "
                            f"(loss {first_bad[1]:.4g}, loss_jepa {first_bad[2]:.4g}, "
                            f"loss_mlm {first_bad[3]:.4g}); {int(bad_steps)} bad steps > "
                            f"--skip_nonfinite={cfg.skip_nonfinite}; the last checkpoint in "
                            f"{out} is intact")

    bad_steps = torch.zeros((), device=device)
    first_bad = torch.full((4,), -1.0, device=device)  # step, loss, loss_jepa, loss_mlm
    nan = torch.tensor(float("nan"), device=device)
    step_t = torch.tensor(float(step), device=device)  # the step, without a host->device copy
    log_file = open_log(out / "log.jsonl", step) if rank == 0 else None
    t_window, steps_window, t_start = time.perf_counter(), 0, time.perf_counter()
    while step < total:
        batch = make_batch(rows, step, cfg, specials, vocab_size)
        stats, grad_norm, bad = train_step(run, batch, step, total, step == cfg.inject_nan_at)
        bad_steps += bad
        first_bad.copy_(torch.where(bad & (first_bad[0] < 0), torch.stack(
            [step_t, stats["loss"], stats.get("loss_jepa", nan), stats.get("loss_mlm", nan)]),
            first_bad))
        step_t += 1
        step += 1
        steps_window += 1
        flops_done += batch_flops(mcfg, batch)
        tokens_done += cfg.batch_size * cfg.seq_len
        if world > 1:  # agree on a stop signal: one process may have received it alone
            flag = torch.tensor([len(stop_signal)], dtype=torch.int32)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=flag_group)
            if flag.item() and not stop_signal:
                stop_signal.append(signal.SIGTERM)
        if step % cfg.log_every == 0 or step in (1, total) or stop_signal:
            check_finite()
            if world > 1:  # SUM then divide: gloo has no AVG
                for v in stats.values():
                    dist.all_reduce(v)
                    v /= world
            elapsed = time.perf_counter() - t_window
            tok_s = steps_window * cfg.batch_size * cfg.seq_len / elapsed
            rec = dict(step=step, **{k: round(v.item(), 6) for k, v in stats.items()},
                       lr=lr_at(step - 1, cfg, total), momentum=momentum_at(step - 1, cfg, total),
                       grad_norm=round(grad_norm.item(), 4), tokens_per_s=round(tok_s, 1),
                       mfu=round(mfu(steps_window * flops_per_step, elapsed, peak), 4),
                       flops=flops_done, tokens=tokens_done, skipped=int(bad_steps),
                       elapsed=round(time.perf_counter() - t_start, 2))
            rec.update(collapse(raw, batch["tokens"][:8].to(device), run.autocast()))
            if rank == 0:
                log_file.write(json.dumps(rec) + "\n")
                log_file.flush()
                eta = (total - step) * elapsed / steps_window
                parts = [f"{k} {rec[k]:.4f}" for k in ("loss", "loss_jepa", "loss_mlm", "lam")
                         if k in rec]
                print(f"step {step}/{total} | " + " | ".join(parts) + f" | lr {rec['lr']:.2e} | "
                      f"{tok_s:,.0f} tok/s | MFU {100 * rec['mfu']:.1f}% | rankme "
                      f"{rec['rankme']:.1f} | ETA {eta / 60:.1f}m", flush=True)
            t_window, steps_window = time.perf_counter(), 0
        if step % cfg.ckpt_every == 0 or step == total or stop_signal:
            check_finite()
            checkpoint()
        if stop_signal:
            print(f"stopped by signal {stop_signal[0]} at step {step}; checkpoint written; "
                  f"continue with --resume --out={out}", file=sys.stderr)
            return EXIT_SIGNALLED + stop_signal[0]
    if rank == 0:
        print(f"done: {step} steps, {flops_done:.3e} FLOPs, {tokens_done:,} tokens, "
              f"{(time.perf_counter() - t_start) / 60:.1f} min -> {out / 'ckpt.pt'}")
    if world > 1:
        dist.destroy_process_group()
    return 0


def open_log(path: Path, step: int):
    """log.jsonl for appending; a resumed run first drops the lines logged after its checkpoint
    (they will be logged again), so the file reads as one uninterrupted run."""
    keep = []
    if step and path.exists():
        for line in path.read_text().splitlines(keepends=True):
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                pass  # a line cut short by a kill
    data.atomic_write(path, lambda f: f.write("".join(keep)), mode="w")
    return open(path, "a")


@torch.no_grad()
def collapse(raw: M.PredictReconstruct, tokens, autocast) -> dict:
    """Collapse signal on a few clean rows: features of the target encoder (the online one in
    mlm mode), layer-normed as the JEPA targets are."""
    encoder = raw.target_encoder or raw.encoder
    with autocast:
        h = encoder(tokens)
    return M.collapse_stats(F.layer_norm(h.float(), h.shape[-1:]).flatten(0, 1))


if __name__ == "__main__":
    data.run_cli(main)
