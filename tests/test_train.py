"""Pre-training end to end on a synthetic corpus: each mode learns, lambda behaves, resume is
exact, DDP matches one process, bad input gets a clear error."""
import functools
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from synthetic import TINY_ARGS, write_corpus

import config
import data
import lib.download
import model
import train
from lib import hardware, runs
from lib.cli import UserError, atomic_write

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def corpus_env(tmp_path_factory):
    """A synthetic text folder and a DATA_DIR holding its prepared tokens (shared by the tests)."""
    base = tmp_path_factory.mktemp("train")
    return write_corpus(base / "corpus"), base / "data"


@pytest.fixture
def run_train(corpus_env, monkeypatch, tmp_path):
    corpus, data_dir = corpus_env
    monkeypatch.setenv("DATA_DIR", str(data_dir))

    def run(*args, out="run"):
        argv = TINY_ARGS + [f"--corpus={corpus}", f"--out={tmp_path / out}", *args]
        return train.main(argv), tmp_path / out
    return run


def read_log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode", model.MODES)
def test_each_mode_learns_the_synthetic_corpus(run_train, mode):
    code, out = run_train(f"--mode={mode}", "--max_steps=40", "--lr=1e-2")
    assert code == 0
    log = read_log(out)
    assert [r["step"] for r in log] == [1] + list(range(5, 45, 5))
    first, last = log[0]["loss"], log[-1]["loss"]  # step 1 logs the untrained model's loss
    assert last < 0.75 * first, f"{mode}: loss {first:.3f} -> {last:.3f}"
    assert all(r["flops"] > 0 and r["tokens_per_s"] > 0 for r in log)
    # collapse signals every --collapse_every=100 steps, and at the first and last step
    assert [r["step"] for r in log if "rankme" in r] == [1, 40]
    if mode == "hybrid":
        assert abs(log[-1]["lam"] - 0.5) > 1e-3, "the learned lambda moves"
        assert {"loss_jepa", "loss_mlm"} <= set(log[-1])
    ckpt = model.load_checkpoint(out / "ckpt.pt")
    assert ckpt["step"] == 40 and ckpt["config"]["mode"] == mode
    conf = json.loads((out / "config.json").read_text())
    assert conf["config"]["mode"] == mode  # and which vocabulary it trained on
    assert conf["tokenizer_sha256"] == hashlib.sha256(ckpt["tokenizer"].encode()).hexdigest()


def test_fixed_lambda_stays_fixed(run_train):
    code, out = run_train("--mode=hybrid", "--lambda_mode=fixed:0.3", "--max_steps=10")
    assert code == 0 and all(r["lam"] == pytest.approx(0.3) for r in read_log(out))


def test_optimizer_holds_only_what_the_mode_trains():
    cfg, _, _ = train.resolve_config(["--mode=jepa"] + TINY_ARGS, cuda=False)
    run = train.build_run(cfg, vocab_size=120)
    in_opt = {id(p) for g in run.opt.param_groups for p in g["params"]}
    assert run.raw.mlm_head is None
    assert not in_opt & {id(p) for p in run.raw.target_encoder.parameters()}
    assert in_opt == {id(p) for p in run.raw.encoder.parameters()} | {
        id(p) for p in run.raw.predictor.parameters()}
    cfg, _, _ = train.resolve_config(["--mode=hybrid"] + TINY_ARGS, cuda=False)
    run = train.build_run(cfg, vocab_size=120)
    no_decay = {id(p) for p in run.opt.param_groups[1]["params"]}
    assert id(run.raw.w) in no_decay, "lambda's logit is never weight-decayed"
    assert all(p.dim() >= 2 for p in run.opt.param_groups[0]["params"])


