"""A run folder's files and what fills them: checkpoints that survive a crash at any moment,
written by a background thread; the log (log.jsonl, one JSON line per log step); the code a run
was made with; and the background thread that builds the next batches. train.py writes them; the study and the recipe search read
them."""
import copy
import hashlib
import json
import queue
import shutil
import subprocess
import threading
from pathlib import Path

import torch

from lib.cli import UserError, atomic_write

ROOT = Path(__file__).resolve().parents[1]  # the repository


# ----------------------------------------------------------------------------- checkpoints

def save_checkpoint(out: Path, state: dict):
    """ckpt.pt is replaced atomically; the one it replaces survives as ckpt-prev.pt, so a crash
    at any moment leaves at least one complete checkpoint."""
    try:
        atomic_write(out / "ckpt.pt", lambda f: torch.save(state, f),
                     keep_previous=out / "ckpt-prev.pt", what="the checkpoint ")
    except UserError as e:
        raise UserError(f"{e} (the previous checkpoint is intact)") from None


def cpu_copy(obj):
    """A copy of a state (nested dicts, lists, tensors, numbers) in CPU memory that later training
    steps cannot change: tensors copied (from any device), everything else deep-copied."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_copy(v) for v in obj)
    return copy.deepcopy(obj)


class CheckpointWriter:
    """Checkpoints off the critical path: `save` takes a CPU copy of the state (the only part the
    step waits for) and a background thread writes it (save_checkpoint: atomic, the previous file
    kept), then copies it to each `keep` path. One write at a time: a save first waits for the
    one before. `wait` returns once the last write is on disk and raises its error, if any;
    `close` waits without raising (an exit on another error)."""

    def __init__(self):
        self.thread, self.error = None, None

    def save(self, out: Path, state: dict, keep=()):
        self.wait()
        snapshot = cpu_copy(state)
        self.thread = threading.Thread(target=self._write, args=(out, snapshot, keep),
                                       name="checkpoint-writer", daemon=True)
        self.thread.start()

    def _write(self, out: Path, state: dict, keep):
        try:
            save_checkpoint(out, state)
            for dest in keep:
                keep_copy(out / "ckpt.pt", dest)
        except BaseException as e:  # raised in the training thread, at its next wait
            self.error = e

    def wait(self):
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def close(self):
        try:
            self.wait()
        except BaseException:
            pass


def keep_copy(src: Path, dest: Path):
    """A kept checkpoint (learning curves): a copy streamed file to file, never held in memory,
    written atomically."""
    with open(src, "rb") as f:
        atomic_write(dest, lambda g: shutil.copyfileobj(f, g, 1 << 24))


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 of a model's state (every tensor's name, dtype, shape and bytes): two runs have the
    same bits exactly when these agree. The last log line records it."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- the log

def read_log(run: Path) -> list[dict]:
    """The records of a run's log.jsonl; a last line cut short by a kill is left out."""
    records = []
    for line in (Path(run) / "log.jsonl").read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return records


def open_log(path: Path, step: int):
    """log.jsonl for appending; a resumed run first drops the lines logged after its checkpoint
    (they will be logged again), so the file reads as one uninterrupted run."""
    keep = []
    if step and path.exists():
        keep = [json.dumps(r) + "\n" for r in read_log(path.parent)
                if isinstance(r, dict) and r.get("step", step + 1) <= step]
    atomic_write(path, lambda f: f.write("".join(keep)), mode="w")
    return open(path, "a")


def wall_time(log: list[dict]) -> float:
    """Seconds of training: `elapsed` restarts at 0 in each resumed process; sum the segments."""
    total, last = 0.0, 0.0
    for rec in log:
        if rec["elapsed"] < last:
            total += last
        last = rec["elapsed"]
    return total + last


# ----------------------------------------------------------------------------- the code

def _git(*args) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT,
                              timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def code_state() -> dict:
    """The code a run is made with: the commit, whether tracked files differ from it (dirty),
    and a hash of that difference (so two runs from the same uncommitted edit can be told to be
    the same code). Empty strings outside a git checkout."""
    commit = _git("rev-parse", "HEAD").strip()
    diff = _git("diff", "HEAD", "--binary") if commit else ""
    return dict(git=commit, git_dirty=bool(diff),
                git_diff_sha256=hashlib.sha256(diff.encode()).hexdigest()[:16] if diff else "")


# ----------------------------------------------------------------------------- batches ahead

class Prefetcher:
    """Builds the batches of steps start, start+1, ... in a background thread, `depth` ahead (on
    CUDA into pinned memory), so the device never waits for the host. Batches are a pure function
    of the step, so what comes out is exactly build(step) in order, however the threads run."""

    def __init__(self, build, start: int, stop: int, pin: bool, depth: int = 2):
        self.queue, self.done = queue.Queue(maxsize=depth), threading.Event()
        self.thread = threading.Thread(target=self._work, args=(build, start, stop, pin),
                                       daemon=True)
        self.thread.start()

    def _work(self, build, start, stop, pin):
        # Small tensors: one thread, so this never contends with the step's thread pool (2
        # threads here made a 256-row batch take 75 ms instead of 1.5 on a busy 2-core CPU).
        torch.set_num_threads(1)  # per thread: the training thread keeps its own count
        try:
            for step in range(start, stop):
                batch = build(step)
                if pin:
                    batch = {k: v.pin_memory() for k, v in batch.items()}
                if not self._put((step, batch)):
                    return
        except BaseException as e:  # handed to the training thread, raised there
            self._put((None, e))

    def _put(self, item) -> bool:
        while not self.done.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def next(self):
        step, batch = self.queue.get()
        if step is None:
            raise batch
        return step, batch

    def close(self):
        self.done.set()
        self.thread.join()
