"""The GPU path proven in one command: `make gpu-check` on any CUDA machine (about 5 minutes on one
H100) prints a PASS/FAIL table and writes out/gpu-check.json.

Checks: a bench of every mode (bf16, compiled: tokens/s, MFU, peak memory, recompiles and graph
breaks after warm-up, 0 expected); a short hybrid run stopped by SIGTERM and resumed against an
uninterrupted one (bit-exact with --deterministic=true; the default --deterministic=false is
reported with its largest difference); with 2+ GPUs a 2-process NCCL run of each mode against one
process; probe features on the GPU (bf16) against the CPU (fp32) on a few hundred SST-2 sentences;
and which SDPA kernel a training step runs (flash attention expected). Without CUDA every check is
SKIP with the reason, and the command still succeeds.
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lib.cli import UserError, atomic_write, parse_flags, run_cli

ROOT = Path(__file__).resolve().parents[1]  # the repository
SMALL_RUN = ["--seq_len=64", "--d_model=128", "--n_layers=2", "--n_heads=4", "--pred_dim=64",
             "--pred_depth=1", "--batch_size=32", "--warmup_steps=5", "--lr=1e-3",
             "--tokenizer=wordpiece-500", "--log_every=5"]


@dataclass
class CheckConfig:
    preset: str = "small"           # the bench's model: the GPU default
    steps: int = 40                 # of the resume check
    sentences: int = 400            # of the probe-feature check, half train and half dev
    out: str = "out/gpu-check.json"


def result(name: str, status: str, detail: str, **numbers) -> dict:
    return dict(check=name, status=status, detail=detail, **numbers)


# ----------------------------------------------------------------------------- checks

def check_bench(cc: CheckConfig) -> list[dict]:
    from tools import bench
    out = []
    for mode in ("mlm", "jepa", "hybrid"):
        bc = bench.BenchConfig(preset=cc.preset, modes=(mode,), dtype="bfloat16", compile="true")
        r = bench.bench_mode(bc, mode, {})
        clean = r["recompiles_after_warmup"] == 0 and r["graph_breaks"] == 0 \
            and r["compile_fallbacks"] == 0
        out.append(result(f"bench {mode}", "PASS" if clean and r["compiled"] else "FAIL",
                          f"{r['tokens_per_s']:,.0f} tok/s, MFU {100 * r['mfu']:.1f}%, peak "
                          f"{r['peak_memory_bytes'] / 2**30:.1f} GiB, recompiles "
                          f"{r['recompiles_after_warmup']}, graph breaks {r['graph_breaks']}, "
                          f"fallbacks {r['compile_fallbacks']}", **r))
    return out


def train_cmd(corpus: Path, out: Path, *extra, world: int = 1) -> list[str]:
    launcher = [sys.executable] if world == 1 else [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={world}"]
    return [*launcher, str(ROOT / "train.py"), *SMALL_RUN, f"--corpus={corpus}", f"--out={out}",
            "--ckpt_every=10", *extra]


def run_ok(cmd, env, timeout=300):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {p.returncode}: "
                           f"{p.stderr.strip().splitlines()[-1:]}")


def interrupted(cmd, env, out: Path, at_step: int):
    """Start a run, SIGTERM it once it has logged `at_step`, then resume it to the end."""
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t = time.time()
    while last_step(out) < at_step:
        if p.poll() is not None or time.time() - t > 300:
            p.kill()
            raise RuntimeError(f"the run to interrupt ended early: {p.stderr.read()[-300:]}")
        time.sleep(0.05)
    p.send_signal(signal.SIGTERM)
    if p.wait(timeout=120) != 128 + signal.SIGTERM:
        raise RuntimeError("SIGTERM did not checkpoint and exit with 143")
    run_ok(cmd + ["--resume"], env)


def last_step(out: Path) -> int:
    try:
        return max([json.loads(x).get("step", 0) for x in (out / "log.jsonl").read_text()
                    .splitlines() if x.strip()] or [0])
    except (OSError, json.JSONDecodeError):
        return 0


def max_difference(a: Path, b: Path) -> float:
    """Largest absolute difference between two checkpoints' weights (0.0: the same bits)."""
    from model import load_checkpoint
    ma, mb = load_checkpoint(a / "ckpt.pt")["model"], load_checkpoint(b / "ckpt.pt")["model"]
    if ma.keys() != mb.keys():
        return float("inf")
    return max(float((ma[k].float() - mb[k].float()).abs().max()) for k in ma)