def crash_at(monkeypatch, crash_step: int, run, *args, **kw):
    """run(*args, **kw) with a crash inside step `crash_step` (train_step raising there)."""
    real_step = train.train_step

    def crashing(r, batch, step, *a):
        if step == crash_step:
            raise RuntimeError("simulated crash")
        return real_step(r, batch, step, *a)
    monkeypatch.setattr(train, "train_step", crashing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(*args, **kw)
    monkeypatch.setattr(train, "train_step", real_step)


@pytest.mark.faults
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])  # bf16: autocast on the CPU
def test_resume_after_a_crash_is_bit_identical(run_train, monkeypatch, dtype):
    run_train = functools.partial(run_train, f"--dtype={dtype}")
    code, straight = run_train("--mode=hybrid", "--max_steps=30", "--ckpt_every=10",
                               out="straight")
    assert code == 0
    crash_at(monkeypatch, 25, run_train, "--mode=hybrid", "--max_steps=30", "--ckpt_every=10",
             out="crashed")
    assert model.load_checkpoint(straight.parent / "crashed" / "ckpt.pt")["step"] == 20
    code, resumed = run_train("--mode=hybrid", "--max_steps=30", "--ckpt_every=10",
                              "--resume", out="crashed")
    assert code == 0
    a = model.load_checkpoint(straight / "ckpt.pt")
    b = model.load_checkpoint(resumed / "ckpt.pt")
    assert a["step"] == b["step"] == 30
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [r["loss"] for r in read_log(straight)] == [r["loss"] for r in read_log(resumed)]
    assert json.loads((resumed / "config.json").read_text())["config"]["dtype"] == dtype
    assert read_log(resumed)[-1]["loss"] < 0.9 * read_log(resumed)[0]["loss"]


# What a user gets without flags: --compile=auto (Inductor on CPU), bf16 autocast where the CPU
# has bf16 instructions, --deterministic=auto (true on CPU). Two threads: with one, the compiled
# embedding backward's atomic adds happen in one order anyway and the test could not fail.
DEFAULT_ARGS = [a for a in TINY_ARGS if not a.startswith(("--compile=", "--dtype="))]


@pytest.fixture
def default_run(corpus_env, monkeypatch, tmp_path):
    corpus, data_dir = corpus_env
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    torch._dynamo.reset()

    def run(*args, out):
        return train.main(DEFAULT_ARGS + [f"--corpus={corpus}", f"--out={tmp_path / out}",
                                          "--mode=hybrid", "--max_steps=20", "--ckpt_every=5",
                                          *args]), tmp_path / out
    yield run
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(False)


def assert_same_bits(a: Path, b: Path):
    """Every entry of the two checkpoints is equal (weights, AdamW state, step, FLOPs, the saved
    RNG state, the tokenizer, the config but for its folder and --resume), and so are the logs'
    losses."""
    ca, cb = model.load_checkpoint(a / "ckpt.pt"), model.load_checkpoint(b / "ckpt.pt")
    assert ca.keys() == cb.keys()
    for key in ca:
        x, y = ca[key], cb[key]
        if key == "config":
            x, y = ({k: v for k, v in c.items() if k not in ("out", "resume")} for c in (x, y))
        fx, fy = flat_tensors(x), flat_tensors(y)
        assert fx.keys() == fy.keys(), key
        for k in fx:
            assert torch.equal(fx[k], fy[k]), f"{key} {k}"
        assert strip_tensors(x) == strip_tensors(y), key
    assert [r["loss"] for r in read_log(a)] == [r["loss"] for r in read_log(b)]
    assert read_log(a)[-1]["weights_sha256"] == read_log(b)[-1]["weights_sha256"]


def strip_tensors(tree):
    """The tree with every tensor replaced by its shape: what flat_tensors does not compare."""
    if isinstance(tree, torch.Tensor):
        return tuple(tree.shape)
    if isinstance(tree, dict):
        return {k: strip_tensors(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [strip_tensors(v) for v in tree]
    return tree


def flat_tensors(tree, prefix="") -> dict:
    if isinstance(tree, torch.Tensor):
        return {prefix: tree}
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) \
        if isinstance(tree, (list, tuple)) else []
    return {k: v for key, sub in items for k, v in flat_tensors(sub, f"{prefix}/{key}").items()}


@pytest.mark.faults
def test_the_default_configuration_is_bit_reproducible_and_resumes_exactly(default_run,
                                                                          monkeypatch):
    code, straight = default_run(out="straight")
    assert code == 0
    conf = json.loads((straight / "config.json").read_text())["config"]
    assert (conf["compile"], conf["deterministic"]) == ("auto", "true")
    assert conf["dtype"] == ("bfloat16" if config.cpu_has_bf16() else "float32")
    first = read_log(straight)[0]
    assert first["graphs"] >= 1 and first["compile_fallbacks"] == 0, "Inductor really compiled"
    # A second run of the same seed, crashed after its checkpoint at step 10 and resumed: it ends
    # with the same bits only if both its halves repeat the straight run's bits.
    crash_at(monkeypatch, 13, default_run, out="crashed")
    assert model.load_checkpoint(straight.parent / "crashed" / "ckpt.pt")["step"] == 10
    code, resumed = default_run("--resume", out="crashed")
    assert code == 0
    assert_same_bits(straight, resumed)


def test_gradient_accumulation_matches_one_big_batch(run_train):
    _, whole = run_train("--mode=hybrid", "--max_steps=10", out="whole")
    _, accum = run_train("--mode=hybrid", "--max_steps=10", "--micro_batch=4", out="accum")
    for r1, r2 in zip(read_log(whole), read_log(accum)):
        assert r1["loss"] == pytest.approx(r2["loss"], rel=1e-4)


@pytest.mark.faults
def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(run_train, tmp_path):
    with pytest.raises(UserError, match=r"non-finite loss at step 13 \(loss nan"):
        run_train("--mode=mlm", "--max_steps=30", "--ckpt_every=10", "--inject_nan_at=13",
                  out="nan")
    ckpt = model.load_checkpoint(tmp_path / "nan" / "ckpt.pt")  # the last good one, loadable
    assert ckpt["step"] == 10
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())


