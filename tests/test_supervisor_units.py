"""Supervisor building blocks without a supervisor: restart policy, watchdog, states, exit
classification, orphan identity, the flock pid file (with real processes and kill -9), the GPU probe."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from go2train.run.identity import create_time
from go2train.run.identity import lock_holder as probe
from go2train.run.layout import STARTUP_PHASES
from supervisor import procs, states, watchdog
from supervisor.pidlock import AlreadyRunning, PidLock
from supervisor.policy import RestartPolicy

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------------- policy
def test_backoff_doubles_up_to_the_cap_and_resets_after_a_chunk():
    p = RestartPolicy(2.0, 30.0, crash_loop_max=100, crash_loop_window_s=600)
    delays = [p.failure(float(t)).delay_s for t in range(6)]
    assert delays == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert p.consecutive == 6
    p.success()
    assert p.consecutive == 0
    assert p.failure(10.0).delay_s == 2.0


def test_crash_loop_needs_more_than_max_failures_inside_the_window():
    p = RestartPolicy(0.0, 0.0, crash_loop_max=3, crash_loop_window_s=10.0)
    assert [p.failure(t).fatal_reason for t in (0.0, 1.0, 2.0)] == [None, None, None]
    reason = p.failure(3.0).fatal_reason
    assert reason is not None
    assert "4 failures within 10 s" in reason and "crash_loop_max = 3" in reason

    spread = RestartPolicy(0.0, 0.0, crash_loop_max=3, crash_loop_window_s=10.0)
    # 20 failures, but never more than 3 inside any 10 s window: no crash loop.
    assert all(spread.failure(t * 4.0).fatal_reason is None for t in range(20))


def test_a_completed_chunk_forgets_earlier_failures():
    p = RestartPolicy(0.0, 0.0, crash_loop_max=2, crash_loop_window_s=100.0)
    p.failure(0.0)
    p.failure(1.0)
    p.success()
    assert p.failure(2.0).fatal_reason is None
    assert p.failure(3.0).fatal_reason is None
    assert p.failure(4.0).fatal_reason is not None


# ---------------------------------------------------------------------- watchdog (pure)
LIMITS = watchdog.Limits(startup_s=100.0, hang_s=10.0)


def hb(phase, timesteps=0, pid=7, t=1000.0):
    return {"pid": pid, "phase": phase, "timesteps": timesteps, "time": t}


def test_watchdog_gives_the_startup_timeout_until_a_heartbeat_leaves_the_startup_phases():
    w = watchdog.start(0.0)
    v = watchdog.observe(w, None, 99.0, LIMITS)  # no heartbeat yet: start-up timeout
    assert (v.kind, v.limit_s, v.silent_s) == (watchdog.OK, 100.0, 99.0)
    v = watchdog.observe(w, None, 100.5, LIMITS)
    assert v.kind == watchdog.STARTUP_TIMEOUT and not v.ok and v.silent_s == 100.5
    for phase in STARTUP_PHASES:  # a heartbeat in a start-up phase: still the start-up timeout
        v = watchdog.observe(w, hb(phase), 50.0, LIMITS)
        assert v.ok and v.watch.since == 50.0 and v.watch.seen and v.watch.starting
        v = watchdog.observe(v.watch, hb(phase), 150.5, LIMITS)  # same (phase, timesteps): silent
        assert v.kind == watchdog.STARTUP_TIMEOUT and v.silent_s == 100.5
        assert not watchdog.past_startup(phase)
    assert watchdog.past_startup("training") and not watchdog.past_startup(None)


def test_watchdog_hang_is_no_progress_for_hang_timeout_while_training():
    v = watchdog.observe(watchdog.start(0.0), hb("training", 100), 1.0, LIMITS)
    assert v.ok and not v.watch.starting and v.limit_s == 10.0
    v = watchdog.observe(v.watch, hb("training", 200), 5.0, LIMITS)  # progress: the clock restarts
    assert v.ok and v.watch.since == 5.0
    v = watchdog.observe(v.watch, hb("training", 200), 15.0, LIMITS)  # a live heartbeat, no progress
    assert v.ok and v.silent_s == 10.0
    v2 = watchdog.observe(v.watch, None, 15.01, LIMITS)  # no heartbeat this poll: the last phase counts
    assert v2.kind == watchdog.HANG and round(v2.silent_s, 2) == 10.01
    v3 = watchdog.observe(v.watch, hb("saving", 200), 15.01, LIMITS)  # a new phase is progress
    assert v3.ok and v3.watch.since == 15.01
    # pure: the watch passed in is unchanged
    assert v.watch.since == 5.0 and v.watch.key == ("training", 200)


def test_watchdog_own_heartbeat_is_this_pids_and_not_older_than_its_spawn():
    assert watchdog.own_heartbeat(hb("training", pid=7, t=1000.0), 7, 1001.0) is not None
    assert watchdog.own_heartbeat(hb("training", pid=7, t=1000.0), 8, 1001.0) is None
    assert watchdog.own_heartbeat(hb("training", pid=7, t=1000.0), 7, 1003.0) is None  # a reused pid's
    assert watchdog.own_heartbeat(None, 7, 0.0) is None and watchdog.own_heartbeat([1], 7, 0.0) is None


# ---------------------------------------------------------------------- states
def test_states_are_the_state_json_strings_and_the_table_covers_them():
    S = states.State
    assert [str(s) for s in states.STATES] == [
        "STARTING", "RUNNING", "BACKOFF", "RENDERING", "STOPPING", "STOPPED", "FATAL", "DONE"]
    assert json.dumps({"state": S.DONE}) == '{"state": "DONE"}' and f"{S.FATAL}" == "FATAL"
    assert S.RUNNING == "RUNNING" and repr({"s": S.RUNNING}) == "{'s': 'RUNNING'}"
    assert set(states.TRANSITIONS) == set(states.STATES) | {None}
    assert states.TERMINAL == {S.STOPPED, S.FATAL, S.DONE}
    for s in states.TERMINAL:
        assert not states.TRANSITIONS[s]
    for s in states.ACTIVE | {None}:  # a supervisor error ends any live state
        assert states.allowed(s, S.FATAL)
    for s in states.ACTIVE - {S.STOPPING}:  # a stop request can come in any live state
        assert states.allowed(s, S.STOPPING)
    # the paths of a run
    for a, b in [(None, "STARTING"), ("STARTING", "RUNNING"), ("RUNNING", "STARTING"), ("RUNNING", "BACKOFF"),
                 ("BACKOFF", "STARTING"), ("STARTING", "BACKOFF"), ("RUNNING", "RENDERING"),
                 ("RENDERING", "DONE"), ("RUNNING", "DONE"), ("STOPPING", "STOPPED"), ("BACKOFF", "BACKOFF")]:
        assert states.allowed(a, b), (a, b)
    for a, b in [(None, "RUNNING"), ("BACKOFF", "RUNNING"), ("BACKOFF", "DONE"), ("STOPPED", "STARTING"),
                 ("DONE", "STARTING"), ("FATAL", "STOPPED"), ("STOPPING", "STARTING"), ("RENDERING", "STARTING")]:
        assert not states.allowed(a, b), (a, b)


# ---------------------------------------------------------------------- orphans
def test_find_orphan_matches_the_childs_create_time_run_dir_and_group(tmp_path):
    kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=str(tmp_path),
                           start_new_session=True)
    member = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=str(tmp_path))
    try:
        born = create_time(kid.pid)
        assert born == pytest.approx(psutil.Process(kid.pid).create_time())
        found = procs.find_orphan(kid.pid, born, tmp_path)
        assert found is not None and found.pid == kid.pid
        assert procs.find_orphan(kid.pid, born + 2.0, tmp_path) is None  # another process (reused pid)
        assert procs.find_orphan(kid.pid, None, tmp_path) is None  # no create time: not provably ours
        assert procs.find_orphan(kid.pid, born, tmp_path / "other") is None  # another run directory
        assert procs.find_orphan(member.pid, create_time(member.pid), tmp_path) is None  # not a group leader
    finally:
        for p in (kid, member):
            p.kill()
            p.wait()
    assert procs.find_orphan(kid.pid, born, tmp_path) is None  # gone


# ---------------------------------------------------------------------- exit classification
@pytest.mark.parametrize(
    "code, hung, stopping, expected",
    [
        (0, False, False, ("chunk_done", None)),
        (3, False, False, ("run_complete", None)),
        (2, False, False, ("config_error", None)),
        (4, False, False, ("stopped", None)),
        (4, False, True, ("stopped", None)),
        (-9, False, True, ("stopped", "SIGKILL")),
        (1, False, False, ("failure", None)),
        (17, False, False, ("failure", None)),
        (-11, False, False, ("crash", "SIGSEGV")),
        (-6, False, False, ("crash", "SIGABRT")),
        (-7, False, False, ("crash", "SIGBUS")),
        (-9, False, False, ("crash", "SIGKILL")),
        (139, False, False, ("crash", "SIGSEGV")),
        (134, False, False, ("crash", "SIGABRT")),
        (-9, True, False, ("hang", "SIGKILL")),
    ],
)
def test_classify(code, hung, stopping, expected):
    assert procs.classify(code, hung=hung, stopping=stopping) == expected


# ---------------------------------------------------------------------- pid lock
HOLDER = r"""
import sys, time
from supervisor.pidlock import PidLock
lock = PidLock(sys.argv[1]); lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""


