"""`go2train status`: a rich dashboard of a run, read only from files in the run directory.

It never talks to the daemon: it reads ``logs/state.json``, ``logs/heartbeat.json``,
``logs/chunks/*.json``, ``logs/events.jsonl`` and ``videos/*.mp4`` (docs/CONTRACTS.md), so it works
while the daemon runs, after it stopped, over ssh and in a second terminal.

Two halves, so tests can drive them separately:

* :func:`snapshot` (or :class:`Reader` for the live loop, which caches unchanged files) turns a run
  directory into a plain dict: the raw files plus derived figures (progress, ETA, restarts per chunk,
  memory, disk, warnings). ``go2train status --json`` prints it.
* :func:`render` turns that dict into a rich renderable.

No torch, no genesis here.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import re
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from go2train import guard
from go2train.config import Config, load
from go2train.run.files import read_json
from go2train.run.layout import RunDir, parse_chunk

ACTIVE_STATES = ("STARTING", "RUNNING", "BACKOFF", "RENDERING", "STOPPING")
STATE_STYLES = {
    "STARTING": "bold cyan",
    "RUNNING": "bold green",
    "BACKOFF": "bold yellow",
    "RENDERING": "bold magenta",
    "STOPPING": "yellow",
    "STOPPED": "dim",
    "FATAL": "bold white on red",
    "DONE": "bold blue",
}
N_EVENTS = 8
STALE_FACTOR = 3.0  # heartbeat older than this many heartbeat_s while RUNNING = stale
DISK_MIN_PCT = 5.0
DISK_MIN_GB = 2.0
SPARKS = "▁▂▃▄▅▆▇█"
MAX_ROWS_UNFITTED = 50  # chunk rows printed when no terminal height is known
OK_EXITS = ("chunk_done", "run_complete", "stopped")


class NoRun(Exception):
    """The directory holds no go2train run (no state, heartbeat, chunk metrics or models)."""


# ----------------------------------------------------------------------------- small helpers


def num(value: Any) -> float | None:
    """A finite float or None: files may hold anything, a reader never crashes."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def as_int(value: Any) -> int | None:
    v = num(value)
    return int(v) if v is not None else None


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = int(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_mb(mb: float | None) -> str:
    if mb is None:
        return "—"
    return f"{mb / 1024:.1f} GB" if mb >= 1024 else f"{mb:.0f} MB"


def fmt_int(value: Any) -> str:
    v = as_int(value)
    return f"{v:,}" if v is not None else "—"


def fmt_num(value: Any, fmt: str = ".2f") -> str:
    v = num(value)
    return format(v, fmt) if v is not None else "—"


def fmt_time(t: float | None, now: float) -> str:
    """Local wall-clock time; with the date when not today."""
    if t is None:
        return "—"
    lt, ln = time.localtime(t), time.localtime(now)
    if (lt.tm_year, lt.tm_yday) == (ln.tm_year, ln.tm_yday):
        return time.strftime("%H:%M:%S", lt)
    return time.strftime("%m-%d %H:%M", lt)


def sparkline(values: list[float | None], width: int = 60) -> str:
    """Unicode sparkline of the last ``width`` values (a gap for a missing one)."""
    values = values[-width:] if width > 0 else []
    present = [v for v in values if v is not None]
    if not present:
        return ""
    lo, hi = min(present), max(present)
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif hi == lo:
            out.append(SPARKS[3])
        else:
            out.append(SPARKS[min(len(SPARKS) - 1, int((v - lo) / (hi - lo) * len(SPARKS)))])
    return "".join(out)


# ----------------------------------------------------------------------------- reading


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


def _process(pid: Any, not_after: float | None) -> Any:
    """psutil.Process for a live pid, or None; a process created after ``not_after`` is a reused pid."""
    pid = as_int(pid)
    if not pid or pid <= 0:
        return None
    try:
        import psutil

        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if not_after is not None and proc.create_time() > not_after + 2.0:
            return None
        return proc
    except Exception:  # NoSuchProcess, AccessDenied, no psutil: not something we can show
        return None


def _rss_mb(proc: Any) -> float | None:
    if proc is None:
        return None
    try:
        return proc.memory_info().rss / 2**20
    except Exception:
        return None


STARTUP_HINTS = {  # what a start-up phase is doing, for a newcomer
    "importing": "importing torch and Genesis",
    "building_scene": "building the Genesis scene",
    "compiling_kernels": "compiling Genesis kernels — first run on this machine, cached afterwards",
    "loading_kernels": "building with cached Genesis kernels",
    "loading_checkpoint": "loading the checkpoint",
}


def phase_seconds(hb: dict, now: float) -> float | None:
    """How long the worker has been in its heartbeat's phase."""
    started = num(hb.get("phase_started"))
    if started is not None:
        return max(0.0, now - started)
    ps, t = num(hb.get("phase_s")), num(hb.get("time"))
    return max(0.0, ps + now - t) if ps is not None and t is not None else None


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
            try:
                ev = json.loads(ln)
            except ValueError:
                continue
            if not isinstance(ev, dict):
                continue
            if ev.get("event") == "restart" and num(ev.get("time")) is not None:
                bisect.insort(self.restart_times, float(ev["time"]))
            if notable(ev):
                self.last.append(ev)
        del self.last[:-N_EVENTS]


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
        if not self.rd.root.is_dir():
            raise FileNotFoundError(f"run directory {self.rd.root} does not exist")
        if not has_run(self.rd.root):
            raise NoRun(str(self.rd.root))
        now = time.time() if now is None else now
        cfg = self.cfg
        rd = self.rd
        state = read_json(rd.state)
        state = state if isinstance(state, dict) else None
        hb = read_json(rd.heartbeat)
        hb = hb if isinstance(hb, dict) else None
        raw_chunks = self._read_chunks()
        self._events.update(rd.events)
        events = self._events.last[-N_EVENTS:]
        restart_times = self._events.restart_times
        videos = self._videos()

        # chunks, with restarts counted between the previous chunk's end and this one's
        chunks = []
        prev_end = -math.inf
        for c in raw_chunks:
            row = dict(c)
            end = num(c.get("finished"))
            if end is not None:
                row["restarts"] = bisect.bisect_right(restart_times, end) - bisect.bisect_right(
                    restart_times, prev_end
                )
                prev_end = end
            else:
                row["restarts"] = None
            row["video"] = as_int(c.get("chunk")) in videos
            # what was commanded vs achieved (issue 13; a record from before: command_vx, forward speed)
            row["command_speed"], row["speed"] = guard.commanded(c)
            row["duration_s"] = (
                sum(v for v in (num(c.get(k)) for k in ("startup_s", "train_s", "save_s")) if v)
                if any(num(c.get(k)) is not None for k in ("startup_s", "train_s", "save_s"))
                else None
            )
            chunks.append(row)
        restarts_current = len(restart_times) - bisect.bisect_right(restart_times, prev_end)

        command = {"vx_range": cfg.command.vx_range, "vy_range": cfg.command.vy_range,
                   "yaw_range": cfg.command.yaw_range, "standing_share": cfg.command.standing_share}
        if raw_chunks and isinstance(raw_chunks[-1].get("command"), dict):
            command = raw_chunks[-1]["command"]  # what the last chunk trained with
        config = {
            "episodes": cfg.chunk.episodes,
            "max_episodes": cfg.chunk.max_episodes,
            "command": command,
            "command_speed": chunks[-1]["command_speed"] if chunks else None,
            "heartbeat_s": cfg.chunk.heartbeat_s,
            "hang_timeout_s": cfg.supervisor.hang_timeout_s,
        }

        st_name = str(state.get("state")) if state and state.get("state") else None
        active = st_name in ACTIVE_STATES
        updated = num(state.get("updated")) if state else None

        # processes: the supervisor (pid from state.json, checked against daemon.pid) and the worker
        pidinfo = read_json(rd.pidfile)
        sup_pid = as_int(state.get("supervisor_pid")) if state else None
        sup_proc = None
        if sup_pid:
            ref = updated if updated is not None else now
            sup_proc = _process(sup_pid, ref)
            if (
                sup_proc is not None
                and isinstance(pidinfo, dict)
                and as_int(pidinfo.get("pid")) == sup_pid
                and num(pidinfo.get("start_time")) is not None
            ):
                try:
                    if abs(sup_proc.create_time() - float(pidinfo["start_time"])) > 2.0:
                        sup_proc = None
                except Exception:
                    sup_proc = None
        worker_pid = as_int(state.get("worker_pid")) if state else None
        if state is None and hb:  # no supervisor (a worker run by hand): the heartbeat's pid
            worker_pid = as_int(hb.get("pid"))
        hb_time = num(hb.get("time")) if hb else None
        worker_proc = _process(worker_pid, max(x for x in (updated, hb_time, now) if x is not None))
        memory = {
            "supervisor_pid": sup_pid,
            "supervisor_alive": sup_proc is not None,
            "supervisor_rss_mb": _rss_mb(sup_proc),
            "worker_pid": worker_pid,
            "worker_alive": worker_proc is not None,
            "worker_rss_mb": _rss_mb(worker_proc),
            "heartbeat_rss_mb": num(hb.get("rss_mb")) if hb else None,
            "gpu_mem_mb": num(hb.get("gpu_mem_mb")) if hb else None,  # worker, NVML per-process
            "gpu_mem_peak_mb": num(hb.get("gpu_mem_peak_mb")) if hb else None,
            "torch_reserved_mb": num(hb.get("torch_reserved_mb")) if hb else None,
        }

        try:
            du = shutil.disk_usage(rd.root)
            disk = {
                "free_gb": du.free / 1e9,
                "total_gb": du.total / 1e9,
                "free_pct": 100.0 * du.free / du.total if du.total else None,
            }
        except OSError:
            disk = None

        # the chunk in progress, from the heartbeat
        progress = None
        hb_age = (now - hb_time) if hb_time is not None else None
        if hb:
            start_eps = num(hb.get("chunk_start_episodes"))
            target = num(hb.get("target_episodes"))
            eps = num(hb.get("episodes"))
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
            progress = {
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
                "worker_alive": worker_proc is not None,
            }

        # warnings: what needs the user
        warnings: list[dict[str, str]] = []
        if st_name == "FATAL":
            reason = (state or {}).get("fatal_reason") or "no reason recorded; see logs/daemon.log"
            warnings.append({
                "kind": "fatal",
                "message": f"FATAL: {reason} — fix it, then: go2train daemon start --run-dir {rd.root}",
            })
        if active and sup_pid and sup_proc is None:
            warnings.append({
                "kind": "daemon_gone",
                "message": f"state.json says {st_name} but supervisor pid {sup_pid} is not running "
                f"on this machine — see logs/daemon.log; restart: go2train daemon start --run-dir {rd.root}",
            })
        if st_name == "RUNNING":
            limit = STALE_FACTOR * cfg.chunk.heartbeat_s
            ref = hb_time
            if hb is None or (worker_pid and as_int(hb.get("pid")) not in (None, worker_pid)):
                ref = max(x for x in (hb_time, updated, -math.inf) if x is not None)
            if ref is not None and math.isfinite(ref) and now - ref > limit:
                what = "heartbeat" if hb else "no heartbeat yet"
                warnings.append({
                    "kind": "stale_heartbeat",
                    "message": f"{what}: last sign of the worker {fmt_duration(now - ref)} ago "
                    f"(> {STALE_FACTOR:g} × heartbeat_s = {limit:g}s) while RUNNING — hung? the "
                    f"watchdog restarts it after {cfg.supervisor.hang_timeout_s:g}s",
                })
        if disk and disk["free_pct"] is not None and (
            disk["free_pct"] < DISK_MIN_PCT or disk["free_gb"] < DISK_MIN_GB
        ):
            warnings.append({
                "kind": "disk",
                "message": f"disk nearly full: {disk['free_gb']:.1f} GB free "
                f"({disk['free_pct']:.1f} %) under {rd.root}",
            })
        lazy = guard.lazy_optimum_warning(raw_chunks)
        if lazy:
            warnings.append({"kind": lazy["kind"], "message": lazy["message"]})

        return {
            "run_dir": str(rd.root),
            "now": now,
            "state": state,
            "heartbeat": hb,
            "chunks": chunks,
            "events": events,
            "restarts_current_chunk": restarts_current,
            "progress": progress,
            "render": render_info(state, read_json(rd.render_progress), now),
            "memory": memory,
            "disk": disk,
            "config": config,
            "warnings": warnings,
            "guard": lazy,
        }


def snapshot(run_dir: str | Path, now: float | None = None, cfg: Config | None = None) -> dict:
    """One snapshot of ``run_dir`` (see :class:`Reader`). Raises :class:`NoRun`, FileNotFoundError,
    :class:`go2train.config.ConfigError`."""
    return Reader(run_dir, cfg).snapshot(now)


# ----------------------------------------------------------------------------- rendering


def _state_text(snap: dict) -> Text:
    state = snap.get("state") or {}
    name = str(state.get("state") or "NO DAEMON")
    return Text(f"● {name}", style=STATE_STYLES.get(name, "bold"))


def _header(snap: dict) -> Panel:
    now = snap["now"]
    state = snap.get("state") or {}
    hb = snap.get("heartbeat") or {}
    mem = snap.get("memory") or {}
    name = state.get("state")
    line1 = Text.assemble(_state_text(snap))
    if not state:
        line1.append("  (no logs/state.json: the supervisor has not run here)", style="dim")
    if mem.get("supervisor_pid"):
        alive = "alive" if mem.get("supervisor_alive") else ("gone" if name in ACTIVE_STATES else "exited")
        line1.append(f"   supervisor pid {mem['supervisor_pid']} ({alive})")
    started, updated = num(state.get("started")), num(state.get("updated"))
    if started is not None:
        if name in ACTIVE_STATES:
            line1.append(f"   up {fmt_duration(now - started)}")
        elif updated is not None:
            line1.append(f"   ran {fmt_duration(updated - started)}, ended {fmt_duration(now - updated)} ago")
    backend, device = hb.get("backend"), hb.get("device")
    if backend or device:
        line1.append(f"   backend {backend or '—'} / device {device or '—'}")
    if hb.get("n_envs"):
        line1.append(f"   {fmt_int(hb.get('n_envs'))} envs")
    if hb.get("profile") in ("cpu", "gpu"):
        line1.append(f" ({str(hb['profile']).upper()} profile)", style="dim")

    line2 = Text.assemble(("run ", "dim"), snap["run_dir"])
    if name == "BACKOFF":
        nr = num(state.get("next_retry"))
        line2.append("   next retry ", style="yellow")
        line2.append(f"in {fmt_duration(nr - now)}" if nr is not None else "pending", style="yellow")

    line3 = Text()
    restarts = state.get("restarts") if isinstance(state.get("restarts"), dict) else {}
    line3.append(
        f"restarts {fmt_int(restarts.get('total', 0))} total, "
        f"{fmt_int(restarts.get('consecutive', 0))} consecutive"
    )
    le = state.get("last_exit") if isinstance(state.get("last_exit"), dict) else None
    if le:
        bad = le.get("reason") not in OK_EXITS
        what = le.get("signal") or f"code {le.get('code')}"
        line3.append("   last exit: ")
        line3.append(f"{what} ({le.get('reason') or '?'})", style="bold red" if bad else "green")
        line3.append(f" after {fmt_duration(num(le.get('duration_s')))} at {fmt_time(num(le.get('time')), now)}")
    cfg = snap.get("config") or {}
    sub = f"chunks of {cfg.get('episodes', '?')} episodes · commands {describe_command(cfg.get('command'))}"
    return Panel(
        Group(line1, line2, line3),
        title="[bold]go2train status[/]",
        title_align="left",
        subtitle=f"{sub} · {fmt_time(now, now)}",
        subtitle_align="right",
        box=box.ROUNDED,
    )


def describe_command(c: Any) -> str:
    """``vx ±1.00 vy ±0.50 yaw ±1.00 rad/s, stand 10%`` from a [command]-like dict."""
    if not isinstance(c, dict):
        return "?"

    def rng(r: Any) -> str:
        if not (isinstance(r, list) and len(r) == 2 and all(num(x) is not None for x in r)):
            return "?"
        lo, hi = float(r[0]), float(r[1])
        if lo == hi:
            return f"{lo:+.2f}"
        return f"±{hi:.2f}" if lo == -hi else f"{lo:+.2f}…{hi:+.2f}"

    share = num(c.get("standing_share"))
    return (f"vx {rng(c.get('vx_range'))} vy {rng(c.get('vy_range'))} m/s, yaw {rng(c.get('yaw_range'))} rad/s"
            + (f", stand {share:.0%}" if share else ""))


def _warnings(snap: dict) -> Panel | None:
    ws = snap.get("warnings") or []
    if not ws:
        return None
    lines = [Text.assemble(("⚠ ", "bold red"), (w["message"], "red" if w["kind"] in ("fatal", "daemon_gone") else "yellow")) for w in ws]
    return Panel(Group(*lines), title="[bold red]needs you[/]", title_align="left", border_style="red", box=box.HEAVY)


def _current(snap: dict, width: int = 120) -> Panel:
    p = snap.get("progress")
    state = (snap.get("state") or {}).get("state")
    chunks = snap.get("chunks") or []
    cfg = snap.get("config") or {}
    if p is None:
        nxt = (as_int(chunks[-1].get("chunk")) or 0) + int(cfg.get("episodes") or 0) if chunks else cfg.get("episodes")
        body: RenderableType = Text(f"no heartbeat yet — next milestone {nxt}", style="dim")
        rl = _render_line(snap)
        if rl is not None:
            body = Group(body, rl)
        return Panel(body, title="current chunk", title_align="left", box=box.ROUNDED)

    live = p.get("worker_alive") and state not in ("STOPPED", "DONE", "FATAL")
    frac = p.get("fraction")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True, min_width=11)
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True, overflow="ellipsis")
    bar: RenderableType = ProgressBar(
        total=1.0, completed=frac or 0.0, width=max(10, min(30, width - 90)),
        complete_style="green" if live else "grey50", finished_style="green" if live else "grey50",
    ) if frac is not None else Text("")
    pct = f"{100 * frac:.0f}%" if frac is not None else "—"
    eps = f"{fmt_int(p.get('episodes_done'))} / {fmt_int(p.get('episodes_needed'))} episodes"
    if live:
        eta = Text(f"ETA {fmt_duration(p.get('eta_s'))}" if p.get("eta_s") is not None else "", style="bold")
    else:
        eta = Text("worker not running", style="dim")
    grid.add_row(Text(f"chunk → {p.get('chunk') if p.get('chunk') is not None else '?'}", style="bold"),
                 bar, Text(f"{pct}  {eps}"), eta)
    age = p.get("heartbeat_age_s")
    info = Text()
    info.append(f"phase {p.get('phase') or '?'}")
    if p.get("phase_s") is not None and live:
        info.append(f" {fmt_duration(p.get('phase_s'))}")
    hint = STARTUP_HINTS.get(str(p.get("phase")))
    if hint and live:
        info.append(f" ({hint})", style="cyan")
    info.append("   ")
    info.append(f"{fmt_num(p.get('steps_per_s'), ',.0f')} env-steps/s   timesteps {fmt_int(p.get('timesteps'))}   ")
    info.append(f"heartbeat {fmt_duration(age)} ago", style="red" if any(w["kind"] == "stale_heartbeat" for w in snap.get("warnings") or []) else "")
    rc = snap.get("restarts_current_chunk") or 0
    if rc:
        info.append(f"   restarts this chunk {rc}", style="yellow")
    parts: list[RenderableType] = [grid, info]
    rl = _render_line(snap)
    if rl is not None:
        parts.append(rl)
    return Panel(Group(*parts), title="current chunk", title_align="left", box=box.ROUNDED)


