"""The run directory: its layout and the atomic file primitives every process uses.

The run directory is the only channel between processes (worker, supervisor, renderer,
TUI). Every file another process reads is written atomically: temp file in the same
directory, fsync, rename, fsync of the directory. Readers therefore see the old file or
the new one, never a torn one. See docs/CONTRACTS.md.

No torch, no genesis here.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHUNK_RE = re.compile(r"^chunk_(\d{6})$")

# The worker's heartbeat phases (docs/CONTRACTS.md). The start-up ones, in order; the supervisor's
# watchdog gives them ``startup_timeout_s`` instead of ``hang_timeout_s``.
STARTUP_PHASES = ("starting", "importing", "building_scene", "compiling_kernels", "loading_kernels",
                  "loading_checkpoint")
PHASES = STARTUP_PHASES + ("training", "saving", "exiting")


def chunk_name(milestone: int) -> str:
    return f"chunk_{milestone:06d}"


@dataclass(frozen=True)
class RunDir:
    root: Path

    @classmethod
    def at(cls, path: str | Path) -> "RunDir":
        return cls(Path(path).absolute())

    # directories
    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def videos(self) -> Path:
        return self.root / "videos"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def chunk_logs(self) -> Path:
        return self.logs / "chunks"

    @property
    def damaged(self) -> Path:
        return self.models / "damaged"

    # files
    @property
    def heartbeat(self) -> Path:
        return self.logs / "heartbeat.json"

    @property
    def state(self) -> Path:
        return self.logs / "state.json"

    @property
    def events(self) -> Path:
        return self.logs / "events.jsonl"

    @property
    def pidfile(self) -> Path:
        return self.logs / "daemon.pid"

    @property
    def daemon_log(self) -> Path:
        return self.logs / "daemon.log"

    @property
    def worker_log(self) -> Path:
        return self.logs / "worker.log"

    @property
    def monitor_csv(self) -> Path:
        return self.logs / "monitor.csv"

    @property
    def tensorboard(self) -> Path:
        return self.logs / "tb"

    @property
    def config_file(self) -> Path:
        return self.root / "go2train.toml"

    @property
    def render_progress(self) -> Path:
        return self.logs / "render.json"

    def chunk_metrics(self, milestone: int) -> Path:
        return self.chunk_logs / f"{chunk_name(milestone)}.json"

    def video(self, milestone: int) -> Path:
        return self.videos / f"{chunk_name(milestone)}.mp4"

    def make(self) -> None:
        for d in (self.models, self.videos, self.logs, self.chunk_logs):
            d.mkdir(parents=True, exist_ok=True)


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
