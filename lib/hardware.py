"""What a training process runs on, and how: its device, the device's peak FLOP/s (for MFU),
deterministic kernels, and what torch.compile did. train.py and bench.py share these."""
import ctypes
import os
import sys
import time

import torch

NVIDIA_BF16_PEAK = {  # dense bf16 FLOP/s from NVIDIA's datasheets (sparse figures halved)
    "H100": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12,
    "H200": 989e12, "H200 NVL": 835e12,     # NVL: the PCIe card (1,671 TF with sparsity)
    "H800": 989e12, "H800 PCIe": 756e12,    # the H100's export variant: its tensor-core peaks
    "B200": 2250e12, "A100": 312e12, "A10": 125e12,
    "A10G": 70e12,                          # AWS's A10 variant (G5 instances): AWS G5
                                            # documentation; not an A10's 125e12
    "L4": 121e12, "L40": 181e12, "L40S": 362e12, "4090": 165e12, "3090": 71e12}


def nvidia_peak(name: str) -> float:
    """Peak of a device name as torch reports it ("NVIDIA H100 PCIe"): the longest table key in
    it wins, so an "L40S" is not an "L40", an "H200 NVL" not an SXM "H200" and an "A10G" not an
    "A10"; 0 if unknown."""
    return next((NVIDIA_BF16_PEAK[k] for k in sorted(NVIDIA_BF16_PEAK, key=len, reverse=True)
                 if k in name), 0.0)


def device_peak_flops(device: str, dtype: str) -> float:
    """Dense peak FLOP/s: NVIDIA's datasheet for bf16 (TF32 fp32 is half of it), or on CPU a
    matmul measured now for the dtype (the best of ten 1024^3 products after warm-up)."""
    if device == "cuda":
        peak = nvidia_peak(torch.cuda.get_device_name())
        return peak if dtype == "bfloat16" else peak / 2
    dt, gen = getattr(torch, dtype), torch.Generator().manual_seed(0)  # not the global RNG,
    # whose state a checkpoint saves: measuring must not change what a resumed run saves
    a, b = (torch.randn(1024, 1024, dtype=dt, generator=gen) for _ in range(2))
    for _ in range(3):  # warm-up: thread pool and oneDNN kernel selection
        a @ b
    best = float("inf")
    for _ in range(10):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * 1024 ** 3 / best


def autocast(device_type: str, dtype: str):
    """The forward's precision, set up one way for every stage: bf16 autocast when dtype is
    bfloat16, else a no-op (fp32)."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=dtype == "bfloat16")


def mfu(flops: float, seconds: float, peak: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the device's peak (0 if it is unknown)."""
    return flops / seconds / peak if peak > 0 and seconds > 0 else 0.0


def pick_device(cfg) -> torch.device:
    """This process's device (under torchrun, GPU LOCAL_RANK), set before NCCL starts."""
    if cfg.device != "cuda":
        return torch.device("cpu")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    torch.cuda.set_device(device)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    return device


def keep_freed_memory(device: torch.device) -> bool:
    """On the CPU with glibc, keep the memory a step frees for the next step instead of handing
    it back to the kernel. By default glibc maps blocks above an adaptive threshold (128 KiB to
    32 MiB) with mmap and trims freed heap back, so each tiny step's activations came back as
    ~47,000 fresh zeroed pages (minor faults) in MLM and up to ~57,000 in the hybrid; with these
    settings a warm step faults ~100 (docs/performance.md). The values only change where memory
    comes from, never what is computed. False where it does not apply (a GPU, not glibc)."""
    if device.type != "cpu" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl, say: its malloc has no mallopt settings
        return False
    # mallopt(3) parameters: M_MMAP_THRESHOLD (-3) at glibc's 64-bit maximum, M_TRIM_THRESHOLD
    # (-1) and M_TOP_PAD (-2) so that a freed step is kept (peak RSS measured +0-7%)
    return all(libc.mallopt(param, value) == 1
               for param, value in ((-3, 32 << 20), (-1, 1 << 30), (-2, 64 << 20)))


