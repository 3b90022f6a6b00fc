"""The run directory's layout: every path, and the chunk names (make, parse, list).

The run directory is the only channel between processes (worker, supervisor, renderer,
TUI). Every file another process reads is written atomically: temp file in the same
directory, fsync, rename, fsync of the directory. Readers therefore see the old file or
the new one, never a torn one. See docs/CONTRACTS.md.

No torch, no genesis here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

CHUNK_RE = re.compile(r"^chunk_(\d{6})$")

# The worker's heartbeat phases (docs/CONTRACTS.md). The start-up ones, in order; the supervisor's
# watchdog gives them ``startup_timeout_s`` instead of ``hang_timeout_s``.
STARTUP_PHASES = ("starting", "importing", "building_scene", "compiling_kernels", "loading_kernels",
                  "loading_checkpoint")
PHASES = STARTUP_PHASES + ("training", "saving", "exiting")


def chunk_name(milestone: int) -> str:
    """250 -> ``chunk_000250``: the one name of a chunk's checkpoint, record and video."""
    return f"chunk_{milestone:06d}"


def parse_chunk(name: str, suffix: str = "") -> int | None:
    """``chunk_000250`` + ``suffix`` (e.g. ``.json``) -> 250; any other name -> None."""
    if suffix:
        if not name.endswith(suffix):
            return None
        name = name[: -len(suffix)]
    m = CHUNK_RE.match(name)
    return int(m.group(1)) if m else None


def _milestones(folder: Path, suffix: str) -> list[int]:
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    return sorted(m for m in (parse_chunk(n, suffix) for n in names) if m is not None)


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

    # what exists, ascending milestones (names parsed here and nowhere else)
    def checkpoints(self) -> list[int]:
        """Chunks with a checkpoint manifest ``models/chunk_N.json`` (not verified: see checkpoint)."""
        return _milestones(self.models, ".json")

    def chunk_records(self) -> list[int]:
        """Chunks with a finished-chunk record ``logs/chunks/chunk_N.json``."""
        return _milestones(self.chunk_logs, ".json")

    def video_files(self) -> list[int]:
        """Chunks with an mp4 in ``videos/`` (its manifest not checked: see video)."""
        return _milestones(self.videos, ".mp4")

    def make(self) -> None:
        for d in (self.models, self.videos, self.logs, self.chunk_logs):
            d.mkdir(parents=True, exist_ok=True)
