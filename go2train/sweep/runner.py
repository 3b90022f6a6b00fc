"""Running a sweep on Ray: one actor per trial, the budget, stop and resume.

**The trial** (:func:`run_trial`, inside a Ray actor that declares ``num_cpus``/``num_gpus`` so Ray
packs trials): it runs the ordinary supervisor in the foreground, ``python -m go2train daemon run
--run-dir TRIAL`` (same chunked worker, same restart policy: a trial survives a worker segfault
exactly like a daemon run), output appended to the trial's ``logs/daemon.log``. Every ``POLL_S`` it
checks the budget like ``go2train walkbench``: the trial's chunk records reach ``--timesteps T``
(:func:`go2train.tools.walkbench.timesteps_trained`), or its supervisor has run ``--minutes M`` in
all (summed over sweep starts). Then SIGTERM to the supervisor, which stops its worker with a
resume point (state STOPPED), and the trial is *done*: it is never started again. The supervisor
is started through a one-line ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` wrapper, so it also stops
gracefully when its actor dies (the sweep killed with SIGKILL, Ray shut down).

**The driver** (:func:`drive`, the ``go2train sweep`` process): holds ``DIR/sweep.pid`` (flock),
starts Ray — embedded local (``include_dashboard=False``, a small object store) or ``--address`` —
creates one actor per unfinished trial, starts each trial when Ray has placed its actor, prints a
line per trial start and end. SIGTERM/SIGINT (or ``go2train sweep stop``, which signals it through
the pidfile): every running trial is stopped with a resume point (its actor's ``stop()``: SIGTERM to
its supervisor, wait), actors not yet placed are dropped, Ray is shut down, exit 0. Running the same
command again resumes every trial that is not done.

Ray is imported here only, inside :func:`import_ray` (the sweep commands).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from go2train.config import load
from go2train.run.files import append_jsonl, atomic_write_json, read_json
from go2train.run.identity import create_time, live_process, lock_holder
from go2train.run.layout import RunDir
from go2train.sweep import plan as plan_mod
from go2train.sweep.plan import PlanError, SweepDir
from go2train.tools.walkbench import timesteps_trained

RAY_MISSING = "sweep needs ray: pip install 'go2train[sweep]'"
POLL_S = 0.5
BOOK_EVERY_S = 5.0
OBJECT_STORE_BYTES = 80 * 2**20  # Ray's minimum is 75 MiB; trials pass no objects
# Passed to Ray's workers (runtime_env): they must reach the trial supervisors on every node.
ENV_PREFIXES = ("GO2TRAIN_", "PYTHONPATH", "QD_", "CUDA_VISIBLE_DEVICES")
# Runs the supervisor with PR_SET_PDEATHSIG = SIGTERM (kept across exec): it stops gracefully when
# the actor that started it dies. argv: parent pid, then the command.
_PDEATH = ("import ctypes, os, signal, sys\n"
           "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
           "if os.getppid() != int(sys.argv[1]): sys.exit(0)\n"
           "os.execv(sys.argv[2], sys.argv[2:])\n")


class SweepError(Exception):
    """A sweep that cannot start or stop; ``str()`` is one line, ``code`` the exit code."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def import_ray():
    """Ray, or :class:`SweepError` (exit 2) naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise SweepError(RAY_MISSING, 2) from None
    return ray


@dataclass(frozen=True)
class Budget:
    """Per trial: stop (done) at ``timesteps`` trained or ``minutes`` of supervisor wall time."""

    minutes: float | None = None
    timesteps: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"minutes": self.minutes, "timesteps": self.timesteps}

    def spent(self, timesteps: int, elapsed_s: float) -> str | None:
        """"timesteps" or "minutes" when that budget is spent, else None."""
        if self.timesteps and timesteps >= self.timesteps:
            return "timesteps"
        if self.minutes and elapsed_s >= self.minutes * 60:
            return "minutes"
        return None

    def describe(self) -> str:
        parts = ([f"{self.timesteps:,} timesteps"] if self.timesteps else []) + \
                ([f"{self.minutes:g} min"] if self.minutes else [])
        return " or ".join(parts) if parts else "no budget (until each run completes)"


# ---------------------------------------------------------------------- the sweep's lock
class SweepLock:
    """``DIR/sweep.pid``: ``{"pid", "start_time"}`` under an exclusive flock while the sweep runs
    (read with :func:`go2train.run.identity.lock_holder`; a file whose lock is free is stale)."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            held = lock_holder(self.path) or {}
            raise SweepError(f"a sweep is already running in {self.path.parent} (pid {held.get('pid')})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps({"pid": os.getpid(), "start_time": create_time(os.getpid())}) + "\n").encode(), 0)
        os.fsync(fd)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------------- one trial (in a Ray actor)
def _book(path: Path, book: dict[str, Any], **update: Any) -> dict[str, Any]:
    book.update(update, updated=time.time())
    atomic_write_json(path, book)
    return book


def _stop_supervisor(sup: subprocess.Popen, timeout: float) -> int:
    """SIGTERM (the worker writes its resume point), wait; SIGKILL the group after ``timeout``."""
    try:
        sup.send_signal(signal.SIGTERM)
        return sup.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(sup.pid, signal.SIGKILL)
        except OSError:
            pass
        return sup.wait()


def _stop_stray(rd: RunDir, timeout: float) -> None:
    """A supervisor still holding the trial's lock (left by a sweep that was killed): stop it first."""
    holder = lock_holder(rd.pidfile)
    if not holder:
        return
    proc = live_process(holder.get("pid"), holder.get("start_time"))
    if proc is None:
        return
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while lock_holder(rd.pidfile) is not None and time.monotonic() < deadline:
        time.sleep(0.1)


def _stop_timeout(rd: RunDir) -> float:
    try:
        return load(None, rd.root).supervisor.stop_timeout_s + 10.0
    except Exception:  # the supervisor itself reports a bad config
        return 70.0


def _start_supervisor(rd: RunDir, name: str, budget: Budget) -> subprocess.Popen:
    """``go2train daemon run`` for the trial, behind the PDEATHSIG wrapper, output to logs/daemon.log.
    A timestep budget is also the run's ``[chunk] max_timesteps``: the trial's own workers end the
    run after the chunk that reaches it, however late this loop looks."""
    cmd = [sys.executable, "-c", _PDEATH, str(os.getpid()),
           sys.executable, "-m", "go2train", "daemon", "run", "--run-dir", str(rd.root)]
    if budget.timesteps:
        cmd += ["--set", f"chunk.max_timesteps={int(budget.timesteps)}"]
    with open(rd.daemon_log, "ab") as log:
        log.write(f"\n===== go2train sweep trial {name} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        log.flush()
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                cwd=str(rd.root), start_new_session=True, close_fds=True)


def _outcome(rd: RunDir, reason: str | None, rc: int | None) -> dict[str, Any]:
    """The trial's bookkeeping state and reason once its supervisor has exited."""
    st = read_json(rd.state)
    st = st if isinstance(st, dict) else {}
    if reason in ("timesteps", "minutes"):
        return {"state": "done", "reason": reason}
    if reason == "stop":
        return {"state": "stopped", "reason": "sweep stopped"}
    if st.get("state") == "DONE":
        return {"state": "done", "reason": "run_complete"}
    if st.get("state") == "FATAL":
        return {"state": "fatal", "reason": st.get("fatal_reason")}
    if st.get("state") == "STOPPED" and rc == 0:
        return {"state": "stopped", "reason": "its supervisor was stopped"}
    try:
        tail = [ln for ln in rd.daemon_log.read_text(errors="replace").splitlines() if ln.strip()][-1]
    except (OSError, IndexError):
        tail = ""
    return {"state": "failed", "reason": f"supervisor exited {rc}: {tail}"[:300]}


def run_trial(spec: dict[str, Any], stop: threading.Event, poll_s: float = POLL_S) -> dict[str, Any]:
    """Run one trial's supervisor until its budget is spent, it completes, fails, or ``stop`` is
    set; returns (and writes) its bookkeeping: ``state`` done | stopped | fatal | failed."""
    rd, path = RunDir.at(spec["run_dir"]), Path(spec["book"])
    book = read_json(path)
    book = book if isinstance(book, dict) else {"name": spec["name"]}
    if book.get("state") == "done" or stop.is_set():
        return book if book.get("state") == "done" else _book(path, book, state="stopped")
    budget = Budget(**spec["budget"])
    elapsed0 = float(book.get("elapsed_s") or 0.0)
    stop_timeout = _stop_timeout(rd)
    rd.make()
    _stop_stray(rd, stop_timeout)
    spent = budget.spent(timesteps_trained(rd), elapsed0)
    if spent:  # spent before this start (stopped right after the last chunk)
        return _book(path, book, state="done", reason=spent, timesteps=timesteps_trained(rd))
    sup = _start_supervisor(rd, spec["name"], budget)
    t0 = last_book = time.monotonic()
    _book(path, book, state="running", reason=None, host=socket.gethostname(), actor_pid=os.getpid(),
          supervisor_pid=sup.pid, started=time.time(), timesteps=timesteps_trained(rd), elapsed_s=elapsed0)
    reason = rc = None
    while True:
        rc = sup.poll()
        if rc is not None:
            break
        ts, elapsed = timesteps_trained(rd), elapsed0 + time.monotonic() - t0
        reason = budget.spent(ts, elapsed) or ("stop" if stop.is_set() else None)
        if reason:
            rc = _stop_supervisor(sup, stop_timeout)
            break
        if time.monotonic() - last_book >= BOOK_EVERY_S:
            _book(path, book, timesteps=ts, elapsed_s=round(elapsed, 1))
            last_book = time.monotonic()
        stop.wait(poll_s)
    ts = timesteps_trained(rd)
    if reason is None and budget.timesteps and ts >= budget.timesteps:
        reason = "timesteps"  # the run ended itself at [chunk] max_timesteps = the budget
    return _book(path, book, **_outcome(rd, reason, rc), timesteps=ts, rc=rc,
                 elapsed_s=round(elapsed0 + time.monotonic() - t0, 1), supervisor_pid=None,
                 trial_state=(read_json(rd.state) or {}).get("state"))


def _actor_class(ray):
    @ray.remote(max_concurrency=2, max_restarts=0)
    class TrialActor:
        """One trial: ``run`` in one thread, ``stop`` from another."""

        def __init__(self) -> None:
            self._stop = threading.Event()

        def ready(self) -> dict[str, Any]:
            return {"host": socket.gethostname(), "pid": os.getpid()}

        def run(self, spec: dict[str, Any]) -> dict[str, Any]:
            return run_trial(spec, self._stop)

        def stop(self) -> None:
            self._stop.set()

    return TrialActor


# ---------------------------------------------------------------------- the driver
def _env_vars() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}


