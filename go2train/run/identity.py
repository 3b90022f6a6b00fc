"""Process identity: "is pid P still the process that was started at T?" — asked in one place.

A pid alone is not an identity: pids are reused. Every file that names a process (the pidfile
``logs/daemon.pid``, ``state.json``'s ``worker_pid``/``render_pid``, the heartbeat) stores the
process's psutil ``create_time`` beside its pid, and every reader compares the two here, with one
tolerance. No torch, no genesis; psutil only.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

import psutil

# psutil's create_time is boot time + start ticks (1/100 s); two reads of one process agree to
# well under this. A different process with the same pid was started at least this far apart.
CREATE_TIME_TOLERANCE_S = 1.0


def create_time(pid: int) -> float | None:
    """The create time of live process ``pid`` (what to store beside a pid), or None."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, ValueError):
        return None


def live_process(pid: Any, started: Any = None, not_after: float | None = None) -> psutil.Process | None:
    """The running, non-zombie process ``pid``, or None.

    ``started``: the create time stored with the pid; another process (a reused pid) gives None.
    ``not_after``: a time the process must already have existed at (when a file naming it was
    written); a process created later is a reused pid.
    """
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        born = proc.create_time()
    except (psutil.Error, ValueError):
        return None
    if isinstance(started, (int, float)) and not isinstance(started, bool):
        if abs(born - float(started)) > CREATE_TIME_TOLERANCE_S:
            return None
    if not_after is not None and born > not_after + CREATE_TIME_TOLERANCE_S:
        return None
    return proc


def alive(pid: Any, started: Any = None) -> bool:
    """True when :func:`live_process` finds it."""
    return live_process(pid, started) is not None


# ------------------------------------------------------------------ the pidfile (logs/daemon.pid)
def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        info = json.loads(raw)
    except ValueError:
        return None
    return info if isinstance(info, dict) and isinstance(info.get("pid"), int) else None


def lock_holder(path: str | Path) -> dict[str, Any] | None:
    """Who holds the daemon's pidfile lock: ``{"pid", "start_time"}`` of the live holder, or None
    when the lock is free (a stale file names nobody). The lock itself is taken and written by
    :class:`supervisor.pidlock.PidLock`.

    A held lock whose file cannot be parsed yet (the holder is writing it) gives
    ``{"pid": None, "start_time": None}``.
    """
    try:
        fd = os.open(Path(path), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None  # free: stale, whatever it names
        for _ in range(20):  # the holder may be between truncate and write
            try:
                info = _parse(os.pread(fd, 4096, 0))
            except OSError:
                info = None
            if info is not None:
                return {"pid": info.get("pid"), "start_time": info.get("start_time")}
            time.sleep(0.01)
        return {"pid": None, "start_time": None}
    finally:
        os.close(fd)
