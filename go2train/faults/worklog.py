"""Reading ``logs/worker.log`` after (or during) a campaign: what each worker said, per pid.

The campaign's checks need, per worker process: when it first logged, what it resumed from, the
chunks it finished, the damaged checkpoints it moved aside, its resume points and the failpoints
that fired in it. The line formats are the worker's (go2train/train/worker.py).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

LOG_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\d+) (\w+) (.*)$")


def _session(pid: int, t: float) -> dict[str, Any]:
    return {"pid": pid, "t_first": t, "resumed": None, "resumed_t": None, "done": [],
            "moved": [], "resume_points": [], "fired": []}


def _note(s: dict[str, Any], msg: str, t: float) -> None:
    """Record one worker.log message into that worker's session."""
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
        pid = int(m.group(3))
        _note(sessions.setdefault(pid, _session(pid, t)), m.group(5), t)
    return sessions