def _init_ray(ray, address: str | None) -> float:
    t0 = time.monotonic()
    common = dict(logging_level=logging.WARNING, log_to_driver=False,
                  runtime_env={"env_vars": _env_vars()})
    try:
        if address:
            ray.init(address=address, **common)
        else:
            # kill_child_processes_on_worker_exit off: a dying actor must not SIGKILL its supervisor,
            # which then gets SIGTERM from PR_SET_PDEATHSIG and stops its worker with a resume point.
            ray.init(address="local", include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
                     _system_config={"kill_child_processes_on_worker_exit": False}, **common)
    except Exception as exc:  # no cluster there, refused, unauthenticated, ...: one line
        what = f"cannot connect to the Ray cluster at {address}" if address else "cannot start a local Ray"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SweepError(f"{what}: {first} (Ray's messages above say why)") from None
    return time.monotonic() - t0


def _line(sd: SweepDir, text: str, out: Callable[[str], None]) -> None:
    out(text)
    append_jsonl(sd.log, {"time": time.time(), "message": text})


REASONS = {"timesteps": "timestep budget reached", "minutes": "time budget reached",
           "run_complete": "run complete ([chunk] max_episodes)"}


def _result_text(res: dict[str, Any]) -> str:
    reason = res.get("reason") or "-"
    return (f"{res.get('state')}, {REASONS.get(reason, reason)}: {res.get('timesteps') or 0:,} timesteps, "
            f"{res.get('elapsed_s') or 0:.1f} s trained")


