"""`go2train video --chunk N --progress-file PATH`: a milestone render that reports its progress.

The supervisor renders milestone videos beside the training worker and sets
``GO2TRAIN_RENDER_PROGRESS=RUN_DIR/logs/render.json`` for the renderer; `go2train status` and
`go2train daemon status` show the frames done / total from that file (docs/CONTRACTS.md):

    {"pid": 123, "chunk": 250, "phase": "starting|rendering|done", "frames_done": 120,
     "frames_total": 400, "started": 1700000000.0, "time": 1700000030.0}

It is written atomically at the start, at most every ``WRITE_EVERY_S`` while frames are rendered,
and at the end. The video's figures go to the run's TensorBoard as ``eval/video/*`` at the
checkpoint's timesteps (:func:`go2train.train.tblog.video_scalars`). The rendering itself is :func:`go2train.tools.video.render_chunk`, unchanged. SIGTERM
ends the render through Python's exception path, so the video's hidden temp file is removed
(``go2train.tools.video.mp4_writer``); a SIGKILLed render leaves it to the supervisor, which removes it.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from go2train.config import Config
from go2train.run.files import atomic_write_json
from go2train.run.layout import RunDir

WRITE_EVERY_S = 0.5


class ProgressFile:
    """A ``progress(done, total)`` callback that writes the progress file (never raises)."""

    def __init__(self, path: Path, chunk: int, total: int):
        self.path = Path(path)
        self.doc: dict[str, Any] = {"pid": os.getpid(), "chunk": chunk, "phase": "starting", "frames_done": 0,
                                    "frames_total": total, "started": time.time(), "time": time.time()}
        self.last = 0.0
        self._write()

    def _write(self) -> None:
        self.doc["time"] = time.time()
        try:
            atomic_write_json(self.path, self.doc)
        except OSError:
            pass  # progress is a courtesy: a full disk must not fail the render

    def __call__(self, done: int, total: int) -> None:
        self.doc.update(phase="rendering", frames_done=int(done), frames_total=int(total))
        now = time.monotonic()
        if done >= total or now - self.last >= WRITE_EVERY_S:
            self.last = now
            self._write()

    def done(self) -> None:
        self.doc["phase"] = "done"
        self._write()


def _on_term(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through mp4_writer, which removes its temp file


def main(run_dir: Path, current: Config, chunk: str, steps: int | None, out: Path | None,
         progress_file: Path) -> int:
    from go2train.tools import video

    signal.signal(signal.SIGTERM, _on_term)
    rd = RunDir.at(run_dir)
    if steps is not None and steps < 1:
        raise video.VideoError(f"--steps must be >= 1, got {steps}")
    manifest = video.resolve_chunk(rd, video.parse_chunk(chunk))
    target = Path(out) if out is not None else rd.video(int(manifest["chunk"]))
    prog = ProgressFile(progress_file, int(manifest["chunk"]), int(steps or current.video.steps))
    meta, _ = video.render_chunk(rd, manifest, current, steps=steps, out=target, progress=prog)
    prog.done()
    from go2train.train import tblog

    tblog.log_checkpoint(rd, manifest, tblog.video_scalars(meta), "render")
    print(f"{target}: {meta['frames']} frames {meta['width']}x{meta['height']} @ {meta['fps']} fps, "
          f"distance {meta['distance_m'] + 0.0:+.2f} m, {meta['mean_forward_speed_mps'] + 0.0:+.2f} m/s, "
          f"falls {meta['falls']}, {meta['render_seconds']:.1f} s", flush=True)
    sys.stdout.flush()
    return 0
