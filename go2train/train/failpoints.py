"""Failpoints: deliberate faults a worker injects on request (testing only; off unless set).

Specs come from ``GO2TRAIN_FAILPOINTS`` (comma-separated) and the file ``RUN_DIR/failpoints`` (one
per line, ``#`` comments). Syntax ``KIND@CHUNK:STEPS`` with KIND one of ``segv`` (a real invalid
memory access after STEPS batched env steps), ``hang`` (stop making progress), ``save_crash``
(SIGSEGV in the middle of the next checkpoint write, after the data files are written and before
the manifest), ``exit`` (exit 1); CHUNK is a milestone or ``*``. Each spec fires once per run
directory (recorded in ``logs/failpoints.fired``). The worker calls :meth:`Failpoints.on_step`
after every batched step and :meth:`Failpoints.in_save` inside every checkpoint write.
"""

from __future__ import annotations

import ctypes
import logging
import os
import time

from go2train.run import exitcodes
from go2train.run.files import append_jsonl, read_jsonl
from go2train.run.layout import RunDir

log = logging.getLogger(__name__)  # propagates to the worker's "go2train" handlers


class Failpoints:
    """The specs armed for chunk ``milestone`` in this process (fired ones and other chunks' skipped)."""

    KINDS = ("segv", "hang", "save_crash", "exit")

    def __init__(self, rd: RunDir, milestone: int):
        self.rd = rd
        self.fired_file = rd.logs / "failpoints.fired"
        specs = [s.strip() for s in os.environ.get("GO2TRAIN_FAILPOINTS", "").split(",") if s.strip()]
        fp_file = rd.root / "failpoints"
        if fp_file.exists():
            specs += [s.strip() for s in fp_file.read_text().splitlines() if s.strip() and not s.startswith("#")]
        fired = {str(e.get("spec")) for e in read_jsonl(self.fired_file)}
        self.armed: list[tuple[str, str, int]] = []
        for spec in specs:
            kind, _, rest = spec.partition("@")
            chunk, _, steps = rest.partition(":")
            if kind not in self.KINDS or spec in fired:
                continue
            if chunk not in ("*", str(milestone)):
                continue
            self.armed.append((spec, kind, int(steps or 0)))

    def _fire(self, spec: str) -> None:
        append_jsonl(self.fired_file, {"spec": spec, "pid": os.getpid(), "time": time.time()})
        log.warning("failpoint %s fires", spec)
        for h in logging.getLogger().handlers:
            h.flush()

    def on_step(self, steps: int) -> None:
        for spec, kind, at in list(self.armed):
            if kind in ("segv", "hang", "exit") and steps >= at:
                self.armed.remove((spec, kind, at))
                self._fire(spec)
                if kind == "segv":
                    ctypes.string_at(0)  # a real SIGSEGV
                elif kind == "exit":
                    os._exit(exitcodes.FAILURE)
                else:
                    while True:  # hang: no progress; the heartbeat thread keeps the old timesteps
                        time.sleep(3600)

    def in_save(self) -> None:
        for spec, kind, at in list(self.armed):
            if kind == "save_crash":
                self.armed.remove((spec, kind, at))
                self._fire(spec)
                ctypes.string_at(0)