def drive(sd: SweepDir, trials: list[plan_mod.Trial], budget: Budget, address: str | None,
          cpus: float, gpus: float, out: Callable[[str], None] = print) -> int:
    """Run every unfinished trial on Ray (see the module docstring). Exit 0 when every trial is done
    or the sweep was stopped; 1 when a trial failed."""
    ray = import_ray()
    lock = SweepLock(sd.pidfile)
    lock.acquire()
    try:
        return _drive(ray, sd, trials, budget, address, cpus, gpus, out)
    finally:
        lock.release()


class _Trials:
    """The driver's view of the trials on Ray: an actor per trial, its ``ready`` (placed) and
    ``run`` references, and what came back."""

    def __init__(self, ray, sd: SweepDir, budget: Budget, out: Callable[[str], None]):
        self.ray, self.sd, self.budget, self.out = ray, sd, budget, out
        self.actors: dict[str, Any] = {}
        self.ready: dict[Any, str] = {}  # placed? -> trial
        self.running: dict[Any, str] = {}  # run() -> trial

    def launch(self, names: list[str], cpus: float, gpus: float) -> None:
        Actor = _actor_class(self.ray)
        for name in names:
            a = Actor.options(num_cpus=cpus, num_gpus=gpus).remote()
            self.actors[name] = a
            self.ready[a.ready.remote()] = name

    def pending(self) -> bool:
        return bool(self.ready or self.running)

    def step(self, timeout: float) -> None:
        """Wait up to ``timeout`` for one actor to be placed (start its trial) or one trial to end."""
        done, _ = self.ray.wait(list(self.ready) + list(self.running), num_returns=1, timeout=timeout)
        for ref in done:
            if ref in self.ready:
                name = self.ready.pop(ref)
                try:
                    host = self.ray.get(ref)["host"]
                except Exception:  # the actor could not start: recorded like a dead one
                    self._finish(ref, name)
                    continue
                spec = {"name": name, "run_dir": str(self.sd.trial(name)), "book": str(self.sd.book(name)),
                        "budget": self.budget.to_json()}
                self.running[self.actors[name].run.remote(spec)] = name
                _line(self.sd, f"trial {name}: started on {host}", self.out)
            else:
                self._finish(ref, self.running.pop(ref))

    def _finish(self, ref, name: str) -> None:
        res = _collect(self.ray, ref, self.sd, name)
        self.ray.kill(self.actors.pop(name))  # its resources go to the next trial
        _line(self.sd, f"trial {name}: {_result_text(res)}", self.out)

    def stop_all(self) -> None:
        """Every running trial stops with a resume point; actors not placed yet are dropped."""
        _line(self.sd, f"sweep: stopping {len(self.running)} running trial(s) with a resume point", self.out)
        for name in self.ready.values():
            self.ray.kill(self.actors.pop(name))
        self.ready.clear()
        for name in self.running.values():
            self.actors[name].stop.remote()
        while self.running:
            self.step(POLL_S)


