"""Pre-training: hybrid JEPA + MLM, MLM only, or JEPA only.

    python train.py --mode=hybrid --preset=tiny --max_steps=2000
    torchrun --nproc_per_node=8 train.py --mode=mlm --preset=small --max_flops=1e18

Every schedule is a pure function of the step and every batch (rows and masks) a pure function of
(seed, step), so a checkpoint only needs the step to resume exactly; each process builds only its
share of a batch, ahead of time in a background thread. With --deterministic (the CPU default)
the same seed gives the same bits, compiled or not (docs/reproducibility.md). The run folder holds
config.json, log.jsonl and ckpt.pt (+ ckpt-prev.pt, the one before). Flags and presets: config.py;
device, peak FLOP/s, deterministic kernels and compile counters: lib/hardware.py; the run
folder's files (checkpoints, log, prefetching): lib/runs.py.
"""
import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import data
import masks
import model
from config import RESUME_MAY_CHANGE, TrainConfig, model_config, resolve_config
from lib import hardware
from lib.cli import UserError, atomic_write, make_folder, run_cli
from lib.runs import CheckpointWriter, Prefetcher, code_state, open_log, weights_sha256

EXIT_SIGNALLED = 128  # + signal number, like a shell: 130 after Ctrl-C, 143 after SIGTERM


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

def make_batch(rows, step: int, cfg: TrainConfig, specials: dict, vocab_size: int,
               rank: int = 0, world: int = 1):
    """This process's share (rows rank*B/world ... of B = batch_size) of a step's global batch:
    rows plus both corruptions, each from its own seeded stream, so the MLM masks of a step are
    identical in every mode (arms differ only in their loss) and the shares of all processes,
    stacked, are exactly the one-process batch. A pure function of (seed, step, rank, world)."""
    share = cfg.batch_size // world
    lo, hi = rank * share, (rank + 1) * share
    tokens = torch.from_numpy(data.batch_rows(rows, step, cfg.batch_size, cfg.seed, lo, hi))
    corrupted, mlm_pos, mlm_labels = masks.mlm_corrupt(
        tokens, list(specials.values()), specials["mask"], vocab_size,
        masks.step_generator(cfg.seed, step, 0), cfg.mask_prob, rows=(lo, cfg.batch_size))
    jepa = masks.jepa_masks(share, cfg.seq_len, masks.step_generator(cfg.seed, step, 1),
                            cfg.target_scale, cfg.context_scale, cfg.num_pred_masks,
                            cfg.min_keep, rows=(lo, cfg.batch_size))
    return dict(tokens=tokens, corrupted=corrupted, mlm_pos=mlm_pos, mlm_labels=mlm_labels,
                **dict(zip(model.JEPA_MASKS, jepa)))


def batch_flops(mcfg: model.ModelConfig, batch, batch_size: int) -> int:
    """Useful FLOPs of a step of the global batch (batch_size rows) with this batch's mask sizes:
    the JEPA masks' padding is not counted (it is executed, as MFU leaves padding out)."""
    return model.step_flops(mcfg, batch_size, int(batch["context_valid"][0].sum()),
                            int(batch["target_valid"][0].sum()), batch["mlm_pos"].shape[1])


