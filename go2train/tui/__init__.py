"""`go2train status`: a rich dashboard of a run, read only from files in the run directory.

It never talks to the daemon: it reads ``logs/state.json``, ``logs/heartbeat.json``,
``logs/chunks/*.json``, ``logs/events.jsonl`` and ``videos/*.mp4`` (docs/CONTRACTS.md), so it works
while the daemon runs, after it stopped, over ssh and in a second terminal.

Two halves, so tests can drive them separately:

* :mod:`~go2train.tui.reader` — :func:`snapshot` (or :class:`Reader` for the live loop, which
  caches unchanged files) turns a run directory into a plain dict: the raw files plus derived
  figures (progress, ETA, restarts per chunk, memory, disk, warnings). ``go2train status --json``
  prints it. No rich there.
* :mod:`~go2train.tui.render` — :func:`render` turns that dict into a rich renderable.

:mod:`~go2train.tui.command` is the command itself (:func:`run_status`: json, once, live);
:mod:`~go2train.tui.fmt` the number and text helpers both halves share.

No torch, no genesis here.
"""

from __future__ import annotations

from go2train.tui.command import no_run_message, run_status
from go2train.tui.reader import NoRun, Reader, has_run, notable, snapshot
from go2train.tui.render import describe_command, render

__all__ = [
    "NoRun",
    "Reader",
    "describe_command",
    "has_run",
    "no_run_message",
    "notable",
    "render",
    "run_status",
    "snapshot",
]
