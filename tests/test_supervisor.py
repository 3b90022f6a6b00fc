"""The supervisor with real processes and real signals, driven by tests/fake_worker.py (a stand-in
that honours docs/CONTRACTS.md in a fraction of a second) and tiny [supervisor] timings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from helpers import go2train, procs_mentioning, wait_for

from go2train.run.files import read_json, read_jsonl

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
FAKE = str(ROOT / "tests" / "fake_worker.py")

pytestmark = pytest.mark.timeout(60)

SUP_DEFAULTS = dict(
    backoff_initial_s=0.1, backoff_max_s=0.3, crash_loop_max=20, crash_loop_window_s=600.0,
    hang_timeout_s=5.0, startup_timeout_s=5.0, stop_timeout_s=2.0, poll_s=0.05,
)


def make_run(tmp_path: Path, attempts, default=None, render=None, gpu=None, sup=None, video=None) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    s = {**SUP_DEFAULTS, **(sup or {})}
    v = {"every_episodes": 0, "timeout_s": 5.0, **(video or {})}
    lines = ["[chunk]", "episodes = 50", "", "[supervisor]"]
    lines += [f"{k} = {val!r}" for k, val in s.items()]
    lines += ["", "[video]"] + [f"{k} = {val!r}" for k, val in v.items()]
    (run / "go2train.toml").write_text("\n".join(lines) + "\n")
    script = {"episodes": 50, "attempts": attempts, "default": default or {"do": "done"},
              "render": render or {}, "gpu": gpu or [None]}
    (run / "fake_script.json").write_text(json.dumps(script))
    return run


def env_for(run: Path, gpu: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env["GO2TRAIN_WORKER_CMD"] = json.dumps([PY, FAKE, "worker", "{run_dir}"])
    env["GO2TRAIN_RENDER_CMD"] = json.dumps([PY, FAKE, "render", "{run_dir}", "{chunk}"])
    env["GO2TRAIN_GPU_PROBE_CMD"] = json.dumps([PY, FAKE, "gpu", "{run_dir}"] if gpu else [])
    return env


def cli(*args, env=None, timeout=30):
    return go2train(*args, env=env, timeout=timeout)


def run_daemon(run: Path, env=None, timeout=40):
    """`daemon run` in the foreground until it exits; returns (rc, seconds)."""
    t0 = time.monotonic()
    res = cli("daemon", "run", "--run-dir", str(run), env=env or env_for(run), timeout=timeout)
    return res.returncode, time.monotonic() - t0


def spawn_daemon(run: Path, env=None) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "go2train", "daemon", "run", "--run-dir", str(run)],
                            env=env or env_for(run), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def events(run: Path, name: str | None = None):
    evs = read_jsonl(run / "logs" / "events.jsonl")
    return [e for e in evs if name is None or e["event"] == name]


def state(run: Path) -> dict:
    return read_json(run / "logs" / "state.json") or {}


def fake_log(run: Path):
    return read_jsonl(run / "fake_log.jsonl")




def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path):
    yield
    for p in procs_mentioning(tmp_path):  # never leave a test's processes behind, even on failure
        try:
            p.kill()
        except psutil.Error:
            pass
    # every state change a test drove is one supervisor/states.py allows
    bad = [w for w in read_jsonl(tmp_path / "run" / "logs" / "events.jsonl")
           if w.get("event") == "warning" and w.get("kind") == "state_transition"]
    assert not bad, bad


# ---------------------------------------------------------------------- restart policy
def test_crashes_restart_with_capped_exponential_backoff_that_resets_after_a_chunk(tmp_path):
    run = make_run(tmp_path, [
        {"do": "signal", "sig": "SIGSEGV"}, {"do": "signal", "sig": "SIGABRT"},
        {"do": "signal", "sig": "SIGBUS"}, {"do": "exit", "code": 139}, {"do": "exit", "code": 1},
        {"do": "ok"}, {"do": "signal", "sig": "SIGKILL"},
    ], default={"do": "done"}, sup={"backoff_initial_s": 0.1, "backoff_max_s": 0.3})
    rc, _ = run_daemon(run)
    assert rc == 0
    exits = events(run, "exit")
    assert [(e["code"], e["signal"], e["reason"]) for e in exits] == [
        (-11, "SIGSEGV", "crash"), (-6, "SIGABRT", "crash"), (-7, "SIGBUS", "crash"),
        (139, "SIGSEGV", "crash"), (1, None, "failure"), (0, None, "chunk_done"),
        (-9, "SIGKILL", "crash"), (3, None, "run_complete"),
    ]
    # stderr tails of failures: the worker's own lines, and faulthandler's report of the segfault
    assert "fake worker attempt 1" in exits[0]["stderr_tail"]
    assert "Segmentation fault" in exits[0]["stderr_tail"]
    assert "exiting with 1" in exits[4]["stderr_tail"]
    assert "stderr_tail" not in exits[5] and "stderr_tail" not in exits[7]
    restarts = events(run, "restart")
    assert [r["delay_s"] for r in restarts] == [0.1, 0.2, 0.3, 0.3, 0.3, 0.1]
    assert [r["consecutive"] for r in restarts] == [1, 2, 3, 4, 5, 1]
    starts = events(run, "start")
    assert [s["attempt"] for s in starts] == [1, 2, 3, 4, 5, 6, 1, 2]
    assert [s["chunk"] for s in starts] == [50] * 6 + [100, 100]
    # the backoff is really waited: restart event -> next start >= delay (and not much more)
    for r in restarts:
        nxt = next(s for s in starts if s["time"] > r["time"])
        assert r["delay_s"] - 0.01 <= nxt["time"] - r["time"] <= r["delay_s"] + 1.0
    mem = events(run, "memory")
    assert len(mem) == 8 and all(m["peak_rss_mb"] > 1 for m in mem)
    assert all(m["gpu_before_mb"] is None and m["gpu_leak"] is False for m in mem)
    st = state(run)
    assert st["state"] == "DONE" and st["restarts"] == {"total": 6, "consecutive": 0}
    assert st["last_exit"]["reason"] == "run_complete" and st["worker_pid"] is None
    states = [e["state"] for e in events(run, "state")]
    assert states[0] == "STARTING" and states[-1] == "DONE" and states.count("BACKOFF") == 6
    for i, s in enumerate(states):  # every BACKOFF is left for a new start
        if s == "BACKOFF":
            assert states[i + 1] == "STARTING"


def test_crash_loop_goes_fatal_with_the_reason(tmp_path):
    run = make_run(tmp_path, [], default={"do": "exit", "code": 1},
                   sup={"crash_loop_max": 3, "backoff_initial_s": 0.05, "backoff_max_s": 0.05})
    rc, secs = run_daemon(run)
    assert rc == 1
    assert len(events(run, "start")) == 4 and len(events(run, "restart")) == 3
    (fatal,) = events(run, "fatal")
    assert "crash loop: 4 failures within 600 s" in fatal["reason"]
    assert "crash_loop_max = 3" in fatal["reason"] and "exit code 1" in fatal["reason"]
    st = state(run)
    assert st["state"] == "FATAL" and st["fatal_reason"] == fatal["reason"]
    assert st["restarts"] == {"total": 3, "consecutive": 4}
    res = cli("daemon", "status", "--run-dir", str(run))
    assert res.returncode == 1 and res.stdout.startswith("FATAL") and "crash loop" in res.stdout
    assert len(res.stdout.strip().splitlines()) == 1


def test_config_error_is_fatal_at_once_without_retry(tmp_path):
    run = make_run(tmp_path, [{"do": "exit", "code": 2}], default={"do": "ok"})
    rc, secs = run_daemon(run)
    assert rc == 1 and secs < 10
    assert len(events(run, "start")) == 1 and events(run, "restart") == []
    (ex,) = events(run, "exit")
    assert (ex["code"], ex["reason"]) == (2, "config_error")
    st = state(run)
    assert st["state"] == "FATAL"
    assert st["fatal_reason"] == "worker exited with code 2 (configuration error): fake worker: exiting with 2"
    assert len(fake_log(run)) == 1  # never retried


# ---------------------------------------------------------------------- watchdog
def test_hang_kills_the_whole_process_group_and_restarts(tmp_path):
    run = make_run(tmp_path, [{"do": "hang", "after": 0.2}, {"do": "ok"}], default={"do": "done"},
                   sup={"hang_timeout_s": 0.5})
    rc, _ = run_daemon(run)
    assert rc == 0
    (hang,) = events(run, "hang")
    first = events(run, "start")[0]
    assert hang["pid"] == first["pid"]
    assert 0.5 <= hang["silent_s"] < 1.5
    ex = events(run, "exit")[0]
    assert (ex["code"], ex["signal"], ex["reason"]) == (-9, "SIGKILL", "hang")
    assert "no progress" in ex["stderr_tail"]
    grandchild = next(r["grandchild"] for r in fake_log(run) if "grandchild" in r)
    assert gone(grandchild)  # killed with its group, not just the worker
    assert any(w["kind"] == "leftover_processes" for w in events(run, "warning"))
    assert [e["reason"] for e in events(run, "exit")] == ["hang", "chunk_done", "run_complete"]
    assert (run / "logs" / "chunks" / "chunk_000050.json").exists()


def test_startup_phase_gets_startup_timeout_and_a_silent_worker_is_killed(tmp_path):
    run = make_run(tmp_path, [{"do": "ok", "start_s": 1.0}, {"do": "silent"}], default={"do": "done"},
                   sup={"hang_timeout_s": 0.4, "startup_timeout_s": 1.6})
    rc, _ = run_daemon(run)
    assert rc == 0
    exits = events(run, "exit")
    assert [e["reason"] for e in exits] == ["chunk_done", "hang", "run_complete"]
    assert exits[0]["duration_s"] > 1.0  # 1 s in phase "starting" > hang_timeout_s: not a hang
    (hang,) = events(run, "hang")
    assert hang["pid"] == exits[1]["pid"] and 1.6 <= hang["silent_s"] < 3.0
    # RUNNING only once the worker left phase "starting"
    start0 = events(run, "start")[0]["time"]
    running = next(e for e in events(run, "state") if e["state"] == "RUNNING")
    assert running["time"] - start0 >= 1.0


def test_sigstopped_worker_is_caught_as_a_hang(tmp_path):
    run = make_run(tmp_path, [{"do": "long"}], default={"do": "done"}, sup={"hang_timeout_s": 0.6})
    sup = spawn_daemon(run)
    try:
        wait_for(lambda: state(run).get("state") == "RUNNING", what="RUNNING")
        wpid = state(run)["worker_pid"]
        os.kill(wpid, signal.SIGSTOP)
        t_stop = time.time()
        assert sup.wait(timeout=20) == 0
    finally:
        sup.kill()
    (hang,) = events(run, "hang")
    assert hang["pid"] == wpid and 0.4 <= hang["time"] - t_stop < 2.5
    assert gone(wpid)
    assert [e["reason"] for e in events(run, "exit")] == ["hang", "run_complete"]


# ---------------------------------------------------------------------- milestone videos
def test_render_crash_or_hang_never_stops_training(tmp_path):
    run = make_run(
        tmp_path, [{"do": "ok"}] * 4, default={"do": "done"},
        render={"50": {"do": "signal", "sig": "SIGSEGV"}, "100": {"do": "hang"}},
        video={"every_episodes": 100, "timeout_s": 0.8},
    )
    rc, _ = run_daemon(run)
    assert rc == 0
    renders = events(run, "render")
    assert [(r["chunk"], r["ok"]) for r in renders] == [(50, False), (100, False), (200, True)]
    assert renders[0]["error"].startswith("killed by SIGSEGV")
    assert renders[1]["error"] == "timeout after 0.8 s (killed)" and 0.8 <= renders[1]["seconds"] < 2.0
    assert renders[2]["error"] is None
    assert (run / "videos" / "chunk_000200.mp4").exists()
    grandchild = next(r["grandchild"] for r in fake_log(run) if r.get("render") == 100 and "grandchild" in r)
    assert gone(grandchild)
    for c in (50, 100, 150, 200):
        assert (run / "logs" / "chunks" / f"chunk_{c:06d}.json").exists()
    # renders run beside the workers: RENDERING only while the last video finishes after DONE's worker
    assert [e["state"] for e in events(run, "state")].count("RENDERING") <= 1
    assert all(e["reason"] == "chunk_done" for e in events(run, "exit")[:4])  # no restart from a render
    assert state(run)["state"] == "DONE" and state(run)["restarts"]["total"] == 0


def test_render_runs_beside_the_next_worker_niced_with_progress(tmp_path):
    run = make_run(tmp_path, [{"do": "ok"}, {"do": "ok", "train_s": 1.0}, {"do": "ok", "train_s": 1.0}],
                   default={"do": "done"},
                   render={"50": {"do": "slow", "frames": 20, "frame_s": 0.1}},
                   video={"every_episodes": 0, "timeout_s": 20.0})
    sup = spawn_daemon(run)
    try:
        st = wait_for(lambda: (lambda s: s if s.get("render_pid") and s.get("worker_pid") else None)(state(run)),
                      what="a render and a worker at once")
        assert st["render_chunk"] == 50 and st["state"] in ("STARTING", "RUNNING")
        # the children's own create times (go2train.run.identity), not the supervisor's clock
        assert st["render_started"] == pytest.approx(psutil.Process(st["render_pid"]).create_time(), abs=0.01)
        assert st["worker_started"] == pytest.approx(psutil.Process(st["worker_pid"]).create_time(), abs=0.01)
        prog = wait_for(lambda: (lambda p: p if p and p.get("frames_done", 0) > 0 else None)(
            read_json(run / "logs" / "render.json")), what="render progress")
        assert prog["pid"] == st["render_pid"] and prog["frames_total"] == 20
        line = cli("daemon", "status", "--run-dir", str(run), env=env_for(run)).stdout
        assert "render chunk 50" in line and "/20 frames" in line, line
        assert sup.wait(timeout=30) == 0
    finally:
        sup.kill()
    evs = events(run)
    exit1 = next(e for e in evs if e["event"] == "exit")
    start2 = [e for e in evs if e["event"] == "start"][1]
    (render,) = events(run, "render")
    assert render["ok"] and render["chunk"] == 50
    assert start2["time"] - exit1["time"] < 3.0  # the next worker did not wait for the video
    assert render["time"] > start2["time"] + 1.0  # ...which was still rendering when it started
    (nice,) = [r["nice"] for r in fake_log(run) if "nice" in r]
    assert nice >= 10
    assert (run / "videos" / "chunk_000050.mp4").read_bytes() == b"frame" * 20
    assert state(run)["state"] == "DONE" and state(run)["render_pid"] is None


def test_the_produced_chunk_is_the_record_that_appeared_not_the_heartbeats(tmp_path):
    """Chunk records before/after a worker decide what it produced: a run_complete worker that
    trained nothing (its heartbeat names chunk 100, no record appears) gets no video and no warning
    (it used to look for the heartbeat's chunk record). state.json shows the heartbeat's chunk."""
    run = make_run(tmp_path, [{"do": "done"}], video={"every_episodes": 50})
    (run / "logs" / "chunks").mkdir(parents=True)
    (run / "logs" / "chunks" / "chunk_000050.json").write_text(json.dumps({"chunk": 50}))
    rc, _ = run_daemon(run)
    assert rc == 0 and state(run)["state"] == "DONE" and state(run)["chunk"] == 100
    assert events(run, "render_start") == [] and events(run, "warning") == []


def test_milestones_while_rendering_keep_only_the_newest_waiting(tmp_path):
    slow = {"do": "slow", "frames": 15, "frame_s": 0.1}
    run = make_run(tmp_path, [{"do": "ok"}] * 3, default={"do": "done"},
                   render={"50": slow, "100": slow, "150": slow},
                   video={"every_episodes": 50, "timeout_s": 20.0})
    rc, _ = run_daemon(run)
    assert rc == 0
    renders = events(run, "render")
    assert [(r["chunk"], r["ok"]) for r in renders] == [(50, True), (150, True)]
    (skip,) = [w for w in events(run, "warning") if w["kind"] == "render_skipped"]
    assert "chunk 100" in skip["message"] and "go2train video --chunk 100" in skip["message"]
    starts = events(run, "render_start")
    assert [s["chunk"] for s in starts] == [50, 150]
    assert starts[1]["time"] >= renders[0]["time"]  # one render at a time
    assert state(run)["state"] == "DONE"


def test_sigterm_mid_render_stops_it_and_leaves_no_partial_video(tmp_path):
    run = make_run(tmp_path, [{"do": "ok"}, {"do": "long"}],
                   render={"50": {"do": "slow", "frames": 400, "frame_s": 0.05}},
                   video={"every_episodes": 0, "timeout_s": 60.0})
    sup = spawn_daemon(run)
    try:
        wait_for(lambda: (run / "logs" / "render.json").exists() and state(run).get("worker_pid"),
                 what="render and worker running")
        rpid, wpid = state(run)["render_pid"], state(run)["worker_pid"]
        assert any(p.name.endswith(".tmp.mp4") for p in (run / "videos").iterdir())
        os.kill(sup.pid, signal.SIGTERM)
        assert sup.wait(timeout=10) == 0
    finally:
        sup.kill()
    assert gone(rpid) and gone(wpid)
    assert sorted(p.name for p in (run / "videos").iterdir()) == []
    (render,) = events(run, "render")
    assert not render["ok"] and render["error"].startswith("stopped (SIGTERM)")
    st = state(run)
    assert st["state"] == "STOPPED" and st["render_pid"] is None
    assert not procs_mentioning(run)


def test_startup_phases_get_the_startup_timeout(tmp_path):
    # 1.5 s in start-up phases with a 1 s hang timeout: no hang, since they are start-up phases
    run = make_run(tmp_path, [{"do": "ok", "phases": [["importing", 0.5], ["compiling_kernels", 1.0]]}],
                   default={"do": "done"}, sup={"hang_timeout_s": 1.0, "startup_timeout_s": 5.0})
    rc, _ = run_daemon(run)
    assert rc == 0
    assert not events(run, "hang")
    states = [e["state"] for e in events(run, "state")]
    assert states[:2] == ["STARTING", "RUNNING"]


# ---------------------------------------------------------------------- the config rule
def test_each_worker_reads_the_config_at_its_start_and_a_mid_run_edit_is_one_event(tmp_path):
    """docs/CONTRACTS.md: the supervisor reads go2train.toml once, when it starts; every worker
    reads it at its own start. An edit during chunk 50 (`write_config`, as the chaos campaign's
    set_target does) is the config of the next worker (one config_changed event naming the keys)
    but not the supervisor's ([video] every_episodes stays 0: no video of chunks 100 and 150)."""
    run = make_run(tmp_path, [], default={"do": "done"})
    edited = (run / "go2train.toml").read_text().replace("episodes = 50\n", "episodes = 50\nmax_episodes = 150\n", 1)
    edited = edited.replace("every_episodes = 0", "every_episodes = 50")
    assert edited.count("max_episodes = 150") == 1 and "every_episodes = 50" in edited
    script = json.loads((run / "fake_script.json").read_text())
    script.update(config=True, attempts=[{"do": "ok", "write_config": edited}, {"do": "signal"},
                                         {"do": "ok"}, {"do": "ok"}])
    (run / "fake_script.json").write_text(json.dumps(script))
    rc, _ = run_daemon(run)
    assert rc == 0
    starts = events(run, "start")
    assert [e["reason"] for e in events(run, "exit")] == ["chunk_done", "crash", "chunk_done", "chunk_done",
                                                           "run_complete"]
    (changed,) = events(run, "config_changed")  # the crashed attempt's restart read the same config
    assert changed["pid"] == starts[1]["pid"] and changed["time"] > starts[1]["time"]
    assert changed["changed"] == {"chunk.max_episodes": [0, 150], "video.every_episodes": [0, 50]}
    assert changed["source"] == str(run / "go2train.toml")
    assert read_json(run / "logs" / "worker_config.json")["chunk"]["max_episodes"] == 150
    assert [r["chunk"] for r in events(run, "render")] == [50]  # the supervisor's [video]: as it started


def test_record_config_stores_the_workers_config_and_names_changed_keys(tmp_path):
    from go2train.config import load
    from go2train.run.layout import RunDir
    from go2train.train.worker import config_changes, record_config

    rd = RunDir.at(tmp_path)
    rd.make()
    toml = tmp_path / "go2train.toml"
    toml.write_text("[chunk]\nepisodes = 50\n[ppo]\nnet_arch = [32, 32]\n")
    assert record_config(rd, load(None, tmp_path)) == {}  # the first worker: nothing to compare
    assert read_json(rd.logs / "worker_config.json") == load(None, tmp_path).to_dict()
    assert not rd.events.exists()
    toml.write_text("[chunk]\nepisodes = 100\n[ppo]\nnet_arch = [64, 64]\n")
    changed = record_config(rd, load(None, tmp_path))
    assert changed == {"chunk.episodes": [50, 100], "ppo.net_arch": [[32, 32], [64, 64]]}
    assert record_config(rd, load(None, tmp_path)) == {}  # unchanged: no second event
    (ev,) = read_jsonl(rd.events)
    assert ev["event"] == "config_changed" and ev["changed"] == changed and ev["pid"] == os.getpid()
    assert config_changes({"a": {"b": 1}, "c": 2}, {"a": {"b": 1}, "d": 3}) == {"c": [2, None], "d": [None, 3]}


# ---------------------------------------------------------------------- GPU memory
def test_gpu_memory_not_returning_to_baseline_is_reported(tmp_path):
    # probe calls: worker 1 before/after (late release: 1400 then 1000), worker 2 before/after
    # (2000 stays), worker 3 before/after
    run = make_run(tmp_path, [{"do": "ok"}, {"do": "ok"}], default={"do": "done"},
                   gpu=[1000, 1400, 1000, 1000, 2000])
    env = env_for(run, gpu=True)
    env["GO2TRAIN_RENDER_CMD"] = json.dumps([str(run / "no-renderer")])  # no render beside worker 2
    rc, _ = run_daemon(run, env=env)
    assert rc == 0
    mem = [(m["gpu_before_mb"], m["gpu_after_mb"], m["gpu_leak"]) for m in events(run, "memory")]
    assert mem == [(1000, 1000, False), (1000, 2000, True), (2000, 2000, False)]
    (warn,) = [w for w in events(run, "warning") if w["kind"] == "gpu_leak"]
    assert "1000 MiB" in warn["message"] and "2000 MiB" in warn["message"]
    (render,) = events(run, "render")
    assert not render["ok"] and "cannot start renderer" in render["error"]


def test_gpu_memory_is_not_judged_while_a_render_runs(tmp_path):
    # worker 2 runs beside the chunk-50 render: +1000 MiB at its exit is the render's, not a leak
    run = make_run(tmp_path, [{"do": "ok"}, {"do": "ok"}], default={"do": "done"},
                   render={"50": {"do": "slow", "frames": 40, "frame_s": 0.05}},
                   gpu=[1000, 1000, 1000, 2000, 1000])
    rc, _ = run_daemon(run, env=env_for(run, gpu=True))
    assert rc == 0
    mem = events(run, "memory")
    assert [(m["gpu_leak"], m.get("render_overlap", False)) for m in mem][:2] == [(False, False), (False, True)]
    assert not [w for w in events(run, "warning") if w["kind"] == "gpu_leak"]


# ---------------------------------------------------------------------- signals
def test_sigterm_stops_gracefully_and_sigkills_a_worker_that_ignores_it(tmp_path):
    run = make_run(tmp_path, [{"do": "long", "ignore_term": True}], sup={"stop_timeout_s": 0.5})
    sup = spawn_daemon(run)
    try:
        wait_for(lambda: state(run).get("state") == "RUNNING", what="RUNNING")
        wpid = state(run)["worker_pid"]
        os.kill(sup.pid, signal.SIGHUP)  # ignored
        wait_for(lambda: any(w["kind"] == "sighup" for w in events(run, "warning")), what="sighup")
        assert sup.poll() is None and state(run)["state"] == "RUNNING"
        t0 = time.monotonic()
        os.kill(sup.pid, signal.SIGTERM)
        assert sup.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 3.0
    finally:
        sup.kill()
    assert gone(wpid)
    (ex,) = events(run, "exit")
    assert (ex["reason"], ex["signal"]) == ("stopped", "SIGKILL")
    assert any(w["kind"] == "stop_timeout" for w in events(run, "warning"))
    assert [e["state"] for e in events(run, "state")][-2:] == ["STOPPING", "STOPPED"]
    assert state(run)["state"] == "STOPPED" and not (run / "logs" / "daemon.pid").exists()


# ---------------------------------------------------------------------- the CLI
def test_daemon_start_status_second_start_and_stop(tmp_path):
    run = make_run(tmp_path, [], default={"do": "long"})
    env = env_for(run)
    del env["GO2TRAIN_GPU_PROBE_CMD"]  # the real pynvml probe, in its subprocess
    t0 = time.monotonic()
    res = cli("daemon", "start", "--run-dir", str(run), env=env)
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - t0 < 3.0
    pid = json.loads((run / "logs" / "daemon.pid").read_text())["pid"]
    assert res.stdout.strip() == f"go2train daemon started: pid {pid}, run dir {run}"
    sup = psutil.Process(pid)
    assert os.getsid(pid) == pid  # detached: its own session
    wait_for(lambda: state(run).get("state") == "RUNNING", what="RUNNING")

    res = cli("daemon", "status", "--run-dir", str(run))
    assert res.returncode == 0
    assert res.stdout.startswith(f"RUNNING pid {pid} chunk 50 restarts 0 (consecutive 0) worker ")

    for cmd in ("start", "run"):  # one daemon per run directory
        res = cli("daemon", cmd, "--run-dir", str(run), env=env)
        assert res.returncode == 1
        assert res.stderr.strip().splitlines() == [
            f"go2train: a daemon is already running for {run} (pid {pid})"]

    assert sup.memory_info().rss < 60 * 2**20
    assert state(run)["supervisor_peak_rss_mb"] < 60

    t0 = time.monotonic()
    res = cli("daemon", "stop", "--run-dir", str(run))
    assert res.returncode == 0 and res.stdout.startswith(f"go2train daemon stopped: pid {pid}")
    assert time.monotonic() - t0 < 5.0
    assert gone(pid)
    wait_for(lambda: not procs_mentioning(run), timeout=3, what="no process left")
    (ex,) = events(run, "exit")
    assert (ex["code"], ex["reason"]) == (4, "stopped")  # the worker's own graceful stop
    assert state(run)["state"] == "STOPPED"

    res = cli("daemon", "status", "--run-dir", str(run))
    assert res.returncode == 3 and res.stdout.startswith("not running (last state STOPPED")
    res = cli("daemon", "stop", "--run-dir", str(run))
    assert res.returncode == 1 and res.stderr.strip() == f"go2train: no daemon is running for {run}"


def test_kill_9_leaves_a_stale_pid_file_and_the_next_start_adopts_the_run(tmp_path):
    run = make_run(tmp_path, [], default={"do": "long"})
    env = env_for(run)
    assert cli("daemon", "start", "--run-dir", str(run), env=env).returncode == 0
    wait_for(lambda: state(run).get("state") == "RUNNING", what="RUNNING")
    old_pid, old_worker = state(run)["supervisor_pid"], state(run)["worker_pid"]
    assert state(run)["worker_started"] == pytest.approx(psutil.Process(old_worker).create_time(), abs=0.01)
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: gone(old_pid), what="supervisor death")
    assert json.loads((run / "logs" / "daemon.pid").read_text())["pid"] == old_pid  # stale file
    assert not gone(old_worker)  # its worker outlives it (own session)

    res = cli("daemon", "status", "--run-dir", str(run))
    assert res.returncode == 3 and res.stdout.startswith("not running (last state RUNNING")

    res = cli("daemon", "start", "--run-dir", str(run), env=env)
    assert res.returncode == 0, res.stderr
    new_pid = json.loads((run / "logs" / "daemon.pid").read_text())["pid"]
    assert new_pid != old_pid
    wait_for(lambda: state(run).get("supervisor_pid") == new_pid and state(run).get("state") == "RUNNING",
             what="RUNNING under the new supervisor")
    assert gone(old_worker)  # the orphan was stopped before a second worker started
    (orphan,) = [w for w in events(run, "warning") if w["kind"] == "orphan_worker"]
    assert f"pid {old_worker}" in orphan["message"]
    assert state(run)["worker_pid"] != old_worker

    assert cli("daemon", "stop", "--run-dir", str(run)).returncode == 0
    wait_for(lambda: not procs_mentioning(run), timeout=3, what="no process left")


