"""Downloads: where data lives (DATA_DIR), a checked, resumable-by-retry fetch of one file, and
a zip archive fetched and extracted into the official layout. Every file is complete or absent."""
import contextlib
import fcntl
import hashlib
import os
import shutil
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

import requests

from lib.cli import UserError


def data_dir() -> Path:
    """Where downloads and prepared files live: $DATA_DIR, else ~/.cache/predict-reconstruct."""
    return Path(os.environ.get("DATA_DIR") or "~/.cache/predict-reconstruct").expanduser()



RETRY_BACKOFF = 1.0  # seconds before the 2nd attempt, doubled after each failure (tests set 0)


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@contextlib.contextmanager
def exclusive(path: Path):
    """Hold a lock tied to path, so that processes preparing the same thing at once (every DDP
    rank calls load_rows) do it one after the other, and the later ones find it done."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def progress(what: str, done: int, total: int):
    """A self-overwriting status line on stderr; the caller ends it with a newline."""
    pct = f" ({100 * done / total:.0f}%)" if total else ""
    print(f"\r{what}: {done / 1e6:.1f} MB{pct}", end="", file=sys.stderr, flush=True)


def download(url: str, dest: Path, sha256: str | None = None, size: int | None = None,
             retries: int = 3, timeout: float = 30.0) -> Path:
    """Fetch url to dest unless a good copy is there. Streams into dest.part, checks size and
    sha256, renames: dest is complete or absent, never half-written. Connection errors and 5xx
    are retried with backoff; other HTTP errors and bad checksums are not (same answer again)."""
    dest, why = Path(dest), "no attempt"
    if dest.exists() and (sha256 is None or _sha256(dest) == sha256):
        return dest
    stale = " (the file there now has another sha256)" if dest.exists() else ""
    part = dest.with_suffix(dest.suffix + ".part")
    try:
        for attempt in range(retries):
            time.sleep(RETRY_BACKOFF * 2 ** (attempt - 1) if attempt else 0)
            try:
                with requests.get(url, stream=True, timeout=timeout) as r:
                    why = f"HTTP {r.status_code}"
                    if r.status_code >= 500:
                        continue
                    if r.status_code != 200:
                        break
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    total = size or int(r.headers.get("Content-Length", 0))
                    h, n = hashlib.sha256(), 0
                    with open(part, "wb") as f:
                        for block in r.iter_content(1 << 20):
                            f.write(block)
                            h.update(block)
                            n += len(block)
                            progress(f"downloading {dest.name}", n, total)
                    print(file=sys.stderr)
            except requests.RequestException as e:  # refused, reset, timed out, cut short
                why = type(e).__name__
                continue
            if size is not None and n != size:
                why = f"got {n} bytes, expected {size}"
            elif sha256 is not None and h.hexdigest() != sha256:
                why = f"sha256 mismatch: got {h.hexdigest()}"
            else:
                os.replace(part, dest)
                return dest
            break
    finally:
        part.unlink(missing_ok=True)
    check = f" (sha256 {sha256})" if sha256 else f" ({size} bytes)" if size else ""
    raise UserError(f"could not download {url} ({why}); place the file by hand at {dest}{check}"
                    f"{stale} or set DATA_DIR to a folder that has it")


def fetch_archive(url: str, zip_name: str, sha256: str, expect: list[str]) -> Path:
    """Make sure the files `expect` (paths under data_dir() in the official extracted layout,
    e.g. glue/SST-2/train.tsv) exist, else download the zip into data_dir()/downloads and
    extract it. Returns data_dir()."""
    root = data_dir()
    if all((root / p).exists() for p in expect):
        return root
    archive = download(url, root / "downloads" / zip_name, sha256)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        try:
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)
        except (zipfile.BadZipFile, zlib.error, EOFError) as e:
            raise UserError(f"{archive} is not a readable zip ({e}); "
                            "delete it and re-run") from None
        # The zip holds SST-2/train.tsv where we want glue/SST-2/train.tsv: find that prefix.
        parts = Path(expect[0]).parts
        prefix = next((Path(*parts[:i]) for i in range(len(parts))
                       if (tmp / Path(*parts[i:])).is_file()), None)
        for f in sorted(tmp.rglob("*")) if prefix is not None else []:
            target = root / prefix / f.relative_to(tmp)
            if f.is_file() and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(f, target)  # a rename per file: nobody ever sees half a file
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if missing := [p for p in expect if not (root / p).exists()]:
        raise UserError(f"{archive} has no {missing[0]}; delete the zip and re-run")
    return root


def portable(text: str) -> str:
    """A message with this machine's data folder written as $DATA_DIR, for files one commits."""
    for folder in (data_dir().resolve(), data_dir()):
        text = text.replace(str(folder), "$DATA_DIR")
    return text