def check_resume(cc: CheckConfig, corpus: Path, work: Path, env: dict,
                 dets=("true", "false"), extra=()) -> list[dict]:
    out = []
    for det in dets:
        flags = ["--mode=hybrid", f"--max_steps={cc.steps}", f"--deterministic={det}", *extra]
        straight, resumed = work / f"straight-{det}", work / f"resumed-{det}"
        run_ok(train_cmd(corpus, straight, *flags), env)
        interrupted(train_cmd(corpus, resumed, *flags), env, resumed, cc.steps // 2)
        diff = max_difference(straight, resumed)
        status = "PASS" if diff == 0.0 else "FAIL" if det == "true" else "INFO"
        out.append(result(f"resume --deterministic={det}", status,
                          f"SIGTERM at ~{cc.steps // 2} + resume vs straight: max |dw| {diff:.3g}"
                          + ("" if det == "true" else " (not promised bit-exact)"),
                          max_abs_diff=diff))
    return out


def check_ddp(corpus: Path, work: Path, env: dict) -> list[dict]:
    if torch.cuda.device_count() < 2:
        return [result("ddp nccl", "SKIP", f"{torch.cuda.device_count()} GPU: needs 2")]
    out = []
    for mode in ("mlm", "jepa", "hybrid"):
        flags = [f"--mode={mode}", "--max_steps=10", "--deterministic=true"]
        run_ok(train_cmd(corpus, work / f"one-{mode}", *flags), env)
        run_ok(train_cmd(corpus, work / f"two-{mode}", *flags, world=2), env)
        logs = [[json.loads(x) for x in (work / f"{n}-{mode}" / "log.jsonl").read_text()
                 .splitlines()] for n in ("one", "two")]
        rel = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(*logs))
        out.append(result(f"ddp nccl {mode}", "PASS" if rel < 1e-2 else "FAIL",
                          f"2 processes vs 1, 10 steps: largest relative loss difference "
                          f"{rel:.2e} (tolerance 1e-2: bf16 sums in another order)",
                          max_rel_loss_diff=rel))
    return out


def check_probe_features(cc: CheckConfig) -> list[dict]:
    import probe
    try:
        examples = probe.load_splits("sst2")
        sources = {d: probe.open_source(probe.ProbeConfig(ckpt="random", preset=cc.preset,
                                                          device=d))
                   for d in ("cuda", "cpu")}  # small's bert vocab: no corpus to download
    except UserError as e:  # offline without the mirror: set DATA_DIR (README, Data)
        return [result("probe features", "SKIP", f"needs SST-2 and the BERT vocab: {e}")]
    n = cc.sentences // 2
    texts = [x.text_a for x in examples["train"][:n]] + [x.text_a for x in examples["dev"][:n]]
    y = np.array([x.label for x in examples["train"][:n]] + [x.label for x in examples["dev"][:n]])
    feats = {}
    for device, source in sources.items():
        ids = probe.content_ids(source.tok, texts, source.max_len)
        feats[device] = probe.encode(source, ids, "mean", 64).numpy()
    g, c = feats["cuda"], feats["cpu"]
    cos = (g * c).sum(1) / np.linalg.norm(g, axis=1) / np.linalg.norm(c, axis=1)
    acc = {d: ridge_accuracy(f[:n], y[:n], f[n:], y[n:]) for d, f in feats.items()}
    ok = cos.min() >= 0.99 and abs(acc["cuda"] - acc["cpu"]) <= 2.0
    return [result("probe features", "PASS" if ok else "FAIL",
                   f"{2 * n} SST-2 sentences, random-weight tiny encoder, mean pooling: cosine "
                   f"GPU bf16 vs CPU fp32 min {cos.min():.4f} (>= 0.99); ridge probe accuracy "
                   f"{acc['cuda']:.1f} vs {acc['cpu']:.1f} (within 2 points)",
                   min_cosine=float(cos.min()), acc_gpu=acc["cuda"], acc_cpu=acc["cpu"])]