def _drive(ray, sd, trials, budget, address, cpus, gpus, out) -> int:
    books = {t.name: read_json(sd.book(t.name)) or {} for t in trials}
    todo = [t.name for t in trials if books[t.name].get("state") != "done"]
    if not todo:
        _line(sd, f"sweep: all {len(trials)} trials are done ({sd.root})", out)
        return 0
    stopping = threading.Event()

    def _on_signal(signum, _frame):
        stopping.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        ray_s = _init_ray(ray, address)
    except BaseException:
        for s, h in previous.items():
            signal.signal(s, h)
        raise
    for s in previous:  # a stop during Ray's start-up is kept (stopping), and Ray keeps none of its own
        signal.signal(s, _on_signal)
    res_text = f"{cpus:g} CPU" + (f", {gpus:g} GPU" if gpus else "") + " per trial"
    _line(sd, f"sweep: {len(todo)} of {len(trials)} trials to run on {address or 'local Ray'} ({res_text}; "
              f"budget {budget.describe()}); Ray started in {ray_s:.1f} s", out)
    try:
        have = ray.cluster_resources()
        if not address and (cpus > have.get("CPU", 0) or gpus > have.get("GPU", 0)):  # would wait forever
            raise SweepError(f"a trial needs {cpus:g} CPU and {gpus:g} GPU but this machine's Ray has "
                             f"{have.get('CPU', 0):g} CPU and {have.get('GPU', 0):g} GPU; set --cpus-per-trial / "
                             "--gpus-per-trial", 2)
        live = _Trials(ray, sd, budget, out)
        live.launch(todo, cpus, gpus)
        while live.pending() and not stopping.is_set():
            live.step(POLL_S)
        if stopping.is_set():
            live.stop_all()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        ray.shutdown()
    states = [(read_json(sd.book(t.name)) or {}).get("state") for t in trials]
    n_done = states.count("done")
    bad = [t.name for t, s in zip(trials, states) if s in ("failed", "fatal")]
    if stopping.is_set():
        _line(sd, f"sweep stopped: {n_done} of {len(trials)} trials done; run the same command to resume", out)
    else:
        _line(sd, f"sweep: {n_done} of {len(trials)} trials done" + (f"; failed: {', '.join(bad)}" if bad else ""), out)
    return 1 if bad else 0


