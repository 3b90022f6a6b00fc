"""`go2train daemon start|run|stop|status`: the commands behind the CLI.

Each function prints its one line (errors on stderr, prefixed ``go2train:``) and returns the
process exit code. The CLI validates the run directory and the config before calling these, so
nothing is written for bad input.

Testing hooks (environment variables, JSON lists; ``{run_dir}`` is replaced by the absolute run
directory, and ``{chunk}`` by the milestone in the render command):

* ``GO2TRAIN_WORKER_CMD``  replaces ``python -m go2train train-chunk --run-dir RUN_DIR``; the worker's
  ``[--config P] [--set K=V ...]`` are appended to it, as to the real command
* ``GO2TRAIN_RENDER_CMD``  replaces ``python -m go2train video --chunk N --run-dir RUN_DIR [--config P]``
* ``GO2TRAIN_GPU_PROBE_CMD`` replaces the pynvml probe (stdout: MiB in use, or ``null``);
  ``[]`` disables GPU probing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable

import psutil

from go2train.config import Config
from go2train.run.files import append_jsonl, atomic_write_json, read_json
from go2train.run.identity import alive, live_process, lock_holder
from go2train.run.layout import RunDir
from supervisor import procs
from supervisor.pidlock import AlreadyRunning, PidLock
from supervisor.states import State

START_WAIT_S = 10.0


class CommandError(ValueError):
    """A malformed command override (one line)."""


def _err(msg: str) -> None:
    if not msg.startswith("go2train:"):
        msg = f"go2train: {msg}"
    print(msg, file=sys.stderr, flush=True)


def _env_cmd(var: str, subst: dict[str, str]) -> list[str] | None:
    raw = os.environ.get(var)
    if raw is None or raw.strip() == "":
        return None
    try:
        cmd = json.loads(raw)
    except ValueError:
        raise CommandError(f"{var} must be a JSON list of strings (got {raw!r})") from None
    if not isinstance(cmd, list) or not all(isinstance(a, str) for a in cmd):
        raise CommandError(f"{var} must be a JSON list of strings (got {raw!r})")
    out = []
    for arg in cmd:
        for k, v in subst.items():
            arg = arg.replace("{" + k + "}", v)
        out.append(arg)
    return out


def _config_args(config: Path | None, overrides: Sequence[str] = ()) -> list[str]:
    args = ["--config", str(Path(config).absolute())] if config is not None else []
    for item in overrides:  # `--set`: every worker reads the file and these (docs/CONTRACTS.md)
        args += ["--set", item]
    return args


def worker_command(run_dir: Path, config: Path | None = None, overrides: Sequence[str] = ()) -> list[str]:
    cmd = _env_cmd("GO2TRAIN_WORKER_CMD", {"run_dir": str(run_dir)})
    if cmd is not None:
        if not cmd:
            raise CommandError("GO2TRAIN_WORKER_CMD must not be empty")
        return cmd + _config_args(config, overrides)
    return [sys.executable, "-m", "go2train", "train-chunk", "--run-dir", str(run_dir)] + _config_args(config, overrides)


def render_command(run_dir: Path, config: Path | None = None) -> Callable[[int], list[str]]:
    # Validate now (bad JSON is a start-up error, not a failure at the first milestone).
    _env_cmd("GO2TRAIN_RENDER_CMD", {"run_dir": str(run_dir)})

    def make(chunk: int) -> list[str]:
        cmd = _env_cmd("GO2TRAIN_RENDER_CMD", {"run_dir": str(run_dir), "chunk": str(chunk)})
        if cmd:
            return cmd
        return [sys.executable, "-m", "go2train", "video", "--chunk", str(chunk),
                "--run-dir", str(run_dir)] + _config_args(config)

    return make


def gpu_probe_command(run_dir: Path) -> list[str]:
    cmd = _env_cmd("GO2TRAIN_GPU_PROBE_CMD", {"run_dir": str(run_dir)})
    return procs.default_gpu_probe_cmd() if cmd is None else cmd


# ---------------------------------------------------------------------- run (foreground)
def run_foreground(run_dir: Path, config: Path | None, cfg: Config, overrides: Sequence[str] = ()) -> int:
    root = Path(run_dir).absolute()
    try:
        worker = worker_command(root, config, overrides)
        render = render_command(root, config)
        gpu = gpu_probe_command(root)
    except CommandError as exc:
        _err(str(exc))
        return 2
    rd = RunDir.at(root)
    rd.make()
    lock = PidLock(rd.pidfile)
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        _err(f"a daemon is already running for {root} (pid {exc.pid})")
        return 1
    from supervisor.core import Supervisor

    try:
        return Supervisor(root, cfg, worker, render, gpu, out=sys.stdout).run()
    finally:
        lock.release()


# ---------------------------------------------------------------------- start (detached)
def start(run_dir: Path, config: Path | None, overrides: Sequence[str] = ()) -> int:
    root = Path(run_dir).absolute()
    try:  # fail on a malformed override here, before anything is written
        worker_command(root, config)
        render_command(root, config)
        gpu_probe_command(root)
    except CommandError as exc:
        _err(str(exc))
        return 2
    rd = RunDir.at(root)
    holder = lock_holder(rd.pidfile)
    if holder is not None:
        _err(f"a daemon is already running for {root} (pid {holder.get('pid')})")
        return 1
    rd.make()
    cmd = [sys.executable, "-m", "go2train", "daemon", "run", "--run-dir", str(root)] + _config_args(config, overrides)
    with open(rd.daemon_log, "ab") as log:
        log.write(f"\n===== go2train daemon start {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        log.flush()
        offset = log.tell()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(root),
            start_new_session=True, close_fds=True,
        )
    deadline = time.monotonic() + START_WAIT_S
    while time.monotonic() < deadline:
        held = lock_holder(rd.pidfile)
        if held is not None and held.get("pid") == proc.pid:
            print(f"go2train daemon started: pid {proc.pid}, run dir {root}", flush=True)
            return 0
        rc = proc.poll()
        if rc is not None:
            line = procs.last_line(procs.tail(rd.daemon_log, offset))
            if rc == 0:
                st = read_json(rd.state) or {}
                print(f"go2train daemon pid {proc.pid} ran and already exited: state "
                      f"{st.get('state')}, run dir {root}", flush=True)
                return 0
            _err(line or f"daemon exited at once with code {rc}; see {rd.daemon_log}")
            return rc
        time.sleep(0.05)
    _err(f"daemon pid {proc.pid} did not take the lock within {START_WAIT_S:g} s; see {rd.daemon_log}")
    return 1


# ---------------------------------------------------------------------- stop
def _group_kill(pid: int) -> None:
    """SIGKILL ``pid``'s process group if it leads one, else just ``pid`` (never a shell's group)."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _mark_stopped(rd: RunDir, pid: int, timeout: float) -> None:
    """After a forced kill the supervisor could not write its last state: do it under its lock."""
    deadline = time.monotonic() + 5.0
    while lock_holder(rd.pidfile) is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    lock = PidLock(rd.pidfile)
    try:
        lock.acquire()
    except AlreadyRunning:
        return  # a new daemon already owns the run directory
    try:
        st = read_json(rd.state)
        if isinstance(st, dict) and st.get("supervisor_pid") == pid:
            previous = st.get("state")
            st.update(state=State.STOPPED, worker_pid=None, worker_started=None, render_pid=None,
                      render_started=None, next_retry=None, updated=time.time())
            atomic_write_json(rd.state, st)
            append_jsonl(rd.events, {"time": time.time(), "event": "state", "state": State.STOPPED,
                                     "previous": previous})
            append_jsonl(rd.events, {"time": time.time(), "event": "warning", "kind": "forced_stop",
                                     "message": f"supervisor pid {pid} did not stop within {timeout:g} s;"
                                                " killed with its worker by `daemon stop`"})
    finally:
        lock.release()


