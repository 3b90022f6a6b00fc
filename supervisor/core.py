"""The supervisor loop: one worker process per chunk, restart policy, watchdog, milestone videos.

States (like supervisord) are the worker's: STARTING (worker spawned, still in a start-up phase),
RUNNING, BACKOFF (waiting before a restart), STOPPING, STOPPED, FATAL, DONE; RENDERING only while
the last milestone video finishes after the run completed (no worker left to run). Milestone videos
render in a second child *beside* the worker, watched in the same poll loop: at most one at a time
(a milestone that comes meanwhile waits; only the newest waiting one is kept), at a lower CPU
priority, killed after ``[video] timeout_s``; a failed render is one ``render`` event, nothing else.
``logs/state.json`` is rewritten on every change and ``logs/events.jsonl`` gets one line per
event, as in docs/CONTRACTS.md. Single-threaded: signal handlers only set flags, and a
``set_wakeup_fd`` pipe wakes the poll loop at once (SIGCHLD included, so exits are seen at once).

Must be run in the main thread. Imports neither torch nor genesis.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from go2train.config import Config
from go2train.run.files import append_jsonl, atomic_write_json, read_json
from go2train.run.layout import STARTUP_PHASES, RunDir
from supervisor import procs
from supervisor.policy import RestartPolicy

STATES = ("STARTING", "RUNNING", "BACKOFF", "RENDERING", "STOPPING", "STOPPED", "FATAL", "DONE")
GPU_LEAK_MB = 256.0
WORKER_STDERR_LOG = "worker.stderr.log"
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


@dataclass
class WorkerResult:
    pid: int
    code: int
    reason: str
    signal: str | None
    duration_s: float
    spawn_wall: float
    heartbeat: dict[str, Any] | None
    stderr_tail: str
    stopping: bool


class Supervisor:
    def __init__(
        self,
        run_dir: str | Path,
        cfg: Config,
        worker_cmd: list[str],
        render_cmd: Callable[[int], list[str]] | None = None,
        gpu_probe_cmd: list[str] | None = None,
        out: TextIO | None = None,
    ):
        self.rd = RunDir.at(run_dir)
        self.cfg = cfg
        self.sc = cfg.supervisor
        self.worker_cmd = list(worker_cmd)
        self.render_cmd = render_cmd
        self.gpu_probe_cmd = procs.default_gpu_probe_cmd() if gpu_probe_cmd is None else list(gpu_probe_cmd)
        self.out = out if out is not None else sys.stdout
        self.policy = RestartPolicy.from_config(self.sc)
        self.state: str | None = None
        self.started = time.time()
        self.restarts_total = 0
        self.info: dict[str, Any] = {
            "worker_pid": None, "worker_started": None, "render_pid": None, "render_started": None,
            "render_chunk": None, "render_pending": None, "chunk": None, "last_exit": None, "next_retry": None, "fatal_reason": None,
        }
        self._stop_signal: str | None = None
        self._sighups = 0
        self._child = None  # the live worker Popen, for last-resort cleanup
        self._render: RenderJob | None = None  # the milestone render running beside the worker
        self._render_pending: int | None = None  # the milestone waiting for it to end
        self._in_render_poll = False
        self._rfd = self._wfd = -1
        self._old_handlers: dict[int, Any] = {}
        self._old_wakeup = -1

    # ------------------------------------------------------------------ signals and waiting
    def _on_stop(self, signum: int, frame: Any) -> None:
        if self._stop_signal is None:
            self._stop_signal = procs.signal_name(signum)

    def _on_hup(self, signum: int, frame: Any) -> None:
        self._sighups += 1

    def _on_chld(self, signum: int, frame: Any) -> None:
        pass  # only here to wake select() through the wakeup fd

    def _install_signals(self) -> None:
        self._rfd, self._wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_wakeup = signal.set_wakeup_fd(self._wfd, warn_on_full_buffer=False)
        for sig, handler in (
            (signal.SIGTERM, self._on_stop), (signal.SIGINT, self._on_stop),
            (signal.SIGHUP, self._on_hup), (signal.SIGCHLD, self._on_chld),
        ):
            # A handler, not SIG_IGN, for SIGHUP: ignored dispositions survive exec into children.
            self._old_handlers[sig] = signal.signal(sig, handler)

    def _restore_signals(self) -> None:
        for sig, old in self._old_handlers.items():
            try:
                signal.signal(sig, old)
            except (TypeError, ValueError):
                pass
        self._old_handlers.clear()
        if self._wfd >= 0:
            signal.set_wakeup_fd(self._old_wakeup)
            os.close(self._rfd)
            os.close(self._wfd)
            self._rfd = self._wfd = -1

    def _wait(self, timeout: float, interruptible: bool = True) -> None:
        """Sleep up to ``timeout`` s; a signal (child exit, stop request) wakes us early."""
        if interruptible and self._stop_signal:
            return
        if self._render is not None:  # its timeout is checked at least every poll_s
            timeout = min(timeout, self.sc.poll_s)
        try:
            r, _, _ = select.select([self._rfd], [], [], max(0.0, timeout))
        except (OSError, ValueError):
            time.sleep(max(0.0, min(timeout, 0.05)))
            r = []
        if r:
            try:
                while os.read(self._rfd, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass
        self._check_sighup()
        self._poll_render()

    def _check_sighup(self) -> None:
        if self._sighups:
            n, self._sighups = self._sighups, 0
            self._emit("warning", kind="sighup", message=f"SIGHUP received {n}x and ignored")

    # ------------------------------------------------------------------ state and events
    def _emit(self, event: str, **fields: Any) -> None:
        rec = {"time": time.time(), "event": event, **fields}
        try:
            append_jsonl(self.rd.events, rec)
        except OSError as exc:  # disk full etc.: keep supervising, say it on the log
            self._log(f"cannot append to {self.rd.events}: {exc}")
        shown = {k: v for k, v in fields.items() if k != "stderr_tail"}
        self._log(f"{event} {shown}")
        if fields.get("stderr_tail"):
            self._log("  stderr tail:\n    " + fields["stderr_tail"].replace("\n", "\n    "))

    def _log(self, msg: str) -> None:
        try:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            self.out.write(f"{stamp} {msg}\n")
            self.out.flush()
        except (OSError, ValueError):
            pass

    def _state_doc(self) -> dict[str, Any]:
        i = self.info
        return {
            "state": self.state,
            "supervisor_pid": os.getpid(),
            "worker_pid": i["worker_pid"],
            "worker_started": i["worker_started"],
            "render_pid": i["render_pid"],
            "render_started": i["render_started"],
            "render_chunk": i["render_chunk"],
            "render_pending": i["render_pending"],
            "chunk": i["chunk"],
            "restarts": {"total": self.restarts_total, "consecutive": self.policy.consecutive},
            "last_exit": i["last_exit"],
            "next_retry": i["next_retry"],
            "started": self.started,
            "updated": time.time(),
            "fatal_reason": i["fatal_reason"],
            "run_dir": str(self.rd.root),
            "supervisor_peak_rss_mb": round(procs.own_peak_rss_mb(), 1),
        }

    def _write_state(self) -> None:
        try:
            atomic_write_json(self.rd.state, self._state_doc())
        except OSError as exc:
            self._log(f"cannot write {self.rd.state}: {exc}")

    def _update(self, **fields: Any) -> None:
        self.info.update(fields)
        self._write_state()

    def _set_state(self, state: str, **fields: Any) -> None:
        assert state in STATES, state
        previous = self.state
        self.info.update(fields)
        self.state = state
        if previous != state:
            self._emit("state", state=state, previous=previous)
        self._write_state()

    # ------------------------------------------------------------------ run
    def run(self) -> int:
        """Supervise until DONE (0), STOPPED (0) or FATAL (1)."""
        self._install_signals()
        self.started = time.time()
        try:
            self._kill_orphans()
            self._set_state("STARTING")
            return self._loop()
        except Exception as exc:  # a supervisor bug: record it loudly, never leave a worker behind
            self._log(traceback.format_exc())
            self._kill_child()
            return self._fatal(f"supervisor error: {type(exc).__name__}: {exc}")
        finally:
            self._kill_child()
            self._kill_render()
            self._restore_signals()

    def _loop(self) -> int:
        while True:
            if self._stop_signal:
                return self._finish_stopped()
            records = self.rd.chunk_records()
            res = self._run_worker()
            if res is None:
                continue  # stop requested before the spawn: handled at the top
            self._adopt_chunk(res.heartbeat)  # its last word, if it exited before a poll saw one
            if res.reason in ("chunk_done", "run_complete"):
                self.policy.success()
                self._write_state()
                chunk = self._produced_chunk(res, records)  # run_complete may have trained nothing
                if chunk is not None:
                    self._guard()
                if chunk is not None and not self._stop_signal and self._is_milestone(chunk):
                    self._request_render(chunk)
                if res.reason == "run_complete":
                    if not self._drain_renders():
                        return self._finish_stopped()
                    self._set_state("DONE")
                    return 0
                continue
            if res.stopping:
                return self._finish_stopped()
            if res.reason == "config_error":
                detail = procs.last_line(res.stderr_tail)
                return self._fatal(
                    "worker exited with code 2 (configuration error)" + (f": {detail}" if detail else "")
                )
            decision = self.policy.failure(time.monotonic())
            if decision.fatal_reason:
                what = res.signal or f"exit code {res.code}"
                return self._fatal(f"{decision.fatal_reason}; last failure: {res.reason} ({what})")
            self.restarts_total += 1
            self._emit("restart", delay_s=round(decision.delay_s, 3), consecutive=self.policy.consecutive)
            self._set_state("BACKOFF", next_retry=time.time() + decision.delay_s)
            deadline = time.monotonic() + decision.delay_s
            while not self._stop_signal:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wait(left)
            self.info["next_retry"] = None

    def _fatal(self, reason: str) -> int:
        self._emit("fatal", reason=reason)
        self._stop_render("supervisor FATAL")  # the supervisor exits: no renderer left behind
        self._set_state("FATAL", fatal_reason=reason, worker_pid=None, next_retry=None)
        return 1

    def _finish_stopped(self) -> int:
        self._set_state("STOPPING", next_retry=None)
        self._stop_render(f"stopped ({self._stop_signal})" if self._stop_signal else "stopped")
        self._set_state("STOPPED", worker_pid=None, render_pid=None, render_started=None, render_chunk=None)
        return 0

    # ------------------------------------------------------------------ chunks
    def _expected_chunk(self) -> int:
        """The chunk named in a worker's ``start`` event and stderr header (docs/CONTRACTS.md): the
        one after the newest logs/chunks record. A label only: state.json's ``chunk`` is the one the
        worker announces in its heartbeat, and the chunk a worker produced is found by
        :meth:`_produced_chunk`."""
        done = self.rd.chunk_records()
        return (max(done) if done else 0) + self.cfg.chunk.episodes

    def _adopt_chunk(self, hb: dict[str, Any] | None) -> None:
        """state.json's ``chunk`` is the one the worker announces in its heartbeat ``hb`` (this
        worker's, or None: unchanged); the worker decides it, None meaning nothing to train."""
        if hb is None:
            return
        chunk = hb.get("chunk")
        chunk = chunk if isinstance(chunk, int) and not isinstance(chunk, bool) else None
        if chunk != self.info["chunk"]:
            self._update(chunk=chunk)

    def _produced_chunk(self, res: WorkerResult, before: list[int]) -> int | None:
        """The chunk a worker that exited with success produced: the chunk record that appeared
        during its life (``before``: the records at its spawn); None when it wrote none (a
        ``warning`` when it exited ``chunk_done``: no record, no video)."""
        new = sorted(set(self.rd.chunk_records()) - set(before))
        if new:
            return new[-1]
        if res.reason == "chunk_done":
            self._emit("warning", kind="chunk_record_missing",
                       message=f"worker {res.pid} exited 0 without writing a new logs/chunks record")
        return None

    def _guard(self) -> None:
        """Reward-hacking guard: a `warning` event when reward rises while the robot does not walk."""
        from go2train.guard import lazy_optimum_warning

        recs = [read_json(self.rd.chunk_metrics(c)) for c in self.rd.chunk_records()]
        w = lazy_optimum_warning([r for r in recs if isinstance(r, dict)])  # commands: in the records
        if w:
            self._emit("warning", kind=w["kind"], message=w["message"], paying_terms=w["paying_terms"],
                       chunks=w["chunks"])

    def _is_milestone(self, chunk: int) -> bool:
        every = self.cfg.video.every_episodes
        return chunk == self.cfg.chunk.episodes or (every > 0 and chunk % every == 0)

    def _heartbeat_for(self, pid: int, spawn_wall: float) -> dict[str, Any] | None:
        """The heartbeat, only if written by this worker (pid match, not older than the spawn)."""
        hb = read_json(self.rd.heartbeat)
        if not isinstance(hb, dict) or hb.get("pid") != pid:
            return None
        t = hb.get("time")
        if isinstance(t, (int, float)) and t < spawn_wall - 2.0:
            return None  # a dead worker's file whose pid was reused
        return hb

    # ------------------------------------------------------------------ children
    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("PYTHONFAULTHANDLER", "1")  # a segfault leaves a traceback in stderr_tail
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _kill_child(self) -> None:
        proc, self._child = self._child, None
        if proc is None or proc.returncode is not None:
            return
        procs.killpg(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and procs.reap(proc) is None:
            time.sleep(0.02)

    def _reap_after_kill(self, proc, limit_s: float = 10.0) -> tuple[int, float]:
        """Reap a child that was just sent SIGKILL (bounded: a D-state process may linger)."""
        deadline = time.monotonic() + limit_s
        while True:
            r = procs.reap(proc)
            if r is not None:
                return r
            if time.monotonic() > deadline:
                self._emit("warning", kind="unkillable",
                           message=f"pid {proc.pid} still alive {limit_s:g} s after SIGKILL")
                return -9, 0.0
            self._wait(0.05, interruptible=False)

    def _terminate(self, proc, timeout_s: float) -> tuple[int, float]:
        """Graceful stop of a child's group: SIGTERM (+SIGCONT), wait, then SIGKILL."""
        procs.killpg(proc.pid, signal.SIGTERM)
        procs.killpg(proc.pid, signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            r = procs.reap(proc)
            if r is not None:
                return r
            self._wait(min(0.1, max(0.0, deadline - time.monotonic())), interruptible=False)
        self._emit("warning", kind="stop_timeout",
                   message=f"pid {proc.pid} ignored SIGTERM for {timeout_s:g} s; SIGKILL to its group")
        procs.killpg(proc.pid, signal.SIGKILL)
        return self._reap_after_kill(proc)

    def _kill_orphans(self) -> None:
        """A supervisor killed with -9 leaves its worker (own session) running: stop it before a
        second worker writes to the same run directory."""
        old = read_json(self.rd.state)
        if not isinstance(old, dict):
            return
        for pid_key, t_key in (("worker_pid", "worker_started"), ("render_pid", "render_started")):
            orphan = procs.find_orphan(old.get(pid_key), old.get(t_key), self.rd.root)
            if orphan is None:
                continue
            forced = procs.terminate_group(orphan.pid, self.sc.stop_timeout_s, orphan.proc.is_running)
            if pid_key == "render_pid":
                procs.remove_render_temp_files(self.rd.videos, orphan.pid)
            self._emit("warning", kind="orphan_worker" if pid_key == "worker_pid" else "orphan_render",
                       message=f"stopped pid {orphan.pid} left by supervisor pid "
                               f"{old.get('supervisor_pid')}" + (" (SIGKILL)" if forced else " (SIGTERM)"))

    def _probe_gpu(self) -> float | None:
        return procs.probe_gpu_mb(self.gpu_probe_cmd)

    def _probe_gpu_after(self, before: float | None) -> float | None:
        after = self._probe_gpu()
        # The driver frees a dead process's memory asynchronously: re-probe before crying leak.
        tries = 0
        while before is not None and after is not None and after - before > GPU_LEAK_MB and tries < 4:
            self._wait(0.5, interruptible=False)
            after = self._probe_gpu()
            tries += 1
        return after

    # ------------------------------------------------------------------ one worker
    def _run_worker(self) -> WorkerResult | None:
        attempt = self.policy.consecutive + 1
        self._poll_render()  # a render that just ended is not counted as running
        render_before = self._render is not None
        gpu_before = self._probe_gpu()
        if self._stop_signal:
            return None
        expected = self._expected_chunk()
        header = (f"\n===== go2train supervisor {time.strftime('%Y-%m-%d %H:%M:%S')}: worker attempt "
                  f"{attempt} for chunk {expected}: {' '.join(self.worker_cmd)}\n")
        log_path = self.rd.logs / WORKER_STDERR_LOG
        t0 = time.monotonic()
        spawn_wall = time.time()
        try:
            proc, offset = procs.spawn(self.worker_cmd, log_path, self.rd.root, header, self._child_env())
        except OSError as exc:
            self._emit("start", pid=None, chunk=expected, attempt=attempt)
            reason = f"cannot start worker {self.worker_cmd[:1]}: {exc}"
            self._emit("exit", pid=None, code=127, signal=None, duration_s=0.0, reason="failure",
                       stderr_tail=reason)
            self._update(last_exit={"code": 127, "signal": None, "duration_s": 0.0,
                                    "reason": "failure", "time": time.time()})
            return WorkerResult(0, 127, "failure", None, 0.0, spawn_wall, None, reason, False)
        self._child = proc
        pid = proc.pid
        self._set_state("STARTING", worker_pid=pid, worker_started=spawn_wall, chunk=None,
                        next_retry=None)  # chunk: unknown until the worker's heartbeat announces it
        self._emit("start", pid=pid, chunk=expected, attempt=attempt)

        startup, hang = self.sc.startup_timeout_s, self.sc.hang_timeout_s
        last_key: tuple | None = None
        last_progress = t0
        seen = False
        phase = None
        hb_last: dict[str, Any] | None = None
        hung = stopping = False
        result: tuple[int, float] | None = None
        while True:
            result = procs.reap(proc)
            if result is not None:
                break
            if self._stop_signal:
                stopping = True
                self._set_state("STOPPING")
                self._signal_render_stop(f"stopped ({self._stop_signal})")  # both end in parallel
                result = self._terminate(proc, self.sc.stop_timeout_s)
                break
            now = time.monotonic()
            hb = self._heartbeat_for(pid, spawn_wall)
            if hb is not None:
                hb_last, seen = hb, True
                phase = hb.get("phase")
                key = (phase, hb.get("timesteps"))
                if key != last_key:
                    last_key, last_progress = key, now
                self._adopt_chunk(hb)
                if self.state == "STARTING" and phase is not None and phase not in STARTUP_PHASES:
                    self._set_state("RUNNING")
            limit = startup if (not seen or phase in STARTUP_PHASES) else hang
            silent = now - last_progress
            if silent > limit:
                hung = True
                self._emit("hang", pid=pid, silent_s=round(silent, 2))
                procs.killpg(pid, signal.SIGKILL)
                result = self._reap_after_kill(proc)
                break
            self._wait(self.sc.poll_s)
        self._child = None
        code, peak_rss_mb = result
        duration = time.monotonic() - t0
        leftovers = procs.killpg(pid, signal.SIGKILL)  # anything the worker left in its group
        hb_final = self._heartbeat_for(pid, spawn_wall) or hb_last
        reason, sig = procs.classify(code, hung=hung, stopping=stopping)
        ev: dict[str, Any] = {"pid": pid, "code": code, "signal": sig,
                              "duration_s": round(duration, 3), "reason": reason}
        stderr_tail = ""
        if reason not in ("chunk_done", "run_complete"):
            stderr_tail = procs.tail(log_path, offset)
            ev["stderr_tail"] = stderr_tail
        self._emit("exit", **ev)
        self._update(worker_pid=None, worker_started=None,
                     last_exit={"code": code, "signal": sig, "duration_s": round(duration, 3),
                                "reason": reason, "time": time.time()})
        if leftovers:
            self._emit("warning", kind="leftover_processes",
                       message=f"worker {pid} left processes in its group; killed them")
        # A render alive at either probe makes their difference meaningless (its own GPU memory
        # comes and goes): then no leak is judged. One that ran and ended in between is fine.
        self._poll_render()
        overlap = render_before or self._render is not None
        gpu_after = self._probe_gpu() if overlap else self._probe_gpu_after(gpu_before)
        leak = (not overlap and gpu_before is not None and gpu_after is not None
                and gpu_after - gpu_before > GPU_LEAK_MB)
        mem: dict[str, Any] = {"peak_rss_mb": round(peak_rss_mb, 1), "gpu_before_mb": gpu_before,
                               "gpu_after_mb": gpu_after, "gpu_leak": leak}
        if overlap:
            mem["render_overlap"] = True
        self._emit("memory", **mem)
        if leak:
            self._emit("warning", kind="gpu_leak",
                       message=f"GPU memory in use went from {gpu_before:.0f} MiB before worker {pid} "
                               f"to {gpu_after:.0f} MiB after it exited")
        return WorkerResult(pid, code, reason, sig, duration, spawn_wall, hb_final, stderr_tail, stopping)

    # ------------------------------------------------------------------ milestone videos
    def _request_render(self, chunk: int) -> None:
        """Render ``chunk``'s video beside training: now if no render runs, else after it (only
        the newest waiting milestone is kept; one it displaces gets a ``render_skipped`` warning)."""
        if self.render_cmd is None:
            return
        if self._render is None:
            self._start_render(chunk)
            return
        if self._render_pending is not None and self._render_pending != chunk:
            self._skip_pending(f"milestone {chunk} came while the video of chunk {self._render.chunk} "
                               "was still rendering")
        self._render_pending = chunk
        self._update(render_pending=chunk)

    def _skip_pending(self, why: str) -> None:
        chunk, self._render_pending = self._render_pending, None
        self.info["render_pending"] = None
        if chunk is not None:
            self._emit("warning", kind="render_skipped",
                       message=f"no milestone video for chunk {chunk}: {why}; render it with: "
                               f"go2train video --chunk {chunk} --run-dir {self.rd.root}")

    def _start_render(self, chunk: int) -> None:
        cmd = self.render_cmd(chunk)
        log_path = self.rd.logs / RENDER_LOG
        header = f"\n===== go2train supervisor {time.strftime('%Y-%m-%d %H:%M:%S')}: render chunk {chunk}: {' '.join(cmd)}\n"
        env = self._child_env()
        env[RENDER_PROGRESS_ENV] = str(self.rd.render_progress)
        t0 = time.monotonic()
        spawn_wall = time.time()
        try:
            proc, offset = procs.spawn(cmd, log_path, self.rd.root, header, env, nice=RENDER_NICE)
        except OSError as exc:
            self._emit("render", chunk=chunk, ok=False, seconds=0.0, error=f"cannot start renderer: {exc}")
            return
        self._render = RenderJob(proc, chunk, t0, spawn_wall, log_path, offset)
        self._update(render_pid=proc.pid, render_started=spawn_wall, render_chunk=chunk)
        self._emit("render_start", pid=proc.pid, chunk=chunk)

    def _poll_render(self) -> None:
        """Reap the render if it ended, kill it past ``[video] timeout_s``, start a waiting one."""
        job = self._render
        if job is None or self._in_render_poll:
            return
        self._in_render_poll = True
        try:
            result = procs.reap(job.proc)
            error = None
            if result is None:
                timeout = self.cfg.video.timeout_s
                if time.monotonic() - job.t0 <= timeout:
                    return
                procs.killpg(job.proc.pid, signal.SIGKILL)
                result = self._reap_after_kill(job.proc)
                error = f"timeout after {timeout:g} s (killed)"
            self._end_render(result[0], error)
            if self._render_pending is not None and not self._stop_signal:
                chunk, self._render_pending = self._render_pending, None
                self.info["render_pending"] = None
                self._start_render(chunk)
        finally:
            self._in_render_poll = False

    def _end_render(self, code: int, error: str | None) -> None:
        job, self._render = self._render, None
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
            procs.remove_render_temp_files(self.rd.videos, job.proc.pid)
        self._update(render_pid=None, render_started=None, render_chunk=None)
        self._emit("render", chunk=job.chunk, ok=error is None, seconds=round(time.monotonic() - job.t0, 3),
                   error=error, pid=job.proc.pid)

    def _signal_render_stop(self, reason: str) -> None:
        """SIGTERM (+SIGCONT) to the render's group; :meth:`_stop_render` waits for it."""
        if self._render_pending is not None:
            self._skip_pending(reason)
        job = self._render
        if job is None or job.stop_reason:
            return
        job.stop_reason = reason
        job.stop_sent = time.monotonic()
        procs.killpg(job.proc.pid, signal.SIGTERM)
        procs.killpg(job.proc.pid, signal.SIGCONT)

    def _stop_render(self, reason: str) -> None:
        """Stop the render (SIGTERM, then SIGKILL after RENDER_STOP_S) and drop a waiting one."""
        self._signal_render_stop(reason)
        job = self._render
        if job is None:
            return
        self._in_render_poll = True  # this method reaps it
        try:
            # counted from the SIGTERM, sent together with the worker's: a stop takes at most
            # max(stop_timeout_s, RENDER_STOP_S), within `daemon stop`'s default wait
            deadline = job.stop_sent + min(self.sc.stop_timeout_s, RENDER_STOP_S)
            result = procs.reap(job.proc)
            while result is None and time.monotonic() < deadline:
                self._wait(0.05, interruptible=False)
                result = procs.reap(job.proc)
            if result is None:
                procs.killpg(job.proc.pid, signal.SIGKILL)
                result = self._reap_after_kill(job.proc)
            self._end_render(result[0], None)
        finally:
            self._in_render_poll = False

    def _kill_render(self) -> None:
        """Last resort (supervisor exiting): SIGKILL the render's group, remove its temp files."""
        job, self._render = self._render, None
        if job is None or job.proc.returncode is not None:
            return
        procs.killpg(job.proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and procs.reap(job.proc) is None:
            time.sleep(0.02)
        procs.remove_render_temp_files(self.rd.videos, job.proc.pid)

    def _drain_renders(self) -> bool:
        """After the run completed: let the running and the waiting render finish (state
        RENDERING, no worker). False when a stop came meanwhile."""
        while self._render is not None or self._render_pending is not None:
            if self._stop_signal:
                return False
            if self._render is None:  # a waiting one whose start failed to follow
                chunk, self._render_pending = self._render_pending, None
                self.info["render_pending"] = None
                self._start_render(chunk)
                continue
            if self.state != "RENDERING":
                self._set_state("RENDERING", chunk=self._render.chunk)
            self._wait(self.sc.poll_s)
        return True
