"""The worker watchdog's judgement, as pure functions: is this heartbeat the worker's, and is the
worker still making progress?

Progress is the worker's heartbeat ``(phase, timesteps)`` changing. Without progress a worker is
given ``[supervisor] startup_timeout_s`` while no heartbeat of it has come or its phase is a
start-up phase (``go2train.run.layout.STARTUP_PHASES``: the first kernel compile takes minutes),
else ``hang_timeout_s``; past that it is hung (docs/SUPERVISOR.md, "Watchdog").

No I/O and no clock: the caller reads the heartbeat, passes a monotonic ``now`` and keeps the
returned :class:`Watch` for its next poll (supervisor/core.py does, every ``poll_s``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from go2train.run.layout import STARTUP_PHASES

OK = "ok"
HANG = "hang"  # no progress for hang_timeout_s after the start-up
STARTUP_TIMEOUT = "startup_timeout"  # no heartbeat, or no progress in a start-up phase, for startup_timeout_s

# A heartbeat this much older than the worker's spawn is a dead worker's whose pid was reused.
STALE_HEARTBEAT_S = 2.0


@dataclass(frozen=True)
class Limits:
    startup_s: float
    hang_s: float

    @classmethod
    def from_config(cls, sc: Any) -> "Limits":
        """From a ``[supervisor]`` section (``go2train.config.SupervisorConfig``)."""
        return cls(float(sc.startup_timeout_s), float(sc.hang_timeout_s))


@dataclass(frozen=True)
class Watch:
    """What the watchdog remembers of one worker between polls."""

    since: float  # monotonic time of the last progress (the spawn, until a heartbeat comes)
    key: tuple[Any, Any] | None = None  # (phase, timesteps) of the last heartbeat
    phase: str | None = None  # phase of the last heartbeat
    seen: bool = False  # a heartbeat of this worker has come

    @property
    def starting(self) -> bool:
        """Still given the start-up timeout."""
        return not self.seen or self.phase in STARTUP_PHASES


@dataclass(frozen=True)
class Verdict:
    kind: str  # OK, HANG or STARTUP_TIMEOUT
    watch: Watch  # pass it to the next observe()
    silent_s: float  # seconds since the last progress
    limit_s: float  # the timeout that applied

    @property
    def ok(self) -> bool:
        return self.kind == OK


def start(now: float) -> Watch:
    """The watch of a worker spawned at monotonic time ``now``."""
    return Watch(since=now)


def observe(watch: Watch, heartbeat: dict[str, Any] | None, now: float, limits: Limits) -> Verdict:
    """Judge a worker at monotonic time ``now`` from its heartbeat (None: none of its own yet, or
    unreadable this time)."""
    if heartbeat is not None:
        phase = heartbeat.get("phase")
        key = (phase, heartbeat.get("timesteps"))
        since = now if key != watch.key else watch.since
        watch = replace(watch, since=since, key=key, phase=phase, seen=True)
    starting = watch.starting
    limit = limits.startup_s if starting else limits.hang_s
    silent = now - watch.since
    kind = OK if silent <= limit else (STARTUP_TIMEOUT if starting else HANG)
    return Verdict(kind, watch, silent, limit)


def past_startup(phase: Any) -> bool:
    """A heartbeat phase after the start-up (``training``, ``saving``, ``exiting``): RUNNING."""
    return phase is not None and phase not in STARTUP_PHASES


def own_heartbeat(heartbeat: Any, pid: int, spawned: float) -> dict[str, Any] | None:
    """``heartbeat`` (the parsed ``logs/heartbeat.json``) if written by worker ``pid`` spawned at
    wall time ``spawned``: same pid, and not older than the spawn (beyond clock slack)."""
    if not isinstance(heartbeat, dict) or heartbeat.get("pid") != pid:
        return None
    t = heartbeat.get("time")
    if isinstance(t, (int, float)) and t < spawned - STALE_HEARTBEAT_S:
        return None  # a dead worker's file whose pid was reused
    return heartbeat