def _collect(ray, ref, sd: SweepDir, name: str) -> dict[str, Any]:
    try:
        return ray.get(ref)
    except Exception as exc:  # the actor died (OOM kill, node lost)
        book = read_json(sd.book(name)) or {"name": name}
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return _book(sd.book(name), book, state="failed", reason=f"actor died: {msg}")


# ---------------------------------------------------------------------- the command
def start(sweep_dir: Path, seeds: int, sets: list[str], minutes: float | None, timesteps: int | None,
          address: str | None, cpus: float | None, gpus: float | None, config: Path | None,
          out: Callable[[str], None] = print) -> int:
    """`go2train sweep`: plan and validate (:class:`PlanError`, nothing written), check Ray, write
    the sweep directory, then :func:`drive`."""
    specs = [plan_mod.parse_set(s) for s in sets]
    base, source = plan_mod.read_base(config)
    trials = plan_mod.make_trials(base, specs, seeds)
    grid = plan_mod.grid_of(specs, seeds)
    sd = SweepDir.at(sweep_dir)
    old = plan_mod.check_against(sd, grid)
    holder = lock_holder(sd.pidfile)
    if holder is not None:
        raise SweepError(f"a sweep is already running in {sd.root} (pid {holder.get('pid')})")
    import_ray()  # a missing ray: one line, nothing written
    if gpus is None:
        from go2train.config import profile_of, resolve

        prof = profile_of(resolve(base, source))
        gpus = 1.0 if prof is not None and prof.backend == "gpu" else 0.0
    if cpus is None:
        cpus = 1.0
    budget = Budget(minutes, timesteps)
    meta = {"base_config": source, "budget": budget.to_json(), "address": address,
            "resources": {"cpus_per_trial": cpus, "gpus_per_trial": gpus}}
    plan_mod.write(sd, trials, grid, meta, old)
    return drive(sd, trials, budget, address, cpus, gpus, out)


def stop(sweep_dir: Path, timeout: float) -> int:
    """`go2train sweep stop`: SIGTERM the running sweep (its pidfile), wait until it let go."""
    sd = SweepDir.at(sweep_dir)
    holder = lock_holder(sd.pidfile)
    if holder is None:
        raise SweepError(f"no sweep is running in {sd.root}")
    proc = live_process(holder.get("pid"), holder.get("start_time"))
    if proc is None:
        raise SweepError(f"pid {holder.get('pid')} in {sd.pidfile} is not the sweep; not stopping it")
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if lock_holder(sd.pidfile) is None:
            print(f"go2train sweep stopped: pid {proc.pid}, dir {sd.root}", flush=True)
            return 0
        time.sleep(0.1)
    raise SweepError(f"sweep pid {proc.pid} did not stop within {timeout:g} s (its trials may still be stopping)")


__all__ = ["Budget", "PlanError", "SweepError", "drive", "import_ray", "run_trial", "start", "stop"]