def set_deterministic(cfg):
    """--deterministic=true: same seed, same bits. The one nondeterministic kernel of a compiled
    CPU step is Inductor's token-embedding backward, a parallel loop of atomic adds into the
    gradient rows (the order of the adds, and so the rounding, depends on thread timing); torch's
    deterministic mode makes Inductor fall back to ATen's ordered index_put/scatter there. On CUDA
    it also needs cuBLAS's fixed workspace and Inductor's deterministic mode (no autotuning by
    timing); the CUDA claim is unverified (docs/reproducibility.md). Global to the process."""
    on = cfg.deterministic == "true"
    if on and cfg.device == "cuda":
        import torch._inductor.config as inductor_config
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before the first matmul
        inductor_config.deterministic = True
    torch.use_deterministic_algorithms(on)


# Graph breaks DDP's wrapper makes by design (torch.compile(DDP(model)): its Logger call and its
# frames marked skipped); they and the frames they skip are not the model's and are not counted.
DDP_BREAKS = ("DistributedDataParallel", "`set_runtime_stats_and_log` of class `Logger`")


def compile_counts() -> dict:
    """Dynamo's counters so far, the model's only: frames seen, frames that fell back to eager (a
    failed compilation under --compile=auto), graph breaks, graphs. DDP's own breaks and the
    frames it skips on purpose (DDP_BREAKS; a 2-rank run has 3 of each) are left out."""
    from torch._dynamo.utils import counters
    breaks = counters["graph_break"]
    ddp = sum(n for why, n in breaks.items() if any(k in why for k in DDP_BREAKS))
    return dict(compile_frames=counters["frames"]["total"],
                compile_fallbacks=max(0, counters["frames"]["total"] - counters["frames"]["ok"]
                                      - ddp),
                graph_breaks=sum(breaks.values()) - ddp,
                graphs=counters["stats"]["unique_graphs"])


def compile_report(rank: int, before: dict) -> dict:
    """What the first compiled step did, printed and logged once: a partly eager run says so."""
    info = {k: v - before[k] for k, v in compile_counts().items()}
    if rank == 0 and (info["compile_fallbacks"] or info["graph_breaks"]):
        print(f"warning: torch.compile: {info['compile_fallbacks']} of {info['compile_frames']} "
              f"frames fell back to eager, {info['graph_breaks']} graph breaks (warnings above): "
              "this run is partly eager", file=sys.stderr, flush=True)
    elif rank == 0:
        print(f"compiled: {info['graphs']} graphs, no fallback, no graph break", flush=True)
    return info


def compile_since(before: dict, first: dict) -> dict:
    """Dynamo's counters since the run started, for every log line, with `recompiles`: the graphs
    compiled after the first step (whose counters are `first`), 0 in a run of static shapes."""
    now = {k: v - before[k] for k, v in compile_counts().items()}
    return dict(now, recompiles=now["graphs"] - first["graphs"])


def compile_alarm(last: dict, now: dict, step: int) -> dict:
    """A warning when, since the last log line (`last`: its counters, empty at the first), graphs
    were compiled after the first step (a shape or guard changed), frames fell back to eager or
    the graph broke -> `now` with its step, to compare the next line's with."""
    if now.get("recompiles", 0) > last.get("recompiles", 0):
        print(f"warning: torch.compile compiled {now['recompiles']} graph(s) after the first "
              f"step (by step {step}): a shape or guard changed", file=sys.stderr, flush=True)
    if last and any(now[k] > last[k] for k in ("compile_fallbacks", "graph_breaks")):
        print(f"warning: torch.compile: by step {step}, {now['compile_fallbacks']} frames fell "
              f"back to eager and {now['graph_breaks']} graph breaks, more than at step "
              f"{last['step']}: this run is now partly eager", file=sys.stderr, flush=True)
    return dict(now, step=step)