def _render_line(snap: dict) -> Text | None:
    """``video chunk 50 rendering 120/400 frames (30%) 1m02s, pid N`` for a render beside the chunk."""
    r = snap.get("render")
    if not r:
        return None
    t = Text("video ", style="magenta")
    t.append(f"chunk {r.get('chunk') if r.get('chunk') is not None else '?'} ", style="bold magenta")
    done, total = r.get("frames_done"), r.get("frames_total")
    if r.get("phase") == "starting" or (done is None and total is None):
        t.append("starting")
        if total:
            t.append(f" (0/{total} frames)")
    else:
        t.append(f"{done}/{total} frames")
        if done is not None and total:
            t.append(f" ({100 * done / total:.0f}%)")
    t.append(f"  {fmt_duration(r.get('elapsed_s'))}  pid {r.get('pid')}", style="dim")
    if r.get("pending") is not None:
        t.append(f"  next: chunk {r['pending']}", style="dim")
    return t


def _chunks_table(snap: dict, max_rows: int | None) -> Table:
    chunks = list(reversed(snap.get("chunks") or []))
    shown = chunks if max_rows is None else chunks[: max(0, max_rows)]
    t = Table(box=box.SIMPLE_HEAD, title="chunks (newest first)", title_justify="left",
              title_style="bold", pad_edge=False, show_edge=False, collapse_padding=True)
    for name, justify in (("milestone", "right"), ("episodes", "right"), ("reward", "right"),
                          ("max", "right"), ("speed/cmd m/s", "right"), ("falls", "right"),
                          ("duration", "right"), ("restarts", "right"), ("peak mem", "right"),
                          ("video", "center")):
        t.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis", min_width=len(name))
    for c in shown:
        speed, cmd = num(c.get("speed")), num(c.get("command_speed"))
        speed_style = ""
        if speed is not None and cmd and cmd > 0:
            speed_style = "green" if speed >= 0.9 * cmd else ("red" if speed < 0.5 * cmd else "yellow")
        fall = num(c.get("fall_rate"))
        mem = fmt_mb(num(c.get("peak_rss_mb")))
        if num(c.get("peak_gpu_mb")) is not None:
            mem += f" · GPU {fmt_mb(num(c.get('peak_gpu_mb')))}"
        restarts = c.get("restarts")
        t.add_row(
            str(c.get("chunk")),
            fmt_int(c.get("episodes_total", c.get("episodes"))),
            fmt_num(c.get("reward_mean")),
            fmt_num(c.get("reward_max")),
            Text(fmt_num(speed) + (f"/{cmd:.2f}" if cmd is not None else ""), style=speed_style),
            f"{100 * fall:.1f}%" if fall is not None else "—",
            fmt_duration(c.get("duration_s")),
            Text(str(restarts) if restarts is not None else "—", style="yellow" if restarts else "dim"),
            mem,
            Text("✓", style="green") if c.get("video") else Text("·", style="dim"),
        )
    hidden = len(chunks) - len(shown)
    if hidden > 0:
        t.caption = f"… {hidden} older chunk{'s' if hidden != 1 else ''} not shown"
        t.caption_justify = "left"
    if not chunks:
        t.caption = "no chunk finished yet"
        t.caption_justify = "left"
    return t


