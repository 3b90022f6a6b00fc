"""Watching a campaign's processes: the sampling thread and the process-table scans.

:class:`Monitor` samples the run every 0.25 s (heartbeats per worker pid, peak steps/s, supervisor
RSS) and scans the process table every fourth sample (live ``train-chunk`` process groups: never
more than one). :func:`procs_mentioning` finds the processes that name the run directory (one
worker at a time, orphans, cleanup). Liveness is :mod:`go2train.run.identity`'s.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from go2train.run.files import read_json
from go2train.run.identity import live_process
from go2train.run.layout import RunDir


def cmdline(pid: int) -> str:
    """The command line of process ``pid`` as one string ("" when it is gone)."""
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


def _new_hb_record(now: float) -> dict[str, Any]:
    return {"max_ts": 0, "max_sps": 0.0, "phase": None, "chunk": None, "first": now, "last": now,
            "trained": False, "t_train": None, "beat": None}


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
                self._beat(hb, now)
            st = read_json(self.rd.state)
            if isinstance(st, dict):
                self._supervisor(st, now)
        if scan:
            self._scan(now)

    def _beat(self, hb: dict[str, Any], now: float) -> None:
        """One heartbeat: its worker's timesteps, phase and peak steps/s (lock held)."""
        rec = self.hb.setdefault(hb["pid"], _new_hb_record(now))
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

    def _supervisor(self, st: dict[str, Any], now: float) -> None:
        """The supervisor's RSS: its own peak from state.json and a sample of the live one (lock held)."""
        self.state_peak_rss = max(self.state_peak_rss, float(st.get("supervisor_peak_rss_mb") or 0.0))
        sp = st.get("supervisor_pid")
        proc = live_process(sp)
        if proc is not None:
            try:
                rss = proc.memory_info().rss / 2**20
                self.sup_rss.setdefault(sp, []).append((now, rss))
            except psutil.Error:
                pass

    def _scan(self, now: float) -> None:
        # Workers are started in their own session: count process-group leaders. A worker's own
        # children (Genesis/torch start-up runs `file`, `ldconfig`, cpuinfo...) carry its command
        # line between fork and exec, but belong to its group.
        workers = []
        for p in procs_mentioning(self.rd.root):
            try:
                if "train-chunk" in cmdline(p.pid) and os.getpgid(p.pid) == p.pid:
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

    def max_sps(self) -> float:
        """The peak steps/s of any worker so far."""
        with self.lock:
            return max((r["max_sps"] for r in self.hb.values()), default=0.0)

    def trained_at(self) -> dict[int, float]:
        """Per worker pid: when its first training heartbeat was seen."""
        with self.lock:
            return {pid: rec["t_train"] for pid, rec in self.hb.items() if rec["t_train"]}

    def rss_series(self) -> dict[int, list[tuple[float, float]]]:
        with self.lock:
            return {k: list(v) for k, v in self.sup_rss.items()}

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=5)
