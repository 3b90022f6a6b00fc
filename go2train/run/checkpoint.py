"""Checkpoints: atomic, verifiable, complete.

A checkpoint ``models/<name>`` is three files: ``<name>.zip`` (SB3 model: policy + optimizer),
``<name>.vecnorm.pkl`` (VecNormalize statistics) and ``<name>.json`` (the manifest). The data
files are written to temp names, fsynced and renamed; the manifest (with their sha256) is
written last, atomically. So a checkpoint without a valid manifest does not exist, and a torn
or bit-flipped file is caught by its checksum.

Checkpoints are pickles: they are loaded only from the run directory's ``models/``, and a
symlink is never followed (see README, "Security").

Chunk checkpoints are named by their per-robot episode milestone (``chunk_000050``); the
rolling resume point is ``resume``. No torch here: the caller passes ``save`` callables.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from go2train.run.files import atomic_write_json, read_json
from go2train.run.layout import RunDir, chunk_name

FORMAT = 1
RESUME = "resume"


class DamagedCheckpoint(Exception):
    pass


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def data_files(name: str) -> dict[str, str]:
    return {"model": f"{name}.zip", "vecnorm": f"{name}.vecnorm.pkl"}


def save(
    rd: RunDir,
    name: str,
    writers: dict[str, Callable[[Path], None]],
    meta: dict[str, Any],
    before_manifest: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Write a checkpoint. ``writers[role](tmp_path)`` writes each data file (roles: model, vecnorm).

    ``before_manifest`` runs after the data files are in place and before the manifest is
    written (the "die mid-save" failpoint hooks here).
    """
    rd.models.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    tmp_paths = []
    try:
        for role, fname in data_files(name).items():
            tmp = rd.models / f".{fname}.{os.getpid()}.tmp"
            tmp_paths.append(tmp)
            writers[role](tmp)
            _fsync_file(tmp)
            files[fname] = {"sha256": sha256_file(tmp), "bytes": tmp.stat().st_size, "role": role}
        if before_manifest is not None:
            before_manifest()
        for role, fname in data_files(name).items():
            os.replace(rd.models / f".{fname}.{os.getpid()}.tmp", rd.models / fname)
    finally:
        for tmp in tmp_paths:
            if tmp.exists():
                tmp.unlink()
    manifest = {"format": FORMAT, "name": name, "created": time.time(), "files": files, **meta}
    atomic_write_json(rd.models / f"{name}.json", manifest)
    return manifest


def _inside(rd: RunDir, path: Path) -> bool:
    models = rd.models.resolve()
    return not path.is_symlink() and path.resolve().parent == models


def verify(rd: RunDir, name: str) -> dict[str, Any]:
    """Return the manifest of a complete checkpoint, or raise DamagedCheckpoint(reason)."""
    mpath = rd.models / f"{name}.json"
    if not _inside(rd, mpath):
        raise DamagedCheckpoint(f"{mpath.name} is a symlink or lies outside {rd.models}")
    manifest = read_json(mpath)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or "files" not in manifest:
        raise DamagedCheckpoint(f"{mpath.name}: manifest missing or unreadable")
    for fname, info in manifest["files"].items():
        p = rd.models / fname
        if not _inside(rd, p):
            raise DamagedCheckpoint(f"{fname} is a symlink or lies outside {rd.models}")
        if not p.exists():
            raise DamagedCheckpoint(f"{fname} is missing")
        size = p.stat().st_size
        if size != info.get("bytes"):
            raise DamagedCheckpoint(f"{fname} has {size} bytes, manifest says {info.get('bytes')}")
        if sha256_file(p) != info.get("sha256"):
            raise DamagedCheckpoint(f"{fname} fails its sha256 checksum")
    return manifest


def chunk_milestones(rd: RunDir) -> list[int]:
    """Milestones that have a manifest file, newest first (not yet verified)."""
    return rd.checkpoints()[::-1]


