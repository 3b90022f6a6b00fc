"""``python -m go2train.faults render-hook RUN_DIR CHUNK``: the campaign's render command.

During a campaign ``GO2TRAIN_RENDER_CMD`` runs this (its own process, started by the supervisor):
it logs the call to ``RUN_DIR/chaos/render.jsonl``, exits 1 with one line on stderr for the
milestones in ``RUN_DIR/chaos/render_plan.json``, and execs the real ``go2train video`` for the others.
"""

from __future__ import annotations

import os
import sys
import time

from go2train.run.files import append_jsonl, read_json
from go2train.run.layout import RunDir

PY = sys.executable


def render_hook(run_dir: str, chunk: str) -> int:
    """``GO2TRAIN_RENDER_CMD`` during a campaign: fail the planned milestones, render the others."""
    rd = RunDir.at(run_dir)
    plan = read_json(rd.root / "chaos" / "render_plan.json", {}) or {}
    fail = int(chunk) in set(plan.get("fail", []))
    append_jsonl(rd.root / "chaos" / "render.jsonl",
                 {"time": time.time(), "chunk": int(chunk), "fail": fail, "pid": os.getpid()})
    if fail:
        print(f"go2train chaos: injected render failure for chunk {chunk}", file=sys.stderr, flush=True)
        return 1
    cmd = [PY, "-m", "go2train", "video", "--chunk", str(chunk), "--run-dir", str(rd.root)]
    os.execv(PY, cmd)
    return 127  # pragma: no cover


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "render-hook":
        sys.exit(render_hook(sys.argv[2], sys.argv[3]))
    print("usage: python -m go2train.faults render-hook RUN_DIR CHUNK (use `go2train chaos`)", file=sys.stderr)
    sys.exit(2)