def plan_steps(cfg: TrainConfig, mcfg: model.ModelConfig, specials, vocab_size, rows) -> tuple:
    """(total steps, mean FLOPs per step). With max_flops the step count is the budget divided by
    the mean cost of the first 64 steps' actual masks (mask sizes vary a little per step)."""
    sample = [batch_flops(mcfg, make_batch(rows, s, cfg, specials, vocab_size), cfg.batch_size)
              for s in range(64)]
    per_step = float(np.mean(sample))
    if cfg.max_flops > 0:
        return max(1, int(cfg.max_flops // per_step)), per_step
    return cfg.max_steps, per_step


# ----------------------------------------------------------------------------- resuming

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
    mcfg: model.ModelConfig
    raw: model.PredictReconstruct
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
        return hardware.autocast(self.device.type, self.cfg.dtype)


def build_run(cfg: TrainConfig, vocab_size: int, rank: int = 0, world: int = 1) -> Run:
    device = hardware.pick_device(cfg)
    hardware.keep_freed_memory(device)  # CPU: no fresh pages every step
    micro = cfg.micro_batch or cfg.batch_size // world
    accum = cfg.batch_size // (world * micro)
    if accum * world * micro != cfg.batch_size:
        raise UserError(f"--batch_size={cfg.batch_size} must equal processes ({world}) x "
                        f"--micro_batch ({micro}) x an integer")
    mcfg = model_config(cfg, vocab_size)
    hardware.set_deterministic(cfg)
    torch.manual_seed(cfg.seed)
    raw = model.PredictReconstruct(mcfg).to(device)
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
    for i in range(run.accum):  # batch: this process's share (make_batch with its rank)
        part = {k: v[i * run.micro:(i + 1) * run.micro] for k, v in batch.items()}
        if run.device.type == "cuda":  # from pinned memory (Prefetcher): overlaps the GPU's work
            part = {k: v.to(run.device, non_blocking=True) for k, v in part.items()}
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
    if run.raw.balanced:  # lambda_mode=balanced: L(0) from the first step's global batch
        losses = torch.stack([stats["loss_jepa"], stats["loss_mlm"]]) / run.world
        if run.world > 1:
            dist.all_reduce(losses)
        run.raw.observe_losses(losses, bad)
    if run.raw.target_encoder is not None:
        model.ema_update(run.raw.target_encoder, run.raw.encoder, momentum_at(step, cfg, total))
    return stats, grad_norm, bad


# ----------------------------------------------------------------------------- the loop

def main(argv):
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    cfg, explicit, why = resolve_config(argv, torch.cuda.is_available())
    cfg, ckpt = start_or_resume(cfg, explicit)
    tok, rows = data.load_training(cfg.tokenizer, cfg.corpus, cfg.seq_len, cfg.mode,
                                   "corpus" in explicit)
    if ckpt is not None and ckpt["tokenizer"] != tok.to_str():
        raise UserError(f"--resume: the tokenizer {cfg.tokenizer} on disk differs from the one "
                        f"the run in {cfg.out} was trained with; restore it or start a new --out")
    if world > 1:
        hardware.pick_device(cfg)
        dist.init_process_group("nccl" if cfg.device == "cuda" else "gloo")
    try:
        return train(cfg, why, ckpt, tok, rows, rank, world)
    except RuntimeError as e:  # a collective broke under this rank: another one ended
        if world > 1 and (isinstance(e, dist.DistError) or "closed by peer" in str(e)):
            raise UserError(f"rank {rank}: a collective failed because another rank ended (its "
                            f"own error says why): {str(e).splitlines()[0][:160]}") from None
        raise
    finally:  # also after an error or a signal, so that no rank is left waiting on this one
        if world > 1:
            dist.destroy_process_group()


def train(cfg: TrainConfig, why: str, ckpt, tok, rows, rank: int, world: int) -> int:
    """The training loop: a step, then (at its intervals) a log line and a checkpoint, until the
    planned step or a stop signal -> the exit status."""
    specials, vocab_size = data.special_ids(tok), tok.get_vocab_size()
    flag_group = dist.new_group(backend="gloo") if world > 1 else None  # host-side flags
    run = build_run(cfg, vocab_size, rank, world)
    total, flops_per_step = plan_steps(cfg, run.mcfg, specials, vocab_size, rows)
    progress = Progress.start(run, ckpt)
    out, start = Path(cfg.out), progress.step
    if rank == 0:
        announce(run, why, total, flops_per_step, start)
        if ckpt is None:
            write_config(run, tok, total, flops_per_step)
    stop_signal = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop_signal.append(signum))
    log = Log(run, out / "log.jsonl", start, total, flops_per_step) if rank == 0 else None
    prefetch = Prefetcher(lambda s: make_batch(rows, s, cfg, specials, vocab_size, rank, world),
                          start, total, pin=run.device.type == "cuda")
    keep = {max(1, round(f * total)): f for f in cfg.keep_at}  # step -> fraction
    t_ckpt, compile_before = time.perf_counter(), hardware.compile_counts()
    writer = CheckpointWriter()
    try:
        while progress.step < total:
            _, batch = prefetch.next()
            stats, grad_norm, bad = train_step(run, batch, progress.step, total,
                                               progress.step == cfg.inject_nan_at)
            progress.advance(stats, bad, batch_flops(run.mcfg, batch, cfg.batch_size),
                             cfg.batch_size * cfg.seq_len)
            step = progress.step
            if step == cfg.stop_at:  # deterministic interruption for tests (tools/gpu_check.py)
                stop_signal.append(signal.SIGTERM)
            if step == start + 1 and run.compiled:
                first_compile = hardware.compile_report(rank, compile_before)
            at_log = step % cfg.log_every == 0 or step in (1, total)
            stopping, ckpt_due = agree_on_stop(run, at_log, stop_signal, flag_group,
                                               0 < 60 * cfg.ckpt_minutes
                                               <= time.perf_counter() - t_ckpt)
            if at_log or stopping:
                progress.check_finite(cfg)
                if world > 1:  # SUM then divide: gloo has no AVG
                    for v in stats.values():
                        dist.all_reduce(v)
                        v /= world
                compiled = (hardware.compile_since(compile_before, first_compile)
                            if run.compiled else {})
                if log is not None:
                    log.write(progress, stats, grad_norm, batch["tokens"], compiled)
            if step % cfg.ckpt_every == 0 or step in (total, *keep) or stopping or ckpt_due:
                progress.check_finite(cfg)
                checkpoint(run, progress, tok, writer,
                           [out / f"ckpt-f{keep[step]:g}.pt"] if step in keep else [])
                t_ckpt = time.perf_counter()
            if stopping:  # a rank that got no signal itself stops as if by SIGTERM
                writer.wait()
                sig = (stop_signal or [signal.SIGTERM])[0]
                print(f"stopped by signal {sig} at step {step}; checkpoint written; continue "
                      f"with --resume --out={out}", file=sys.stderr)
                return EXIT_SIGNALLED + sig
        writer.wait()  # the last checkpoint is on disk
    finally:
        prefetch.close()
        writer.close()
    if rank == 0:
        print(f"done: {progress.step} steps, {progress.flops:.3e} FLOPs, {progress.tokens:,} "
              f"tokens, {(time.perf_counter() - log.t_start) / 60:.1f} min -> {out / 'ckpt.pt'}")
    return 0


@dataclass
class Progress:
    """How far a run is: its step and what it has trained on (host), and the non-finite steps
    skipped so far (device: counting them needs no host sync)."""
    step: int
    flops: int
    tokens: int
    step_t: torch.Tensor         # the step, without a host->device copy
    bad_steps: torch.Tensor
    first_bad: torch.Tensor      # step, loss, loss_jepa, loss_mlm of the first bad step

    @classmethod
    def start(cls, run: Run, ckpt) -> "Progress":
        """At step 0, or where the checkpoint left off (weights, optimizer, RNG restored)."""
        step = flops = tokens = 0
        if ckpt is not None:
            run.raw.load_state_dict(ckpt["model"])
            run.opt.load_state_dict(ckpt["optimizer"])
            step, flops, tokens = ckpt["step"], ckpt["flops"], ckpt["tokens"]
            torch.set_rng_state(ckpt["rng"])
        device = run.device
        return cls(step, flops, tokens, torch.tensor(float(step), device=device),
                   torch.zeros((), device=device), torch.full((4,), -1.0, device=device))

    def advance(self, stats: dict, bad, flops: int, tokens: int):
        nan = self.first_bad.new_tensor(float("nan"))
        self.bad_steps += bad
        self.first_bad.copy_(torch.where(bad & (self.first_bad[0] < 0), torch.stack(
            [self.step_t, stats["loss"], stats.get("loss_jepa", nan),
             stats.get("loss_mlm", nan)]), self.first_bad))
        self.step_t += 1
        self.step += 1
        self.flops += flops
        self.tokens += tokens

    def check_finite(self, cfg: TrainConfig):
        """Bad steps were skipped on the device; stop once more than skip_nonfinite of them
        happened (one host sync, at log and checkpoint steps only)."""
        if int(self.bad_steps) > cfg.skip_nonfinite:
            step, loss, loss_jepa, loss_mlm = self.first_bad.tolist()
            raise UserError(f"non-finite loss at step {int(step)} (loss {loss:.4g}, loss_jepa "
                            f"{loss_jepa:.4g}, loss_mlm {loss_mlm:.4g}); {int(self.bad_steps)} "
                            f"bad steps > --skip_nonfinite={cfg.skip_nonfinite}; the last "
                            f"checkpoint in {cfg.out} is intact")


def agree_on_stop(run: Run, at_log: bool, stop_signal: list, flag_group, ckpt_due: bool):
    """(stop now, checkpoint now). One process: a signal stops at once. Several: they agree on
    a stop signal and a timed checkpoint at log steps only (one all-reduce of two flags)."""
    if run.world == 1:
        return bool(stop_signal), ckpt_due
    if not at_log:
        return False, False  # a rank's own clock alone must not make it checkpoint
    flags = torch.tensor([len(stop_signal), ckpt_due], dtype=torch.int32)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=flag_group)
    return bool(flags[0]), bool(flags[1])