@pytest.mark.faults
def test_skip_nonfinite_skips_the_bad_step(run_train):
    code, out = run_train("--mode=mlm", "--max_steps=20", "--inject_nan_at=13",
                          "--skip_nonfinite=1")
    assert code == 0 and read_log(out)[-1]["skipped"] == 1
    assert all(torch.isfinite(v).all() for v in model.load_checkpoint(out / "ckpt.pt")["model"]
               .values())


@pytest.mark.faults
@pytest.mark.parametrize("args, message", [
    (["--mode=bert"], "--mode=bert: expected one of hybrid, mlm, jepa"),
    (["--preset=huge"], "--preset=huge: expected one of tiny, small, base, large"),
    (["--max_stepz=3"], "unknown flag --max_stepz"),
    (["--max_steps=ten"], "--max_steps=ten: expected an integer"),
    (["--batch_size=0"], "--batch_size=0: must be a positive integer"),
    (["--n_layers=-2"], "--n_layers=-2: must be a positive integer"),
    (["--warmup_steps=-1"], "--warmup_steps=-1: must not be negative"),
    (["--lambda_mode=fixed:2"], "lambda_mode"),
    (["--d_model=33"], "divisible by --n_heads"),
    (["--deterministic=maybe"], "--deterministic=maybe: expected true, false or auto"),
    (["--ckpt_minutes=-1"], "--ckpt_minutes=-1: must not be negative"),
    (["--keep_at=0.5,1"], "--keep_at=0.5,1.0: expected fractions of the run strictly between"),
    (["--collapse_every=0"], "--collapse_every=0: must be a positive integer"),
])
def test_bad_flags_name_the_key(args, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("+", r"\+")):
        train.resolve_config(TINY_ARGS + args, cuda=False)


@pytest.mark.faults
def test_resume_refuses_a_different_run(run_train):
    run_train("--mode=hybrid", "--max_steps=5", out="r")
    with pytest.raises(UserError, match="--seq_len=64 differs from the run's 32"):
        run_train("--mode=hybrid", "--max_steps=5", "--seq_len=64", "--resume", out="r")
    with pytest.raises(UserError, match="--mode=mlm differs from the run's hybrid"):
        run_train("--mode=mlm", "--max_steps=5", "--resume", out="r")
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        run_train("--mode=hybrid", "--max_steps=5", out="r")