def move_aside(rd: RunDir, name: str, reason: str) -> Path:
    """Move every file of checkpoint ``name`` to models/damaged/ (never delete) with the reason."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    dest = rd.damaged / f"{name}.{stamp}.{os.getpid()}"
    dest.mkdir(parents=True, exist_ok=True)
    for fname in [f"{name}.json", *data_files(name).values()]:
        p = rd.models / fname
        if p.exists() or p.is_symlink():
            shutil.move(str(p), str(dest / fname))
    atomic_write_json(dest / "REASON.json", {"name": name, "reason": reason, "time": time.time()})
    return dest


def newest_valid_chunk(
    rd: RunDir,
    load: Callable[[dict[str, Any]], Any] | None = None,
    log: Callable[[str], None] = print,
    fatal: tuple[type[BaseException], ...] = (),
) -> tuple[dict[str, Any] | None, Any]:
    """The newest chunk checkpoint whose files match their checksums and (if ``load``) load.

    Damaged ones are moved aside with a logged reason; returns (manifest, loaded) or (None, None).
    Exceptions of the ``fatal`` types (e.g. a config that cannot load this run) propagate.
    """
    for milestone in chunk_milestones(rd):
        name = chunk_name(milestone)
        try:
            manifest = verify(rd, name)
            loaded = load(manifest) if load else None
            return manifest, loaded
        except DamagedCheckpoint as exc:
            reason = str(exc)
        except fatal:
            raise
        except Exception as exc:  # noqa: BLE001 - a file that does not load is damaged
            reason = f"does not load: {type(exc).__name__}: {exc}"
        dest = move_aside(rd, name, reason)
        log(f"checkpoint {name} is damaged ({reason}); moved to {dest}")
    return None, None


def clean_temp_files(rd: RunDir) -> list[str]:
    """Remove temp files left by a writer that died mid-save (only one worker runs per run dir)."""
    removed = []
    if rd.models.is_dir():
        for p in rd.models.glob(".*.tmp"):
            p.unlink()
            removed.append(p.name)
    return removed


def model_path(rd: RunDir, manifest: dict[str, Any], role: str) -> Path:
    for fname, info in manifest["files"].items():
        if info.get("role") == role:
            return rd.models / fname
    raise DamagedCheckpoint(f"manifest {manifest.get('name')} has no {role} file")


# ---------------------------------------------------------------- choosing a checkpoint (tools)
class NoSuchChunk(LookupError):
    """No checkpoint serves the request: ``want`` (a milestone or ``"latest"``) is not among
    ``available`` (ascending), or every one is damaged (``damaged``: ``"chunk_N: reason"``, newest first)."""

    def __init__(self, want: int | str, available: list[int], damaged: list[str]):
        super().__init__(f"no valid checkpoint for chunk {want}")
        self.want, self.available, self.damaged = want, available, damaged


def parse_chunk_arg(value: str) -> int | str | None:
    """A tool's ``--chunk`` value: ``"latest"`` (any case, spaces around ignored) or a non-negative
    integer milestone; None for anything else (each tool words its own one-line error)."""
    v = str(value).strip()
    if v.lower() == "latest":
        return "latest"
    return int(v) if v.isdecimal() else None


def resolve_chunk(rd: RunDir, want: int | str) -> tuple[dict[str, Any], list[str]]:
    """(verified manifest, damaged newer ones skipped) of chunk ``want`` (a milestone or ``"latest"``).

    ``latest`` is the newest chunk whose files verify; damaged newer ones are skipped and listed
    (``"chunk_N: reason"``); nothing is moved aside (that is the worker's job). Raises
    :class:`NoSuchChunk` (unknown milestone, no checkpoint, all damaged) or
    :class:`DamagedCheckpoint` (the explicitly wanted one is damaged). No torch here.
    """
    available = rd.checkpoints()
    if want == "latest":
        damaged = []
        for m in reversed(available):
            try:
                return verify(rd, chunk_name(m)), damaged
            except DamagedCheckpoint as exc:
                damaged.append(f"{chunk_name(m)}: {exc}")
        raise NoSuchChunk(want, available, damaged)
    if want not in available:
        raise NoSuchChunk(want, available, [])
    return verify(rd, chunk_name(int(want))), []
