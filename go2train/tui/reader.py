"""Reads a run directory into one plain snapshot dict: the data half of `go2train status`.

It never talks to the daemon: it reads ``logs/state.json``, ``logs/heartbeat.json``,
``logs/daemon.pid``, ``logs/chunks/*.json``, ``logs/events.jsonl``, ``logs/render.json`` and
``videos/*.mp4`` (docs/CONTRACTS.md), and asks psutil whether the processes they name still run
(:func:`go2train.run.identity.live_process`). :class:`Reader` re-reads only the files that changed
(the live loop); :func:`snapshot` is one look. The dict's keys are described in docs/STATUS.md;
``go2train status --json`` prints it. One function per section of the snapshot: chunks, config,
memory (the processes), disk, progress (the heartbeat), render, warnings.

No rich, no torch, no genesis here.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from go2train import guard
from go2train.config import Config, load
from go2train.run.files import as_int, num, read_json
from go2train.run.identity import live_process
from go2train.run.layout import RunDir, parse_chunk
from go2train.tui.fmt import fmt_duration

ACTIVE_STATES = ("STARTING", "RUNNING", "BACKOFF", "RENDERING", "STOPPING")
N_EVENTS = 8
STALE_FACTOR = 3.0  # heartbeat older than this many heartbeat_s while RUNNING = stale
DISK_MIN_PCT = 5.0
DISK_MIN_GB = 2.0
_DURATION_KEYS = ("startup_s", "train_s", "save_s")


class NoRun(Exception):
    """The directory holds no go2train run (no state, heartbeat, chunk metrics or models)."""


def has_run(run_dir: str | Path) -> bool:
    """True when the directory holds any trace of a run: state, heartbeat, chunk metrics, models."""
    rd = RunDir.at(run_dir)
    if rd.state.exists() or rd.heartbeat.exists():
        return True
    if rd.chunk_records() or rd.checkpoints():
        return True
    try:
        return any(n in ("resume.zip", "resume.json") or parse_chunk(n, ".zip") is not None for n in os.listdir(rd.models))
    except OSError:
        pass
    return False


def notable(ev: dict) -> bool:
    """Events worth a line on the screen: not state changes (the header shows the state) and not
    routine memory records (a GPU leak is shown)."""
    kind = ev.get("event")
    if kind == "state":
        return False
    if kind == "memory":
        return bool(ev.get("gpu_leak"))
    return True


@dataclass
class _EventTail:
    """Incremental reader of events.jsonl: keeps the last notable events and every restart time."""

    offset: int = 0
    pending: bytes = b""
    ident: tuple = ()
    last: list = field(default_factory=list)
    restart_times: list = field(default_factory=list)

    def update(self, path: Path) -> None:
        try:
            st = os.stat(path)
        except OSError:
            self.__init__()  # type: ignore[misc]
            return
        ident = (st.st_dev, st.st_ino)
        if ident != self.ident or st.st_size < self.offset:  # new or truncated file: start over
            self.__init__()  # type: ignore[misc]
            self.ident = ident
        if st.st_size == self.offset:
            return
        try:
            with open(path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return
        self.offset += len(data)
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()  # an incomplete last line waits for its end
        for ln in lines:
            self._add(ln)
        del self.last[:-N_EVENTS]

    def _add(self, line: bytes) -> None:
        try:
            ev = json.loads(line)
        except ValueError:
            return
        if not isinstance(ev, dict):
            return
        if ev.get("event") == "restart" and num(ev.get("time")) is not None:
            bisect.insort(self.restart_times, float(ev["time"]))
        if notable(ev):
            self.last.append(ev)


# ----------------------------------------------------------------------------- the sections


def _duration(c: dict) -> float | None:
    """A chunk's start-up + training + save seconds (None when the record has none of them)."""
    parts = [num(c.get(k)) for k in _DURATION_KEYS]
    if all(v is None for v in parts):
        return None
    return sum(v for v in parts if v)


def chunk_rows(raw_chunks: list[dict], restart_times: list[float], videos: set[int]) -> tuple[list[dict], int]:
    """The chunk records with ``restarts`` (counted between the previous chunk's end and this
    one's), ``video``, ``command_speed``/``speed`` and ``duration_s`` added; and the restarts since
    the last chunk finished."""
    chunks = []
    prev_end = -math.inf
    for c in raw_chunks:
        row = dict(c)
        end = num(c.get("finished"))
        if end is not None:
            row["restarts"] = bisect.bisect_right(restart_times, end) - bisect.bisect_right(restart_times, prev_end)
            prev_end = end
        else:
            row["restarts"] = None
        row["video"] = as_int(c.get("chunk")) in videos
        # what was commanded vs achieved (issue 13; a record from before: command_vx, forward speed)
        row["command_speed"], row["speed"] = guard.commanded(c)
        row["duration_s"] = _duration(c)
        chunks.append(row)
    return chunks, len(restart_times) - bisect.bisect_right(restart_times, prev_end)


