"""`go2train chaos`: a seeded fault-injection campaign against a REAL daemon, then checks.

A temp run directory gets a tiny config (8 robots, 40-step episodes, 20-episode chunks, a resume
point every 3 s, [32, 32] net, 64x48 ten-frame milestone videos, 20 s hang timeout) and a real
``go2train daemon start``. Then, one at a time, with seeded kinds, parameters and delays
(``random.Random(seed)``; the plan is printed and stored in ``RUN_DIR/chaos/plan.json``):

==========  ==========================================================================================
segv        SIGSEGV to the worker (``logs/state.json`` ``worker_pid``, checked to be a live
            ``go2train train-chunk`` of this run dir), during start-up or during training
kill        SIGKILL to the worker, likewise
sup_kill    SIGKILL to the supervisor, then a new ``go2train daemon start`` (it must stop the orphan)
save_crash  ``save_crash@*:N`` appended to ``RUN_DIR/failpoints``: the next worker dies with SIGSEGV in
            the middle of its next checkpoint write (data files written, manifest not)
corrupt     the worker is frozen (SIGSTOP) while training, one file of the newest chunk checkpoint is
            truncated or bit-flipped, the worker is SIGKILLed; the next worker must move the
            checkpoint to ``models/damaged/`` (never delete it, never load it) and redo that chunk
hang        ``hang@*:K`` failpoint (training stops, the heartbeat thread goes on) or SIGSTOP without
            SIGCONT: the watchdog must kill it after ``hang_timeout_s``
stopcont    SIGSTOP, a few seconds (below ``hang_timeout_s``), SIGCONT: the worker must carry on
render_fail the render command (``GO2TRAIN_RENDER_CMD`` = this module's ``render-hook``) exits 1 for a
            seeded subset of the milestones and runs the real ``go2train video`` for the others
==========  ==========================================================================================

About one fault in six is a supervisor kill. When the faults are in (or the time left is what the
run needs to finish), ``[chunk] max_episodes`` is set to the chunk after the one in progress and
the run must reach ``DONE``; if it has not by the end of ``--minutes``, ``daemon stop``. Then the
checks (docs/RELIABILITY.md): faults injected and detected, restarts, target reached, chunks
contiguous and each done once, checksums, damaged checkpoints moved aside and never loaded,
timesteps/episodes monotonic (chunk records and monitor.csv), work lost per fault, one worker at a
time, no orphan processes, supervisor RSS. Exit 0 only if every check passes.

Imports neither torch nor genesis (the workers and renderers are separate processes).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import psutil

from go2train.run import checkpoint
from go2train.run.files import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    read_json,
    read_jsonl,
)
from go2train.run.identity import lock_holder
from go2train.run.layout import STARTUP_PHASES, RunDir, chunk_name

# ---------------------------------------------------------------- the campaign's run
N_ENVS = 8
EPISODE_STEPS = 40
EPISODES = 50  # per robot per chunk: 6-15 s of training, a few resume points
N_STEPS = 8  # rollout: N_STEPS * N_ENVS timesteps
RESUME_POINT_MINUTES = 0.05  # a resume point every 3 s of training
HEARTBEAT_S = 1.0
HANG_TIMEOUT_S = 20.0
STARTUP_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 45.0
VIDEO_EVERY = 2 * EPISODES  # milestones: the first chunk and every 2nd
RSS_LIMIT_MB = 60.0
RSS_GROWTH_LIMIT_MB = 5.0

WORKER_KINDS = ("segv", "kill", "save_crash", "corrupt", "hang", "stopcont")
WORKER_WEIGHTS = (3.0, 3.0, 1.5, 1.0, 1.0, 1.5)
KINDS = WORKER_KINDS + ("sup_kill", "render_fail")
PY = sys.executable


class ChaosError(Exception):
    """Bad input (one line)."""


def campaign_toml(faults: int, max_episodes: int = 0) -> str:
    return f"""# written by go2train chaos
[env]
n_envs = {N_ENVS}
episode_steps = {EPISODE_STEPS}
backend = "cpu"

[ppo]
n_steps = {N_STEPS}
batch_size = 64
n_epochs = 1
net_arch = [32, 32]

[chunk]
episodes = {EPISODES}
max_episodes = {max_episodes}
heartbeat_s = {HEARTBEAT_S}
resume_point_minutes = {RESUME_POINT_MINUTES}

[video]
width = 64
height = 48
steps = 10
every_episodes = {VIDEO_EVERY}
timeout_s = 300.0

