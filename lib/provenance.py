"""What made a result, and reusing it only when that matches exactly.

A result file (a probe's JSON, analysis.json) records `settings`: everything it depends on (flags,
hashes of the weights, of the data and of the code). A re-run reuses it only when those equal the
settings it would use now, and otherwise says which differ and makes it again. probe.py,
analyze.py and study/study.py use this; probe results keep their per-example dev predictions
(per probe seed) in a sidecar .npz whose hash the JSON records, for the paired tests of
analyze.py.
"""
import ast
import functools
import hashlib
import json
from pathlib import Path

import numpy as np

from lib.cli import atomic_write

ROOT = Path(__file__).resolve().parents[1]  # the repository


def _imports(path: Path) -> list[Path]:
    """The project's source files that one file imports (`import x`, `from lib import x`,
    `from lib.x import y`, at any depth of the file)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found += [f for n in names if (f := ROOT / (n.replace(".", "/") + ".py")).is_file()]
    return found


@functools.cache
def code_files(entry: str) -> tuple[str, ...]:
    """A source file and every project file it imports, transitively: what its results depend on.
    Derived from the imports, so a new or moved module is never left out."""
    seen, todo = set(), [Path(entry).resolve()]
    while todo:
        if (f := todo.pop()) not in seen:
            seen.add(f)
            todo += _imports(f)
    return tuple(sorted(str(f.relative_to(ROOT)) for f in seen))


@functools.cache
def code_version(entry: str) -> str:
    """sha256 (16 hex) of the names and bytes of code_files(entry), as this process read them:
    any edit to them re-runs what they computed."""
    h = hashlib.sha256()
    for name in code_files(entry):
        h.update(name.encode() + b"\0" + (ROOT / name).read_bytes())
    return h.hexdigest()[:16]


def content_hash(obj) -> str:
    """sha256 (16 hex) of texts, examples or any JSON-able data."""
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:16]


def file_hash(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


def differences(old: dict, new: dict, prefix="") -> list[str]:
    """'key: old -> new' for every leaf where two settings dicts differ."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a} -> {b}")
    return out


def stale(saved: dict, want: dict) -> str:
    """Why a saved result cannot stand for one made with the settings `want` ("": it can)."""
    if "settings" not in saved:
        return "made before its settings were recorded"
    diff = differences(saved["settings"], want)
    return "made with other settings (" + "; ".join(diff) + ")" if diff else ""


def save_result(r: dict, path: Path) -> dict:
    """A probe result: the JSON, and its dev predictions r["predictions"] ({split: {pred | cos:
    (seeds, n)}}) in <name>.npz, whose hash the JSON records -> the dict as saved."""
    arrays = {f"{s}.{k}": v.astype(np.float32 if k == "cos" or v.dtype.kind == "f" else np.int8)
              for s, kv in r["predictions"].items() for k, v in kv.items()}
    npz = path.with_suffix(".npz")
    atomic_write(npz, lambda f: np.savez_compressed(f, **arrays))
    saved = dict(r, predictions=dict(file=npz.name, sha256=file_hash(npz),
                                     arrays={k: list(v.shape) for k, v in arrays.items()}))
    atomic_write(path, lambda f: f.write(json.dumps(saved, indent=1)), mode="w")
    return saved


def reusable(path: Path, want: dict) -> tuple[dict | None, str]:
    """(the saved probe result, "") when it was made with exactly the settings `want` and its
    predictions are the ones saved with it, else (None, why not)."""
    if not path.exists():
        return None, "no result yet"
    r = json.loads(path.read_text())
    if why := stale(r, want):
        return None, why
    npz = path.parent / r["predictions"]["file"]
    if not npz.exists() or file_hash(npz) != r["predictions"]["sha256"]:
        return None, f"its predictions file {npz.name} is missing or not the one it was saved with"
    return dict(r, file=str(path)), ""


def load_predictions(r: dict) -> dict:
    """{split: {pred | cos: (seeds, n) array}} of a probe result as reusable returns it."""
    with np.load(Path(r["file"]).parent / r["predictions"]["file"]) as z:
        out = {}
        for name in z.files:
            split, key = name.split(".")
            out.setdefault(split, {})[key] = z[name]
    return out