def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "go2train.toml").write_text("[supervisor]\nbackoff_initial_s = 'soon'\n")
    for cmd in ("start", "run"):
        res = cli("daemon", cmd, "--run-dir", str(run))
        assert res.returncode == 2
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "[supervisor] backoff_initial_s" in lines[0]
    assert sorted(p.name for p in run.iterdir()) == ["go2train.toml"]

    (run / "go2train.toml").write_text("[supervisor]\nbackoff_initial_s = 1.0\n")
    env = dict(os.environ, GO2TRAIN_WORKER_CMD="not json")
    res = cli("daemon", "start", "--run-dir", str(run), env=env)
    assert res.returncode == 2 and "GO2TRAIN_WORKER_CMD" in res.stderr
    assert sorted(p.name for p in run.iterdir()) == ["go2train.toml"]

    missing = tmp_path / "nope"
    res = cli("daemon", "start", "--run-dir", str(missing))
    assert res.returncode == 2
    assert res.stderr.strip() == f"go2train: run directory {missing} does not exist"
    assert not missing.exists()

    res = cli("daemon", "status", "--run-dir", str(run))
    assert res.returncode == 3 and res.stdout.strip() == f"not running (no daemon has run in {run})"


def test_supervisor_path_imports_neither_torch_nor_genesis(tmp_path):
    run = make_run(tmp_path, [{"do": "ok"}], default={"do": "done"})
    code = (
        "import atexit, json, sys\n"
        "def report():\n"
        "    heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'genesis', 'pynvml'))\n"
        "    peak = [int(ln.split()[1]) / 1024 for ln in open('/proc/self/status') if ln.startswith('VmHWM:')][0]\n"
        "    sys.stderr.write('REPORT ' + json.dumps({'heavy': heavy, 'peak_mb': peak}) + '\\n')\n"
        "atexit.register(report)\n"
        "import supervisor.core, supervisor.control, supervisor.pidlock, supervisor.policy\n"
        "sys.argv = ['go2train', 'daemon', 'run', '--run-dir', sys.argv[1]]\n"
        "from go2train.cli import main\n"
        "main()\n"
    )
    res = subprocess.run([PY, "-c", code, str(run)], env=env_for(run), capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stderr.split("REPORT ", 1)[1])
    assert report["heavy"] == []
    assert report["peak_mb"] < 60
    assert state(run)["state"] == "DONE"
    assert 0 < state(run)["supervisor_peak_rss_mb"] < 60
