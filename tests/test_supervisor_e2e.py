"""End to end: the real supervisor with the real worker (Genesis) on a tiny config.

Each worker start builds a Genesis scene (~15-60 s on 2 CPU cores; the test starts about seven), so
this is the slowest test; ``GO2TRAIN_SKIP_E2E=1`` skips it during development.

Scenario (issue 4): `daemon start`; a real SIGSEGV failpoint in the second chunk; the run still
reaches its third chunk; events.jsonl shows the segfault and the restart; `daemon stop` leaves no
process behind. Then `daemon start`, `kill -9` of the supervisor mid-chunk, `daemon start` again:
the orphaned worker is stopped, training resumes from the newest valid checkpoint, and no chunk
is duplicated or skipped.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys

import psutil
import pytest
from helpers import TINY_DAEMON_HEAD, go2train, procs_mentioning, wait_for

from go2train.run.files import read_json, read_jsonl
from go2train.run.layout import STARTUP_PHASES

PY = sys.executable

pytestmark = [
    pytest.mark.slow,
    pytest.mark.genesis,
    pytest.mark.timeout(1500),
    pytest.mark.skipif(os.environ.get("GO2TRAIN_SKIP_E2E") == "1", reason="GO2TRAIN_SKIP_E2E=1"),
]

TOML = TINY_DAEMON_HEAD + """
[chunk]
episodes = 1
max_episodes = 4
heartbeat_s = 1.0

[video]
every_episodes = 0

[supervisor]
backoff_initial_s = 1.0
backoff_max_s = 4.0
hang_timeout_s = 120.0
startup_timeout_s = 400.0
stop_timeout_s = 30.0
poll_s = 0.5
"""


def cli(*args, env=None, timeout=60):
    return go2train(*args, env=env, timeout=timeout)




def test_real_worker_segfault_stop_kill9_resume(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "go2train.toml").write_text(TOML)
    (run / "failpoints").write_text("segv@2:8\n")
    env = dict(os.environ, GO2TRAIN_RENDER_CMD=json.dumps(["true"]))  # no Genesis renders here
    env.pop("GO2TRAIN_WORKER_CMD", None)
    chunks = run / "logs" / "chunks"
    state = lambda: read_json(run / "logs" / "state.json") or {}  # noqa: E731
    events = lambda name: [e for e in read_jsonl(run / "logs" / "events.jsonl") if e["event"] == name]  # noqa: E731
    try:
        # 1. start; a segfault in chunk 2; the run reaches chunk 3; stop leaves nothing behind
        r = cli("daemon", "start", "--run-dir", str(run), env=env)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: (chunks / "chunk_000003.json").exists(), 900, "chunk 3")
        crashes = [e for e in events("exit") if e["reason"] == "crash"]
        assert [(e["code"], e["signal"]) for e in crashes] == [(-11, "SIGSEGV")]
        assert "failpoint segv@2:8 fires" in crashes[0]["stderr_tail"]
        assert len(events("restart")) == 1
        r = cli("daemon", "stop", "--run-dir", str(run), timeout=120)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: not procs_mentioning(run), 10, "no process left after daemon stop")
        assert state()["state"] == "STOPPED"

        # 2. start again; kill -9 the supervisor while chunk 4 is in progress; start again
        r = cli("daemon", "start", "--run-dir", str(run), env=env)
        assert r.returncode == 0, r.stderr
        sup_pid = int(re.search(r"pid (\d+)", r.stdout).group(1))

        def chunk4_in_progress():
            hb, st = read_json(run / "logs" / "heartbeat.json") or {}, state()
            return (st.get("supervisor_pid") == sup_pid and hb.get("pid") == st.get("worker_pid")
                    and hb.get("chunk") == 4 and hb.get("phase") in STARTUP_PHASES + ("training",))

        wait_for(chunk4_in_progress, 300, "chunk 4 in progress")
        orphan = state()["worker_pid"]
        os.kill(sup_pid, signal.SIGKILL)
        r = cli("daemon", "start", "--run-dir", str(run), env=env)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: state().get("state") == "DONE", 900, "DONE (max_episodes = 4)")
        assert not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE
        assert any(w["kind"] == "orphan_worker" for w in events("warning"))
        wait_for(lambda: not procs_mentioning(run), 10, "no process left after DONE")
    finally:
        for p in procs_mentioning(tmp_path):
            p.kill()

    # no chunk duplicated or skipped: records 1..4, each "done" once, totals growing by n_envs
    recs = [read_json(chunks / f"chunk_{c:06d}.json") for c in (1, 2, 3, 4)]
    assert [r["chunk"] for r in recs] == [1, 2, 3, 4]
    assert recs[0]["episodes_total"] == recs[0]["episodes"] >= 4
    for prev, cur in zip(recs, recs[1:]):  # each chunk starts where the previous one ended
        assert cur["episodes_total"] - cur["episodes"] == prev["episodes_total"]
        assert cur["episodes"] >= 4
    assert sorted(p.name for p in chunks.glob("*.json")) == [f"chunk_{c:06d}.json" for c in (1, 2, 3, 4)]
    log = (run / "logs" / "worker.log").read_text()
    for c in (1, 2, 3, 4):
        assert len(re.findall(rf"chunk chunk_{c:06d} done", log)) == 1
    for c in (1, 2, 3, 4):
        assert (run / "models" / f"chunk_{c:06d}.json").exists()
