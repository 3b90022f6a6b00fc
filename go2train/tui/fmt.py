"""Values read from run-directory files, and their text on the screen: shared by
:mod:`go2train.tui.reader` (warning messages) and :mod:`go2train.tui.render`. No rich here.

A file may hold anything: :func:`num` and :func:`as_int` turn a value into a finite number or
None, and every ``fmt_*`` shows None as ``—``.
"""

from __future__ import annotations

import time
from typing import Any

from go2train.run.files import as_int, num

SPARKS = "▁▂▃▄▅▆▇█"


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
