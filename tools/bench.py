"""Throughput of a training step in every mode, and of probe feature extraction.

    python -m tools.bench [--preset=tiny] [--modes=hybrid,mlm,jepa] [--dtype=bfloat16]
        [--compile=true] [--profile] [--time_to_quality [--corpus=enwiki] [--max_flops=5e13]]

Times the real code path (train.build_run + train.train_step on synthetic packed rows), warm
steps only, median of several repeats. MFU is measured against the device's peak: NVIDIA's
datasheet on CUDA, and on CPU a matmul of the same dtype timed in the same run.

--profile: where a warm step's time goes (torch.profiler): the forward / backward / optimizer /
EMA split and the top ops by self CPU time, per mode. --time_to_quality: trains the MLM recipe in
a train.py subprocess and reports the wall time at which its validation MLM loss
(study/recipe_search.py) first reaches TARGET_VAL_LOSS (docs/performance.md).
"""
import json
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import config
import data
import model
import train
from lib import hardware, runs
from lib.cli import UserError, parse_flags, run_cli
from tools.step_profile import print_profile, profile_steps, sync
from tools.time_to_quality import TARGET_VAL_LOSS, print_time_to_quality, time_to_quality

ROOT = Path(__file__).resolve().parents[1]



@dataclass
class BenchConfig:
    preset: str = "tiny"
    modes: tuple[str, ...] = ("mlm", "jepa", "hybrid")
    dtype: str = ""                 # float32 | bfloat16; empty = train.py's default
    compile: str = "auto"           # true | false | auto (train.py's default)
    deterministic: str = "auto"     # true | false | auto (train.py's default: true on CPU)
    cost_of_determinism: bool = False  # also time --deterministic=true vs false, interleaved
    batch_size: int = 0             # 0 = the preset's
    vocab_size: int = 30522         # bert-base-uncased
    steps: int = 5                  # timed steps per repeat
    repeats: int = 3
    warmup: int = 2
    sentences: int = 512            # feature-extraction benchmark size
    quick: bool = False             # tiny shapes, 2 steps: a smoke test of this script
    json: bool = False
    profile: bool = False           # also profile warm steps: phases and top ops per mode
    profile_steps: int = 3          # profiled steps per mode (after one unprofiled)
    profile_kernels: bool = False   # --profile, compiled with Inductor's per-kernel ranges (CPU):
                                    # the top ops name each generated kernel; changes the code
                                    # (a fresh compile), so its ms/step are not the reference
    time_to_quality: bool = False   # also train the MLM recipe and time it to --target_val_loss
                                    # (with --modes= , none: it alone)
    corpus: str = "enwiki"          # time to quality: train.py --corpus
    max_flops: float = 5e13         # time to quality: train.py --max_flops (the recipe's budget)
    target_val_loss: float = TARGET_VAL_LOSS  # time to quality: the validation MLM loss to reach
    train_args: str = ""            # time to quality: more train.py flags, space-separated
    val_rows: int = 0               # time to quality: validation rows; 0 = recipe_search's
    ttq_out: str = "out/bench-time-to-quality"  # its run folder (replaced by each new run)
    ttq_reuse: bool = False         # time to quality of the run already in --ttq_out: no training


QUICK_ARGS = ["--seq_len=32", "--d_model=32", "--n_layers=2", "--n_heads=2", "--pred_dim=16",
              "--pred_depth=1", "--batch_size=8"]


def synthetic_rows(n: int, seq_len: int, vocab_size: int, seed: int = 0) -> np.ndarray:
    """Packed rows like data.py makes them: [CLS] random non-special ids [SEP]."""
    rows = np.random.default_rng(seed).integers(1000, vocab_size, (n, seq_len))
    rows[:, 0], rows[:, -1] = data.BERT_SPECIAL_IDS["cls"], data.BERT_SPECIAL_IDS["sep"]
    return rows.astype(np.uint16 if vocab_size <= 65535 else np.uint32)