[supervisor]
backoff_initial_s = 0.5
backoff_max_s = 2.0
crash_loop_max = {max(50, 4 * faults)}
crash_loop_window_s = 600.0
hang_timeout_s = {HANG_TIMEOUT_S}
startup_timeout_s = {STARTUP_TIMEOUT_S}
stop_timeout_s = {STOP_TIMEOUT_S}
poll_s = 0.25
"""


# ---------------------------------------------------------------- the seeded plan
def make_plan(faults: int, seed: int) -> list[dict[str, Any]]:
    """The faults, in order, with their parameters: a pure function of (faults, seed)."""
    rng = random.Random(seed)
    n_sup = round(faults / 6) if faults >= 2 else 0
    n_worker = faults - n_sup
    if n_worker < len(WORKER_KINDS):  # a short campaign: distinct kinds, seeded
        kinds = rng.sample(WORKER_KINDS, k=n_worker)
    else:  # every kind once, the rest shared by weight (largest remainders)
        extra = n_worker - len(WORKER_KINDS)
        share = [extra * w / sum(WORKER_WEIGHTS) for w in WORKER_WEIGHTS]
        counts = [1 + int(s) for s in share]
        by_rest = sorted(range(len(share)), key=lambda j: (-(share[j] - int(share[j])), j))
        for j in by_rest[: n_worker - sum(counts)]:
            counts[j] += 1
        kinds = [k for k, n in zip(WORKER_KINDS, counts) for _ in range(n)]
    kinds += ["sup_kill"] * n_sup
    rng.shuffle(kinds)
    used: set[str] = set()
    plan = []
    for i, kind in enumerate(kinds):
        f: dict[str, Any] = {"i": i, "kind": kind}
        if kind in ("segv", "kill"):
            f["phase"] = rng.choice(["starting", "training"])
            f["delay_s"] = round(rng.uniform(0.5, 12.0) if f["phase"] == "starting" else rng.uniform(0.0, 4.0), 2)
        elif kind == "save_crash":
            f["spec"] = f"save_crash@*:{i}"  # the step count is unused by save_crash: a unique spec
        elif kind == "corrupt":
            f["delay_s"] = round(rng.uniform(0.0, 3.0), 2)
            f["role"] = rng.choice(["model", "vecnorm"])
            f["mode"] = rng.choice(["truncate", "bitflip"])
            f["where"] = round(rng.random(), 4)
        elif kind == "hang":
            f["method"] = rng.choice(["failpoint", "sigstop"])
            if f["method"] == "failpoint":
                k = rng.randint(1, 150)
                while f"hang@*:{k}" in used:  # each spec fires once per run dir
                    k += 1
                f["spec"] = f"hang@*:{k}"
                used.add(f["spec"])
            else:
                f["delay_s"] = round(rng.uniform(0.0, 3.0), 2)
        elif kind == "stopcont":
            f["delay_s"] = round(rng.uniform(0.0, 8.0), 2)
            f["stop_s"] = round(rng.uniform(2.0, 8.0), 2)
        elif kind == "sup_kill":  # any state (mostly a worker starting up), or a worker training
            f["phase"] = rng.choice(["any", "training"])
            f["delay_s"] = round(rng.uniform(0.0, 15.0) if f["phase"] == "any" else rng.uniform(0.0, 4.0), 2)
        plan.append(f)
    return plan


def render_failures(seed: int, upto: int = 2000) -> list[int]:
    """Milestones whose render the hook fails: the first one, not the second, then a seeded half."""
    rng = random.Random(f"render:{seed}")
    out = [EPISODES]
    for m in range(2 * VIDEO_EVERY, upto * EPISODES + 1, VIDEO_EVERY):
        if rng.random() < 0.5:
            out.append(m)
    return out


# ---------------------------------------------------------------- render hook (own process)
def render_hook(run_dir: str, chunk: str) -> int:
    """``GO2TRAIN_RENDER_CMD`` during a campaign: fail the planned milestones, render the others."""
    rd = RunDir.at(run_dir)
    plan = read_json(rd.root / "chaos" / "render_plan.json", {}) or {}
    fail = int(chunk) in set(plan.get("fail", []))
    append_jsonl(rd.root / "chaos" / "render.jsonl",
                 {"time": time.time(), "chunk": int(chunk), "fail": fail, "pid": os.getpid()})
    if fail:
        print(f"go2train chaos: injected render failure for chunk {chunk}", file=sys.stderr, flush=True)
        return 1
    cmd = [PY, "-m", "go2train", "video", "--chunk", str(chunk), "--run-dir", str(rd.root)]
    os.execv(PY, cmd)
    return 127  # pragma: no cover


# ---------------------------------------------------------------- helpers
def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmdline(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


def _self_and_ancestors() -> set[int]:
    me = psutil.Process()
    try:
        return {me.pid, *(p.pid for p in me.parents())}
    except psutil.Error:
        return {me.pid}


def procs_mentioning(root: Path) -> list[psutil.Process]:
    """Live (non-zombie) processes whose command line names the run directory, other than this
    process and its ancestors (a shell, `timeout` or pytest that started the campaign)."""
    out = []
    mine = _self_and_ancestors()
    for p in psutil.process_iter(["cmdline", "status"]):
        try:
            if p.pid in mine or p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if str(root) in " ".join(p.info["cmdline"] or []):
                out.append(p)
        except psutil.Error:
            pass
    return out


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


LOG_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\d+) (\w+) (.*)$")


def parse_worker_log(path: Path) -> dict[int, dict[str, Any]]:
    """Per worker pid (in order of first appearance): what its lines in logs/worker.log say."""
    sessions: dict[int, dict[str, Any]] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return sessions
    for ln in lines:
        m = LOG_RE.match(ln)
        if not m:
            continue
        t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000.0
        pid, msg = int(m.group(3)), m.group(5)
        s = sessions.setdefault(pid, {"pid": pid, "t_first": t, "resumed": None, "resumed_t": None, "done": [],
                                      "moved": [], "resume_points": [], "fired": []})
        if (r := re.match(r"resuming from (\S+) \((\d+) timesteps, (\d+) episodes\)", msg)):
            s["resumed"], s["resumed_t"] = (r.group(1), int(r.group(2)), int(r.group(3))), t
        elif msg.startswith("no checkpoint: fresh start"):
            s["resumed"], s["resumed_t"] = ("fresh", 0, 0), t
        elif (r := re.match(r"chunk (chunk_\d{6}) done", msg)):
            s["done"].append(r.group(1))
        elif (r := re.match(r"checkpoint (\S+) is damaged \((.*)\); moved to (\S+)$", msg)):
            s["moved"].append({"name": r.group(1), "reason": r.group(2), "dest": r.group(3), "t": t})
        elif (r := re.match(r"(?:stop requested: )?resume point written at (\d+) timesteps", msg)):
            s["resume_points"].append(int(r.group(1)))
        elif (r := re.match(r"failpoint (\S+) fires", msg)):
            s["fired"].append(r.group(1))
    return sessions


# ---------------------------------------------------------------- sampling thread
class Monitor(threading.Thread):
    """Samples the run every 0.25 s: heartbeats per worker pid, supervisor RSS, live workers."""

    def __init__(self, rd: RunDir, interval: float = 0.25):
        super().__init__(name="chaos-monitor", daemon=True)
        self.rd = rd
        self.interval = interval
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.hb: dict[int, dict[str, Any]] = {}
        self.sup_rss: dict[int, list[tuple[float, float]]] = {}
        self.state_peak_rss = 0.0
        self.max_workers = 0
        self.overlaps: list[dict[str, Any]] = []
        self.samples = 0
        self.scans = 0
        self.error: str | None = None

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            try:
                self.sample(scan=n % 4 == 0)
            except Exception as exc:  # noqa: BLE001 - never die silently
                self.error = f"{type(exc).__name__}: {exc}"
            n += 1
            self.halt.wait(self.interval)

    def sample(self, scan: bool) -> None:
        now = time.time()
        hb = read_json(self.rd.heartbeat)
        with self.lock:
            self.samples += 1
            if isinstance(hb, dict) and isinstance(hb.get("pid"), int):
                rec = self.hb.setdefault(hb["pid"], {"max_ts": 0, "max_sps": 0.0, "phase": None, "chunk": None,
                                                     "first": now, "last": now, "trained": False,
                                                     "t_train": None, "beat": None})
                rec["max_ts"] = max(rec["max_ts"], int(hb.get("timesteps") or 0))
                rec["phase"], rec["chunk"], rec["last"] = hb.get("phase"), hb.get("chunk"), now
                if hb.get("phase") == "training":
                    rec["trained"] = True
                    rec["t_train"] = rec["t_train"] or now
                    # steps/s between two training heartbeats of this worker (>= 0.5 s apart)
                    beat = (float(hb.get("time") or 0.0), int(hb.get("timesteps") or 0))
                    if rec["beat"] is None or beat[0] < rec["beat"][0]:
                        rec["beat"] = beat
                    elif beat[0] - rec["beat"][0] >= 0.5:
                        rate = (beat[1] - rec["beat"][1]) / (beat[0] - rec["beat"][0])
                        rec["max_sps"] = max(rec["max_sps"], rate)
                        rec["beat"] = beat
            st = read_json(self.rd.state)
            if isinstance(st, dict):
                self.state_peak_rss = max(self.state_peak_rss, float(st.get("supervisor_peak_rss_mb") or 0.0))
                sp = st.get("supervisor_pid")
                if isinstance(sp, int) and _alive(sp):
                    try:
                        rss = psutil.Process(sp).memory_info().rss / 2**20
                        self.sup_rss.setdefault(sp, []).append((now, rss))
                    except psutil.Error:
                        pass
        if scan:
            # Workers are started in their own session: count process-group leaders. A worker's own
            # children (Genesis/torch start-up runs `file`, `ldconfig`, cpuinfo...) carry its command
            # line between fork and exec, but belong to its group.
            workers = []
            for p in procs_mentioning(self.rd.root):
                try:
                    if "train-chunk" in _cmdline(p.pid) and os.getpgid(p.pid) == p.pid:
                        workers.append(p.pid)
                except OSError:
                    pass
            with self.lock:
                self.scans += 1
                self.max_workers = max(self.max_workers, len(workers))
                if len(workers) > 1:
                    self.overlaps.append({"time": now, "pids": workers})

    def ts_of(self, pid: int) -> int | None:
        with self.lock:
            rec = self.hb.get(pid)
            return rec["max_ts"] if rec else None

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=5)


# ---------------------------------------------------------------- the campaign
class Campaign:
    def __init__(self, faults: int, minutes: float, seed: int, run_dir: Path, out=sys.stderr):
        self.n_faults = faults
        self.minutes = minutes
        self.seed = seed
        self.rd = RunDir.at(run_dir)
        self.root = self.rd.root
        self.out = out
        self.plan = make_plan(faults, seed)
        self.records: list[dict[str, Any]] = []
        self.t0 = time.time()
        self.t_end = self.t0 + minutes * 60.0
        self.mon = Monitor(self.rd)
        self.sup_kills: set[int] = set()  # supervisor pids we killed
        self.aborted: str | None = None
        self.target: int | None = None
        self.ended_by: str | None = None
        self.daemon_starts: list[dict[str, Any]] = []
        self.startups: list[float] = []  # observed worker start-up seconds (spawn -> training)
        self.env = dict(os.environ)
        for var in ("GO2TRAIN_WORKER_CMD", "GO2TRAIN_FAILPOINTS"):
            self.env.pop(var, None)
        self.env["GO2TRAIN_RENDER_CMD"] = json.dumps([PY, "-m", "go2train.chaos", "render-hook", "{run_dir}", "{chunk}"])

    # -- output
    def say(self, msg: str) -> None:
        if self.out is not None:
            print(f"[chaos {time.time() - self.t0:7.1f}s] {msg}", file=self.out, flush=True)

    # -- reading the run
    def state(self) -> dict[str, Any]:
        st = read_json(self.rd.state)
        return st if isinstance(st, dict) else {}

    def heartbeat(self) -> dict[str, Any]:
        hb = read_json(self.rd.heartbeat)
        return hb if isinstance(hb, dict) else {}

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        return [e for e in read_jsonl(self.rd.events) if name is None or e.get("event") == name]

    def is_worker(self, pid: Any) -> bool:
        if not isinstance(pid, int) or not _alive(pid):
            return False
        cmd = _cmdline(pid)
        return "train-chunk" in cmd and str(self.root) in cmd

    def live_worker(self) -> int | None:
        pid = self.state().get("worker_pid")
        return pid if self.is_worker(pid) else None

    def supervisor_pid(self) -> int | None:
        held = lock_holder(self.rd.pidfile)
        pid = held.get("pid") if held else None
        if isinstance(pid, int) and _alive(pid) and "daemon" in _cmdline(pid) and str(self.root) in _cmdline(pid):
            return pid
        return None

    def chunks_done(self) -> list[int]:
        return self.rd.chunk_records()

    def fired(self) -> dict[str, dict[str, Any]]:
        return {str(e.get("spec")): e for e in read_jsonl(self.rd.logs / "failpoints.fired")}

    # -- waiting
    def time_left(self) -> float:
        return self.t_end - time.time()

    def wait(self, pred: Callable[[], Any], timeout: float, what: str, poll: float = 0.2) -> Any:
        """Poll ``pred`` until truthy (its value) or ``timeout`` / the campaign's end (None)."""
        deadline = min(time.time() + timeout, self.t_end)
        while True:
            val = pred()
            if val:
                return val
            if self.state().get("state") == "FATAL":
                self.aborted = f"run went FATAL while waiting for {what}: {self.state().get('fatal_reason')}"
                return None
            if time.time() >= deadline:
                self.say(f"timed out waiting for {what}")
                return None
            time.sleep(poll)

    def wait_worker(self, phase: str, timeout: float) -> int | None:
        def ready() -> int | None:
            pid = self.live_worker()
            if pid is None:
                return None
            hb = self.heartbeat()
            mine = hb.get("pid") == pid
            if phase == "training":
                return pid if mine and hb.get("phase") == "training" else None
            if phase == "starting":
                return pid if not mine or hb.get("phase") in STARTUP_PHASES else None
            return pid

        return self.wait(ready, timeout, f"a worker ({phase})")

    def sleep_on(self, pid: int, seconds: float) -> bool:
        """Sleep; False when ``pid`` stopped being the live worker meanwhile."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            if self.live_worker() != pid:
                return False
            time.sleep(min(0.1, max(0.0, deadline - time.time())))
        return self.live_worker() == pid

    def wait_exit(self, pid: int, timeout: float) -> dict[str, Any] | None:
        def ev():
            for e in self.events("exit"):
                if e.get("pid") == pid:
                    return e
            return None

        return self.wait(ev, timeout, f"the exit event of worker {pid}")

    def wait_recovered(self, dead: set[int], timeout: float | None = None) -> bool:
        """A new worker (not in ``dead``) runs under a live supervisor, or the run is DONE."""
        def ok() -> bool:
            st = self.state()
            if st.get("state") == "DONE":
                return True
            pid = self.live_worker()
            return pid is not None and pid not in dead and self.supervisor_pid() is not None

        return bool(self.wait(ok, timeout or STARTUP_TIMEOUT_S + 120.0, "a new worker"))

    def snapshot(self, pid: int | None) -> dict[str, Any]:
        hb, st = self.heartbeat(), self.state()
        mine = pid is not None and hb.get("pid") == pid
        return {"pid": pid, "chunk": hb.get("chunk") if mine else st.get("chunk"),
                "phase": hb.get("phase") if mine else None,
                "timesteps": (self.mon.ts_of(pid) if pid else None) or (hb.get("timesteps") if mine else None),
                "state": st.get("state")}

    def injected(self, f: dict[str, Any]) -> None:
        """Right after the last fault hits: set the target, so the next worker already stops there."""
        if f is self.plan[-1] and self.target is None:
            self.target = self.set_target()

    def record(self, f: dict[str, Any], **fields: Any) -> dict[str, Any]:
        self.injected(f)
        rec = {**f, "t": round(time.time() - self.t0, 2), "wall": time.time(), **fields}
        self.records.append(rec)
        append_jsonl(self.root / "chaos" / "faults.jsonl", rec)
        self.say(f"fault {f['i'] + 1}/{self.n_faults} {f['kind']}: pid {rec.get('pid')} chunk {rec.get('chunk')} "
                 f"phase {rec.get('phase')} timesteps {rec.get('timesteps')}"
                 + (f" {rec['detail']}" if rec.get("detail") else ""))
        return rec

    # -- the daemon
    def daemon(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        return subprocess.run([PY, "-m", "go2train", "daemon", *args, "--run-dir", str(self.root)], env=self.env,
                              capture_output=True, text=True, timeout=timeout, start_new_session=True)

    def start_daemon(self) -> int | None:
        r = self.daemon("start")
        m = re.search(r"pid (\d+)", r.stdout)
        pid = int(m.group(1)) if r.returncode == 0 and m else None
        self.daemon_starts.append({"t": round(time.time() - self.t0, 2), "rc": r.returncode, "pid": pid,
                                   "stderr": r.stderr.strip()[-500:]})
        if pid is None:
            self.say(f"daemon start failed: rc {r.returncode}: {r.stderr.strip()[-300:]}")
        return pid

    # -- faults
    def inject(self, f: dict[str, Any]) -> None:
        getattr(self, f"_f_{f['kind']}")(f)

    def _signal_worker(self, f: dict[str, Any], sig: int) -> None:
        for _ in range(20):
            pid = self.wait_worker(f["phase"], STARTUP_TIMEOUT_S + 120.0)
            if pid is None:
                return
            if not self.sleep_on(pid, f["delay_s"]):
                continue  # that worker ended on its own: aim at the next one
            snap = self.snapshot(pid)
            if not self.is_worker(pid):
                continue
            os.kill(pid, sig)
            self.record(f, **snap, detail=signal.Signals(sig).name)
            ex = self.wait_exit(pid, 60.0)
            self.records[-1]["exit"] = ex and {k: ex.get(k) for k in ("code", "signal", "reason")}
            self.wait_recovered({pid})
            return

    def _f_segv(self, f: dict[str, Any]) -> None:
        self._signal_worker(f, signal.SIGSEGV)

    def _f_kill(self, f: dict[str, Any]) -> None:
        self._signal_worker(f, signal.SIGKILL)

    def _arm(self, spec: str) -> None:
        with open(self.root / "failpoints", "a") as fh:
            fh.write(spec + "\n")

    def _failpoint(self, f: dict[str, Any], expect_hang: bool) -> None:
        self._arm(f["spec"])
        self.say(f"armed failpoint {f['spec']} for the next worker")
        fired = self.wait(lambda: self.fired().get(f["spec"]), STARTUP_TIMEOUT_S + 300.0, f"failpoint {f['spec']}")
        if not fired:
            return
        pid = int(fired["pid"])
        self.injected(f)
        time.sleep(0.3)
        self.record(f, **self.snapshot(pid), detail=f"failpoint {f['spec']} fired")
        ex = self.wait_exit(pid, HANG_TIMEOUT_S + 60.0 if expect_hang else 60.0)
        self.records[-1]["exit"] = ex and {k: ex.get(k) for k in ("code", "signal", "reason")}
        self.wait_recovered({pid})

    def _f_save_crash(self, f: dict[str, Any]) -> None:
        self._failpoint(f, expect_hang=False)

    def _f_hang(self, f: dict[str, Any]) -> None:
        if f["method"] == "failpoint":
            self._failpoint(f, expect_hang=True)
            return
        for _ in range(20):
            pid = self.wait_worker("training", STARTUP_TIMEOUT_S + 120.0)
            if pid is None:
                return
            if not self.sleep_on(pid, f["delay_s"]):
                continue
            snap = self.snapshot(pid)
            if not self.is_worker(pid) or snap["phase"] != "training":
                continue
            os.kill(pid, signal.SIGSTOP)
            self.record(f, **snap, detail="SIGSTOP, no SIGCONT")
            ex = self.wait_exit(pid, HANG_TIMEOUT_S + 60.0)
            self.records[-1]["exit"] = ex and {k: ex.get(k) for k in ("code", "signal", "reason")}
            self.wait_recovered({pid})
            return

    def _f_stopcont(self, f: dict[str, Any]) -> None:
        for _ in range(20):
            pid = self.wait_worker("any", STARTUP_TIMEOUT_S + 120.0)
            if pid is None:
                return
            if not self.sleep_on(pid, f["delay_s"]):
                continue
            snap = self.snapshot(pid)
            if not self.is_worker(pid):
                continue
            os.kill(pid, signal.SIGSTOP)
            time.sleep(f["stop_s"])
            os.kill(pid, signal.SIGCONT)
            self.record(f, **snap, detail=f"SIGSTOP for {f['stop_s']:.1f} s, then SIGCONT")
            return

    def _f_corrupt(self, f: dict[str, Any]) -> None:
        if not self.wait(lambda: checkpoint.chunk_milestones(self.rd), STARTUP_TIMEOUT_S + 300.0, "a chunk checkpoint"):
            return
        for _ in range(40):
            pid = self.wait_worker("training", STARTUP_TIMEOUT_S + 120.0)
            if pid is None:
                return
            if not self.sleep_on(pid, f["delay_s"]):
                continue
            if not self.is_worker(pid):
                continue
            os.kill(pid, signal.SIGSTOP)  # frozen: nothing is written while we look and corrupt
            time.sleep(0.2)
            hb = self.heartbeat()
            milestones = checkpoint.chunk_milestones(self.rd)
            name = chunk_name(milestones[0]) if milestones else None
            try:
                manifest = checkpoint.verify(self.rd, name) if name else None
            except checkpoint.DamagedCheckpoint:
                manifest = None
            if hb.get("pid") != pid or hb.get("phase") != "training" or manifest is None:
                os.kill(pid, signal.SIGCONT)
                time.sleep(1.0)
                continue
            fname = checkpoint.data_files(name)[f["role"]]
            path = self.rd.models / fname
            data = path.read_bytes()
            if f["mode"] == "truncate":
                cut = int(len(data) * (0.1 + 0.8 * f["where"]))
                new = data[:cut]
                detail = f"{fname} truncated {len(data)} -> {cut} bytes"
            else:
                off = min(len(data) - 1, int(len(data) * f["where"]))
                new = data[:off] + bytes([data[off] ^ 0x10]) + data[off + 1:]
                detail = f"{fname} bit 4 of byte {off} of {len(data)} flipped"
            with open(path, "r+b") as fh:  # in place, like a disk error would
                fh.write(new)
                fh.truncate(len(new))
                fh.flush()
                os.fsync(fh.fileno())
            snap = self.snapshot(pid)
            os.kill(pid, signal.SIGKILL)
            self.record(f, **snap, detail=detail + "; worker SIGKILLed",
                        corrupted={"name": name, "file": fname, "sha256": sha256_bytes(new), "bytes": len(new)})
            ex = self.wait_exit(pid, 60.0)
            self.records[-1]["exit"] = ex and {k: ex.get(k) for k in ("code", "signal", "reason")}

            def moved() -> bool:
                return any(m["name"] == name and m["t"] >= self.records[-1]["wall"] - 1.0
                           for s in parse_worker_log(self.rd.worker_log).values() for m in s["moved"])

            self.wait(moved, STARTUP_TIMEOUT_S + 120.0, f"{name} moved to models/damaged/")
            self.wait_recovered({pid})
            return

    def _f_sup_kill(self, f: dict[str, Any]) -> None:
        for _ in range(20):
            w = None
            if f.get("phase") == "training":  # its orphan must write a resume point when stopped
                w = self.wait_worker("training", STARTUP_TIMEOUT_S + 120.0)
                if w is None:
                    return
            sp = self.wait(self.supervisor_pid, 60.0, "a live supervisor")
            if sp is None:
                return
            if w is not None:
                if not self.sleep_on(w, f["delay_s"]):
                    continue
            else:
                time.sleep(f["delay_s"])
            if self.supervisor_pid() != sp:
                continue
            st = self.state()
            worker = st.get("worker_pid") if self.is_worker(st.get("worker_pid")) else None
            render = st.get("render_pid") if _alive(st.get("render_pid")) else None
            snap = self.snapshot(worker)
            os.kill(sp, signal.SIGKILL)
            self.sup_kills.add(sp)
            self.injected(f)
            self.wait(lambda: not _alive(sp), 10.0, f"supervisor {sp} to die")
            new = self.start_daemon()
            self.record(f, **snap, supervisor=sp, worker=worker, render=render, new_supervisor=new,
                        sup_state=st.get("state"),
                        detail=f"supervisor {sp} SIGKILLed in {st.get('state')}; daemon start -> pid {new}")
            if new is not None:
                self.wait_recovered({worker} if worker else set())
            return

    # -- phases
    def drain_estimate(self) -> float:
        """Seconds the run needs to finish after the last fault: about one worker start-up and chunk."""
        ups = sorted(self.startups) or [60.0]
        return 1.5 * ups[len(ups) // 2] + 40.0

    def note_startups(self) -> None:
        """Observed worker start-up times: spawn (``start`` event) to the first training heartbeat."""
        starts = {e["pid"]: e["time"] for e in self.events("start") if e.get("pid")}
        with self.mon.lock:
            trained = {pid: rec["t_train"] for pid, rec in self.mon.hb.items() if rec["t_train"]}
        self.startups = [max(0.0, trained[p] - t) for p, t in starts.items() if p in trained]

    def set_target(self) -> int:
        """``[chunk] max_episodes`` = the chunk in progress: every worker started from now on stops
        there (one started earlier finishes it with exit 0; the next one then exits RUN_COMPLETE)."""
        records = self.rd.chunk_records()
        hb_chunk = self.heartbeat().get("chunk")
        target = max(max(records, default=0) + EPISODES, hb_chunk if isinstance(hb_chunk, int) else 0)
        atomic_write_bytes(self.rd.config_file, campaign_toml(self.n_faults, max_episodes=target).encode())
        self.say(f"target: [chunk] max_episodes = {target} (the chunk in progress)")
        return target

    def run(self) -> dict[str, Any]:
        root = self.root
        (root / "chaos").mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.rd.config_file, campaign_toml(self.n_faults).encode())
        atomic_write_json(root / "chaos" / "plan.json", {"seed": self.seed, "faults": self.plan})
        atomic_write_json(root / "chaos" / "render_plan.json", {"fail": render_failures(self.seed)})
        self.say(f"run dir {root}; seed {self.seed}; {self.n_faults} faults; {self.minutes:g} min")
        self.mon.start()
        try:
            if self.start_daemon() is None:
                self.aborted = "daemon start failed"
            for f in self.plan:
                if self.aborted:
                    break
                self.note_startups()
                if self.time_left() < self.drain_estimate():
                    self.say(f"time is up for faults: {len(self.records)} of {self.n_faults} injected")
                    break
                self.inject(f)
            if not self.aborted and self.supervisor_pid() is not None and self.target is None:
                self.target = self.set_target()
            if not self.aborted and self.target is not None:
                done = self.wait(lambda: self.state().get("state") == "DONE" and self.supervisor_pid() is None,
                                 max(self.time_left(), 0.0), "DONE")
                self.ended_by = "DONE" if done else None
            if self.ended_by != "DONE":
                r = self.daemon("stop", "--timeout", str(STOP_TIMEOUT_S + 10), timeout=STOP_TIMEOUT_S + 60)
                self.ended_by = f"daemon stop (rc {r.returncode})"
                self.say(f"daemon stop: rc {r.returncode} {r.stdout.strip()} {r.stderr.strip()}")
            time.sleep(1.0)
        finally:
            self.mon.stop()
            orphans = self._orphans_after()
            self.orphans = orphans
        self.duration = time.time() - self.t0
        return self.check()

    def _orphans_after(self) -> list[dict[str, Any]]:
        """Processes still naming the run dir a few seconds after the end (then killed: cleanup)."""
        deadline = time.time() + 5.0
        left = procs_mentioning(self.root)
        while left and time.time() < deadline:
            time.sleep(0.2)
            left = procs_mentioning(self.root)
        out = [{"pid": p.pid, "cmdline": _cmdline(p.pid)} for p in left]
        for p in left:
            try:
                if os.getpgid(p.pid) == p.pid and p.pid != os.getpgrp():
                    os.killpg(p.pid, signal.SIGKILL)
                else:
                    p.kill()
            except (psutil.Error, OSError):
                pass
        return out

    # ---------------------------------------------------------------- checks
    def check(self) -> dict[str, Any]:
        rd = self.rd
        checks: list[dict[str, Any]] = []

        def add(name: str, ok: bool, figures: str) -> None:
            checks.append({"check": name, "ok": bool(ok), "figures": figures})

        evs = self.events()
        exits = [e for e in evs if e.get("event") == "exit"]
        restarts = [e for e in evs if e.get("event") == "restart"]
        hangs = [e for e in evs if e.get("event") == "hang"]
        warnings = [e for e in evs if e.get("event") == "warning"]
        renders = [e for e in evs if e.get("event") == "render"]
        fatals = [e for e in evs if e.get("event") == "fatal"]
        sessions = parse_worker_log(rd.worker_log)
        start_order = [e["pid"] for e in evs if e.get("event") == "start" and e.get("pid")]
        hook = read_jsonl(rd.root / "chaos" / "render.jsonl")
        by_kind = Counter(r["kind"] for r in self.records)
        by_kind["render_fail"] = sum(1 for h in hook if h.get("fail"))

        # 1. faults injected
        kinds_txt = ", ".join(f"{k} {by_kind[k]}" for k in KINDS if by_kind[k])
        worker_faults = sum(by_kind[k] for k in WORKER_KINDS)
        add("faults injected", len(self.records) == self.n_faults and not self.aborted,
            f"{len(self.records)}/{self.n_faults} ({kinds_txt}); worker faults {worker_faults}, "
            f"supervisor kills {by_kind['sup_kill']}" + (f"; ABORTED: {self.aborted}" if self.aborted else ""))

        # 2. each fault had the expected effect
        bad: list[str] = []
        exit_of = {e.get("pid"): e for e in exits}
        later_hang_on: dict[int, float] = {}
        for r in self.records:
            if r["kind"] == "hang" and r.get("pid"):
                later_hang_on.setdefault(r["pid"], r["wall"])
        for r in self.records:
            k, pid = r["kind"], r.get("pid")
            ex = exit_of.get(pid) if pid else None
            if k in ("segv", "kill"):
                want = "SIGSEGV" if k == "segv" else "SIGKILL"
                if not ex or ex.get("signal") != want or ex.get("reason") != "crash":
                    bad.append(f"#{r['i']} {k} pid {pid}: exit {ex and (ex.get('reason'), ex.get('signal'))}")
            elif k == "save_crash":
                if not ex or ex.get("signal") != "SIGSEGV" or f"failpoint {r['spec']} fires" not in (ex.get("stderr_tail") or ""):
                    bad.append(f"#{r['i']} save_crash pid {pid}: exit {ex and (ex.get('reason'), ex.get('signal'))}")
            elif k == "hang":
                if not ex or ex.get("reason") != "hang" or not any(h.get("pid") == pid for h in hangs):
                    bad.append(f"#{r['i']} hang pid {pid}: exit {ex and ex.get('reason')}")
            elif k == "stopcont":
                if ex and ex.get("reason") == "hang" and pid not in later_hang_on:
                    bad.append(f"#{r['i']} stopcont pid {pid}: killed as hung")
            elif k == "corrupt":
                if not ex or ex.get("signal") != "SIGKILL":
                    bad.append(f"#{r['i']} corrupt pid {pid}: exit {ex and ex.get('signal')}")
            elif k == "sup_kill":
                if r.get("new_supervisor") is None:
                    bad.append(f"#{r['i']} sup_kill: daemon start failed")
                w = r.get("worker")
                finished = w in sessions and bool(sessions[w]["done"])  # ended its chunk on its own first
                if w and not finished and not any(x.get("kind") == "orphan_worker" and f"pid {w} " in x.get("message", "")
                                                  for x in warnings):
                    bad.append(f"#{r['i']} sup_kill: orphan worker {w} not stopped by the new supervisor")
                if r.get("render") and not any(x.get("kind") == "orphan_render" for x in warnings):
                    bad.append(f"#{r['i']} sup_kill: orphan renderer {r['render']} not stopped")
        failed_renders = [e for e in renders if not e.get("ok")]
        hook_fails = [h for h in hook if h.get("fail")]
        injected_seen = [e for e in failed_renders if "injected render failure" in (e.get("error") or "")]
        if len(injected_seen) != len(hook_fails):
            bad.append(f"render failures: hook failed {len(hook_fails)}, supervisor saw {len(injected_seen)}")
        real_render_fail = [e for e in failed_renders if "injected render failure" not in (e.get("error") or "")
                            and "stopped" not in (e.get("error") or "")]
        ok_renders = [e for e in renders if e.get("ok")]
        add("faults detected", not bad,
            f"{len(self.records) - len(bad)}/{len(self.records)} faults had their expected effect; renders: "
            f"{len(ok_renders)} ok, {len(injected_seen)} injected failures, {len(real_render_fail)} other failures"
            + (f"; {'; '.join(bad[:5])}" if bad else ""))

        # 3. restarts
        failures = [e for e in exits if e.get("reason") in ("crash", "hang", "failure")]
        reasons = Counter(e.get("reason") for e in exits)
        add("restarts", len(restarts) == len(failures) and not fatals,
            f"{len(restarts)} restarts for {len(failures)} worker failures; exits: "
            + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items()))
            + f"; {len(self.sup_kills)} supervisor restarts (daemon start)"
            + (f"; FATAL: {fatals[-1].get('reason')}" if fatals else ""))

        # 4. target
        recs = {}
        for m in rd.chunk_records():
            d = read_json(rd.chunk_metrics(m))
            if isinstance(d, dict):
                recs[m] = d
        chunks = sorted(recs)
        final_state = self.state().get("state")
        add("target reached", self.ended_by == "DONE" and final_state == "DONE" and self.target in recs
            and max(chunks, default=0) == self.target,
            f"state {final_state} via {self.ended_by}; target chunk {self.target}, newest chunk "
            f"{max(chunks, default=None)}; {self.duration / 60:.1f} min")

        # 5. chunks contiguous, each exactly once
        expect = list(range(EPISODES, (max(chunks) if chunks else 0) + 1, EPISODES))
        manifests = sorted(checkpoint.chunk_milestones(rd))
        corrupted = Counter(r["corrupted"]["name"] for r in self.records if r.get("corrupted"))
        done = Counter(d for s in sessions.values() for d in s["done"])
        wrong_done = {chunk_name(c): done[chunk_name(c)] for c in expect
                      if done[chunk_name(c)] != 1 + corrupted[chunk_name(c)]}
        extra_done = sorted(set(done) - {chunk_name(c) for c in expect})
        add("chunks contiguous, each once", chunks == expect and manifests == expect and not wrong_done
            and not extra_done and bool(expect),
            f"{len(chunks)} chunk records {chunks[:1]}..{chunks[-1:]} step {EPISODES}, {len(manifests)} chunk "
            f"manifests; 'done' once each ({sum(corrupted.values())} redone after a corruption: twice)"
            + (f"; records {chunks} != {expect}" if chunks != expect else "")
            + (f"; manifests {manifests}" if manifests != expect else "")
            + (f"; done counts {wrong_done}" if wrong_done else "") + (f"; unexpected {extra_done}" if extra_done else ""))

        # 6. checksums
        names = [chunk_name(m) for m in manifests]
        if (rd.models / "resume.json").exists():
            names.append(checkpoint.RESUME)
        bad_sums = []
        for n in names:
            try:
                m = checkpoint.verify(rd, n)
                if n != checkpoint.RESUME:
                    rec = recs.get(m["chunk"], {})
                    if rec.get("episodes_total") != m.get("episodes_total") or rec.get("timesteps_total") != m.get("timesteps"):
                        bad_sums.append(f"{n}: manifest totals differ from its chunk record")
            except checkpoint.DamagedCheckpoint as exc:
                bad_sums.append(f"{n}: {exc}")
        tmp_left = [p.name for p in rd.models.glob(".*.tmp")]
        add("checksums valid", not bad_sums and not tmp_left,
            f"{len(names)} manifests verified (sha256 + size of every file)"
            + (f"; {'; '.join(bad_sums[:3])}" if bad_sums else "") + (f"; temp files left {tmp_left}" if tmp_left else ""))

        # 7. damaged checkpoints: moved aside, none deleted, never loaded
        damaged_dirs = sorted(p for p in rd.damaged.iterdir() if p.is_dir()) if rd.damaged.is_dir() else []
        problems = []
        moved_lines = [m for s in sessions.values() for m in s["moved"]]
        for r in self.records:
            c = r.get("corrupted")
            if not c:
                continue
            hits = [d for d in damaged_dirs if d.name.startswith(c["name"] + ".")
                    and (d / c["file"]).exists() and checkpoint.sha256_file(d / c["file"]) == c["sha256"]]
            if len(hits) != 1:
                problems.append(f"{c['name']}/{c['file']}: {len(hits)} copies in damaged/")
                continue
            if not any(m["dest"] == str(hits[0]) for m in moved_lines):
                problems.append(f"{c['name']}: no 'moved to {hits[0]}' line in worker.log")
            # the first worker started after the corruption moved it aside and did not load it
            after = [s for pid, s in sessions.items() if s["t_first"] >= r["wall"] - 0.5 and pid != r.get("pid")]
            first = min(after, key=lambda s: s["t_first"]) if after else None
            if first is None or not any(m["name"] == c["name"] for m in first["moved"]):
                problems.append(f"{c['name']}: the next worker did not move it aside")
            elif first["resumed"] and first["resumed"][0] == c["name"]:
                problems.append(f"{c['name']}: loaded by worker {first['pid']}")
        n_corrupt = sum(1 for r in self.records if r.get("corrupted"))
        if len(damaged_dirs) != n_corrupt:
            problems.append(f"{len(damaged_dirs)} damaged entries for {n_corrupt} corruptions: "
                            + ", ".join(d.name for d in damaged_dirs[:6]))
        add("damaged never loaded", not problems,
            f"{n_corrupt} corrupted -> {len(damaged_dirs)} in models/damaged/ with the corrupted bytes, "
            f"0 deleted, 0 loaded" if not problems else "; ".join(problems[:4]))

        # 8. monotonic across chunks
        mono = []
        prev = None
        for c in chunks:
            cur = recs[c]
            base_e, base_t = (prev["episodes_total"], prev["timesteps_total"]) if prev else (0, 0)
            if cur["episodes_total"] - cur["episodes"] != base_e:
                mono.append(f"chunk {c}: episodes_total {cur['episodes_total']} - {cur['episodes']} != {base_e}")
            if cur["timesteps_total"] - cur["timesteps"] != base_t or cur["timesteps"] <= 0:
                mono.append(f"chunk {c}: timesteps_total {cur['timesteps_total']} - {cur['timesteps']} != {base_t}")
            if cur["episodes"] < EPISODES * N_ENVS:
                mono.append(f"chunk {c}: only {cur['episodes']} episodes")
            prev = cur
        final_eps = recs[chunks[-1]]["episodes_total"] if chunks else 0
        final_ts = recs[chunks[-1]]["timesteps_total"] if chunks else 0
        add("chunks monotonic", not mono and bool(chunks),
            f"episodes_total and timesteps_total chain exactly over {len(chunks)} chunks "
            f"(final {final_eps} episodes, {final_ts} timesteps)" if not mono else "; ".join(mono[:3]))

        # 9. monitor.csv
        rows, t_ok, mon_err = 0, True, ""
        try:
            lines = rd.monitor_csv.read_text().splitlines()
            body = lines[2:]
            ts = [float(ln.split(",")[2]) for ln in body]
            rows = len(body)
            t_ok = all(b >= a for a, b in zip(ts, ts[1:]))
            if lines[1] != "r,l,t,dist,fell":
                mon_err = f"header {lines[1]!r}"
        except (OSError, IndexError, ValueError) as exc:
            mon_err = str(exc)
        # rows: the episodes of the newest checkpoint (the final chunk after DONE; after a stop, the
        # resume point written by the stopped worker)
        newest: dict[str, Any] = {}
        for n in names:
            try:
                m = checkpoint.verify(rd, n)
            except checkpoint.DamagedCheckpoint:
                continue
            if m.get("created", 0) > newest.get("created", 0):
                newest = m
        want_rows = newest.get("episodes_total", 0)
        add("monitor.csv monotonic", rows == want_rows and t_ok and not mon_err,
            f"{rows} rows == final episodes_total {want_rows}; t column non-decreasing: {t_ok}"
            + (f"; {mon_err}" if mon_err else ""))

        # 10. work lost per fault
        with self.mon.lock:
            sps = max((r["max_sps"] for r in self.mon.hb.values()), default=0.0)
        interval_s = RESUME_POINT_MINUTES * 60.0
        rollout = N_STEPS * N_ENVS
        bound = int(sps * interval_s) + rollout
        losses, over, skipped = [], [], 0
        for r in self.records:
            victim = r.get("worker") if r["kind"] == "sup_kill" else r.get("pid")
            if r["kind"] == "stopcont" or not victim:
                continue
            nxt = None
            if victim in start_order:
                for p in start_order[start_order.index(victim) + 1:]:
                    s = sessions.get(p)
                    if s and s["resumed"]:
                        nxt = s
                        break
            if nxt is None:
                skipped += 1
                continue
            resumed_ts = nxt["resumed"][1]
            mine = sessions.get(victim, {})
            at = max([self.mon.ts_of(victim) or 0, *(mine.get("resume_points") or []),
                      (mine.get("resumed") or (None, 0))[1]])
            lost = max(0, at - resumed_ts)
            r["lost"] = {"at": at, "resumed": resumed_ts, "from": nxt["resumed"][0], "lost": lost}
            if r["kind"] == "corrupt":
                continue  # a damaged checkpoint costs the chunk it held: reported, not bounded
            losses.append(lost)
            if lost > bound:
                over.append(f"#{r['i']} {r['kind']}: lost {lost} (at {at}, resumed {resumed_ts} from {nxt['resumed'][0]})")
        corrupt_losses = [r["lost"]["lost"] for r in self.records if r.get("corrupted") and r.get("lost")]
        add("work lost per fault", not over and bool(losses) and sps > 0,
            f"max {max(losses, default=0)}, mean {sum(losses) / max(len(losses), 1):.0f} timesteps over "
            f"{len(losses)} worker deaths <= bound {bound} (= {interval_s:g} s x {sps:.0f} steps/s + rollout "
            f"{rollout})" + (f"; corrupted chunks redone: {corrupt_losses}" if corrupt_losses else "")
            + (f"; {skipped} without a later worker" if skipped else "") + (f"; OVER: {'; '.join(over[:3])}" if over else ""))

        # 11. one worker at a time
        add("one worker at a time", self.mon.max_workers <= 1,
            f"max {self.mon.max_workers} live train-chunk process groups over {self.mon.scans} process scans"
            + (f"; overlaps {self.mon.overlaps[:2]}" if self.mon.overlaps else ""))

        # 12. orphans
        add("no orphan processes", not self.orphans,
            f"{len(self.orphans)} processes name the run dir after the end"
            + (f": {self.orphans[:2]}" if self.orphans else ""))

        # 13. supervisor RSS
        growths, longest = [], 0.0
        with self.mon.lock:
            series = {k: list(v) for k, v in self.mon.sup_rss.items()}
        for samples in series.values():
            if len(samples) < 2:
                continue
            t_first = samples[0][0]
            settled = [s for s in samples if s[0] - t_first >= 10.0]
            longest = max(longest, samples[-1][0] - t_first)
            if len(settled) >= 2:
                growths.append(settled[-1][1] - settled[0][1])
        peak = max([self.mon.state_peak_rss] + [rss for s in series.values() for _, rss in s])
        growth = max(growths, default=0.0)
        add("supervisor RSS flat", peak < RSS_LIMIT_MB and growth <= RSS_GROWTH_LIMIT_MB and bool(series),
            f"peak {peak:.1f} MB < {RSS_LIMIT_MB:g}; growth {growth:+.1f} MB (limit {RSS_GROWTH_LIMIT_MB:g}) over "
            f"{len(series)} supervisors, longest {longest / 60:.1f} min")

        if self.mon.error:
            add("monitor", False, f"sampling thread error: {self.mon.error}")
        ok = all(c["ok"] for c in checks)
        return {
            "ok": ok, "seed": self.seed, "faults_requested": self.n_faults, "minutes": self.minutes,
            "run_dir": str(self.root), "duration_s": round(self.duration, 1), "target": self.target,
            "ended_by": self.ended_by, "by_kind": {k: by_kind[k] for k in KINDS}, "checks": checks,
            "faults": self.records, "daemon_starts": self.daemon_starts,
            "worker_startup_s": sorted(round(s, 1) for s in self.startups),
        }


# ---------------------------------------------------------------- output
def table(res: dict[str, Any]) -> str:
    lines = [f"go2train chaos: seed {res['seed']}, {res['faults_requested']} faults, {res['minutes']:g} min budget, "
             f"{res['duration_s'] / 60:.1f} min, run dir {res['run_dir']}", "",
             f"{'fault kind':<14}{'injected':>9}"]
    lines += [f"{k:<14}{res['by_kind'].get(k, 0):>9}" for k in KINDS]
    lines += [f"{'total':<14}{sum(res['by_kind'].values()):>9}", "",
              f"{'check':<30}{'result':<8}figures"]
    for c in res["checks"]:
        lines.append(f"{c['check']:<30}{'PASS' if c['ok'] else 'FAIL':<8}{c['figures']}")
    lines += ["", "ALL CHECKS PASS" if res["ok"] else "SOME CHECKS FAILED"]
    return "\n".join(lines)


def main(faults: int, minutes: float, seed: int, run_dir: Path | None, json_out: bool) -> int:
    if faults < 1:
        raise ChaosError(f"--faults must be >= 1, got {faults}")
    if not minutes > 0:
        raise ChaosError(f"--minutes must be > 0, got {minutes:g}")
    if run_dir is None:
        run_dir = Path(tempfile.mkdtemp(prefix="go2train-chaos-"))
    else:
        run_dir = run_dir.absolute()
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            raise ChaosError(f"--run-dir {run_dir} must be a new or empty directory")
        if not run_dir.parent.is_dir():
            raise ChaosError(f"--run-dir {run_dir}: parent directory does not exist")
        run_dir.mkdir(exist_ok=True)
    camp = Campaign(faults, minutes, seed, run_dir)
    try:
        res = camp.run()
    finally:
        for p in procs_mentioning(camp.root):  # never leave the campaign's processes behind
            try:
                p.kill()
            except psutil.Error:
                pass
    atomic_write_json(camp.root / "chaos" / "result.json", res)
    if json_out:
        print(json.dumps(res, indent=2, default=str))
    else:
        print(table(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "render-hook":
        sys.exit(render_hook(sys.argv[2], sys.argv[3]))
    print("usage: python -m go2train.chaos render-hook RUN_DIR CHUNK (use `go2train chaos`)", file=sys.stderr)
    sys.exit(2)