def config_section(cfg: Config, raw_chunks: list[dict], chunks: list[dict]) -> dict[str, Any]:
    """The settings the screen shows: chunk size, the commands (the last chunk's, else the config's)."""
    command = {"vx_range": cfg.command.vx_range, "vy_range": cfg.command.vy_range,
               "yaw_range": cfg.command.yaw_range, "standing_share": cfg.command.standing_share}
    if raw_chunks and isinstance(raw_chunks[-1].get("command"), dict):
        command = raw_chunks[-1]["command"]  # what the last chunk trained with
    return {
        "episodes": cfg.chunk.episodes,
        "max_episodes": cfg.chunk.max_episodes,
        "command": command,
        "command_speed": chunks[-1]["command_speed"] if chunks else None,
        "heartbeat_s": cfg.chunk.heartbeat_s,
        "hang_timeout_s": cfg.supervisor.hang_timeout_s,
    }


def _rss_mb(proc: Any) -> float | None:
    if proc is None:
        return None
    try:
        return proc.memory_info().rss / 2**20
    except Exception:
        return None


def _supervisor(rd: RunDir, state: dict | None, now: float) -> tuple[int | None, Any]:
    """The supervisor's pid (state.json) and its live process, or None: a process started after
    state.json was written, or not the one logs/daemon.pid names with that pid, is a reused pid."""
    sup_pid = as_int(state.get("supervisor_pid")) if state else None
    if not sup_pid:
        return sup_pid, None
    updated = num(state.get("updated")) if state else None
    pidinfo = read_json(rd.pidfile)
    started = None
    if isinstance(pidinfo, dict) and as_int(pidinfo.get("pid")) == sup_pid:
        started = num(pidinfo.get("start_time"))
    return sup_pid, live_process(sup_pid, started=started, not_after=updated if updated is not None else now)


def worker_pid(state: dict | None, hb: dict | None) -> int | None:
    """The worker's pid: state.json's, or the heartbeat's when no supervisor ran (a worker by hand)."""
    if state is None and hb:
        return as_int(hb.get("pid"))
    return as_int(state.get("worker_pid")) if state else None


def memory_section(rd: RunDir, state: dict | None, hb: dict | None, now: float) -> dict[str, Any]:
    """The processes (supervisor and worker: pid, alive, RSS now) and the heartbeat's memory figures."""
    sup_pid, sup_proc = _supervisor(rd, state, now)
    wpid = worker_pid(state, hb)
    updated = num(state.get("updated")) if state else None
    hb_time = num(hb.get("time")) if hb else None
    worker_proc = live_process(wpid, not_after=max(x for x in (updated, hb_time, now) if x is not None))
    return {
        "supervisor_pid": sup_pid,
        "supervisor_alive": sup_proc is not None,
        "supervisor_rss_mb": _rss_mb(sup_proc),
        "worker_pid": wpid,
        "worker_alive": worker_proc is not None,
        "worker_rss_mb": _rss_mb(worker_proc),
        "heartbeat_rss_mb": num(hb.get("rss_mb")) if hb else None,
        "gpu_mem_mb": num(hb.get("gpu_mem_mb")) if hb else None,  # worker, NVML per-process
        "gpu_mem_peak_mb": num(hb.get("gpu_mem_peak_mb")) if hb else None,
        "torch_reserved_mb": num(hb.get("torch_reserved_mb")) if hb else None,
    }


def disk_section(root: Path) -> dict[str, Any] | None:
    """Free space on the run directory's file system."""
    try:
        du = shutil.disk_usage(root)
    except OSError:
        return None
    return {
        "free_gb": du.free / 1e9,
        "total_gb": du.total / 1e9,
        "free_pct": 100.0 * du.free / du.total if du.total else None,
    }


def phase_seconds(hb: dict, now: float) -> float | None:
    """How long the worker has been in its heartbeat's phase."""
    started = num(hb.get("phase_started"))
    if started is not None:
        return max(0.0, now - started)
    ps, t = num(hb.get("phase_s")), num(hb.get("time"))
    return max(0.0, ps + now - t) if ps is not None and t is not None else None