def stop(run_dir: Path, timeout: float) -> int:
    root = Path(run_dir).absolute()
    rd = RunDir.at(root)
    holder = lock_holder(rd.pidfile)
    if holder is None:
        _err(f"no daemon is running for {root}")
        return 1
    pid = holder.get("pid")
    if not isinstance(pid, int):
        _err(f"{rd.pidfile} is locked but names no pid; not stopping anything")
        return 1
    sup = live_process(pid)
    if sup is None:
        _err(f"daemon pid {pid} (from {rd.pidfile}) is gone")
        return 1
    if live_process(pid, holder.get("start_time")) is None:
        _err(f"pid {pid} in {rd.pidfile} is not the daemon (different start time); not stopping it")
        return 1
    born = sup.create_time()  # read (and cached by psutil) in live_process
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid, born):
            if lock_holder(rd.pidfile) is None:
                print(f"go2train daemon stopped: pid {pid}, run dir {root}", flush=True)
                return 0
        time.sleep(0.05)
    # Escalate: freeze the supervisor (no new spawns), kill it and its children's groups.
    try:
        sup.suspend()
        kids = sup.children(recursive=True)
    except psutil.Error:
        kids = []
    _group_kill(pid)
    for kid in kids:
        try:
            if kid.is_running():
                _group_kill(kid.pid)
        except psutil.Error:
            pass
    st = read_json(rd.state)
    if isinstance(st, dict):
        for pid_key, t_key in (("worker_pid", "worker_started"), ("render_pid", "render_started")):
            orphan = procs.find_orphan(st.get(pid_key), st.get(t_key), root)
            if orphan is not None:
                _group_kill(orphan.pid)
    try:
        sup.wait(5.0)
    except psutil.Error:
        pass
    if isinstance(st, dict) and isinstance(st.get("render_pid"), int):  # no partial video left
        procs.remove_render_temp_files(rd.videos, st["render_pid"])
    _mark_stopped(rd, pid, timeout)
    print(f"go2train daemon pid {pid} did not stop within {timeout:g} s: killed it and its worker;"
          f" run dir {root}", flush=True)
    return 0


