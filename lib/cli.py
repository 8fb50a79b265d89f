"""The command-line plumbing every stage shares: `--key=value` flags into a dataclass, user errors
as one line and exit status 2, and atomic file writes."""
import dataclasses
import os
import sys
import tempfile
import types
import typing
from pathlib import Path


class UserError(Exception):
    """A problem the user can fix (bad flag, missing file, no network). CLIs print it on one line
    and exit with status 2; the message says what was wrong, where, and what to do."""


def _parse_value(key: str, text: str, typ):
    origin = typing.get_origin(typ)
    if origin in (list, tuple):
        (item,) = {a for a in typing.get_args(typ) if a is not Ellipsis}
        values = [_parse_value(key, t, item) for t in text.split(",") if t != ""]
        return tuple(values) if origin is tuple else values
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if text.lower() in ("none", "null", ""):
            return None
        return _parse_value(key, text, args[0])
    if typ is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise UserError(f"--{key}={text}: expected a boolean (true/false)")
    if typ is int:
        try:
            return (int(float(text)) if "e" in text.lower() and float(text).is_integer()
                    else int(text))
        except ValueError:
            raise UserError(f"--{key}={text}: expected an integer") from None
    if typ is float:
        try:
            return float(text)
        except ValueError:
            raise UserError(f"--{key}={text}: expected a number") from None
    return text


def parse_flags(argv: list[str], cfg, positional: int = 0):
    """Apply `--key=value` flags to a dataclass instance; returns (cfg, positional args).

    Types come from the dataclass fields; list/tuple fields take comma-separated values; a bare
    `--flag` sets a boolean to true. Unknown keys and badly typed values raise UserError naming
    the key, so a typo never silently falls back to a default.
    """
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    hints = typing.get_type_hints(type(cfg))
    rest = []
    for arg in argv:
        if not arg.startswith("--"):
            rest.append(arg)
            continue
        key, eq, text = arg[2:].partition("=")
        key = key.replace("-", "_")
        if key not in fields:
            raise UserError(f"unknown flag --{key}; valid flags: "
                            + ", ".join("--" + k for k in fields))
        if not eq:
            if hints[key] is not bool:
                raise UserError(f"--{key} needs a value: --{key}=VALUE")
            text = "true"
        setattr(cfg, key, _parse_value(key, text, hints[key]))
    if len(rest) > positional:
        raise UserError(f"unexpected argument {rest[positional]!r}; flags look like --key=value")
    return cfg, rest


def run_cli(main):
    """Run main(argv); a UserError becomes a one-line message on stderr and exit status 2."""
    try:
        sys.exit(main(sys.argv[1:]) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def atomic_write(path, write_fn, mode: str = "wb", keep_previous=None, what: str = "") -> Path:
    """Write a file so readers see either the old content or the complete new one, never a part:
    write_fn(file) writes into a temp file in the same folder, which is fsynced and renamed.
    keep_previous: a path the old file is renamed to first (so one complete copy always exists);
    what: how an error names the file ("the checkpoint ")."""
    path = Path(path)
    try:
        make_folder(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    except OSError as e:
        raise cannot_write(path, e, what) from None
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, mode) as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):  # full disk, quota, read-only file system
            raise cannot_write(path, e, what) from None
        raise
    return path


def cannot_write(path, e: OSError, what: str = "") -> UserError:
    return UserError(f"could not write {what}{path}: {e.strerror or e}; free space, fix the "
                     "folder's permissions or choose another output folder")


def make_folder(path) -> Path:
    """mkdir -p, with a one-line error naming the folder."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"could not create the folder {path}: {e.strerror or e}; fix the path "
                        "or choose another output folder") from None
    return path
