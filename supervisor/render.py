"""Milestone videos rendered *beside* training: the supervisor's second child.

:class:`Renders` owns the render child and the milestone waiting for it: at most one render at a
time (a milestone that comes meanwhile waits; only the newest waiting one is kept, one it displaces
gets a ``render_skipped`` warning), at a lower CPU priority (``RENDER_NICE``), killed after
``[video] timeout_s``. A failed render is one ``render`` event and nothing else: it never counts as
a worker failure. state.json's ``render_pid``/``render_started``/``render_chunk``/
``render_pending`` follow it (docs/SUPERVISOR.md, "Milestone videos").

Single-threaded like the supervisor: its poll loop calls :meth:`Renders.poll` on every wake-up.
The ``host`` is the :class:`supervisor.core.Supervisor`; a render uses its run directory, config,
state fields, event log, waiting and reaping.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from go2train.run import identity
from supervisor import procs

if TYPE_CHECKING:
    from supervisor.core import Supervisor

RENDER_LOG = "render.log"
RENDER_NICE = 10  # renders run this much nicer than the worker
RENDER_STOP_S = 10.0  # at most this long for a render to end on SIGTERM before SIGKILL
RENDER_PROGRESS_ENV = "GO2TRAIN_RENDER_PROGRESS"  # where `go2train video` writes frames done/total


@dataclass
class RenderJob:
    proc: Any
    chunk: int
    t0: float
    spawn_wall: float
    log_path: Path
    offset: int
    stop_reason: str | None = None  # set when the supervisor stops it (daemon stop, FATAL)
    stop_sent: float = 0.0  # monotonic time of the SIGTERM


class Renders:
    def __init__(self, host: "Supervisor", render_cmd: Callable[[int], list[str]] | None):
        self.host = host
        self.render_cmd = render_cmd
        self.job: RenderJob | None = None  # the milestone render running beside the worker
        self.pending: int | None = None  # the milestone waiting for it to end
        self._in_poll = False

    @property
    def running(self) -> bool:
        return self.job is not None

    def request(self, chunk: int) -> None:
        """Render ``chunk``'s video beside training: now if no render runs, else after it (only
        the newest waiting milestone is kept; one it displaces gets a ``render_skipped`` warning)."""
        if self.render_cmd is None:
            return
        if self.job is None:
            self._start(chunk)
            return
        if self.pending is not None and self.pending != chunk:
            self._skip_pending(f"milestone {chunk} came while the video of chunk {self.job.chunk} "
                               "was still rendering")
        self.pending = chunk
        self.host._update(render_pending=chunk)

    def start_pending(self) -> None:
        """Start the waiting milestone's render now."""
        chunk, self.pending = self.pending, None
        self.host.info["render_pending"] = None
        if chunk is not None:
            self._start(chunk)

    def _skip_pending(self, why: str) -> None:
        chunk, self.pending = self.pending, None
        self.host.info["render_pending"] = None
        if chunk is not None:
            self.host._emit("warning", kind="render_skipped",
                            message=f"no milestone video for chunk {chunk}: {why}; render it with: "
                                    f"go2train video --chunk {chunk} --run-dir {self.host.rd.root}")

    def _start(self, chunk: int) -> None:
        host, rd = self.host, self.host.rd
        cmd = self.render_cmd(chunk)
        log_path = rd.logs / RENDER_LOG
        header = f"\n===== go2train supervisor {time.strftime('%Y-%m-%d %H:%M:%S')}: render chunk {chunk}: {' '.join(cmd)}\n"
        env = host._child_env()
        env[RENDER_PROGRESS_ENV] = str(rd.render_progress)
        t0 = time.monotonic()
        spawn_wall = time.time()
        try:
            proc, offset = procs.spawn(cmd, log_path, rd.root, header, env, nice=RENDER_NICE)
        except OSError as exc:
            host._emit("render", chunk=chunk, ok=False, seconds=0.0, error=f"cannot start renderer: {exc}")
            return
        self.job = RenderJob(proc, chunk, t0, spawn_wall, log_path, offset)
        started = identity.create_time(proc.pid) or spawn_wall  # its create time (orphan detection)
        host._update(render_pid=proc.pid, render_started=started, render_chunk=chunk)
        host._emit("render_start", pid=proc.pid, chunk=chunk)

    def poll(self) -> None:
        """Reap the render if it ended, kill it past ``[video] timeout_s``, start a waiting one."""
        job = self.job
        if job is None or self._in_poll:
            return
        self._in_poll = True
        try:
            result = procs.reap(job.proc)
            error = None
            if result is None:
                timeout = self.host.cfg.video.timeout_s
                if time.monotonic() - job.t0 <= timeout:
                    return
                procs.killpg(job.proc.pid, signal.SIGKILL)
                result = self.host._reap_after_kill(job.proc)
                error = f"timeout after {timeout:g} s (killed)"
            self._end(result[0], error)
            if self.pending is not None and not self.host._stop_signal:
                self.start_pending()
        finally:
            self._in_poll = False

    def _end(self, code: int, error: str | None) -> None:
        job, self.job = self.job, None
        assert job is not None
        procs.killpg(job.proc.pid, signal.SIGKILL)  # leftovers of its group (ffmpeg)
        if error is None and job.stop_reason:
            error = job.stop_reason
        if error is None and code != 0:
            sig = procs.exit_signal(code)
            error = f"killed by {sig}" if sig else f"exit code {code}"
            detail = procs.last_line(procs.tail(job.log_path, job.offset))
            if detail:
                error += f": {detail}"
        if error is not None:  # a killed render must not leave a partial video behind
            procs.remove_render_temp_files(self.host.rd.videos, job.proc.pid)
        self.host._update(render_pid=None, render_started=None, render_chunk=None)
        self.host._emit("render", chunk=job.chunk, ok=error is None,
                        seconds=round(time.monotonic() - job.t0, 3), error=error, pid=job.proc.pid)

    def signal_stop(self, reason: str) -> None:
        """SIGTERM (+SIGCONT) to the render's group; :meth:`stop` waits for it."""
        if self.pending is not None:
            self._skip_pending(reason)
        job = self.job
        if job is None or job.stop_reason:
            return
        job.stop_reason = reason
        job.stop_sent = time.monotonic()
        procs.killpg(job.proc.pid, signal.SIGTERM)
        procs.killpg(job.proc.pid, signal.SIGCONT)

    def stop(self, reason: str) -> None:
        """Stop the render (SIGTERM, then SIGKILL after RENDER_STOP_S) and drop a waiting one."""
        self.signal_stop(reason)
        job = self.job
        if job is None:
            return
        self._in_poll = True  # this method reaps it
        try:
            # counted from the SIGTERM, sent together with the worker's: a stop takes at most
            # max(stop_timeout_s, RENDER_STOP_S), within `daemon stop`'s default wait
            deadline = job.stop_sent + min(self.host.sc.stop_timeout_s, RENDER_STOP_S)
            result = procs.reap(job.proc)
            while result is None and time.monotonic() < deadline:
                self.host._wait(0.05, interruptible=False)
                result = procs.reap(job.proc)
            if result is None:
                procs.killpg(job.proc.pid, signal.SIGKILL)
                result = self.host._reap_after_kill(job.proc)
            self._end(result[0], None)
        finally:
            self._in_poll = False

    def kill(self) -> None:
        """Last resort (supervisor exiting): SIGKILL the render's group, remove its temp files."""
        job, self.job = self.job, None
        if job is None or job.proc.returncode is not None:
            return
        procs.killpg(job.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and procs.reap(job.proc) is None:
            time.sleep(0.02)
        procs.remove_render_temp_files(self.host.rd.videos, job.proc.pid)
