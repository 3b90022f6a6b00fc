"""End to end (issue 18): milestone videos render beside training, with the real daemon, the real
worker (Genesis) and the real renderer (`go2train video`) on a tiny config whose first chunk is a
milestone. Three worker start-ups and two render start-ups (~2-4 min on 2 CPU cores);
``GO2TRAIN_SKIP_E2E=1`` skips it.

1. `daemon start`: chunk 1 ends, the next worker starts within seconds of its exit while the chunk-1
   video renders (its `render` event comes after that start); the video is complete (every frame
   readable), and the run ends DONE with no process left.
2. Again with a third chunk that is a milestone and a long video: `daemon stop` (SIGTERM) while it
   renders leaves no process, no partial or temp mp4, and a `render` event saying it was stopped.
"""

from __future__ import annotations

import os
import sys

import pytest
from helpers import TINY_DAEMON_HEAD, clean_env, go2train, procs_mentioning, wait_for

from go2train.run.files import read_json, read_jsonl

PY = sys.executable

pytestmark = [
    pytest.mark.slow,
    pytest.mark.genesis,
    pytest.mark.timeout(900),
    pytest.mark.skipif(os.environ.get("GO2TRAIN_SKIP_E2E") == "1", reason="GO2TRAIN_SKIP_E2E=1"),
]

TOML = TINY_DAEMON_HEAD + """
[chunk]
episodes = 1
max_episodes = {max_episodes}
heartbeat_s = 1.0

[video]
every_episodes = {every}
width = 64
height = 48
fps = 10
steps = {steps}
timeout_s = 600.0

[supervisor]
backoff_initial_s = 1.0
hang_timeout_s = 120.0
startup_timeout_s = 400.0
stop_timeout_s = 30.0
poll_s = 0.2
"""




def count_frames(path) -> int:
    import imageio.v2 as iio

    reader = iio.get_reader(str(path), format="FFMPEG")
    try:
        return sum(1 for _ in reader)
    finally:
        reader.close()


def test_milestone_video_renders_beside_the_next_chunk_and_stop_mid_render(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    cfg = run / "go2train.toml"
    cfg.write_text(TOML.format(max_episodes=2, every=0, steps=12))
    env = clean_env()
    evs = lambda: read_jsonl(run / "logs" / "events.jsonl")  # noqa: E731
    state = lambda: read_json(run / "logs" / "state.json") or {}  # noqa: E731
    videos = run / "videos"
    try:
        # 1. the chunk-1 video renders while chunk 2 trains
        r = go2train("daemon", "start", "--run-dir", str(run), env=env)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: state().get("state") in ("DONE", "FATAL", "STOPPED"), 600, "the run to end")
        assert state()["state"] == "DONE", state()
        wait_for(lambda: not procs_mentioning(run), 15, "no process left after DONE")
        e = evs()
        exits = [x for x in e if x["event"] == "exit"]
        starts = [x for x in e if x["event"] == "start"]
        renders = [x for x in e if x["event"] == "render"]
        assert [x["reason"] for x in exits] == ["chunk_done", "run_complete"]
        assert [x["chunk"] for x in e if x["event"] == "render_start"] == [1]
        assert len(renders) == 1 and renders[0]["ok"], renders
        gap = starts[1]["time"] - exits[0]["time"]
        assert 0 <= gap < 5.0, f"next worker started {gap:.1f} s after the milestone chunk's exit"
        assert renders[0]["time"] > starts[1]["time"]  # the video was still rendering then
        assert count_frames(videos / "chunk_000001.mp4") == 12
        assert read_json(videos / "chunk_000001.json")["frames"] == 12
        prog = read_json(run / "logs" / "render.json")
        assert (prog["frames_done"], prog["frames_total"], prog["phase"]) == (12, 12, "done")
        rec = read_json(run / "logs" / "chunks" / "chunk_000002.json")
        assert {"importing", "building_scene", "loading_checkpoint"} <= set(rec["startup_phases"])
        assert {"compiling_kernels", "loading_kernels"} & set(rec["startup_phases"])

        # 2. a third chunk, a milestone with a long video; SIGTERM to the daemon mid-render
        cfg.write_text(TOML.format(max_episodes=3, every=3, steps=5000))
        r = go2train("daemon", "start", "--run-dir", str(run), env=env)
        assert r.returncode == 0, r.stderr

        def rendering():
            p, st = read_json(run / "logs" / "render.json") or {}, state()
            return (st.get("render_chunk") == 3 and p.get("pid") == st.get("render_pid")
                    and (p.get("frames_done") or 0) >= 1)

        wait_for(rendering, 600, "the chunk-3 video rendering")
        # ffmpeg creates its output file a moment after the first frame is reported (slower on busy cores)
        wait_for(lambda: [p.name for p in videos.iterdir() if ".tmp" in p.name], 60, "the render's temp file")
        line = go2train("daemon", "status", "--run-dir", str(run), env=env).stdout
        assert "render chunk 3" in line and "/5000 frames" in line, line
        r = go2train("daemon", "stop", "--run-dir", str(run), env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        assert not procs_mentioning(run), [p.cmdline() for p in procs_mentioning(run)]
        assert sorted(p.name for p in videos.iterdir()) == ["chunk_000001.json", "chunk_000001.mp4"]
        last = [x for x in evs() if x["event"] == "render"][-1]
        assert last["chunk"] == 3 and not last["ok"] and last["error"].startswith("stopped (SIGTERM)")
        assert state()["state"] == "STOPPED" and state()["render_pid"] is None
    finally:
        for p in procs_mentioning(tmp_path):
            p.kill()