def checkpoint(run: Run, progress: Progress, tok, writer: CheckpointWriter, keep=()):
    """Rank 0 hands a CPU copy of the whole state to the writer thread (which then copies it to
    the `keep` paths) and training goes on; the other ranks wait only for that copy."""
    if run.rank == 0:
        if progress.step == run.cfg.fail_at:  # test hook: the other ranks wait in the barrier
            raise UserError(f"--fail_at={progress.step}: rank 0 fails writing the checkpoint")
        writer.save(Path(run.cfg.out), dict(
            format=model.CKPT_FORMAT, config=dataclasses.asdict(run.cfg),
            model_config=dataclasses.asdict(run.mcfg), model=run.raw.state_dict(),
            optimizer=run.opt.state_dict(), step=progress.step, flops=progress.flops,
            tokens=progress.tokens, rng=torch.get_rng_state(), tokenizer=tok.to_str()), keep)
    if run.world > 1:
        dist.barrier()


class Log:
    """Rank 0's log: a JSON line per log step in log.jsonl, and a line on stdout."""

    def __init__(self, run: Run, path: Path, step: int, total: int, flops_per_step: float):
        self.run, self.total, self.flops_per_step = run, total, flops_per_step
        self.file = open_log(path, step)
        self.peak = hardware.device_peak_flops(run.cfg.device, run.cfg.dtype)
        self.t_start = self.t_window = time.perf_counter()
        self.last_step, self.compiled = step, {}  # compile counters of the last line

    def write(self, progress: Progress, stats: dict, grad_norm, tokens, compiled: dict):
        cfg, run, step = self.run.cfg, self.run, progress.step
        elapsed, steps = time.perf_counter() - self.t_window, step - self.last_step
        tok_s = steps * cfg.batch_size * cfg.seq_len / elapsed
        rec = dict(step=step, **{k: round(v.item(), 6) for k, v in stats.items()},
                   lr=lr_at(step - 1, cfg, self.total),
                   momentum=momentum_at(step - 1, cfg, self.total),
                   grad_norm=round(grad_norm.item(), 4), tokens_per_s=round(tok_s, 1),
                   # each process does 1/world of the step's FLOPs on its own device
                   mfu=round(hardware.mfu(steps * self.flops_per_step / run.world, elapsed,
                                          self.peak), 4),
                   flops=progress.flops, tokens=progress.tokens,
                   skipped=int(progress.bad_steps),
                   elapsed=round(time.perf_counter() - self.t_start, 2))
        if step % cfg.collapse_every == 0 or step in (1, self.total):
            rec.update(model.collapse_signal(run.raw, tokens[:8].to(run.device), run.autocast()))
        rec.update(compiled)
        if step == self.total:  # the trained weights, in one hash (same seed, same bits)
            rec["weights_sha256"] = weights_sha256(run.raw)
        if compiled:
            self.compiled = hardware.compile_alarm(self.compiled, compiled, step)
        self.file.write(json.dumps(rec) + "\n")
        self.file.flush()
        eta = (self.total - step) * elapsed / steps
        parts = [f"{k} {rec[k]:.4f}" for k in ("loss", "loss_jepa", "loss_mlm", "lam")
                 if k in rec] + ([f"rankme {rec['rankme']:.1f}"] if "rankme" in rec else [])
        print(f"step {step}/{self.total} | " + " | ".join(parts) + f" | lr {rec['lr']:.2e}"
              f" | {tok_s:,.0f} tok/s | MFU {100 * rec['mfu']:.1f}% | ETA {eta / 60:.1f}m",
              flush=True)
        self.t_window, self.last_step = time.perf_counter(), step


