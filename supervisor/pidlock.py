"""One daemon per run directory: a kernel lock (flock) on ``logs/daemon.pid``.

The file holds ``{"pid": ..., "start_time": <psutil create_time>}`` and is held with
``flock(LOCK_EX | LOCK_NB)`` for the daemon's whole life. The kernel drops the lock when the
process dies, however it dies (``kill -9`` included), so a file whose lock is free is stale
whatever pid it names (readers ask :func:`go2train.run.identity.lock_holder`). The file is rewritten in place (not renamed: a rename would swap the
inode out from under the lock).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from pathlib import Path

import psutil

from go2train.run.identity import lock_holder


class AlreadyRunning(Exception):
    """The lock is held by another process; ``pid`` is what its pid file names (or None)."""

    def __init__(self, path: Path, pid: int | None):
        self.path = path
        self.pid = pid
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(f"a daemon is already running for this run directory ({who}, lock {path})")


class PidLock:
    """Exclusive, non-blocking lock on the pid file; ``release()`` (or process death) frees it."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.fd: int | None = None

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self, attempts: int = 10) -> None:
        """Take the lock or raise :class:`AlreadyRunning`.

        Retries a few times over ~0.2 s, since a concurrent :func:`~go2train.run.identity.lock_holder` holds a shared lock for
        a few microseconds.
        """
        if self.fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for i in range(attempts):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if i < attempts - 1:
                    time.sleep(0.02)
                    continue
                held = lock_holder(self.path)
                raise AlreadyRunning(self.path, held.get("pid") if held else None) from None
            # The previous holder may have unlinked the file between our open and our lock:
            # then we hold a lock on an orphan inode. Only the inode at the path counts.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            info = {"pid": os.getpid(), "start_time": psutil.Process().create_time()}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
            os.fsync(fd)
            self.fd = fd
            return
        raise AlreadyRunning(self.path, None)

    def release(self) -> None:
        """Remove the pid file (while still holding the lock), then drop the lock."""
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> "PidLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