@pytest.mark.faults
def test_a_full_disk_keeps_the_previous_checkpoint(run_train, monkeypatch):
    _, out = run_train("--mode=mlm", "--max_steps=5", out="disk")
    before = (out / "ckpt.pt").read_bytes()

    def no_space(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(UserError, match=f"could not write the checkpoint {out}/ckpt.pt: No space"):
        run_train("--mode=mlm", "--max_steps=10", "--resume", out="disk")
    assert (out / "ckpt.pt").read_bytes() == before
    assert not list(out.glob("*.tmp"))


@pytest.mark.faults
def test_a_checkpoint_is_the_state_of_its_step_though_written_while_training_goes_on(
        run_train, monkeypatch):
    """The writer thread gets a copy: with a disk so slow that each write finishes only after
    later steps changed the weights, the optimizer state and the lr, the checkpoints kept at
    steps 5 and 10 hold exactly those steps' states, as a run with an instant disk writes them
    (same seed, same bits), and the run's last checkpoint is complete when train.py returns."""
    _, fast = run_train("--mode=hybrid", "--max_steps=15", "--keep_at=0.34,0.67", out="fast")
    real_save, started = torch.save, []

    def slow_save(obj, f):
        started.append(time.perf_counter())
        time.sleep(0.5)  # the training thread takes ~0.05 s a step here: ~10 steps go by
        real_save(obj, f)
    monkeypatch.setattr(torch, "save", slow_save)
    _, slow = run_train("--mode=hybrid", "--max_steps=15", "--keep_at=0.34,0.67", out="slow")
    assert len(started) >= 3  # steps 5 (kept), 10 (kept), 15 (the end)
    for name in ("ckpt-f0.34.pt", "ckpt-f0.67.pt", "ckpt.pt"):
        a, b = (model.load_checkpoint(run / name) for run in (fast, slow))
        assert a["step"] == b["step"] and a["optimizer"]["param_groups"][0]["lr"] == \
            b["optimizer"]["param_groups"][0]["lr"]
        assert flat_tensors(a).keys() == flat_tensors(b).keys()
        assert all(torch.equal(x, flat_tensors(b)[k]) for k, x in flat_tensors(a).items()), name


@pytest.mark.faults
def test_an_unwritable_run_folder_is_one_clear_error(run_train, tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match=f"could not create the folder {tmp_path}/file/run: Not a "
                                        "directory"):
        run_train("--mode=mlm", "--max_steps=2", out="file/run")


@pytest.mark.faults
def test_a_full_disk_under_any_atomic_write_names_the_file_and_leaves_nothing(tmp_path):
    (tmp_path / "old.json").write_text("old")

    def no_space(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")
    with pytest.raises(UserError, match=f"could not write {tmp_path}/old.json: No space left"):
        atomic_write(tmp_path / "old.json", no_space)
    assert [p.name for p in tmp_path.iterdir()] == ["old.json"]
    assert (tmp_path / "old.json").read_text() == "old"


@pytest.mark.parametrize("native, cuda, expected", [(True, False, "bfloat16"),
                                                    (False, False, "float32"),
                                                    (False, True, "bfloat16")])
def test_default_dtype_is_bf16_only_where_it_is_fast(monkeypatch, native, cuda, expected):
    monkeypatch.setattr(config, "cpu_has_bf16", lambda: native)
    cfg, _, _ = train.resolve_config(["--mode=mlm"], cuda=cuda)
    assert cfg.dtype == expected
    assert train.resolve_config(["--mode=mlm", "--dtype=float32"], cuda=cuda)[0].dtype == "float32"


@pytest.fixture
def light_compile(monkeypatch):
    """torch.compile with the aot_eager backend: Dynamo traces, guards and recompiles exactly as
    with inductor, without minutes of C++ code generation on a CPU."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real(model, backend="aot_eager"))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_training_matches_eager_and_never_recompiles(run_train, light_compile):
    from tools import bench
    _, eager = run_train("--mode=hybrid", "--max_steps=10", out="eager")
    _, compiled = run_train("--mode=hybrid", "--max_steps=10", "--compile=true", out="compiled")
    for a, b in zip(read_log(eager), read_log(compiled), strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    bc = bench.BenchConfig(quick=True, compile="true", modes=("hybrid",), warmup=2, steps=3,
                           repeats=2)  # span lengths change every step, shapes not: no new graph
    r = bench.bench_mode(bc, "hybrid", {})
    assert r["compiled"] and r["recompiles_after_warmup"] == 0


@pytest.fixture
def hybrid_batches(corpus_env, monkeypatch):
    """(cfg, vocab_size, make): the tiny hybrid config on the synthetic corpus and
    make(step, rank=0, world=1), train.make_batch of its rows."""
    corpus, data_dir = corpus_env
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    cfg, _, _ = train.resolve_config(TINY_ARGS + [f"--corpus={corpus}", "--mode=hybrid"], False)
    tok = data.load_tokenizer(cfg.tokenizer, cfg.corpus)
    specials, vocab = data.special_ids(tok), tok.get_vocab_size()
    rows = data.load_rows(cfg.corpus, cfg.tokenizer, cfg.seq_len, "train")
    return cfg, vocab, lambda step, rank=0, world=1: train.make_batch(
        rows, step, cfg, specials, vocab, rank, world)


def test_every_step_has_one_shape_so_dynamo_traces_the_step_once(hybrid_batches):
    """The JEPA span and block lengths are drawn per step, but a batch's tensors have the same
    shapes at every step (masks.jepa_masks pads to fixed widths): Dynamo with dynamic=False, which
    recompiles on any new size, traces the hybrid loss once over steps whose target lengths
    differ. (The masks once had the sizes of their step: one graph per size, or dynamic shapes.)"""
    cfg, vocab, make = hybrid_batches
    batches = [make(s) for s in range(6)]
    assert len({int(b["target_valid"][0].sum()) for b in batches}) > 1
    shapes = [{k: tuple(v.shape) for k, v in b.items()} for b in batches]
    assert all(s == shapes[0] for s in shapes)
    net = model.PredictReconstruct(config.model_config(cfg, vocab))
    torch._dynamo.reset()
    forward = torch.compile(net, backend="eager", dynamic=False)
    graphs = []
    with torch.no_grad():
        for b in batches:
            forward(b)
            graphs.append(hardware.compile_counts()["graphs"])
    torch._dynamo.reset()
    assert graphs[0] >= 1 and graphs[-1] == graphs[0], f"graphs after each step: {graphs}"


def test_auto_compile_falls_back_to_eager_where_compiling_fails(run_train, monkeypatch, capsys):
    def broken_backend(gm, example_inputs):
        raise RuntimeError("no C++ compiler")
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real(model, backend=broken_backend))
    torch._dynamo.reset()
    _, eager = run_train("--mode=mlm", "--max_steps=5", out="eager")
    _, auto = run_train("--mode=mlm", "--max_steps=5", "--compile=auto", out="auto")
    assert [r["loss"] for r in read_log(auto)] == [r["loss"] for r in read_log(eager)]
    # ... and says so: printed, and logged with the first log line
    assert "fell back to eager" in capsys.readouterr().err
    assert read_log(auto)[0]["compile_fallbacks"] >= 1
    torch._dynamo.reset()  # Dynamo remembers the failed code: forget it, as a new process would
    with pytest.raises(Exception, match="no C\\+\\+ compiler"):
        run_train("--mode=mlm", "--max_steps=5", "--compile=true", out="strict")
    torch._dynamo.reset()


def test_make_probe_looks_where_make_pretrain_writes():
    """One rule for the default preset (config.default_preset): train.py's run folder and the
    Makefile's default CKPT agree, on this machine and on a CUDA one."""
    cuda = torch.cuda.is_available()
    dry = subprocess.run(["make", "-s", "-n", "probe", "MODE=mlm", f"PY={sys.executable}"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert f"--ckpt={train.resolve_config(['--mode=mlm'], cuda=cuda)[0].out}/ckpt.pt" in dry.stdout
    assert train.resolve_config(["--mode=mlm"], cuda=True)[0].out == "out/mlm-small"
    assert config.default_preset(True) == "small" and config.default_preset(False) == "tiny"


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 989e12),
                                        ("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12),
                                        ("NVIDIA L40S", 362e12), ("NVIDIA L40", 181e12),
                                        ("NVIDIA L4", 121e12), ("NVIDIA A100-SXM4-80GB", 312e12),
                                        ("Some Future GPU", 0.0)])
def test_gpu_peak_table_takes_the_most_specific_name(name, peak):
    assert hardware.nvidia_peak(name) == peak


def test_prefetched_batches_are_the_batches_of_their_steps(hybrid_batches):
    cfg, _, make = hybrid_batches
    whole = {s: make(s) for s in range(7, 13)}
    for rank, world in ((0, 1), (0, 2), (1, 2)):  # a resume at step 7, one or two processes
        pre = runs.Prefetcher(lambda s: make(s, rank, world), 7, 13, pin=False)
        share = cfg.batch_size // world
        for expected in range(7, 13):
            step, batch = pre.next()
            assert step == expected
            for k, v in whole[step].items():
                assert torch.equal(batch[k], v[rank * share:(rank + 1) * share]), (k, rank)
        pre.close()
    # a failure in the worker is raised in the training thread
    pre = runs.Prefetcher(lambda s: 1 / 0, 0, 3, pin=False)
    with pytest.raises(ZeroDivisionError):
        pre.next()
    pre.close()


def test_checkpoints_can_be_paced_in_minutes(run_train):
    code, out = run_train("--mode=mlm", "--max_steps=6", "--ckpt_every=1000",
                          "--ckpt_minutes=1e-9", out="timed")
    assert code == 0
    # due at every step: the one before the last survives as ckpt-prev.pt
    assert model.load_checkpoint(out / "ckpt-prev.pt")["step"] == 5


def test_offline_without_the_presets_corpus_the_error_names_one_that_is_here(tmp_path,
                                                                               monkeypatch):
    (tmp_path / data.ENWIKI).mkdir(parents=True)  # enwiki is here, wikitext-103 is not
    monkeypatch.setenv("DATA_DIR", str(tmp_path))

    def offline(url, path, sha256):
        raise UserError(f"could not download {url} (ConnectionError)")
    monkeypatch.setattr(lib.download, "download", offline)
    with pytest.raises(UserError, match=r"wikitext-103-raw-v1.zip .*make pretrain MODE=mlm "
                                        r"CORPUS=enwiki \(train.py --corpus=enwiki\)"):
        train.main(["--mode=mlm", "--tokenizer=wordpiece-200", f"--out={tmp_path / 'r'}"])
    assert not (tmp_path / "r").exists()


def test_learning_curve_checkpoints_are_kept_at_their_fractions(run_train):
    code, out = run_train("--mode=mlm", "--max_steps=8", "--ckpt_every=1000",
                          "--keep_at=0.25,0.5")
    assert code == 0
    kept = {p.name: model.load_checkpoint(p)["step"] for p in out.glob("ckpt-f*.pt")}
    assert kept == {"ckpt-f0.25.pt": 2, "ckpt-f0.5.pt": 4}
    final = model.load_checkpoint(out / "ckpt.pt")
    assert final["step"] == 8 and not torch.equal(  # a copy of that step's weights, not the end's
        model.load_checkpoint(out / "ckpt-f0.5.pt")["model"]["encoder.tok_emb.weight"],
        final["model"]["encoder.tok_emb.weight"])


def test_compile_counts_leave_out_ddps_own_graph_breaks_only(monkeypatch):
    """torch.compile(DDP(model)) breaks the graph on purpose at DDP's Logger call and at its
    frames marked skipped (reasons as torch 2.13 words them), and skips those frames: not the
    model's, not counted. Any other break or fallback is."""
    from torch._dynamo.utils import counters
    ddp = ["Unsupported method call\n  Explanation: Dynamo does not know how to trace method "
           "`set_runtime_stats_and_log` of class `Logger`",
           "Attempted to call function marked as skipped\n  Explanation: ... the function "
           "`DistributedDataParallel._inside_ddp_forward` in file ... should not be traced."]
    monkeypatch.setitem(counters, "graph_break", {ddp[0]: 1, ddp[1]: 2})
    monkeypatch.setitem(counters, "frames", {"total": 53, "ok": 50})
    c = hardware.compile_counts()
    assert (c["compile_frames"], c["compile_fallbacks"], c["graph_breaks"]) == (53, 0, 0)
    monkeypatch.setitem(counters, "graph_break", {ddp[0]: 1, ddp[1]: 2, "Tensor.item() call": 1})
    monkeypatch.setitem(counters, "frames", {"total": 55, "ok": 51})
    c = hardware.compile_counts()
    assert (c["compile_fallbacks"], c["graph_breaks"]) == (1, 1)


def test_a_compile_change_after_the_first_step_is_a_warning_at_its_log_step(capsys):
    clean = dict(compile_fallbacks=0, graph_breaks=0, recompiles=0)
    last = hardware.compile_alarm({}, clean, 1)  # the first line: the baseline, no warning
    last = hardware.compile_alarm(last, clean, 10)
    assert capsys.readouterr().err == ""
    last = hardware.compile_alarm(last, dict(clean, graph_breaks=1, recompiles=1), 20)
    err = capsys.readouterr().err
    assert "compiled 1 graph(s) after the first step (by step 20)" in err
    assert "by step 20, 0 frames fell back to eager and 1 graph breaks, more than at step 10" in err
    hardware.compile_alarm(last, dict(clean, graph_breaks=1, recompiles=1), 30)
    assert capsys.readouterr().err == ""  # said once
