"""The `go2train status` command: ``--json``, ``--once`` (or a pipe) and the live screen that
redraws until q, Ctrl-C or SIGTERM/SIGHUP. It joins :class:`go2train.tui.reader.Reader` and
:func:`go2train.tui.render.render`; the terminal is restored on the way out.

No torch, no genesis here.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType

from go2train.config import Config
from go2train.tui.reader import NoRun, Reader, has_run
from go2train.tui.render import render


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

    last = [snap]

    def draw() -> RenderableType | None:
        try:
            last[0] = reader.snapshot()
        except NoRun:  # the run directory was emptied under us: keep the last screen
            pass
        except FileNotFoundError:
            return None
        return render(last[0], console.width, console.height)

    return live_screen(console, draw, refresh_s)


def live_screen(console: Console, draw: Callable[[], RenderableType | None], refresh_s: float) -> int:
    """Redraw ``draw()`` full-screen every ``refresh_s`` until q, Ctrl-C, SIGTERM/SIGHUP, or ``draw``
    returns None; the terminal is restored. Exit code 0. (The run's screen and the sweep's.)"""
    from rich.live import Live

    def _stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    previous = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with _Keys() as keys, Live(console=console, screen=True, auto_refresh=False,
                                   redirect_stdout=False, redirect_stderr=False) as live:
            while True:
                screen = draw()
                if screen is None:
                    break
                live.update(screen, refresh=True)
                if keys.quit_within(refresh_s):
                    break
    except KeyboardInterrupt:
        pass
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return 0