# ----------------------------------------------------------------------------- start

def start_or_resume(cfg: TrainConfig, explicit: set):
    """(config, checkpoint or None): --resume continues the run in --out with its saved config;
    a new run refuses a folder that holds one."""
    out = Path(cfg.out)
    if cfg.resume:
        ckpt = model.load_checkpoint(out / "ckpt.pt")
        return check_resume(cfg, explicit, ckpt), ckpt
    if (out / "ckpt.pt").exists():
        raise UserError(f"{out} already holds a run; pass --resume to continue it or "
                        "--out=DIR to start a new one")
    return cfg, None


def announce(run: Run, why: str, total: int, flops_per_step: float, step: int):
    cfg = run.cfg
    counts = model.param_counts(run.raw)
    make_folder(cfg.out)
    print(f"preset {cfg.preset} ({why}) | mode {cfg.mode} | {cfg.device} {cfg.dtype}"
          f"{' compiled' if run.compiled else ''} x{run.world} | params "
          + " ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items())
          + f" | {cfg.batch_size * cfg.seq_len:,} tokens/step | "
          f"{flops_per_step / 1e9:.1f} GFLOPs/step | budget {total:,} steps = "
          f"{total * flops_per_step:.2e} FLOPs" + (f" | resuming at {step}" if step else ""),
          flush=True)


def write_config(run: Run, tok, total: int, flops_per_step: float):
    """config.json: the resolved config, and what the run was made with and on."""
    cfg = run.cfg
    atomic_write(Path(cfg.out) / "config.json", lambda f: f.write(json.dumps(dict(
        config=dataclasses.asdict(cfg), model_config=dataclasses.asdict(run.mcfg),
        params=model.param_counts(run.raw), planned_steps=total, flops_per_step=flops_per_step,
        device=torch.cuda.get_device_name() if cfg.device == "cuda" else "cpu",
        world=run.world, torch=torch.__version__, **code_state(),
        # fresh wordpiece-N preparations can differ (docs/reproducibility.md): which one
        tokenizer_sha256=data.tokenizer_sha256(tok)), indent=2)),
        mode="w")


if __name__ == "__main__":
    run_cli(main)
