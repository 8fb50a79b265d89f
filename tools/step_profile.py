"""`make bench ARGS=--profile`: where a warm training step's time goes, per mode: the forward /
backward / optimizer / EMA split of train.train_step's phases and the top ops by self CPU time
(torch.profiler), in the bench's JSON (docs/performance.md)."""
import time

import torch

import model
import train
from lib import hardware
from lib.cli import UserError

PHASES = ("forward", "backward", "optimizer", "ema")
TOP_OPS = 15


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def phased_step(run, batch: dict, step: int, total: int):
    """train.train_step's phases, timed separately: the same calls in the same order as
    train.train_step (keep the two in step), with each phase inside a torch.profiler
    record_function range `bench/<phase>` and, on CUDA, a device sync at the end of each, so that
    a phase's range holds its device work too. forward: the (compiled) forward under autocast;
    backward: loss.backward(); optimizer: clip_grad_norm_ + fused AdamW (found_inf) + zero_grad;
    ema: the target encoder's EMA update (jepa, hybrid). The lr assignment, the micro-batch
    slicing and the stats fall outside every range. One process (the bench's): no DDP no_sync,
    no all-reduce."""
    cfg, opt = run.cfg, run.opt
    if run.world != 1:
        raise UserError("the bench's profile runs one process")
    for group in opt.param_groups:
        group["lr"] = train.lr_at(step, cfg, total)
    stats = {}
    for i in range(run.accum):
        part = {k: v[i * run.micro:(i + 1) * run.micro] for k, v in batch.items()}
        if run.device.type == "cuda":
            part = {k: v.to(run.device, non_blocking=True) for k, v in part.items()}
        with run.autocast():  # train_step runs the backward inside the autocast block too
            with torch.profiler.record_function("bench/forward"):
                loss, micro_stats = run.forward(part)
                sync(run.device)
            with torch.profiler.record_function("bench/backward"):
                (loss / run.accum).backward()
                sync(run.device)
        micro_stats["loss"] = loss.detach()
        for k, v in micro_stats.items():
            stats[k] = stats.get(k, 0) + v.float() / run.accum
    with torch.profiler.record_function("bench/optimizer"):
        grad_norm = torch.nn.utils.clip_grad_norm_(run.raw.parameters(), cfg.grad_clip)
        bad = ~(torch.isfinite(stats["loss"]) & torch.isfinite(grad_norm))
        opt.found_inf = bad.float()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(run.device)
    if run.raw.balanced:  # lambda_mode=balanced (not a phase: outside the ranges)
        run.raw.observe_losses(torch.stack([stats["loss_jepa"], stats["loss_mlm"]]), bad)
    if run.raw.target_encoder is not None:
        with torch.profiler.record_function("bench/ema"):
            model.ema_update(run.raw.target_encoder, run.raw.encoder,
                             train.momentum_at(step, cfg, total))
            sync(run.device)


def _device_us(evt) -> float:
    """An event's self time on the accelerator (µs); the attribute's name changed in torch 2.4."""
    return float(getattr(evt, "self_device_time_total", getattr(evt, "self_cuda_time_total", 0)))


def profile_steps(run, batches, start: int, total: int, n: int, timed_ms: float) -> dict:
    """Where a warm step's time goes: one unprofiled phased_step, then n under torch.profiler
    (CPU, + CUDA on CUDA). phases_ms: each bench/<phase> range's wall time per step, other_ms:
    the rest of the profiled step (lr, slicing, stats, Python); top_ops: the TOP_OPS ops with the
    most self CPU time per step (compiled regions count as one op each unless --profile_kernels).
    The profiler's own overhead is in ms_per_step_profiled: compare it with timed_ms."""
    import torch._inductor.config as inductor_config
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    cuda = run.device.type == "cuda"
    phased_step(run, batches[start], start, total)
    sync(run.device)
    graphs, walls = hardware.compile_counts()["graphs"], []
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch.profiler.profile(activities=activities) as prof:
        for s in range(start + 1, start + 1 + n):
            t = time.perf_counter()
            phased_step(run, batches[s], s, total)
            sync(run.device)
            walls.append(time.perf_counter() - t)
    step_ms = 1000 * sum(walls) / n
    phases = {p: 0.0 for p in PHASES}
    for e in prof.events():
        if e.device_type == DeviceType.CPU and e.name.startswith("bench/"):
            phases[e.name[len("bench/"):]] += e.cpu_time_total / 1000 / n
    if run.raw.target_encoder is None:
        del phases["ema"]
    other = step_ms - sum(phases.values())

    def op(e) -> dict:
        row = dict(name=e.key, self_cpu_ms=round(e.self_cpu_time_total / 1000 / n, 3),
                   pct_of_step=round(100 * e.self_cpu_time_total / 1000 / n / step_ms, 2),
                   calls_per_step=round(e.count / n, 2))
        if cuda:
            row["self_device_ms"] = round(_device_us(e) / 1000 / n, 3)
        return row
    ops = [e for e in prof.key_averages() if not e.key.startswith(("bench/", "ProfilerStep"))]
    by_cpu = sorted(ops, key=lambda e: -e.self_cpu_time_total)
    out = dict(steps=n, ms_per_step_profiled=round(step_ms, 3),
               ms_per_step_timed=round(timed_ms, 2),
               phases_ms={p: round(v, 3) for p, v in phases.items()},
               phases_pct={p: round(100 * v / step_ms, 2) for p, v in phases.items()},
               other_ms=round(other, 3), other_pct=round(100 * other / step_ms, 2),
               self_cpu_ms_all_ops=round(sum(e.self_cpu_time_total for e in ops) / 1000 / n, 3),
               top_ops=[op(e) for e in by_cpu[:TOP_OPS]],
               recompiles_during_profile=hardware.compile_counts()["graphs"] - graphs,
               activities=["cpu"] + (["cuda"] if cuda else []),
               kernel_ranges=run.compiled and not cuda and bool(
                   inductor_config.cpp.enable_kernel_profile))
    if cuda:
        by_device = sorted(ops, key=lambda e: -_device_us(e))
        out["top_ops_device"] = [op(e) for e in by_device[:TOP_OPS] if _device_us(e) > 0]
    return out


def print_profile(results: list[dict]):
    print("where a step's time goes (--profile; ms per step under the profiler, % of that step):")
    print(f"{'mode':>6} {'step':>9} " + " ".join(f"{p:>16}" for p in PHASES + ("other",)))
    for r in results:
        p = r["profile"]
        cells = [f"{p['phases_ms'][k]:8.1f} ({p['phases_pct'][k]:4.1f}%)" if k in p["phases_ms"]
                 else f"{'-':>16}" for k in PHASES]
        cells.append(f"{p['other_ms']:8.1f} ({p['other_pct']:4.1f}%)")
        print(f"{r['mode']:>6} {p['ms_per_step_profiled']:9.1f} " + " ".join(cells))
    for r in results:
        top = r["profile"]["top_ops"][:5]
        print(f"{r['mode']:>6} top ops by self CPU: " + "; ".join(
            f"{o['name']} {o['self_cpu_ms']:.1f} ms ({o['pct_of_step']:.0f}%, "
            f"{o['calls_per_step']:g}/step)" for o in top))