def progress_section(hb: dict | None, raw_chunks: list[dict], cfg: Config, now: float,
                     worker_alive: bool) -> dict[str, Any] | None:
    """The chunk in progress, from the heartbeat: fraction of its episodes done, ETA, phase."""
    if not hb:
        return None
    hb_time = num(hb.get("time"))
    hb_age = (now - hb_time) if hb_time is not None else None
    start_eps, target, eps = (num(hb.get(k)) for k in ("chunk_start_episodes", "target_episodes", "episodes"))
    frac = None
    if None not in (start_eps, target, eps) and target > start_eps:
        frac = min(1.0, max(0.0, (eps - start_eps) / (target - start_eps)))
    sps = num(hb.get("steps_per_s"))
    ep_len = num(raw_chunks[-1].get("ep_len_mean")) if raw_chunks else None
    ep_len = ep_len or float(cfg.env.episode_steps)
    eta = None
    if frac is not None and sps and sps > 0 and eps is not None:
        remaining = max(0.0, target - eps) * ep_len / sps
        eta = max(0.0, remaining - max(0.0, hb_age or 0.0))
    return {
        "chunk": as_int(hb.get("chunk")),
        "phase": hb.get("phase"),
        "phase_s": phase_seconds(hb, now),
        "fraction": frac,
        "episodes_done": (eps - start_eps) if None not in (eps, start_eps) else None,
        "episodes_needed": (target - start_eps) if None not in (target, start_eps) else None,
        "eta_s": eta,
        "steps_per_s": sps,
        "timesteps": as_int(hb.get("timesteps")),
        "heartbeat_age_s": hb_age,
        "worker_alive": worker_alive,
    }


def render_info(state: dict | None, prog: Any, now: float) -> dict | None:
    """The milestone render running beside the worker (state.json ``render_pid``), with frames
    done / total from logs/render.json when that file is this render's."""
    pid = as_int((state or {}).get("render_pid"))
    if not pid:
        return None
    started = num((state or {}).get("render_started"))
    info: dict[str, Any] = {"pid": pid, "chunk": as_int((state or {}).get("render_chunk")),
                            "pending": as_int((state or {}).get("render_pending")),
                            "elapsed_s": max(0.0, now - started) if started is not None else None,
                            "phase": None, "frames_done": None, "frames_total": None}
    if isinstance(prog, dict) and as_int(prog.get("pid")) == pid:
        info.update(phase=prog.get("phase"), frames_done=as_int(prog.get("frames_done")),
                    frames_total=as_int(prog.get("frames_total")))
    return info


# ----------------------------------------------------------------------------- warnings


def _state_name(state: dict | None) -> str | None:
    return str(state.get("state")) if state and state.get("state") else None


def _stale_heartbeat(state: dict | None, hb: dict | None, cfg: Config, now: float) -> dict | None:
    """While RUNNING: no sign of the worker (heartbeat, else state.json) for STALE_FACTOR × heartbeat_s."""
    if _state_name(state) != "RUNNING":
        return None
    limit = STALE_FACTOR * cfg.chunk.heartbeat_s
    hb_time = num(hb.get("time")) if hb else None
    updated = num(state.get("updated")) if state else None
    wpid = worker_pid(state, hb)
    ref = hb_time
    if hb is None or (wpid and as_int(hb.get("pid")) not in (None, wpid)):
        ref = max(x for x in (hb_time, updated, -math.inf) if x is not None)
    if ref is None or not math.isfinite(ref) or now - ref <= limit:
        return None
    what = "heartbeat" if hb else "no heartbeat yet"
    return {
        "kind": "stale_heartbeat",
        "message": f"{what}: last sign of the worker {fmt_duration(now - ref)} ago "
        f"(> {STALE_FACTOR:g} × heartbeat_s = {limit:g}s) while RUNNING — hung? the "
        f"watchdog restarts it after {cfg.supervisor.hang_timeout_s:g}s",
    }


