"""Atomic file primitives every process uses to write the run directory (docs/CONTRACTS.md).

Every file another process reads is written atomically: temp file in the same directory, fsync,
rename, fsync of the directory. Readers therefore see the old file or the new one, never a torn
one; a reader never crashes on a missing or unparsable file. No torch, no genesis here.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file, fsync, rename, fsync dir)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str | Path, default: Any = None) -> Any:
    """Read a JSON file; ``default`` when missing or unparsable (a reader never crashes)."""
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return default


def append_jsonl(path: str | Path, obj: dict[str, Any]) -> None:
    """Append one JSON line with O_APPEND (a single write: lines never interleave)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(obj, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | Path, last: int | None = None) -> list[dict[str, Any]]:
    """Read JSON lines, skipping a torn last line; ``last`` keeps only the final N."""
    try:
        with open(path, "rb") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    if last is not None:
        lines = lines[-last:]
    out = []
    for ln in lines:
        try:
            out.append(json.loads(ln))
        except ValueError:
            continue
    return out


def now() -> float:
    return time.time()


# what a reader makes of a value it read: files may hold anything, a reader never crashes
def num(value: Any) -> float | None:
    """A finite float or None: files may hold anything, a reader never crashes."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def as_int(value: Any) -> int | None:
    v = num(value)
    return int(v) if v is not None else None