def _trends(snap: dict, width: int) -> Panel:
    chunks = snap.get("chunks") or []
    cmd = num((snap.get("config") or {}).get("command_speed"))
    spark_w = max(10, min(80, width - 70))
    rows = Table.grid(padding=(0, 1))
    rows.add_column(no_wrap=True, style="bold", min_width=6)
    rows.add_column(no_wrap=True)
    rows.add_column(no_wrap=True)
    rewards = [num(c.get("reward_mean")) for c in chunks]
    speeds = [num(c.get("speed")) for c in chunks]  # along the command (guard.commanded)

    def span(vals: list, unit: str = "") -> str:
        p = [v for v in vals if v is not None]
        if not p:
            return "—"
        return f"{p[0]:.2f} → {p[-1]:.2f}{unit}  (min {min(p):.2f}, max {max(p):.2f})"

    rows.add_row("reward", Text(sparkline(rewards, spark_w), style="cyan"), span(rewards))
    sp = span(speeds, " m/s")
    if cmd is not None:
        sp += f"  command {cmd:.2f}"
    rows.add_row("speed", Text(sparkline(speeds, spark_w), style="green"), sp)
    n = len(chunks)
    title = f"across {n} chunk{'s' if n != 1 else ''}" if n else "across chunks"
    if n > spark_w:
        title = f"across the last {spark_w} of {n} chunks"
    return Panel(rows, title=title, title_align="left", box=box.ROUNDED)


