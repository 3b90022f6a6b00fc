"""The supervisor loop: one worker process per chunk, restart policy, watchdog, milestone videos.

States (like supervisord) are the worker's: STARTING (worker spawned, still in a start-up phase),
RUNNING, BACKOFF (waiting before a restart), STOPPING, STOPPED, FATAL, DONE; RENDERING only while
the last milestone video finishes after the run completed (no worker left to run). The names and
the allowed moves are supervisor/states.py's; the watchdog's judgement (hung? start-up too slow?)
is supervisor/watchdog.py's and the restart policy supervisor/policy.py's, both pure; this module
does the processes, the files and the waiting. A worker runs in four steps: spawn, watch, record
its exit, record its memory (``_run_worker``). Milestone videos render in a second child *beside*
the worker, watched in the same poll loop (supervisor/render.py: at most one at a time, only the
newest waiting milestone kept, a lower CPU priority, killed after ``[video] timeout_s``; a failed
render is one ``render`` event, nothing else).
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
from go2train.run import identity
from go2train.run.files import append_jsonl, atomic_write_json, read_json
from go2train.run.layout import RunDir
from supervisor import procs, states, watchdog
from supervisor.policy import RestartPolicy
from supervisor.render import Renders
from supervisor.states import State

STATES = states.STATES  # the names, as before (supervisor/states.py owns them)
GPU_LEAK_MB = 256.0
WORKER_STDERR_LOG = "worker.stderr.log"


@dataclass
class WorkerRun:
    """A spawned worker while it is watched."""

    proc: Any
    t0: float  # monotonic spawn time
    spawn_wall: float  # wall-clock spawn time (older heartbeats are a dead worker's)
    log_path: Path
    offset: int  # where its output starts in log_path
    hb_last: dict[str, Any] | None = None  # its last heartbeat seen
    hung: bool = False  # killed by the watchdog
    stopping: bool = False  # stopped because the supervisor is stopping


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
        self.renders = Renders(self, render_cmd)  # the milestone render beside the worker
        self.gpu_probe_cmd = procs.default_gpu_probe_cmd() if gpu_probe_cmd is None else list(gpu_probe_cmd)
        self.out = out if out is not None else sys.stdout
        self.policy = RestartPolicy.from_config(self.sc)
        self.state: State | None = None
        self.started = time.time()
        self.restarts_total = 0
        self.info: dict[str, Any] = {
            "worker_pid": None, "worker_started": None, "render_pid": None, "render_started": None,
            "render_chunk": None, "render_pending": None, "chunk": None, "last_exit": None, "next_retry": None, "fatal_reason": None,
        }
        self._stop_signal: str | None = None
        self._sighups = 0
        self._child = None  # the live worker Popen, for last-resort cleanup
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
        if self.renders.running:  # its timeout is checked at least every poll_s
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
        self.renders.poll()

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

    def _set_state(self, state: State, **fields: Any) -> None:
        assert state in STATES, state
        previous = self.state
        if not states.allowed(previous, state):  # a supervisor bug: say it, but keep supervising
            self._emit("warning", kind="state_transition",
                       message=f"{previous} -> {state} is not in supervisor.states.TRANSITIONS")
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
            self._set_state(State.STARTING)
            return self._loop()
        except Exception as exc:  # a supervisor bug: record it loudly, never leave a worker behind
            self._log(traceback.format_exc())
            self._kill_child()
            return self._fatal(f"supervisor error: {type(exc).__name__}: {exc}")
        finally:
            self._kill_child()
            self.renders.kill()
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
                    self._set_state(State.DONE)
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
            self._set_state(State.BACKOFF, next_retry=time.time() + decision.delay_s)
            deadline = time.monotonic() + decision.delay_s
            while not self._stop_signal:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wait(left)
            self.info["next_retry"] = None

    def _fatal(self, reason: str) -> int:
        self._emit("fatal", reason=reason)
        self.renders.stop("supervisor FATAL")  # the supervisor exits: no renderer left behind
        self._set_state(State.FATAL, fatal_reason=reason, worker_pid=None, next_retry=None)
        return 1

    def _finish_stopped(self) -> int:
        self._set_state(State.STOPPING, next_retry=None)
        self.renders.stop(f"stopped ({self._stop_signal})" if self._stop_signal else "stopped")
        self._set_state(State.STOPPED, worker_pid=None, render_pid=None, render_started=None, render_chunk=None)
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
        return watchdog.own_heartbeat(read_json(self.rd.heartbeat), pid, spawn_wall)

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
        """Spawn one worker, watch it until it exits, record the exit and its memory."""
        attempt = self.policy.consecutive + 1
        self.renders.poll()  # a render that just ended is not counted as running
        render_before = self.renders.running
        gpu_before = self._probe_gpu()
        if self._stop_signal:
            return None
        expected = self._expected_chunk()
        run = self._spawn_worker(attempt, expected)
        if isinstance(run, WorkerResult):
            return run  # it could not be started
        code, peak_rss_mb = self._watch_worker(run)
        self._child = None
        res = self._record_exit(run, code)
        self._record_memory(res.pid, peak_rss_mb, render_before, gpu_before)
        return res

    def _spawn_worker(self, attempt: int, expected: int) -> WorkerRun | WorkerResult:
        """Start the worker in its own session (state STARTING, ``start`` event); a spawn that
        fails is a failed attempt (its WorkerResult, code 127)."""
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
        # its create time, not ours: a later supervisor matches it with go2train.run.identity
        started = identity.create_time(pid) or spawn_wall
        self._set_state(State.STARTING, worker_pid=pid, worker_started=started, chunk=None,
                        next_retry=None)  # chunk: unknown until the worker's heartbeat announces it
        self._emit("start", pid=pid, chunk=expected, attempt=attempt)
        return WorkerRun(proc, t0, spawn_wall, log_path, offset)

    def _watch_worker(self, run: WorkerRun) -> tuple[int, float]:
        """Poll until the worker exits, a stop is requested (graceful stop) or the watchdog finds
        it hung (SIGKILL to its group). Returns its ``(returncode, peak RSS MiB)``."""
        limits = watchdog.Limits.from_config(self.sc)
        watch = watchdog.start(run.t0)
        pid = run.proc.pid
        while True:
            result = procs.reap(run.proc)
            if result is not None:
                return result
            if self._stop_signal:
                return self._stop_worker(run)
            now = time.monotonic()
            hb = self._heartbeat_for(pid, run.spawn_wall)
            if hb is not None:
                run.hb_last = hb
                self._adopt_chunk(hb)
                if self.state == State.STARTING and watchdog.past_startup(hb.get("phase")):
                    self._set_state(State.RUNNING)
            verdict = watchdog.observe(watch, hb, now, limits)
            watch = verdict.watch
            if not verdict.ok:
                run.hung = True
                self._emit("hang", pid=pid, silent_s=round(verdict.silent_s, 2))
                procs.killpg(pid, signal.SIGKILL)
                return self._reap_after_kill(run.proc)
            self._wait(self.sc.poll_s)

    def _stop_worker(self, run: WorkerRun) -> tuple[int, float]:
        """The supervisor is being stopped: STOPPING, and the worker and the render end together."""
        run.stopping = True
        self._set_state(State.STOPPING)
        self.renders.signal_stop(f"stopped ({self._stop_signal})")  # both end in parallel
        return self._terminate(run.proc, self.sc.stop_timeout_s)

    def _record_exit(self, run: WorkerRun, code: int) -> WorkerResult:
        """Kill what the worker left in its group, classify its exit, record it (``exit`` event,
        state.json's ``last_exit``)."""
        pid = run.proc.pid
        duration = time.monotonic() - run.t0
        leftovers = procs.killpg(pid, signal.SIGKILL)  # anything the worker left in its group
        hb_final = self._heartbeat_for(pid, run.spawn_wall) or run.hb_last
        reason, sig = procs.classify(code, hung=run.hung, stopping=run.stopping)
        ev: dict[str, Any] = {"pid": pid, "code": code, "signal": sig,
                              "duration_s": round(duration, 3), "reason": reason}
        stderr_tail = ""
        if reason not in ("chunk_done", "run_complete"):
            stderr_tail = procs.tail(run.log_path, run.offset)
            ev["stderr_tail"] = stderr_tail
        self._emit("exit", **ev)
        self._update(worker_pid=None, worker_started=None,
                     last_exit={"code": code, "signal": sig, "duration_s": round(duration, 3),
                                "reason": reason, "time": time.time()})
        if leftovers:
            self._emit("warning", kind="leftover_processes",
                       message=f"worker {pid} left processes in its group; killed them")
        return WorkerResult(pid, code, reason, sig, duration, run.spawn_wall, hb_final, stderr_tail,
                            run.stopping)

    def _record_memory(self, pid: int, peak_rss_mb: float, render_before: bool,
                       gpu_before: float | None) -> None:
        """The ``memory`` event of a worker that exited (and a ``gpu_leak`` warning)."""
        # A render alive at either probe makes their difference meaningless (its own GPU memory
        # comes and goes): then no leak is judged. One that ran and ended in between is fine.
        self.renders.poll()
        overlap = render_before or self.renders.running
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

    # ------------------------------------------------------------------ milestone videos
    def _request_render(self, chunk: int) -> None:
        """Render ``chunk``'s video beside training (supervisor/render.py)."""
        self.renders.request(chunk)

    def _drain_renders(self) -> bool:
        """After the run completed: let the running and the waiting render finish (state
        RENDERING, no worker). False when a stop came meanwhile."""
        while self.renders.job is not None or self.renders.pending is not None:
            if self._stop_signal:
                return False
            if self.renders.job is None:  # a waiting one whose start failed to follow
                self.renders.start_pending()
                continue
            if self.state != State.RENDERING:
                self._set_state(State.RENDERING, chunk=self.renders.job.chunk)
            self._wait(self.sc.poll_s)
        return True
