"""The GPU path proven in one command: `make gpu-check` on any CUDA machine (about 5 minutes on one
H100) prints a PASS/FAIL table and writes out/gpu-check.json.

Checks: a bench of every mode (bf16, compiled: tokens/s, MFU, peak memory, recompiles and graph
breaks after warm-up, 0 expected); a short hybrid run stopped at its middle step (train.py
--stop_at, which stops exactly as SIGTERM does) and resumed, against an uninterrupted one
(bit-exact with --deterministic=true; the default --deterministic=false is reported with its
largest difference); with 2+ GPUs a 2-process NCCL run of each mode against one process; probe
features on the GPU (bf16) against the CPU (fp32) on a few hundred SST-2 sentences; and which
attention a training step runs (model.attention: SDPA's flash kernel expected on CUDA, for the
unmasked passes; the JEPA context and predictor, padded and masked, may take the memory-efficient
one; on the CPU, the attention written out, no SDPA kernel).

Every check is a function of the device(s) it runs on, and each has a CPU half that
tests/test_gpu_check.py runs in CI (eager fp32 small shapes; DDP over gloo; features CPU against
CPU, which must agree exactly; the resume bit-exact), so that a GPU run can only fail on what is
truly CUDA. --device=auto (the default) runs the CUDA checks where CUDA is, else the CPU halves
(and lists the CUDA halves as SKIP); --device=cuda without CUDA makes every check SKIP at once.
--checks picks some of bench, resume, ddp, probe, kernels.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import data
from lib.cli import UserError, atomic_write, parse_flags, run_cli

ROOT = Path(__file__).resolve().parents[1]  # the repository
SMALL_RUN = ["--seq_len=64", "--d_model=128", "--n_layers=2", "--n_heads=4", "--pred_dim=64",
             "--pred_depth=1", "--batch_size=32", "--warmup_steps=5", "--lr=1e-3",
             "--tokenizer=wordpiece-500", "--log_every=5"]
DEVICE_FLAGS = {  # train.py flags of the resume and DDP checks: the GPU's defaults (bf16,
    "cuda": ["--device=cuda"],  # compiled), and on the CPU exact fp32, eager (compiling costs
    "cpu": ["--device=cpu", "--dtype=float32", "--compile=false"]}  # ~1.5 min a mode there)
CHECKS = ("bench", "resume", "ddp", "probe", "kernels")  # --checks, and their rows' names:
TITLES = dict(bench="bench", resume="resume", ddp="ddp nccl", probe="probe features",
              kernels="attention kernel")
MODES = ("mlm", "jepa", "hybrid")
SIGTERM_EXIT = 143  # train.py's exit status after SIGTERM (or --stop_at): 128 + 15
PROBE_FILES = ("glue/SST-2/train.tsv", "glue/SST-2/dev.tsv",
               "tokenizers/bert-base-uncased/vocab.txt")  # under DATA_DIR


@dataclass
class CheckConfig:
    preset: str = "small"           # the bench's model: the GPU default
    device: str = "auto"            # auto | cuda | cpu (each check's CPU half); auto = cuda when
                                    # there is CUDA, else cpu
    checks: tuple[str, ...] = CHECKS  # some of bench, resume, ddp, probe, kernels
    steps: int = 40                 # of the resume check; interrupted at steps // 2
    sentences: int = 400            # of the probe-feature check, half train and half dev
    out: str = "out/gpu-check.json"


def result(name: str, status: str, detail: str, device: str = "", **numbers) -> dict:
    return dict(check=name, status=status, detail=detail, device=device, **numbers)


def no_cuda() -> str:
    return (f"no CUDA device on this machine (torch {torch.__version__}, cuda "
            f"{torch.version.cuda or 'none'})")


# ----------------------------------------------------------------------------- checks

def check_bench(cc: CheckConfig, device: str = "cuda", modes=MODES) -> list[dict]:
    """The bench of each mode. CUDA: the preset, bf16, compiled: no recompile, graph break or
    eager fallback after warm-up. CPU half: bench.py's quick shapes, fp32, eager (bench.py picks
    its device itself, so it runs where CUDA is hidden: CUDA_VISIBLE_DEVICES=, as in the tests)."""
    from tools import bench
    if device == "cuda" and not torch.cuda.is_available():
        return [result("bench", "SKIP", no_cuda(), device)]
    if device == "cpu" and torch.cuda.is_available():
        return [result("bench", "SKIP", "bench.py runs on CUDA where there is CUDA: the CPU "
                       "half runs with CUDA_VISIBLE_DEVICES= (make test does)", device)]
    out, deterministic = [], torch.are_deterministic_algorithms_enabled()
    try:
        for mode in modes:
            if device == "cuda":
                bc = bench.BenchConfig(preset=cc.preset, modes=(mode,), dtype="bfloat16",
                                       compile="true")
            else:
                bc = bench.BenchConfig(modes=(mode,), dtype="float32", compile="false",
                                       quick=True, steps=2, repeats=1, warmup=1, vocab_size=2000)
            r = bench.bench_mode(bc, mode, {})
            clean = r["recompiles_after_warmup"] == 0 and r["graph_breaks"] == 0 \
                and r["compile_fallbacks"] == 0
            ok = clean and r["compiled"] == (bc.compile == "true") and r["tokens_per_s"] > 0
            out.append(result(f"bench {mode}", "PASS" if ok else "FAIL",
                              f"{r['tokens_per_s']:,.0f} tok/s, MFU {100 * r['mfu']:.1f}%, peak "
                              f"{r['peak_memory_bytes'] / 2**30:.1f} GiB, "
                              f"{'compiled' if r['compiled'] else 'eager'}, recompiles "
                              f"{r['recompiles_after_warmup']}, graph breaks {r['graph_breaks']}, "
                              f"fallbacks {r['compile_fallbacks']}", device,
                              **{k: v for k, v in r.items() if k != "device"}))
    finally:  # bench's build_run sets the process-wide deterministic mode
        torch.use_deterministic_algorithms(deterministic)
    return out


def train_cmd(corpus: Path, out: Path, *extra, world: int = 1) -> list[str]:
    launcher = [sys.executable] if world == 1 else [  # --standalone: a free port on this host
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}"]
    return [*launcher, str(ROOT / "train.py"), *SMALL_RUN, f"--corpus={corpus}", f"--out={out}",
            "--ckpt_every=10", *extra]


def run_train(cmd, env, timeout=300) -> int:
    """Run a training command to its end -> its exit status. Its output is captured whole
    (subprocess.run reads both pipes as it goes, so heavy logging cannot block the run) and the
    end of it is in the error when the status is neither 0 nor a stop's 143."""
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode not in (0, SIGTERM_EXIT):
        tail = (p.stderr.strip() or p.stdout.strip()).splitlines()[-3:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {p.returncode}: {' | '.join(tail)}")
    return p.returncode


def run_ok(cmd, env, timeout=300):
    if (code := run_train(cmd, env, timeout)) != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {code} instead of 0")


def interrupted(cmd, env, out: Path, at_step: int) -> int:
    """Run with --stop_at=at_step (after that step train.py stops exactly as after a SIGTERM:
    checkpoint, exit 143), then resume it to the end -> the step its stop checkpoint held."""
    from model import load_checkpoint
    if (code := run_train(cmd + [f"--stop_at={at_step}"], env)) != SIGTERM_EXIT:
        raise RuntimeError(f"--stop_at={at_step}: exited {code}, not {SIGTERM_EXIT} (did the run "
                           f"end before step {at_step}?)")
    stopped_at = load_checkpoint(out / "ckpt.pt")["step"]
    run_ok(cmd + ["--resume"], env)  # --stop_at may change on resume: not given, so off
    return stopped_at


def max_difference(a: Path, b: Path) -> float:
    """Largest absolute difference between two checkpoints' weights (0.0: the same bits)."""
    from model import load_checkpoint
    ma, mb = load_checkpoint(a / "ckpt.pt")["model"], load_checkpoint(b / "ckpt.pt")["model"]
    if ma.keys() != mb.keys():
        return float("inf")
    return max(float((ma[k].float() - mb[k].float()).abs().max()) for k in ma)


def check_resume(cc: CheckConfig, corpus: Path, work: Path, env: dict, device: str = "cuda",
                 dets=("true", "false"), extra=()) -> list[dict]:
    """A hybrid run stopped after step steps // 2 and resumed, against an uninterrupted one:
    the same bits with --deterministic=true (FAIL otherwise); --deterministic=false is INFO."""
    if device == "cuda" and not torch.cuda.is_available():
        return [result("resume", "SKIP", no_cuda(), device)]
    out, stop = [], cc.steps // 2
    for det in dets:
        flags = [*DEVICE_FLAGS[device], "--mode=hybrid", f"--max_steps={cc.steps}",
                 f"--deterministic={det}", *extra]
        straight, resumed = work / f"straight-{device}-{det}", work / f"resumed-{device}-{det}"
        run_ok(train_cmd(corpus, straight, *flags), env)
        stopped_at = interrupted(train_cmd(corpus, resumed, *flags), env, resumed, stop)
        diff = max_difference(straight, resumed)
        exact = diff == 0.0 and stopped_at == stop
        status = "PASS" if exact else "FAIL" if det == "true" else "INFO"
        out.append(result(f"resume --deterministic={det}", status,
                          f"stopped after step {stopped_at} of {cc.steps} (--stop_at={stop}) + "
                          f"resume vs straight: max |dw| {diff:.3g}"
                          + ("" if det == "true" else " (not promised bit-exact)"), device,
                          max_abs_diff=diff, stopped_at=stopped_at))
    return out


def check_ddp(corpus: Path, work: Path, env: dict, device: str = "cuda",
              modes=MODES) -> list[dict]:
    """2 processes (NCCL on 2 GPUs; gloo on the CPU) against 1, 10 steps of each mode: the same
    losses, to bf16's tolerance on CUDA and fp32's on the CPU (sums in another order)."""
    backend, tol = ("nccl", 1e-2) if device == "cuda" else ("gloo", 1e-4)
    if device == "cuda" and torch.cuda.device_count() < 2:
        return [result(f"ddp {backend}", "SKIP",
                       f"{torch.cuda.device_count()} GPU: needs 2" if torch.cuda.is_available()
                       else no_cuda(), device)]
    out = []
    for mode in modes:
        flags = [*DEVICE_FLAGS[device], f"--mode={mode}", "--max_steps=10", "--deterministic=true"]
        one, two = work / f"one-{device}-{mode}", work / f"two-{device}-{mode}"
        run_ok(train_cmd(corpus, one, *flags), env)
        run_ok(train_cmd(corpus, two, *flags, world=2), env)
        logs = [[json.loads(x) for x in (d / "log.jsonl").read_text().splitlines()]
                for d in (one, two)]
        steps = [[x["step"] for x in log] for log in logs]
        rel = max(abs(a["loss"] - b["loss"]) / abs(a["loss"]) for a, b in zip(*logs))
        ok = rel < tol and steps[0] == steps[1]
        out.append(result(f"ddp {backend} {mode}", "PASS" if ok else "FAIL",
                          f"2 processes vs 1, 10 steps: largest relative loss difference "
                          f"{rel:.2e} (tolerance {tol:g}: sums in another order)", device,
                          max_rel_loss_diff=rel))
    return out


def probe_preset(preset: str) -> str:
    """The random encoder of the probe check: the preset's, if it has the BERT vocabulary (no
    corpus to download for a tokenizer), else small's."""
    from config import PRESETS
    return preset if PRESETS.get(preset, {}).get("tokenizer") == "bert-base-uncased" else "small"


def check_probe_features(cc: CheckConfig, device_a: str = "cpu",
                         device_b: str = "cuda") -> list[dict]:
    """The same random-weight encoder's mean-pooled features of SST-2 sentences on two devices,
    as probe.py makes them (features.encode: bf16 autocast on CUDA, fp32 on the CPU). Two CPUs
    must give the same bits; CUDA against the CPU a cosine >= 0.99 and ridge probe accuracies
    within 2 points. Without the data it SKIPs at once (nothing is downloaded)."""
    import features
    import probe
    from lib.download import data_dir
    name, devices = "probe features", f"{device_a}+{device_b}"
    if "cuda" in (device_a, device_b) and not torch.cuda.is_available():
        return [result(name, "SKIP", no_cuda(), devices)]
    missing = [f for f in PROBE_FILES if not (data_dir() / f).is_file()]
    if missing:  # offline without the mirror: set DATA_DIR (README.md, Data)
        return [result(name, "SKIP", f"needs SST-2 and the BERT vocab: no {', '.join(missing)} "
                       f"in {data_dir()} (set DATA_DIR to a folder that has them, or run "
                       "`make probe` once with network)", devices)]
    preset = probe_preset(cc.preset)
    examples = probe.load_splits("sst2")
    n = cc.sentences // 2
    texts = [x.text_a for x in examples["train"][:n]] + [x.text_a for x in examples["dev"][:n]]
    y = np.array([x.label for x in examples["train"][:n]] + [x.label for x in examples["dev"][:n]])
    feats, dtypes = [], []
    for device in (device_a, device_b):
        source = features.open_source(probe.ProbeConfig(ckpt="random", preset=preset,
                                                        device=device))
        ids = features.content_ids(source.tok, texts, source.max_len)
        feats.append(features.encode(source, ids, ("mean",), 64)["mean"].double().numpy())
        dtypes.append(source.dtype)
        del source
    a, b = feats
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    diff = float(np.abs(a - b).max())
    acc = [ridge_accuracy(f[:n], y[:n], f[n:], y[n:]) for f in feats]
    what = (f"{2 * n} SST-2 sentences, random-weight {preset} encoder, mean pooling, "
            f"{device_a} {dtypes[0]} vs {device_b} {dtypes[1]}: ")
    if dtypes[0] == dtypes[1] and "cuda" not in (device_a, device_b):
        ok, detail = diff == 0.0, what + f"max |difference| {diff:.3g} (0: the same bits)"
    else:
        ok = cos.min() >= 0.99 and abs(acc[0] - acc[1]) <= 2.0
        detail = what + (f"cosine min {cos.min():.4f} (>= 0.99); ridge probe accuracy "
                         f"{acc[0]:.1f} vs {acc[1]:.1f} (within 2 points)")
    return [result(name, "PASS" if ok else "FAIL", detail, devices, min_cosine=float(cos.min()),
                   max_abs_diff=diff, acc_a=acc[0], acc_b=acc[1])]


def ridge_accuracy(X, y, Xd, yd, l2: float = 1.0) -> float:
    """A closed-form ridge classifier on standardised features: the same on both devices'
    vectors."""
    mu, sd = X.mean(0), X.std(0) + 1e-6
    X, Xd = (X - mu) / sd, (Xd - mu) / sd
    w = np.linalg.solve(X.T @ X + l2 * len(X) * np.eye(X.shape[1]), X.T @ (2.0 * y - 1))
    return float(100 * ((Xd @ w > 0) == yd).mean())


ATTENTION_KERNELS = ("flash", "fmha", "efficient_attention", "cudnn", "scaled_dot_product")


def check_kernels(cc: CheckConfig, device: str = "cuda") -> list[dict]:
    """Which attention a hybrid training step runs, from the profiler (model.attention). CUDA:
    the preset, compiled, bf16; SDPA's flash kernel expected (kernel names; the masked JEPA
    passes may add the memory-efficient one, listed). CPU half:
    SMALL_RUN's shapes, eager fp32; the attention written out expected (aten::_softmax, no SDPA
    op: SDPA's CPU flash kernel was the slowest part of the tiny step, docs/performance.md)."""
    import train
    from tools import bench
    if device == "cuda" and not torch.cuda.is_available():
        return [result(TITLES["kernels"], "SKIP", no_cuda(), device)]
    if device == "cuda":
        args = [f"--preset={cc.preset}", "--dtype=bfloat16", "--compile=true"]
        activity = torch.profiler.ProfilerActivity.CUDA
    else:
        args = [a for a in SMALL_RUN if not a.startswith("--tokenizer")] + DEVICE_FLAGS["cpu"]
        activity = torch.profiler.ProfilerActivity.CPU
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        cfg, _, _ = train.resolve_config(["--mode=hybrid", f"--device={device}", *args],
                                         device == "cuda")
        run = train.build_run(cfg, 30522)
        rows = bench.synthetic_rows(4 * cfg.batch_size, cfg.seq_len, 30522)
        batches = [train.make_batch(rows, s, cfg, data.BERT_SPECIAL_IDS, 30522) for s in range(3)]
        train.train_step(run, batches[0], 0, 3)  # compile outside the profile
        with torch.profiler.profile(activities=[activity]) as prof:
            train.train_step(run, batches[1], 1, 3)
            bench.sync(run.device)
    finally:  # build_run sets the process-wide deterministic mode
        torch.use_deterministic_algorithms(deterministic)
    names = {e.name for e in prof.events()}
    attention = sorted((n for n in names if any(k in n.lower() for k in ATTENTION_KERNELS)),
                       key=lambda n: ("flash" not in n.lower(), n))  # flash first
    ok = (any("flash" in n.lower() for n in attention) if device == "cuda"
          else not attention and "aten::_softmax" in names)
    found = ", ".join(a[:60] for a in attention[:4]) or "no SDPA kernel"
    return [result(TITLES["kernels"], "PASS" if ok else "FAIL",
                   f"kernels: {found}" + ("" if device == "cuda" else
                                          " (the CPU's written-out attention: aten::_softmax "
                                          f"{'found' if 'aten::_softmax' in names else 'missing'})"),
                   device, attention_kernels=attention)]


# ----------------------------------------------------------------------------- main

def table(results: list[dict]) -> str:
    width = max(len(r["check"]) for r in results)
    dev = max(len(r.get("device", "")) for r in results)
    return "\n".join(f"{r['status']:<5} {r['check']:<{width}}  {r.get('device', ''):<{dev}}  "
                     f"{r['detail']}" for r in results)


def run_checks(cc: CheckConfig, device: str, work: Path) -> list[dict]:
    """Every check of cc.checks on `device`, one after the other; one that raises is a FAIL
    that does not hide the others. Printed as they finish."""
    corpus = synthetic_corpus(work / "corpus")
    env = dict(os.environ, DATA_DIR=str(work / "data"))
    pair = ("cpu", "cuda") if device == "cuda" else ("cpu", "cpu")
    results = []
    for name, check in (("bench", lambda: check_bench(cc, device)),
                        ("resume", lambda: check_resume(cc, corpus, work, env, device)),
                        ("ddp", lambda: check_ddp(corpus, work, env, device)),
                        ("probe", lambda: check_probe_features(cc, *pair)),
                        ("kernels", lambda: check_kernels(cc, device))):
        if name not in cc.checks:
            continue
        t = time.time()
        try:
            got = check()
        except Exception as e:  # one failed check must not hide the others
            title = TITLES[name] if device == "cuda" else TITLES[name].replace("nccl", "gloo")
            got = [result(title, "FAIL", f"{type(e).__name__}: {str(e)[:300]}",
                          "+".join(pair) if name == "probe" else device)]
        for r in got:
            r["seconds"] = round(time.time() - t, 1)
        results += got
        print(table(got), flush=True)
    return results


def main(argv):
    cc, _ = parse_flags(argv, CheckConfig())
    if cc.device not in ("auto", "cuda", "cpu"):
        raise UserError(f"--device={cc.device}: expected auto, cuda or cpu")
    if set(cc.checks) - set(CHECKS) or not cc.checks:
        raise UserError(f"--checks={','.join(cc.checks)}: expected some of {', '.join(CHECKS)}")
    cuda = torch.cuda.is_available()
    device = cc.device if cc.device != "auto" else "cuda" if cuda else "cpu"
    if device == "cuda" and not cuda:
        results = [result(TITLES[c], "SKIP", no_cuda(), "cpu+cuda" if c == "probe" else "cuda")
                   for c in cc.checks]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            results = run_checks(cc, device, Path(tmp))
        if device == "cpu":  # what only a GPU can run
            why = "the CUDA half: " + (no_cuda() if not cuda else "--device=cpu")
            results += [result(TITLES[c], "SKIP", why, "cpu+cuda" if c == "probe" else "cuda")
                        for c in cc.checks]
    name = torch.cuda.get_device_name() if cuda and device == "cuda" else "no CUDA" if not cuda \
        else "cpu (--device=cpu)"
    report = dict(device=name, gpus=torch.cuda.device_count(), torch=torch.__version__,
                  checked_on=device, results=results)
    atomic_write(Path(cc.out), lambda f: f.write(json.dumps(report, indent=2,
                                                                 default=str)), mode="w")
    print(f"\n{name} | torch {torch.__version__}\n{table(results)}\n-> {cc.out}")
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