def warnings_section(root: Path, state: dict | None, hb: dict | None, cfg: Config, now: float,
                     memory: dict, disk: dict | None, lazy: dict | None) -> list[dict[str, str]]:
    """What needs the user: FATAL, a vanished daemon, a stale heartbeat, a full disk, a lazy optimum."""
    warnings: list[dict[str, str]] = []
    st_name = _state_name(state)
    if st_name == "FATAL":
        reason = (state or {}).get("fatal_reason") or "no reason recorded; see logs/daemon.log"
        warnings.append({
            "kind": "fatal",
            "message": f"FATAL: {reason} — fix it, then: go2train daemon start --run-dir {root}",
        })
    sup_pid = memory["supervisor_pid"]
    if st_name in ACTIVE_STATES and sup_pid and not memory["supervisor_alive"]:
        warnings.append({
            "kind": "daemon_gone",
            "message": f"state.json says {st_name} but supervisor pid {sup_pid} is not running "
            f"on this machine — see logs/daemon.log; restart: go2train daemon start --run-dir {root}",
        })
    stale = _stale_heartbeat(state, hb, cfg, now)
    if stale:
        warnings.append(stale)
    if disk and disk["free_pct"] is not None and (disk["free_pct"] < DISK_MIN_PCT or disk["free_gb"] < DISK_MIN_GB):
        warnings.append({
            "kind": "disk",
            "message": f"disk nearly full: {disk['free_gb']:.1f} GB free "
            f"({disk['free_pct']:.1f} %) under {root}",
        })
    if lazy:
        warnings.append({"kind": lazy["kind"], "message": lazy["message"]})
    return warnings


# ----------------------------------------------------------------------------- the reader


def _dict_or_none(value: Any) -> dict | None:
    return value if isinstance(value, dict) else None


class Reader:
    """Reads a run directory into snapshots, re-reading only the files that changed."""

    def __init__(self, run_dir: str | Path, cfg: Config | None = None):
        self.rd = RunDir.at(run_dir)
        self.cfg = cfg if cfg is not None else load(None, self.rd.root)
        self._chunks: dict[str, tuple[tuple, dict]] = {}
        self._events = _EventTail()

    def _read_chunks(self) -> list[dict]:
        seen = {}
        for milestone in self.rd.chunk_records():
            path = self.rd.chunk_metrics(milestone)
            try:
                st = path.stat()
            except OSError:
                continue
            key = (st.st_mtime_ns, st.st_size)
            cached = self._chunks.get(path.name)
            if cached and cached[0] == key:
                seen[path.name] = cached
                continue
            data = read_json(path)
            if not isinstance(data, dict):
                continue
            if as_int(data.get("chunk")) is None:
                data["chunk"] = milestone
            seen[path.name] = (key, data)
        self._chunks = seen
        return sorted((d for _, d in seen.values()), key=lambda d: as_int(d["chunk"]))

    def _videos(self) -> set[int]:
        out = set()
        for milestone in self.rd.video_files():
            try:
                if self.rd.video(milestone).stat().st_size > 0:
                    out.add(milestone)
            except OSError:
                pass
        return out

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The run as a plain dict (docs/STATUS.md). Raises FileNotFoundError, :class:`NoRun`."""
        rd, cfg = self.rd, self.cfg
        if not rd.root.is_dir():
            raise FileNotFoundError(f"run directory {rd.root} does not exist")
        if not has_run(rd.root):
            raise NoRun(str(rd.root))
        now = time.time() if now is None else now
        state = _dict_or_none(read_json(rd.state))
        hb = _dict_or_none(read_json(rd.heartbeat))
        raw_chunks = self._read_chunks()
        self._events.update(rd.events)
        chunks, restarts_current = chunk_rows(raw_chunks, self._events.restart_times, self._videos())
        memory = memory_section(rd, state, hb, now)
        disk = disk_section(rd.root)
        lazy = guard.lazy_optimum_warning(raw_chunks)
        return {
            "run_dir": str(rd.root),
            "now": now,
            "state": state,
            "heartbeat": hb,
            "chunks": chunks,
            "events": self._events.last[-N_EVENTS:],
            "restarts_current_chunk": restarts_current,
            "progress": progress_section(hb, raw_chunks, cfg, now, memory["worker_alive"]),
            "render": render_info(state, read_json(rd.render_progress), now),
            "memory": memory,
            "disk": disk,
            "config": config_section(cfg, raw_chunks, chunks),
            "warnings": warnings_section(rd.root, state, hb, cfg, now, memory, disk, lazy),
            "guard": lazy,
        }


def snapshot(run_dir: str | Path, now: float | None = None, cfg: Config | None = None) -> dict:
    """One snapshot of ``run_dir`` (see :class:`Reader`). Raises :class:`NoRun`, FileNotFoundError,
    :class:`go2train.config.ConfigError`."""
    return Reader(run_dir, cfg).snapshot(now)
