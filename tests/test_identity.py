"""go2train.run.identity: the one "same process?" answer (pid + create time), on real processes."""

from __future__ import annotations

import subprocess
import sys
import time

from go2train.run.identity import (
    CREATE_TIME_TOLERANCE_S,
    alive,
    create_time,
    live_process,
    lock_holder,
)
from supervisor.pidlock import PidLock


def test_live_process_checks_pid_and_create_time():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        born = create_time(p.pid)
        assert born is not None and abs(born - time.time()) < 30
        assert live_process(p.pid, born) is not None
        assert alive(p.pid, born + CREATE_TIME_TOLERANCE_S / 2)
        # the same pid with another start time is another process (a reused pid)
        assert live_process(p.pid, born - 10 * CREATE_TIME_TOLERANCE_S) is None
        # a process born after the file naming it was written is a reused pid
        assert live_process(p.pid, not_after=born - 10) is None
        assert live_process(p.pid, not_after=born) is not None
    finally:
        p.kill()
    # a zombie (killed, not yet reaped) is not alive; a reaped one is gone
    deadline = time.time() + 10
    while alive(p.pid) and time.time() < deadline:
        time.sleep(0.05)
    assert not alive(p.pid)
    p.wait()
    assert live_process(p.pid) is None and create_time(p.pid) is None


def test_bad_pids_are_not_processes():
    for pid in (None, 0, -1, True, "123", 1.5):
        assert live_process(pid) is None


def test_lock_holder_sees_the_pidlock_holder_and_not_a_stale_file(tmp_path):
    path = tmp_path / "logs" / "daemon.pid"
    assert lock_holder(path) is None  # no file
    lock = PidLock(path)
    lock.acquire()
    try:
        held = lock_holder(path)
        assert held is not None and live_process(held["pid"], held["start_time"]) is not None
    finally:
        lock.release()
    path.write_text('{"pid": 1, "start_time": 0}\n')  # a stale file: nobody holds its lock
    assert lock_holder(path) is None