def _terms(snap: dict) -> Table:
    chunks = snap.get("chunks") or []
    last = chunks[-1] if chunks else {}
    terms = last.get("reward_terms") if isinstance(last.get("reward_terms"), dict) else {}
    vals = [(str(k), num(v)) for k, v in terms.items()]
    vals = [(k, v) for k, v in vals if v is not None]
    vals.sort(key=lambda kv: -kv[1])
    biggest = max((abs(v) for _, v in vals), default=0.0)
    title = f"reward terms, chunk {last['chunk']}" if last.get("chunk") is not None else "reward terms"
    t = Table(box=box.SIMPLE_HEAD, title=title, min_width=len(title),
              title_justify="left", title_style="bold", pad_edge=False, show_edge=False)
    t.add_column("term", no_wrap=True, overflow="ellipsis")
    t.add_column("mean/ep", justify="right", no_wrap=True)
    t.add_column("", no_wrap=True)
    for k, v in vals:
        n = int(round(14 * abs(v) / biggest)) if biggest > 0 else 0
        t.add_row(k, f"{v:+.2f}", Text("█" * n, style="green" if v >= 0 else "red"))
    if not vals:
        t.caption = "none yet"
        t.caption_justify = "left"
    return t


_TELLING = re.compile(r"error|fault|exception|killed|abort|out of memory|assert", re.I)