def setup(bc: BenchConfig, mode: str, deterministic: str, steps: int):
    """A training run of the bench's settings and the batches of its first `steps` steps."""
    args = [f"--mode={mode}", f"--preset={bc.preset}", f"--compile={bc.compile}",
            f"--deterministic={deterministic}"]
    args += [f"--dtype={bc.dtype}"] if bc.dtype else []
    args += [f"--batch_size={bc.batch_size}"] if bc.batch_size else []
    cfg, _, _ = train.resolve_config(args + (QUICK_ARGS if bc.quick else []),
                                     torch.cuda.is_available())
    run = train.build_run(cfg, bc.vocab_size)  # sets the process-wide deterministic mode
    rows = synthetic_rows(max(4 * cfg.batch_size, 64), cfg.seq_len, bc.vocab_size)
    batches = [train.make_batch(rows, s, cfg, data.BERT_SPECIAL_IDS, bc.vocab_size)
               for s in range(steps)]
    return cfg, run, rows, batches


def compiled_graphs() -> int:
    return hardware.compile_counts()["graphs"]


def bench_mode(bc: BenchConfig, mode: str, peak_cache: dict) -> dict:
    total = bc.warmup + bc.steps * (bc.repeats + 1) + 1
    extra = 1 + bc.profile_steps if bc.profile else 0  # the profile's batches, after the timed
    cfg, run, rows, batches = setup(bc, mode, bc.deterministic, total + extra)
    if run.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(bc.warmup):
        train.train_step(run, batches[step], step, total)
    sync(run.device)
    graphs_after_warmup = compiled_graphs()
    times, step = [], bc.warmup
    for _ in range(bc.repeats):
        t = time.perf_counter()
        for _ in range(bc.steps):
            train.train_step(run, batches[step], step, total)
            step += 1
        sync(run.device)
        times.append((time.perf_counter() - t) / bc.steps)
    seconds = statistics.median(times)
    host = host_time(rows, cfg, bc.vocab_size, total)
    with_prefetch = prefetched_step_time(run, rows, cfg, bc, step, total)
    key = (cfg.device, cfg.dtype)
    if key not in peak_cache:
        peak_cache[key] = hardware.device_peak_flops(cfg.device, cfg.dtype)
    flops = float(np.mean([train.batch_flops(run.mcfg, b, cfg.batch_size) for b in batches]))
    recompiles = compiled_graphs() - graphs_after_warmup
    counts = hardware.compile_counts()
    memory = (torch.cuda.max_memory_allocated() if run.device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    profiled = ({"profile": profile_steps(run, batches, step, total, bc.profile_steps,
                                          1000 * seconds)} if bc.profile else {})
    return dict(mode=mode, device=cfg.device, dtype=cfg.dtype, compiled=run.compiled,
                batch_size=cfg.batch_size, seq_len=cfg.seq_len,
                ms_per_step=round(1000 * seconds, 2),
                ms_per_step_repeats=[round(1000 * t, 2) for t in times],
                tokens_per_s=round(cfg.batch_size * cfg.seq_len / seconds, 1),
                flops_per_step=flops, flops_per_token=flops / (cfg.batch_size * cfg.seq_len),
                peak_flops=peak_cache[key],
                mfu=round(hardware.mfu(flops, seconds, peak_cache[key]), 4),
                peak_memory_bytes=memory,
                recompiles_after_warmup=recompiles,
                deterministic=cfg.deterministic == "true",
                host_ms_per_step=round(1000 * host, 2),
                ms_per_step_prefetched=round(1000 * with_prefetch, 2),
                **{k: counts[k] for k in ("compile_fallbacks", "graph_breaks")}, **profiled)


def determinism_cost(bc: BenchConfig, mode: str, rounds: int = 8) -> dict:
    """Step time with --deterministic=true over false, measured in one process: both runs are
    built and compiled, then timed in alternation (bc.steps steps each per round), so that a busy
    machine slows both alike; the ratio is the median of the rounds' ratios."""
    runs, ms = {}, {"true": [], "false": []}
    for det in ms:
        _, run, _, batches = setup(bc, mode, det, bc.steps)
        for b in batches[:2]:  # compile and warm up under this run's setting
            train.train_step(run, b, 0, 100)
        runs[det] = (run, batches)
    for _ in range(rounds):
        for det, (run, batches) in runs.items():
            torch.use_deterministic_algorithms(det == "true")
            sync(run.device)
            t = time.perf_counter()
            for i, b in enumerate(batches):
                train.train_step(run, b, i, 100)
            sync(run.device)
            ms[det].append(1000 * (time.perf_counter() - t) / len(batches))
    ratios = [a / b for a, b in zip(ms["true"], ms["false"])]
    return dict(ms_deterministic=round(statistics.median(ms["true"]), 2),
                ms_nondeterministic=round(statistics.median(ms["false"]), 2),
                ratio=round(statistics.median(ratios), 3), rounds=rounds)


def host_time(rows, cfg, vocab_size: int, start: int, n: int = 8) -> float:
    """Median seconds to build one step's batch on the host (rows, MLM and JEPA masks), timed
    inside the Prefetcher's own worker thread."""
    times = []

    def timed(step):
        t = time.perf_counter()
        batch = train.make_batch(rows, step, cfg, data.BERT_SPECIAL_IDS, vocab_size)
        times.append(time.perf_counter() - t)
        return batch
    pre = runs.Prefetcher(timed, start, start + n, pin=False)
    try:
        for _ in range(n):
            pre.next()
    finally:
        pre.close()
    return statistics.median(times)


def prefetched_step_time(run, rows, cfg, bc: BenchConfig, start: int, total: int) -> float:
    """Seconds per step of the loop as train.py runs it (batches built by the Prefetcher thread
    while the step runs): about ms_per_step when the host work is hidden, + host time if not."""
    pre = runs.Prefetcher(lambda s: train.make_batch(rows, s, cfg, data.BERT_SPECIAL_IDS,
                                                     bc.vocab_size),
                           start, start + bc.steps + 1, pin=run.device.type == "cuda")
    try:
        step, batch = pre.next()
        train.train_step(run, batch, step, total)  # the queue fills while this runs
        sync(run.device)
        t = time.perf_counter()
        for _ in range(bc.steps):
            step, batch = pre.next()
            train.train_step(run, batch, step, total)
        sync(run.device)
        return (time.perf_counter() - t) / bc.steps
    finally:
        pre.close()


@torch.inference_mode()
def bench_features(bc: BenchConfig, run_cfg) -> dict:
    """Frozen-encoder feature extraction as the probes do it: sentences of realistic, varied
    lengths, batched by sorted length so a batch pads only to its own maximum."""
    mcfg = config.model_config(run_cfg, bc.vocab_size)
    device = torch.device(run_cfg.device)
    encoder = model.Encoder(mcfg).to(device).eval()
    rng = np.random.default_rng(0)
    lengths = np.sort(rng.integers(8, min(64, mcfg.seq_len), bc.sentences))
    autocast = hardware.autocast(device.type,  # as features.encode: bf16 on CUDA, fp32 on CPU
                                 "bfloat16" if device.type == "cuda" else "float32")
    times = []
    for _ in range(bc.repeats):
        t = time.perf_counter()
        for lo in range(0, bc.sentences, 128):
            batch = lengths[lo:lo + 128]
            ids = torch.from_numpy(rng.integers(1000, bc.vocab_size, (len(batch), batch.max())))
            pad_mask = torch.arange(batch.max())[None] < torch.from_numpy(batch)[:, None]
            with autocast:
                encoder(ids.to(device), pad_mask=pad_mask.to(device))
        sync(device)
        times.append(time.perf_counter() - t)
    return dict(sentences_per_s=round(bc.sentences / statistics.median(times), 1),
                mean_tokens=float(lengths.mean()))


def main(argv):
    bc, _ = parse_flags(argv, BenchConfig())
    if bc.quick:
        bc.steps, bc.repeats, bc.warmup, bc.sentences, bc.vocab_size = 2, 1, 1, 64, 2000
    bad = set(bc.modes) - set(model.MODES)
    if bad or not (bc.modes or bc.time_to_quality):  # --modes= with --time_to_quality: it alone
        raise UserError(f"--modes={','.join(bc.modes)}: expected some of {', '.join(model.MODES)}")
    if min(bc.steps, bc.repeats, bc.sentences, bc.profile_steps) <= 0 or bc.warmup < 0:
        raise UserError("--steps, --repeats, --sentences and --profile_steps must be positive, "
                        "--warmup >= 0")
    if bc.time_to_quality and bc.max_flops <= 0:
        raise UserError(f"--max_flops={bc.max_flops:g}: the recipe's budget must be > 0")
    bc.profile = bc.profile or bc.profile_kernels
    if bc.profile_kernels:  # before anything compiles: each generated C++ kernel its own range
        import torch._inductor.config as inductor_config
        inductor_config.cpp.enable_kernel_profile = True
    peaks = {}
    results = [bench_mode(bc, mode, peaks) for mode in bc.modes]
    for r in results if bc.cost_of_determinism else []:
        r["determinism"] = determinism_cost(bc, r["mode"])
    cfg, _, _ = train.resolve_config([f"--preset={bc.preset}"] + (QUICK_ARGS if bc.quick else [])
                                     + ([f"--dtype={bc.dtype}"] if bc.dtype else []),
                                     torch.cuda.is_available())
    by_mode = {r["mode"]: r for r in results}
    report = dict(device=torch.cuda.get_device_name() if cfg.device == "cuda" else cpu_name(),
                  torch=torch.__version__, threads=torch.get_num_threads(), preset=bc.preset,
                  quick=bc.quick, modes=results,
                  features=bench_features(bc, cfg) if results else None,
                  hybrid_over_mlm=(round(by_mode["hybrid"]["ms_per_step"]
                                         / by_mode["mlm"]["ms_per_step"], 3)
                                   if {"hybrid", "mlm"} <= set(by_mode) else None))
    if bc.time_to_quality:
        report["time_to_quality"] = time_to_quality(bc)
    if bc.json:
        print(json.dumps(report))
        return 0
    print(f"{report['device']} | torch {report['torch']} | {report['threads']} threads | "
          f"preset {bc.preset}")
    for r in results:
        print(f"{r['mode']:>6} {r['dtype']:>8}{' compiled' if r['compiled'] else ''}: "
              f"{r['ms_per_step']:8.1f} ms/step  {r['tokens_per_s']:9,.0f} tok/s  "
              f"{r['flops_per_token'] / 1e6:6.1f} MFLOP/token  MFU {100 * r['mfu']:5.1f}% of "
              f"{r['peak_flops'] / 1e9:,.0f} GFLOP/s  peak mem "
              f"{r['peak_memory_bytes'] / 2**20:,.0f}"
              f" MiB  recompiles {r['recompiles_after_warmup']}  graph breaks "
              f"{r['graph_breaks']}  fallbacks {r['compile_fallbacks']}")
        print(f"{'':>6} host {r['host_ms_per_step']:.1f} ms/step to build a batch; with the "
              f"prefetch thread {r['ms_per_step_prefetched']:.1f} ms/step"
              f"{' deterministic' if r['deterministic'] else ''}")
    for r in results:
        if "determinism" in r:
            d = r["determinism"]
            print(f"{r['mode']:>6} --deterministic=true {d['ms_deterministic']:.1f} vs false "
                  f"{d['ms_nondeterministic']:.1f} ms/step: x{d['ratio']:.3f} (median of "
                  f"{d['rounds']} interleaved rounds)")
    if report["hybrid_over_mlm"]:
        print(f"hybrid / mlm step cost: {report['hybrid_over_mlm']:.2f}x")
    if report["features"]:
        print(f"feature extraction: {report['features']['sentences_per_s']:,.0f} sentences/s "
              f"(mean {report['features']['mean_tokens']:.0f} tokens)")
    if bc.profile and results:
        print_profile(results)
    if bc.time_to_quality:
        print_time_to_quality(report["time_to_quality"])
    return 0


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        name = "cpu"
    return f"{name} ({torch.get_num_threads()} threads)"


if __name__ == "__main__":
    run_cli(main)
