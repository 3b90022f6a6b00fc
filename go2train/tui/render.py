"""Rich renderables from a status snapshot (:mod:`go2train.tui.reader`): the screen half of
`go2train status`.

:func:`render` lays the dashboard out (docs/STATUS.md): header, warnings, the chunk in progress,
the chunks table (trimmed to the terminal's height), trends, memory, reward terms and the last
events. It reads nothing but the snapshot dict, so tests render fixture snapshots.

No torch, no genesis here.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from go2train.run.files import as_int, num
from go2train.tui.fmt import fmt_duration, fmt_int, fmt_mb, fmt_num, fmt_time, sparkline
from go2train.tui.reader import ACTIVE_STATES

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
MAX_ROWS_UNFITTED = 50  # chunk rows printed when no terminal height is known
OK_EXITS = ("chunk_done", "run_complete", "stopped")

STARTUP_HINTS = {  # what a start-up phase is doing, for a newcomer
    "importing": "importing torch and Genesis",
    "building_scene": "building the Genesis scene",
    "compiling_kernels": "compiling Genesis kernels — first run on this machine, cached afterwards",
    "loading_kernels": "building with cached Genesis kernels",
    "loading_checkpoint": "loading the checkpoint",
}




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
    level, drawn = num(c.get("level")), c.get("drawn")
    src = drawn if isinstance(drawn, dict) and level is not None and level < 1 else c  # the curriculum's
    return (f"vx {rng(src.get('vx_range'))} vy {rng(src.get('vy_range'))} m/s, yaw {rng(src.get('yaw_range'))} rad/s"
            + (f", stand {share:.0%}" if share else "")
            + (f" (curriculum level {level:.2f})" if src is drawn else ""))


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

