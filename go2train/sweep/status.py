"""`go2train sweep status` (and `go2train status` on a sweep directory): one row per trial.

Read only from files, like `go2train status`: ``DIR/sweep.json`` (the trials), each trial's
bookkeeping ``DIR/logs/trials/NAME.json`` (done / stopped / running / failed; no file yet =
pending), its ``logs/state.json`` (the supervisor's state, chunk, restarts), its heartbeat (the
running total of timesteps) and its newest ``logs/chunks/*.json`` record (speed along the command,
commanded speed, reward, fall rate). Whether the sweep itself runs comes from ``DIR/sweep.pid``.

No Ray, no torch here.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from go2train.guard import commanded
from go2train.run.files import as_int, num, read_json
from go2train.run.identity import lock_holder
from go2train.run.layout import RunDir
from go2train.sweep.plan import SweepDir
from go2train.tui.fmt import fmt_duration, fmt_int, fmt_num


def newest_record(rd: RunDir) -> dict[str, Any]:
    recs = rd.chunk_records()
    rec = read_json(rd.chunk_metrics(recs[-1])) if recs else None
    return rec if isinstance(rec, dict) else {}


def trial_row(sd: SweepDir, trial: dict[str, Any], sweep_running: bool = True) -> dict[str, Any]:
    """The status of one trial (keys: docs/SWEEP.md). ``sweep_state`` "running" left by a sweep that
    no longer runs (killed) reads "interrupted"."""
    name = trial["name"]
    rd = RunDir.at(sd.trial(name))
    st = read_json(rd.state)
    st = st if isinstance(st, dict) else {}
    book = read_json(sd.book(name))
    book = book if isinstance(book, dict) else {}
    rec = newest_record(rd)
    cmd, speed = commanded(rec)
    ts = as_int(rec.get("timesteps_total"))
    hb = read_json(rd.heartbeat)
    if isinstance(hb, dict) and st.get("worker_pid") and hb.get("pid") == st.get("worker_pid"):
        ts = max(ts or 0, as_int(hb.get("timesteps")) or 0)
    restarts = st.get("restarts") if isinstance(st.get("restarts"), dict) else {}
    return {
        "name": name, "values": trial.get("values", {}), "seed": trial.get("seed"),
        "run_dir": str(rd.root),
        "sweep_state": ("interrupted" if book.get("state") == "running" and not sweep_running
                        else book.get("state") or "pending"),
        "reason": book.get("reason"),
        "state": st.get("state"),
        "running": lock_holder(rd.pidfile) is not None,
        "chunk": as_int(st.get("chunk")) or as_int(rec.get("chunk")),
        "timesteps": ts,
        "speed_along_command": num(speed), "command_speed": num(cmd),
        "forward_speed": num(rec.get("forward_speed_mean")),
        "reward": num(rec.get("reward_mean")), "fall_rate": num(rec.get("fall_rate")),
        "restarts": as_int(restarts.get("total")) or 0,
        "elapsed_s": _elapsed(book, sweep_running),
    }


def _elapsed(book: dict[str, Any], sweep_running: bool) -> float | None:
    """Supervisor wall seconds so far: the bookkeeping's (written every few seconds), aged while running."""
    e = num(book.get("elapsed_s"))
    t = num(book.get("updated"))
    if e is not None and t is not None and sweep_running and book.get("state") == "running":
        e += max(0.0, time.time() - t)
    return e


def snapshot(path: str | Path) -> dict[str, Any] | None:
    """The sweep's status as a plain dict (``--json``), or None when ``path`` is not a sweep."""
    sd = SweepDir.at(path)
    doc = sd.read()
    if doc is None:
        return None
    holder = lock_holder(sd.pidfile)
    rows = [trial_row(sd, t, holder is not None) for t in doc["trials"] if isinstance(t, dict) and "name" in t]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["sweep_state"]] = counts.get(r["sweep_state"], 0) + 1
    return {"dir": str(sd.root), "running": holder is not None, "pid": (holder or {}).get("pid"),
            "grid": doc.get("grid"), "budget": doc.get("budget"), "address": doc.get("address"),
            "resources": doc.get("resources"), "counts": counts, "trials": rows}


def render(snap: dict[str, Any]):
    """A header line and a rich table of :func:`snapshot`."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    b = snap.get("budget") or {}
    budget = " or ".join(x for x in ((f"{b['timesteps']:,} timesteps" if b.get("timesteps") else ""),
                                     (f"{b['minutes']:g} min" if b.get("minutes") else "")) if x) or "none"
    head = (f"sweep {snap['dir']}: {'running, pid ' + str(snap['pid']) if snap['running'] else 'not running'}; "
            + ", ".join(f"{n} {k}" for k, n in sorted(snap["counts"].items())) + f"; budget {budget}")
    t = Table()
    for col, just in (("trial", "left"), ("sweep", "left"), ("state", "left"), ("chunk", "right"),
                      ("timesteps", "right"), ("speed / cmd (m/s)", "right"), ("reward", "right"),
                      ("falls", "right"), ("restarts", "right"), ("trained", "right")):
        t.add_column(col, justify=just)
    for r in snap["trials"]:
        speed = "—" if r["speed_along_command"] is None else (
            f"{r['speed_along_command']:.2f} / {fmt_num(r['command_speed'])}")
        state = (r["state"] or "—") + (" *" if r["running"] else "")
        t.add_row(r["name"], r["sweep_state"], state, fmt_int(r["chunk"]), fmt_int(r["timesteps"]), speed,
                  fmt_num(r["reward"]), fmt_num(r["fall_rate"]), str(r["restarts"]), fmt_duration(r["elapsed_s"]))
    return Group(Text(head), t)


def main(path: str | Path, as_json: bool = False, once: bool = False, refresh_s: float = 1.0) -> int:
    """Print the table (or JSON); on a terminal without ``once``, a live screen redrawn every
    ``refresh_s`` until q, Ctrl-C or SIGTERM/SIGHUP (like `go2train status` on a run). Exit 0; 1
    when ``path`` is not a sweep directory."""
    snap = snapshot(path)
    if snap is None:
        print(f"go2train: {Path(path).absolute()} is not a sweep directory (no sweep.json)", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(snap, indent=2, sort_keys=True))
        return 0
    from rich.console import Console

    console = Console(width=None if sys.stdout.isatty() else 140, highlight=False)
    if once or not console.is_terminal:
        console.print(render(snap))
        return 0
    return _live(path, console, refresh_s)


def _live(path: str | Path, console, refresh_s: float) -> int:
    from go2train.tui.command import live_screen

    last = [snapshot(path)]

    def draw():
        last[0] = snapshot(path) or last[0]  # a sweep.json being replaced: keep the last screen
        return render(last[0])

    return live_screen(console, draw, refresh_s)