def ridge_accuracy(X, y, Xd, yd, l2: float = 1.0) -> float:
    """A closed-form ridge classifier on standardised features: the same on both devices' vectors."""
    mu, sd = X.mean(0), X.std(0) + 1e-6
    X, Xd = (X - mu) / sd, (Xd - mu) / sd
    w = np.linalg.solve(X.T @ X + l2 * len(X) * np.eye(X.shape[1]), X.T @ (2.0 * y - 1))
    return float(100 * ((Xd @ w > 0) == yd).mean())


def check_flash(cc: CheckConfig) -> list[dict]:
    """Which SDPA kernel a compiled bf16 training step of the hybrid runs, from the profiler."""
    from tools import bench
    import train
    cfg, _, _ = train.resolve_config(["--mode=hybrid", f"--preset={cc.preset}",
                                      "--dtype=bfloat16", "--compile=true"], True)
    run = train.build_run(cfg, 30522)
    rows = bench.synthetic_rows(4 * cfg.batch_size, cfg.seq_len, 30522)
    batches = [train.make_batch(rows, s, cfg, bench.BERT_SPECIALS, 30522) for s in range(3)]
    train.train_step(run, batches[0], 0, 3)  # compile outside the profile
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        train.train_step(run, batches[1], 1, 3)
        torch.cuda.synchronize()
    names = {e.name for e in prof.events()}
    attention = sorted(n for n in names if any(k in n.lower() for k in
                                               ("flash", "fmha", "efficient_attention", "cudnn")))
    flash = any("flash" in n.lower() for n in attention)
    return [result("flash attention", "PASS" if flash else "FAIL",
                   "kernels: " + (", ".join(a[:60] for a in attention[:4]) or "none found"),
                   attention_kernels=attention)]


# ----------------------------------------------------------------------------- main

def table(results: list[dict]) -> str:
    width = max(len(r["check"]) for r in results)
    return "\n".join(f"{r['status']:<5} {r['check']:<{width}}  {r['detail']}" for r in results)


def main(argv):
    cc, _ = parse_flags(argv, CheckConfig())
    if not torch.cuda.is_available():
        results = [result(name, "SKIP", "no CUDA device on this machine (torch "
                          f"{torch.__version__}, cuda {torch.version.cuda or 'none'})")
                   for name in ("bench", "resume", "ddp nccl", "probe features", "flash attention")]
    else:
        results = []
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            corpus = synthetic_corpus(work / "corpus")
            env = dict(os.environ, DATA_DIR=str(work / "data"))
            for name, check in (("bench", lambda: check_bench(cc)),
                                ("resume", lambda: check_resume(cc, corpus, work, env)),
                                ("ddp nccl", lambda: check_ddp(corpus, work, env)),
                                ("probe features", lambda: check_probe_features(cc)),
                                ("flash attention", lambda: check_flash(cc))):
                t = time.time()
                try:
                    got = check()
                except Exception as e:  # one failed check must not hide the others
                    got = [result(name, "FAIL", f"{type(e).__name__}: {str(e)[:300]}")]
                for r in got:
                    r["seconds"] = round(time.time() - t, 1)
                results += got
                print(table(got), flush=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
    report = dict(device=device, gpus=torch.cuda.device_count(), torch=torch.__version__,
                  results=results)
    atomic_write(Path(cc.out), lambda f: f.write(json.dumps(report, indent=2,
                                                                 default=str)), mode="w")
    print(f"\n{device} | torch {torch.__version__}\n{table(results)}\n-> {cc.out}")
    return 1 if any(r["status"] == "FAIL" for r in results) else 0


def synthetic_corpus(folder: Path) -> Path:
    """A small generated text folder (train.py tokenises it with a WordPiece trained on it)."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(300)]
    folder.mkdir(parents=True)
    for part in range(3):
        docs = [" ".join(rng.choice(words, rng.integers(60, 200))) + " ." for _ in range(200)]
        (folder / f"part{part}.txt").write_text("\n\n".join(docs) + "\n")
    return folder


if __name__ == "__main__":
    run_cli(main)
