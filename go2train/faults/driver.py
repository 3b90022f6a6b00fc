"""The run under test, as the campaign sees it: reading its files, finding its processes, waiting.

:class:`Driver` owns the campaign's run directory, clock (``t0``, ``t_end``) and environment (the
render hook in ``GO2TRAIN_RENDER_CMD``; no inherited worker command or failpoints), and answers
"which worker/supervisor is live now?" (:mod:`go2train.run.identity` plus the command line naming
this run dir) and "wait until ...". It runs ``go2train daemon start/stop``. It injects nothing:
that is :mod:`go2train.faults.inject`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from go2train.faults.monitor import Monitor, cmdline
from go2train.faults.plan import STARTUP_TIMEOUT_S
from go2train.run.files import read_json, read_jsonl
from go2train.run.identity import alive, live_process, lock_holder
from go2train.run.layout import STARTUP_PHASES, RunDir

PY = sys.executable
RENDER_HOOK = [PY, "-m", "go2train.faults", "render-hook", "{run_dir}", "{chunk}"]


class Driver:
    def __init__(self, run_dir: Path, minutes: float, out: TextIO | None = sys.stderr):
        self.rd = RunDir.at(run_dir)
        self.root = self.rd.root
        self.out = out
        self.t0 = time.time()
        self.t_end = self.t0 + minutes * 60.0
        self.mon = Monitor(self.rd)
        self.aborted: str | None = None
        self.daemon_starts: list[dict[str, Any]] = []
        self.env = dict(os.environ)
        for var in ("GO2TRAIN_WORKER_CMD", "GO2TRAIN_FAILPOINTS"):
            self.env.pop(var, None)
        self.env["GO2TRAIN_RENDER_CMD"] = json.dumps(RENDER_HOOK)

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

    def fired(self) -> dict[str, dict[str, Any]]:
        return {str(e.get("spec")): e for e in read_jsonl(self.rd.logs / "failpoints.fired")}

    # -- its processes
    def is_worker(self, pid: Any) -> bool:
        """A live ``go2train train-chunk`` of this run dir."""
        if not alive(pid):
            return False
        cmd = cmdline(pid)
        return "train-chunk" in cmd and str(self.root) in cmd

    def live_worker(self) -> int | None:
        pid = self.state().get("worker_pid")
        return pid if self.is_worker(pid) else None

    def supervisor_pid(self) -> int | None:
        """The live supervisor holding this run dir's pidfile lock, or None."""
        held = lock_holder(self.rd.pidfile)
        pid = held.get("pid") if held else None
        if live_process(pid, held and held.get("start_time")) is None:
            return None
        cmd = cmdline(pid)
        return pid if "daemon" in cmd and str(self.root) in cmd else None

    def snapshot(self, pid: int | None) -> dict[str, Any]:
        """Where the run is (for a fault's record): the worker's chunk, phase and timesteps."""
        hb, st = self.heartbeat(), self.state()
        mine = pid is not None and hb.get("pid") == pid
        return {"pid": pid, "chunk": hb.get("chunk") if mine else st.get("chunk"),
                "phase": hb.get("phase") if mine else None,
                "timesteps": (self.mon.ts_of(pid) if pid else None) or (hb.get("timesteps") if mine else None),
                "state": st.get("state")}

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
        """The live worker once it is in ``phase`` ("starting", "training" or "any")."""
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
        """The supervisor's ``exit`` event of worker ``pid``."""
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

    # -- the daemon
    def daemon(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        return subprocess.run([PY, "-m", "go2train", "daemon", *args, "--run-dir", str(self.root)], env=self.env,
                              capture_output=True, text=True, timeout=timeout, start_new_session=True)

    def start_daemon(self) -> int | None:
        """``go2train daemon start``: the new supervisor's pid (None on failure, logged)."""
        r = self.daemon("start")
        m = re.search(r"pid (\d+)", r.stdout)
        pid = int(m.group(1)) if r.returncode == 0 and m else None
        self.daemon_starts.append({"t": round(time.time() - self.t0, 2), "rc": r.returncode, "pid": pid,
                                   "stderr": r.stderr.strip()[-500:]})
        if pid is None:
            self.say(f"daemon start failed: rc {r.returncode}: {r.stderr.strip()[-300:]}")
        return pid
