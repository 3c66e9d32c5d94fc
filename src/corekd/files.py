"""Small file helpers every layer uses: atomic writes, whole-folder writes, JSON reading, hashing, and the names
of the files an experiment folder holds (defined once here, at the bottom, for the layers that write and read them).

Nothing here knows about corpora, models or runs; it depends on :mod:`corekd.errors` only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from corekd.errors import CorekdError

CONFIG_FILE = "config.yaml"  # the resolved configuration of a run, sweep or grid
RESULTS_FILE = "results.json"  # meta + records + training entries
ANALYSES_FILE = "analyses.json"  # the mechanism analyses
REPORT_FILE = "report.md"  # beside it report.html
GRID_FORMAT = "corekd-grid"  # a grid's marker and results.json
GRID_ANALYSES_FORMAT = "corekd-grid-analyses"  # a grid's analyses.json


def atomic_write(target: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then rename over ``target``: readers never see a half-written file.

    The file is flushed to disk before the rename and gets the usual permissions (0666 less the
    umask, e.g. 0644), not the 0600 of a temporary file.
    """
    target = Path(target)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise CorekdError(
            f"could not write this file ({exc.strerror or exc}); nothing was changed", path=target
        ) from None
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except Exception as exc:
        Path(tmp).unlink(missing_ok=True)
        reason = _io_failure(exc)
        if reason is None:
            raise
        # a full disk, a quota, a read-only mount: one line naming the file, the earlier file intact
        raise CorekdError(
            f"could not write this file ({reason}); the earlier version, if any, is unchanged: free "
            "some space (or fix the permissions) and run the same command again",
            path=target,
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _io_failure(exc: BaseException) -> str | None:
    """Why writing failed, when the cause is the file system (an OSError, or safetensors' wrapped "I/O error")."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    text = str(exc)
    if type(exc).__name__ == "SafetensorError" and "I/O error" in text:
        return text.split("I/O error:", 1)[1].strip()
    return None


def read_json(path: Path, what: str):
    """The parsed JSON of ``path``; missing, undecodable or malformed: one line naming it (``what``: the hint)."""
    if not path.is_file():
        raise CorekdError(f"file not found ({what})", path=path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise CorekdError(f"not a UTF-8 text file (undecodable byte at position {exc.start})", path=path) from None
    except json.JSONDecodeError as exc:
        raise CorekdError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}; the file is truncated or damaged)",
            path=path,
        ) from None


def check_new_or_empty(out: str | Path, field: str = "--out") -> Path:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CorekdError("expected a folder, but this is a file", path=out, field=field)
    if out.is_dir() and any(out.iterdir()):
        raise CorekdError("folder is not empty; expected a new or empty folder", path=out, field=field)
    return out


@contextlib.contextmanager
def staged_folder(out: str | Path, *, field: str = "--out"):
    """Write a folder whole or not at all: yields a temporary folder beside ``out`` (which must be new or empty);
    when the block ends without an error it is moved into place, else removed (``out`` is left as it was)."""
    out = check_new_or_empty(out, field)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield tmp
        umask = os.umask(0o022)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # a folder's usual permissions, not mkdtemp's 0700
        os.replace(tmp, out)  # onto a missing or empty folder
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def move_aside(path: Path) -> Path:
    """Rename an earlier output folder to ``<path>.old-<UTC time>[-k]`` (never deleted); return the new path."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target, k = path.with_name(f"{path.name}.old-{stamp}"), 1
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}.old-{stamp}-{k}")
    os.replace(path, target)
    return target
