"""Process plumbing for the supervisor: spawn in a new session, reap with wait4, kill groups,
classify exits, tail logs, and probe GPU memory in a short subprocess.

Nothing here imports torch, genesis or pynvml (the GPU probe runs pynvml in a child).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from go2train.run import exitcodes, identity

LOG_ROTATE_BYTES = 64 * 2**20

# Sum of used memory over all NVIDIA devices, in MiB; "null" when there is no driver/GPU.
GPU_PROBE = r"""
import json
try:
    import pynvml
    pynvml.nvmlInit()
    try:
        used = 0
        for i in range(pynvml.nvmlDeviceGetCount()):
            used += pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).used
        print(json.dumps(round(used / 2**20, 1)))
    finally:
        pynvml.nvmlShutdown()
except Exception:
    print("null")
"""


def default_gpu_probe_cmd() -> list[str]:
    return [sys.executable, "-c", GPU_PROBE]


def probe_gpu_mb(cmd: list[str], timeout_s: float = 15.0) -> float | None:
    """Run the probe command; its stdout's last line is a number of MiB or ``null``."""
    if not cmd:
        return None
    try:
        out = subprocess.run(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            timeout=timeout_s, close_fds=True, start_new_session=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.decode(errors="replace").strip().splitlines()
    if not lines:
        return None
    try:
        val = json.loads(lines[-1])
    except ValueError:
        return None
    return float(val) if isinstance(val, (int, float)) and not isinstance(val, bool) else None


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"SIG{num}"


def exit_signal(code: int | None) -> str | None:
    """Signal behind an exit: negative returncode, or the shell's 128+N convention (139 = SEGV)."""
    if code is None:
        return None
    if code < 0:
        return signal_name(-code)
    if 128 < code < 128 + 65:
        try:
            return signal.Signals(code - 128).name
        except ValueError:
            return None
    return None


def classify(code: int | None, hung: bool = False, stopping: bool = False) -> tuple[str, str | None]:
    """``(reason, signal name)`` for a worker exit, per docs/CONTRACTS.md."""
    sig = exit_signal(code)
    if hung:
        return "hang", sig or "SIGKILL"
    if code == exitcodes.CHUNK_DONE:
        return "chunk_done", None
    if code == exitcodes.RUN_COMPLETE:
        return "run_complete", None
    if stopping:
        return "stopped", sig
    if code == exitcodes.CONFIG_ERROR:
        return "config_error", None
    if code == exitcodes.STOPPED:
        return "stopped", None
    if sig is not None:
        return "crash", sig
    return "failure", None


def spawn(cmd: list[str], log_path: Path, cwd: Path, header: str, env: dict[str, str] | None = None,
          nice: int = 0):
    """Start ``cmd`` in a new session (its own process group), stdout+stderr appended to
    ``log_path``, ``nice`` added to its niceness (lower CPU priority; inherited by its children).
    Returns ``(Popen, offset)``: the log offset where this child's output starts."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if log_path.stat().st_size > LOG_ROTATE_BYTES:
            os.replace(log_path, log_path.with_name(log_path.name + ".1"))
    except OSError:
        pass
    with open(log_path, "ab") as log:
        log.write(header.encode(errors="replace"))
        log.flush()
        offset = log.tell()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=str(cwd),
            env=env, start_new_session=True, close_fds=True,
            preexec_fn=(lambda: _lower_priority(nice)) if nice else None,  # single-threaded caller
        )
    return proc, offset


def _lower_priority(nice: int) -> None:
    """In the child, after its setsid: add ``nice`` to its niceness and to its session's autogroup.

    With Linux's scheduler autogroups (on by default on most distributions), CPU time is shared
    between sessions first and niceness only counts within a session, so a niced child in a session
    of its own would still get as much CPU as the worker. Its autogroup's nice value (settable
    without privileges when raised) makes the lower priority hold between sessions too."""
    os.nice(nice)
    try:
        with open("/proc/self/autogroup", "w") as f:
            f.write(str(nice))
    except OSError:  # no autogroups (kernel option off, not Linux): plain niceness is what counts
        pass


def reap(proc: subprocess.Popen) -> tuple[int, float] | None:
    """Non-blocking ``wait4`` of this child: ``(returncode, peak RSS MiB)`` or None if running."""
    try:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
    except ChildProcessError:  # reaped elsewhere: should not happen; report a plain failure
        if proc.returncode is None:
            proc.returncode = exitcodes.FAILURE
        return proc.returncode, 0.0
    if pid == 0:
        return None
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # keep Popen consistent: it must not wait for it again
    return code, ru.ru_maxrss / 1024.0  # Linux: KiB


def killpg(pgid: int, sig: int) -> bool:
    """Signal a process group; False when it no longer exists."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def tail(path: Path, offset: int = 0, lines: int = 20, max_chars: int = 4000) -> str:
    """The last ``lines`` lines written to ``path`` since ``offset`` (bounded read)."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(offset, size - 64 * 1024)
            if start > size:  # rotated or truncated under us
                start = max(0, size - 64 * 1024)
            f.seek(start)
            data = f.read()
    except OSError:
        return ""
    text = data.decode(errors="replace").rstrip("\n")
    out = "\n".join(text.splitlines()[-lines:])
    return out[-max_chars:]


def last_line(text: str) -> str:
    for ln in reversed(text.splitlines()):
        if ln.strip():
            return ln.strip()
    return ""


@dataclass
class Orphan:
    pid: int
    proc: psutil.Process


def find_orphan(pid: Any, started: Any, run_dir: Path) -> Orphan | None:
    """A child left by a supervisor that died (``kill -9``): the process ``pid`` if it is still
    the one created at ``started`` (state.json's ``worker_started``/``render_started``: its create
    time, compared by :func:`go2train.run.identity.live_process`), works for ``run_dir`` (cwd or
    command line), and leads its own process group. Guards against pid reuse."""
    if isinstance(started, bool) or not isinstance(started, (int, float)):
        return None  # no create time: nothing proves it is ours
    p = identity.live_process(pid, started)
    if p is None:
        return None
    try:
        if os.getpgid(pid) != pid:
            return None
        try:
            cwd = p.cwd()
        except psutil.Error:
            cwd = ""
        if cwd != str(run_dir) and str(run_dir) not in " ".join(p.cmdline()):
            return None
    except (psutil.Error, OSError):
        return None
    return Orphan(pid, p)


def terminate_group(pgid: int, timeout_s: float, is_alive) -> bool:
    """SIGTERM (+SIGCONT) the group, wait up to ``timeout_s`` for ``is_alive()`` to turn False,
    then SIGKILL the group. Returns True when SIGKILL was needed."""
    killpg(pgid, signal.SIGTERM)
    killpg(pgid, signal.SIGCONT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_alive():
            killpg(pgid, signal.SIGKILL)  # stragglers of the group
            return False
        time.sleep(0.05)
    killpg(pgid, signal.SIGKILL)
    return True


def remove_render_temp_files(videos: Path, pid: int) -> list[str]:
    """Remove the hidden temp files a render ``pid`` killed before its rename left in ``videos``
    (``go2train video`` writes ``.NAME.<pid>.tmp.mp4``, docs/VIDEO.md). Returns their names."""
    removed = []
    try:
        names = os.listdir(videos)
    except OSError:
        return removed
    for name in names:
        if name.startswith(".") and f".{pid}.tmp" in name:
            try:
                os.unlink(videos / name)
                removed.append(name)
            except OSError:
                pass
    return removed


def own_peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Unlike getrusage's ru_maxrss, it is reset by exec, so a
    supervisor started from a large parent (a test runner with Genesis loaded) reports its own."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
