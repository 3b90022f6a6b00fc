"""The campaign loop: set up the run, start the daemon, apply the plan fault by fault, drive the run
to its target, then check; and ``main`` behind ``go2train chaos``.

:class:`Campaign` (a :class:`~go2train.faults.driver.Driver`) keeps the fault records
(``RUN_DIR/chaos/faults.jsonl``), decides when faults stop (the time the run needs to finish) and
sets the target (``[chunk] max_episodes`` = the chunk in progress, right after the last fault hits).
The injectors are :mod:`go2train.faults.inject`; the checks :mod:`go2train.faults.checks`.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import psutil

from go2train.faults.checks import Evidence, gather, run_checks, table
from go2train.faults.driver import Driver
from go2train.faults.inject import INJECTORS
from go2train.faults.monitor import cmdline, procs_mentioning
from go2train.faults.plan import (
    EPISODES,
    KINDS,
    STOP_TIMEOUT_S,
    campaign_toml,
    make_plan,
    render_failures,
)
from go2train.run.files import append_jsonl, atomic_write_bytes, atomic_write_json


class ChaosError(Exception):
    """Bad input (one line)."""


class Campaign(Driver):
    def __init__(self, faults: int, minutes: float, seed: int, run_dir: Path, out: TextIO | None = sys.stderr):
        super().__init__(run_dir, minutes, out)
        self.n_faults = faults
        self.minutes = minutes
        self.seed = seed
        self.plan = make_plan(faults, seed)
        self.records: list[dict[str, Any]] = []
        self.sup_kills: set[int] = set()  # supervisor pids we killed
        self.target: int | None = None
        self.ended_by: str | None = None
        self.startups: list[float] = []  # observed worker start-up seconds (spawn -> training)
        self.orphans: list[dict[str, Any]] = []
        self.duration = 0.0

    # -- the fault records and the target
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

    def set_target(self) -> int:
        """``[chunk] max_episodes`` = the chunk in progress: every worker started from now on stops
        there (one started earlier finishes it with exit 0; the next one then exits RUN_COMPLETE)."""
        records = self.rd.chunk_records()
        hb_chunk = self.heartbeat().get("chunk")
        target = max(max(records, default=0) + EPISODES, hb_chunk if isinstance(hb_chunk, int) else 0)
        atomic_write_bytes(self.rd.config_file, campaign_toml(self.n_faults, max_episodes=target).encode())
        self.say(f"target: [chunk] max_episodes = {target} (the chunk in progress)")
        return target

    # -- time
    def drain_estimate(self) -> float:
        """Seconds the run needs to finish after the last fault: about one worker start-up and chunk."""
        ups = sorted(self.startups) or [60.0]
        return 1.5 * ups[len(ups) // 2] + 40.0

    def note_startups(self) -> None:
        """Observed worker start-up times: spawn (``start`` event) to the first training heartbeat."""
        starts = {e["pid"]: e["time"] for e in self.events("start") if e.get("pid")}
        trained = self.mon.trained_at()
        self.startups = [max(0.0, trained[p] - t) for p, t in starts.items() if p in trained]

    # -- the run
    def setup(self) -> None:
        """The config, the plan and the render plan, written before the daemon starts."""
        (self.root / "chaos").mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.rd.config_file, campaign_toml(self.n_faults).encode())
        atomic_write_json(self.root / "chaos" / "plan.json", {"seed": self.seed, "faults": self.plan})
        atomic_write_json(self.root / "chaos" / "render_plan.json", {"fail": render_failures(self.seed)})
        self.say(f"run dir {self.root}; seed {self.seed}; {self.n_faults} faults; {self.minutes:g} min")

    def apply_plan(self) -> None:
        """Each fault in turn, while the time left exceeds what the run needs to finish."""
        for f in self.plan:
            if self.aborted:
                break
            self.note_startups()
            if self.time_left() < self.drain_estimate():
                self.say(f"time is up for faults: {len(self.records)} of {self.n_faults} injected")
                break
            INJECTORS[f["kind"]](self, f)

    def finish(self) -> None:
        """Wait for DONE at the target (set now if no fault set it); else ``daemon stop``."""
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

    def run(self) -> dict[str, Any]:
        self.setup()
        self.mon.start()
        try:
            if self.start_daemon() is None:
                self.aborted = "daemon start failed"
            self.apply_plan()
            self.finish()
            time.sleep(1.0)
        finally:
            self.mon.stop()
            self.orphans = self._orphans_after()
        self.duration = time.time() - self.t0
        return self.result()

    def _orphans_after(self) -> list[dict[str, Any]]:
        """Processes still naming the run dir a few seconds after the end (then killed: cleanup)."""
        deadline = time.time() + 5.0
        left = procs_mentioning(self.root)
        while left and time.time() < deadline:
            time.sleep(0.2)
            left = procs_mentioning(self.root)
        out = [{"pid": p.pid, "cmdline": cmdline(p.pid)} for p in left]
        for p in left:
            try:
                if os.getpgid(p.pid) == p.pid and p.pid != os.getpgrp():
                    os.killpg(p.pid, signal.SIGKILL)
                else:
                    p.kill()
            except (psutil.Error, OSError):
                pass
        return out

    # -- the result
    def result(self) -> dict[str, Any]:
        """The checks and the campaign's record (printed as a table or JSON, kept in result.json)."""
        ev = gather(Evidence(
            rd=self.rd, records=self.records, n_faults=self.n_faults, aborted=self.aborted, target=self.target,
            ended_by=self.ended_by, final_state=self.state().get("state"), duration=self.duration,
            sup_kills=self.sup_kills, mon=self.mon, orphans=self.orphans))
        checks = run_checks(ev)
        return {
            "ok": all(c["ok"] for c in checks), "seed": self.seed, "faults_requested": self.n_faults,
            "minutes": self.minutes, "run_dir": str(self.root), "duration_s": round(self.duration, 1),
            "target": self.target, "ended_by": self.ended_by, "by_kind": {k: ev.by_kind[k] for k in KINDS},
            "checks": checks, "faults": self.records, "daemon_starts": self.daemon_starts,
            "worker_startup_s": sorted(round(s, 1) for s in self.startups),
        }


def _run_dir(run_dir: Path | None) -> Path:
    """``--run-dir``: a new or empty directory (made here), or a fresh temp dir."""
    if run_dir is None:
        return Path(tempfile.mkdtemp(prefix="go2train-chaos-"))
    run_dir = run_dir.absolute()
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise ChaosError(f"--run-dir {run_dir} must be a new or empty directory")
    if not run_dir.parent.is_dir():
        raise ChaosError(f"--run-dir {run_dir}: parent directory does not exist")
    run_dir.mkdir(exist_ok=True)
    return run_dir


def main(faults: int, minutes: float, seed: int, run_dir: Path | None, json_out: bool) -> int:
    """``go2train chaos``: run a campaign, print the table (or JSON); 0 only if every check passes."""
    if faults < 1:
        raise ChaosError(f"--faults must be >= 1, got {faults}")
    if not minutes > 0:
        raise ChaosError(f"--minutes must be > 0, got {minutes:g}")
    camp = Campaign(faults, minutes, seed, _run_dir(run_dir))
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