# ---------------------------------------------------------------------- status
def phase_elapsed(hb: dict, now: float | None = None) -> float:
    """Seconds the worker has been in its heartbeat's phase (``phase_started``; else ``phase_s``
    aged by the heartbeat's age)."""
    now = time.time() if now is None else now
    started = hb.get("phase_started")
    if isinstance(started, (int, float)) and not isinstance(started, bool):
        return max(0.0, now - started)
    t, s = hb.get("time"), hb.get("phase_s")
    if isinstance(t, (int, float)) and isinstance(s, (int, float)):
        return max(0.0, s + now - t)
    return 0.0


def render_text(st: dict, prog: object, now: float | None = None) -> str:
    """``render chunk C pid P F/T frames Ns`` for the render named in state.json; the frames come
    from logs/render.json when it is this render's (same pid)."""
    now = time.time() if now is None else now
    pid = st.get("render_pid")
    text = f"render chunk {st.get('render_chunk', '?')} pid {pid}"
    if isinstance(prog, dict) and prog.get("pid") == pid:
        done, total = prog.get("frames_done"), prog.get("frames_total")
        if prog.get("phase") == "starting":
            text += f" starting (0/{total} frames)"
        else:
            text += f" {done}/{total} frames"
    started = st.get("render_started")
    if isinstance(started, (int, float)):
        text += f" {max(0.0, now - started):.0f} s"
    return text


def status(run_dir: Path) -> int:
    """One line; exit 0 running, 3 not running (LSB), 1 FATAL."""
    root = Path(run_dir).absolute()
    rd = RunDir.at(root)
    holder = lock_holder(rd.pidfile)
    st = read_json(rd.state)
    st = st if isinstance(st, dict) else {}
    state = st.get("state")
    r = st.get("restarts") or {}
    restarts = f"restarts {r.get('total', 0)} (consecutive {r.get('consecutive', 0)})"
    if state == State.FATAL:
        print(f"FATAL{' (exiting) pid ' + str(holder.get('pid')) if holder else ''}: "
              f"{st.get('fatal_reason')}; chunk {st.get('chunk')}, {restarts}", flush=True)
        return 1
    if holder is not None:
        line = f"{state or State.STARTING} pid {holder.get('pid')} chunk {st.get('chunk')} {restarts}"
        if st.get("worker_pid"):
            line += f" worker {st['worker_pid']}"
            hb = read_json(rd.heartbeat)
            if isinstance(hb, dict) and hb.get("pid") == st["worker_pid"] and hb.get("phase"):
                line += f" phase {hb['phase']} {phase_elapsed(hb):.0f} s"
        if st.get("render_pid"):
            line += " " + render_text(st, read_json(rd.render_progress))
        if state == State.BACKOFF and isinstance(st.get("next_retry"), (int, float)):
            line += f" next retry in {max(0.0, st['next_retry'] - time.time()):.1f} s"
        print(line, flush=True)
        return 0
    if state:
        print(f"not running (last state {state}, supervisor pid {st.get('supervisor_pid')}, "
              f"chunk {st.get('chunk')}, {restarts})", flush=True)
    else:
        print(f"not running (no daemon has run in {root})", flush=True)
    return 3