def _telling_line(tail: Any) -> str | None:
    """The stderr line that says most: the last one naming an error or fault, else the last."""
    if not isinstance(tail, str):
        return None
    lines = [ln.strip() for ln in tail.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if _TELLING.search(ln) and not ln.startswith("File "):
            return ln
    return lines[-1] if lines else None


def _event_text(ev: dict) -> tuple[str, Text]:
    kind = str(ev.get("event", "?"))
    t = Text()
    if kind == "exit":
        reason = ev.get("reason")
        bad = reason not in OK_EXITS
        sig = ev.get("signal")
        t.append(f"pid {ev.get('pid')} ")
        t.append(f"{sig or 'code ' + str(ev.get('code'))}", style="bold red" if bad else "green")
        t.append(f" {reason or ''} after {fmt_duration(num(ev.get('duration_s')))}")
        line = _telling_line(ev.get("stderr_tail")) if bad else None
        if line:
            t.append(f" · {line[:100]}", style="dim")
    elif kind == "restart":
        t.append(f"restart in {fmt_duration(num(ev.get('delay_s')))} (consecutive {ev.get('consecutive')})", style="yellow")
    elif kind == "hang":
        t.append(f"pid {ev.get('pid')} silent {fmt_duration(num(ev.get('silent_s')))}: killed", style="bold red")
    elif kind == "render":
        if ev.get("ok"):
            t.append(f"video of chunk {ev.get('chunk')} in {fmt_duration(num(ev.get('seconds')))}", style="green")
        else:
            t.append(f"video of chunk {ev.get('chunk')} FAILED: {ev.get('error') or '?'}", style="red")
    elif kind == "render_start":
        t.append(f"rendering the video of chunk {ev.get('chunk')} (pid {ev.get('pid')}) beside training",
                 style="magenta")
    elif kind == "start":
        t.append(f"worker pid {ev.get('pid')} for chunk {ev.get('chunk')} (attempt {ev.get('attempt')})")
    elif kind == "state":
        new = str(ev.get("state"))
        t.append(new, style=STATE_STYLES.get(new, ""))
        t.append(f" ← {ev.get('previous')}", style="dim")
    elif kind == "memory":
        t.append(f"peak RSS {fmt_mb(num(ev.get('peak_rss_mb')))}")
        if ev.get("gpu_before_mb") is not None or ev.get("gpu_after_mb") is not None:
            t.append(f", GPU {fmt_mb(num(ev.get('gpu_before_mb')))} → {fmt_mb(num(ev.get('gpu_after_mb')))}")
        if ev.get("gpu_leak"):
            t.append(" LEAK", style="bold red")
    elif kind == "fatal":
        t.append(str(ev.get("reason")), style="bold red")
    elif kind == "warning":
        t.append(f"{ev.get('kind')}: {ev.get('message')}", style="yellow")
    else:
        rest = {k: v for k, v in ev.items() if k not in ("time", "event")}
        t.append(json.dumps(rest, sort_keys=True)[:100], style="dim")
    return kind, t


def _events(snap: dict) -> Table:
    now = snap["now"]
    t = Table(box=box.SIMPLE_HEAD, title="last events", title_justify="left", title_style="bold",
              pad_edge=False, show_edge=False, expand=True)
    t.add_column("time", no_wrap=True, style="dim", min_width=8)
    t.add_column("event", no_wrap=True, min_width=7)
    t.add_column("", overflow="ellipsis", no_wrap=True, ratio=1)
    for ev in reversed(snap.get("events") or []):
        kind, text = _event_text(ev)
        t.add_row(fmt_time(num(ev.get("time")), now), kind, text)
    if not snap.get("events"):
        t.caption = "no events yet"
        t.caption_justify = "left"
    return t


def _memory_line(snap: dict) -> Text:
    m = snap.get("memory") or {}
    d = snap.get("disk")
    t = Text()
    t.append("memory now  ", style="bold")
    t.append(f"supervisor {fmt_mb(m.get('supervisor_rss_mb')) if m.get('supervisor_alive') else '—'}")
    if m.get("worker_alive"):
        t.append(f" · worker {fmt_mb(m.get('worker_rss_mb'))} (pid {m.get('worker_pid')})")
    else:
        t.append(" · worker not running", style="dim")
    if m.get("gpu_mem_mb") is not None:
        extra = [f"peak {fmt_mb(m['gpu_mem_peak_mb'])}"] if m.get("gpu_mem_peak_mb") is not None else []
        if m.get("torch_reserved_mb") is not None:
            extra.append(f"torch {fmt_mb(m['torch_reserved_mb'])}")
        t.append(f" · worker GPU {fmt_mb(m.get('gpu_mem_mb'))}" + (f" ({', '.join(extra)})" if extra else ""),
                 style="" if m.get("worker_alive") else "dim")
    if d:
        low = any(w["kind"] == "disk" for w in snap.get("warnings") or [])
        t.append(f" · disk {d['free_gb']:.1f} GB free ({d['free_pct']:.0f} %)", style="bold red" if low else "")
    return t


def _sections(snap: dict, width: int) -> tuple[list[RenderableType], list[RenderableType]]:
    """The screen's parts above the chunks table and below it."""
    top: list[RenderableType] = [_header(snap)]
    w = _warnings(snap)
    if w is not None:
        top.append(w)
    top.append(_current(snap, width))
    trends = Group(_trends(snap, width), _memory_line(snap))
    if width >= 110:
        bottom: RenderableType = Table.grid(padding=(0, 3), expand=True)
        bottom.add_column(no_wrap=True)
        bottom.add_column(ratio=1)
        bottom.add_row(_terms(snap), _events(snap))
    else:
        bottom = Group(_terms(snap), _events(snap))
    return top, [trends, bottom]


class _Screen:
    """The dashboard as a rich renderable. With a height, each part is rendered once to lines,
    the chunks table gets the rows left over, and the lines are emitted as they are."""

    def __init__(self, snap: dict, width: int | None, height: int | None):
        self.snap, self.width, self.height = snap, width, height

    def __rich_console__(self, console: Console, options: Any):
        from rich.segment import Segment

        snap = self.snap
        width = min(options.max_width, self.width) if self.width else options.max_width
        top, lower = _sections(snap, width)
        if self.height is None:
            yield from top
            yield _chunks_table(snap, MAX_ROWS_UNFITTED)
            yield from lower
            return
        opts = options.reset_height().update(width=width)

        def lines(r: RenderableType) -> list:
            return console.render_lines(r, opts, pad=False)

        top_l = [lines(r) for r in top]
        lower_l = [lines(r) for r in lower]
        n = len(snap.get("chunks") or [])
        chrome = 3 if n else 4  # title, header, rule (+ "no chunk finished yet")

        def room() -> int:
            return self.height - sum(map(len, top_l)) - chrome - sum(map(len, lower_l))

        min_rows = min(3, n)
        # on a small terminal drop the lower parts (the bottom one first) before the table's rows
        while lower_l and room() < min_rows + (1 if n > min_rows else 0):
            lower_l.pop()
        left = room()
        rows = n if left >= n else max(min_rows, left - 1)  # -1: the "older chunks" caption
        for block in (*top_l, lines(_chunks_table(snap, rows)), *lower_l):
            for line in block:
                yield from line
                yield Segment.line()


def render(snap: dict, width: int | None = None, height: int | None = None) -> RenderableType:
    """The dashboard for one snapshot (as wide as the console, or ``width``). With ``height`` it
    fits that many lines: the chunks table is trimmed (and, on a very small terminal, the lower
    parts dropped); without, up to 50 chunks show."""
    return _Screen(snap, width, height)


# ----------------------------------------------------------------------------- the command


class _Keys:
    """q from stdin in cbreak mode (when stdin is a terminal); the terminal is restored on exit."""

    def __init__(self) -> None:
        self.fd = None
        self.old = None

    def __enter__(self) -> "_Keys":
        try:
            if sys.stdin.isatty():
                import termios
                import tty

                self.fd = sys.stdin.fileno()
                self.old = termios.tcgetattr(self.fd)
                tty.setcbreak(self.fd)
        except Exception:
            self.fd = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None and self.old is not None:
            import termios

            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.old)

    def quit_within(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True when q was pressed (or stdin closed)."""
        if self.fd is None:
            time.sleep(timeout)
            return False
        import select

        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return False
        data = os.read(self.fd, 64)
        return not data or b"q" in data or b"Q" in data


def no_run_message(run_dir: str | Path) -> str:
    return f"no go2train run in {run_dir} — start one with: go2train daemon start --run-dir {run_dir}"


def _to_json(snap: dict) -> str:
    def clean(o: Any) -> Any:
        if isinstance(o, float) and not math.isfinite(o):
            return None
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean(snap), indent=2, sort_keys=True, default=str)


def _make_console() -> Console:
    is_tty = sys.stdout.isatty()
    width = None
    if not is_tty and not os.environ.get("COLUMNS"):
        width = 120  # logs and pipes: wide enough for the chunks table
    return Console(width=width, highlight=False)


def run_status(run_dir: Path, cfg: Config, once: bool = False, as_json: bool = False,
               refresh_s: float = 0.25) -> int:
    """The body of `go2train status` (run_dir checked, config loaded). Returns the exit code."""
    if not has_run(run_dir):
        print(no_run_message(run_dir), file=sys.stderr)
        return 1
    reader = Reader(run_dir, cfg)
    try:
        snap = reader.snapshot()
    except NoRun:  # emptied between the two looks
        print(no_run_message(run_dir), file=sys.stderr)
        return 1
    if as_json:
        print(_to_json(snap))
        return 0
    console = _make_console()
    if once or not console.is_terminal:
        console.print(render(snap, console.width, console.height if console.is_terminal else None))
        return 0

    from rich.live import Live

    def _stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with _Keys() as keys, Live(console=console, screen=True, auto_refresh=False,
                                   redirect_stdout=False, redirect_stderr=False) as live:
            while True:
                try:
                    snap = reader.snapshot()
                except NoRun:  # the run directory was emptied under us: keep the last screen
                    pass
                except FileNotFoundError:
                    break
                live.update(render(snap, console.width, console.height), refresh=True)
                if keys.quit_within(refresh_s):
                    break
    except KeyboardInterrupt:
        pass
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return 0