def _holder(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_is_exclusive_and_names_the_holder(tmp_path):
    path = tmp_path / "logs" / "daemon.pid"
    holder = _holder(path)
    try:
        info = json.loads(path.read_text())
        assert info["pid"] == holder.pid
        assert info["start_time"] == pytest.approx(psutil.Process(holder.pid).create_time(), abs=0.01)
        assert probe(path) == {"pid": holder.pid, "start_time": info["start_time"]}
        with pytest.raises(AlreadyRunning) as err:
            PidLock(path).acquire()
        assert err.value.pid == holder.pid
        assert f"pid {holder.pid}" in str(err.value)
    finally:
        holder.kill()
        holder.wait()


def test_kill_9_leaves_a_stale_file_that_never_blocks(tmp_path):
    path = tmp_path / "daemon.pid"
    holder = _holder(path)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert json.loads(path.read_text())["pid"] == holder.pid  # the file survives kill -9 ...
    assert probe(path) is None  # ... but its lock is free: stale
    lock = PidLock(path)
    lock.acquire()
    assert json.loads(path.read_text())["pid"] == os.getpid()
    assert probe(path)["pid"] == os.getpid()
    lock.release()
    assert not path.exists() and probe(path) is None


def test_file_naming_an_unrelated_live_process_is_stale(tmp_path):
    path = tmp_path / "daemon.pid"
    parent = psutil.Process(os.getppid())
    path.write_text(json.dumps({"pid": parent.pid, "start_time": parent.create_time()}))
    assert probe(path) is None
    with PidLock(path) as lock:
        assert lock.held
        assert json.loads(path.read_text())["pid"] == os.getpid()
    path.write_text("garbage")
    with PidLock(path):
        assert probe(path)["pid"] == os.getpid()


# ---------------------------------------------------------------------- daemon stop: identity and escalation
STUBBORN = r"""
import signal, sys, time
from supervisor.pidlock import PidLock
signal.signal(signal.SIGTERM, signal.SIG_IGN)
lock = PidLock(sys.argv[1]); lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""


def _stubborn(path):
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN, str(path)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_daemon_stop_refuses_a_pid_whose_create_time_differs(tmp_path, capsys):
    from supervisor import control

    pidfile = tmp_path / "logs" / "daemon.pid"
    holder = _stubborn(pidfile)
    try:
        info = json.loads(pidfile.read_text())
        with open(pidfile, "r+") as f:  # same inode: the lock stays held
            f.write(json.dumps({"pid": holder.pid, "start_time": info["start_time"] - 100.0}) + " " * 8)
        assert control.stop(tmp_path, 0.5) == 1
        err = capsys.readouterr().err
        assert "is not the daemon (different start time); not stopping it" in err
        assert holder.poll() is None  # untouched
    finally:
        holder.kill()
        holder.wait()


def test_daemon_stop_kills_a_supervisor_that_ignores_sigterm_and_marks_the_run_stopped(tmp_path, capsys):
    from supervisor import control

    holder = _stubborn(tmp_path / "logs" / "daemon.pid")
    try:
        (tmp_path / "logs" / "state.json").write_text(json.dumps(
            {"state": "RUNNING", "supervisor_pid": holder.pid, "worker_pid": None, "worker_started": None}))
        t0 = time.monotonic()
        assert control.stop(tmp_path, 0.3) == 0
        assert time.monotonic() - t0 < 5.0
        holder.wait(timeout=5)  # already reaped by stop()'s psutil wait: its code is lost here
        assert not psutil.pid_exists(holder.pid)
    finally:
        holder.kill()
        holder.wait()
    assert f"go2train daemon pid {holder.pid} did not stop within 0.3 s" in capsys.readouterr().out
    st = json.loads((tmp_path / "logs" / "state.json").read_text())
    assert st["state"] == "STOPPED"
    evs = [json.loads(line) for line in (tmp_path / "logs" / "events.jsonl").read_text().splitlines()]
    assert [(e["event"], e.get("state"), e.get("previous"), e.get("kind")) for e in evs] == [
        ("state", "STOPPED", "RUNNING", None), ("warning", None, None, "forced_stop")]


# ---------------------------------------------------------------------- GPU probe
def test_gpu_probe_runs_in_a_child_and_answers_quickly():
    t0 = time.monotonic()
    val = procs.probe_gpu_mb(procs.default_gpu_probe_cmd())
    assert time.monotonic() - t0 < 10
    assert val is None or (isinstance(val, float) and val >= 0)
    # the probe never loads NVML into the caller (checked in a fresh interpreter: this test
    # process may have imported it through torch or genesis in other tests)
    code = ("import sys; from supervisor import procs; procs.probe_gpu_mb(procs.default_gpu_probe_cmd()); "
            "print('pynvml' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr
    assert procs.probe_gpu_mb(["/bin/echo", "1234.5"]) == 1234.5
    assert procs.probe_gpu_mb(["/bin/echo", "null"]) is None
    assert procs.probe_gpu_mb(["/nonexistent/probe"]) is None
    assert procs.probe_gpu_mb([]) is None


# ---------------------------------------------------------------------- status line parts, temp files
def test_status_line_phase_and_render_text():
    from supervisor.control import phase_elapsed, render_text

    assert phase_elapsed({"phase_started": 100.0}, now=175.0) == 75.0
    assert phase_elapsed({"phase_s": 10.0, "time": 100.0}, now=105.0) == 15.0  # older heartbeat format
    assert phase_elapsed({}, now=1.0) == 0.0
    st = {"render_pid": 42, "render_chunk": 250, "render_started": 40.0}
    assert render_text(st, {"pid": 42, "phase": "rendering", "frames_done": 120, "frames_total": 400},
                       now=100.0) == "render chunk 250 pid 42 120/400 frames 60 s"
    assert render_text(st, {"pid": 7, "frames_done": 400, "frames_total": 400}, now=100.0) == \
        "render chunk 250 pid 42 60 s"  # another render's progress file is not this one's


def test_remove_render_temp_files_only_the_killed_renders(tmp_path):
    for name in (".chunk_000050.123.tmp.mp4", ".chunk_000100.999.tmp.mp4", "chunk_000050.mp4"):
        (tmp_path / name).write_bytes(b"x")
    assert procs.remove_render_temp_files(tmp_path, 123) == [".chunk_000050.123.tmp.mp4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".chunk_000100.999.tmp.mp4", "chunk_000050.mp4"]
    assert procs.remove_render_temp_files(tmp_path / "missing", 123) == []


def test_spawn_nice_lowers_the_childs_priority(tmp_path):
    proc, _ = procs.spawn([sys.executable, "-c", "import os; print(os.nice(0))"], tmp_path / "log",
                          tmp_path, "", nice=10)
    proc.wait(timeout=30)
    assert int((tmp_path / "log").read_text().split()[-1]) == min(19, os.nice(0) + 10)


def test_spawn_nice_also_lowers_the_childs_session_autogroup(tmp_path):
    """Autogroups share CPU between sessions before niceness counts: the child's own session
    (start_new_session) gets the same lower priority."""
    if not os.path.exists("/proc/self/autogroup"):
        pytest.skip("no scheduler autogroups on this kernel")
    proc, _ = procs.spawn([sys.executable, "-c", "print(open('/proc/self/autogroup').read())"],
                          tmp_path / "log", tmp_path, "", nice=10)
    proc.wait(timeout=30)
    line = (tmp_path / "log").read_text().strip().splitlines()[-1]  # "/autogroup-123 nice 10"
    assert line.startswith("/autogroup-") and line.endswith(" nice 10"), line
    # Its own session: not the test's autogroup. The kernel prints nothing for a task whose group
    # is a cgroup's rather than an autogroup (CI runs the suite so), and then any autogroup differs.
    ours = open("/proc/self/autogroup").read().split()
    assert not ours or line.split()[0] != ours[0]
