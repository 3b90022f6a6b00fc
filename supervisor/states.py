"""The supervisor's states and the moves allowed between them: one table.

The names are supervisord's where they mean the same (STARTING, RUNNING, BACKOFF, STOPPING,
STOPPED, FATAL) plus DONE (the run reached ``[chunk] max_episodes``) and RENDERING (the run is done
and the last milestone video is still rendering; no worker left). They describe the worker:
STARTING while its heartbeat is in a start-up phase, RUNNING after. ``logs/state.json``'s
``state`` and the ``state`` events hold these strings (docs/CONTRACTS.md); :class:`State` members
are those strings (a ``str`` subclass), so files and comparisons with plain strings are unchanged.

supervisor/core.py checks every change against :data:`TRANSITIONS` (a move not in it is recorded
as a ``warning`` of kind ``state_transition``); supervisor/control.py uses the names.
"""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    RENDERING = "RENDERING"
    STOPPING = "STOPPING"
    STOPPED = "STOPPED"
    FATAL = "FATAL"
    DONE = "DONE"

    # The plain string in str(), f-strings and reprs (log lines) on every Python version.
    __str__ = str.__str__
    __format__ = str.__format__
    __repr__ = str.__repr__


STARTING, RUNNING, BACKOFF, RENDERING = State.STARTING, State.RUNNING, State.BACKOFF, State.RENDERING
STOPPING, STOPPED, FATAL, DONE = State.STOPPING, State.STOPPED, State.FATAL, State.DONE

STATES: tuple[State, ...] = tuple(State)
TERMINAL = frozenset({STOPPED, FATAL, DONE})  # the supervisor exits in these
ACTIVE = frozenset(STATES) - TERMINAL  # a supervisor in these is (or should be) alive

# state -> the states it may change to (staying in the same state is always allowed: no event).
# None is the supervisor before its first state. FATAL can follow any live state (a supervisor
# error ends the run). RUNNING -> STARTING is the next worker after a completed chunk; STOPPING ->
# DONE a worker that completed the run while the supervisor was being stopped.
TRANSITIONS: dict[State | None, frozenset[State]] = {
    None: frozenset({STARTING, FATAL}),
    STARTING: frozenset({RUNNING, BACKOFF, RENDERING, DONE, STOPPING, FATAL}),
    RUNNING: frozenset({STARTING, BACKOFF, RENDERING, DONE, STOPPING, FATAL}),
    BACKOFF: frozenset({STARTING, STOPPING, FATAL}),
    RENDERING: frozenset({DONE, STOPPING, FATAL}),
    STOPPING: frozenset({STOPPED, DONE, FATAL}),
    STOPPED: frozenset(),
    FATAL: frozenset(),
    DONE: frozenset(),
}


def allowed(previous: str | None, new: str) -> bool:
    """Whether the supervisor may go from ``previous`` (None: not started) to ``new``."""
    if previous == new:
        return True
    key = None if previous is None else State(previous)
    return State(new) in TRANSITIONS[key]
