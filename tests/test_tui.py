"""`go2train status`: the dashboard rendered from fixture run directories, the CLI, and a real
terminal (tmux).

Fixtures are written per docs/CONTRACTS.md by :func:`make_run`; the screen is rendered through
rich's recording console and asserted on as text.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from rich.console import Console

from go2train import tui
from go2train.run.files import append_jsonl, atomic_write_json, read_json
from go2train.run.layout import RunDir

GO2TRAIN = Path(sys.executable).parent / "go2train"
MB = 2**20


# ----------------------------------------------------------------------------- fixtures


def chunk_metrics(milestone: int, reward: float, speed: float, started: float, **extra) -> dict:
    d = {
        "chunk": milestone, "episodes": 12800, "episodes_total": milestone * 256,
        "timesteps": 2_000_000, "timesteps_total": milestone * 40_000,
        "reward_mean": reward, "reward_min": reward - 13.0, "reward_max": reward + 10.25,
        "ep_len_mean": 350.0,
        "reward_terms": {"height": 0.6 * reward, "tracking_lin_vel": 0.5 * reward,
                         "tracking_ang_vel": 0.2, "action_rate": -0.31, "similar_to_default": -0.12},
        "forward_speed_mean": speed, "fall_rate": 0.125, "steps_per_s": 12000.0,
        "startup_s": 12.0, "train_s": 400.0, "save_s": 0.5, "peak_rss_mb": 1536.0,
        "peak_gpu_mb": None, "started": started, "finished": started + 412.5,
        # issue 13: what was commanded and achieved (speed along the command, m/s)
        "command_speed_mean": 0.5, "speed_along_command_mean": speed, "tracking_error_lin_mean": 0.3,
        "tracking_error_yaw_mean": 0.2, "standing_share": 0.1,
        "command": {"vx_range": [-1.0, 1.0], "vy_range": [-0.5, 0.5], "yaw_range": [-1.0, 1.0],
                    "standing_share": 0.1},
        "backend": "cpu",
    }
    d.update(extra)
    return d


def make_run(root: Path, kind: str = "running", now: float | None = None) -> Path:
    """A run directory as the supervisor and worker leave it. ``kind``: running, backoff, fatal,
    stale, lazy, stopped."""
    now = time.time() if now is None else now
    rd = RunDir.at(root)
    rd.make()
    t0 = now - 3 * 3600
    me = os.getpid()  # a live pid, so the supervisor counts as alive (psutil)
    if kind == "lazy":  # the seeds' signature: reward 10 -> 17 while forward speed 0.33 -> 0.01
        figures = [(10.0, 0.33), (13.5, 0.12), (17.0, 0.01)]
    else:
        figures = [(5.5, 0.12), (9.75, 0.27), (14.25, 0.41)]
    chunks = []
    for i, (reward, speed) in enumerate(figures):
        started = t0 + 600 * i
        c = chunk_metrics(50 * (i + 1), reward, speed, started)
        if kind == "lazy" and i == 2:
            c["reward_terms"] = {"height": 12.4, "alive": 2.0, "tracking_lin_vel": 0.9,
                                 "action_rate": -0.4}
        chunks.append(c)
        atomic_write_json(rd.chunk_metrics(c["chunk"]), c)
    (rd.videos / "chunk_000100.mp4").write_bytes(b"\x00" * 64)

    # events: a clean first chunk, then a segfault + restart during chunk 100, a render
    ev = [
        {"time": t0 - 5, "event": "state", "state": "RUNNING", "previous": "STARTING"},
        {"time": t0 - 4, "event": "start", "pid": 5000001, "chunk": 50, "attempt": 1},
        {"time": chunks[0]["finished"], "event": "exit", "pid": 5000001, "code": 0, "signal": None,
         "duration_s": 412.5, "reason": "chunk_done"},
        {"time": chunks[0]["finished"] + 60, "event": "exit", "pid": 5000002, "code": -11,
         "signal": "SIGSEGV", "duration_s": 55.0, "reason": "crash",
         "stderr_tail": "Fatal Python error: Segmentation fault\n\nThread 0x1 (most recent call first):\n"
                        '  File "env.py", line 10 in step\n'},
        {"time": chunks[0]["finished"] + 61, "event": "restart", "delay_s": 2.0, "consecutive": 1},
        {"time": chunks[0]["finished"] + 63, "event": "start", "pid": 5000003, "chunk": 100, "attempt": 2},
        {"time": chunks[1]["finished"] + 1, "event": "render", "chunk": 100, "ok": True, "seconds": 42.0,
         "error": None},
        {"time": chunks[2]["finished"] + 1, "event": "memory", "peak_rss_mb": 1536.0,
         "gpu_before_mb": None, "gpu_after_mb": None, "gpu_leak": False},
    ]
    if kind == "lazy":
        ev.append({"time": chunks[2]["finished"] + 2, "event": "warning", "kind": "lazy_optimum",
                   "message": "reward up, robot still"})
    state = {
        "state": "RUNNING", "supervisor_pid": me, "worker_pid": me, "chunk": 200,
        "restarts": {"total": 1, "consecutive": 0},
        "last_exit": {"code": 0, "signal": None, "duration_s": 412.5, "reason": "chunk_done",
                      "time": chunks[2]["finished"]},
        "next_retry": None, "started": t0 - 5, "updated": now, "fatal_reason": None,
        "run_dir": str(rd.root),
    }
    hb = {
        "pid": me, "chunk": 200, "phase": "training", "timesteps": 6_543_210, "episodes": 38400 + 3200,
        "episodes_per_robot": 162.5, "chunk_start_episodes": 38400, "target_episodes": 51200,
        "steps_per_s": 12000.0, "time": now - 2, "started": now - 120, "n_envs": 256,
        "backend": "cpu", "device": "cpu", "rss_mb": 900.0, "gpu_mem_mb": None,
    }
    if kind == "backoff":
        ev += [
            {"time": now - 20, "event": "exit", "pid": 5000010, "code": -11, "signal": "SIGSEGV",
             "duration_s": 30.0, "reason": "crash", "stderr_tail": "Segmentation fault"},
            {"time": now - 19, "event": "restart", "delay_s": 40.0, "consecutive": 2},
            {"time": now - 19, "event": "state", "state": "BACKOFF", "previous": "RUNNING"},
        ]
        state.update(state="BACKOFF", worker_pid=None, next_retry=now + 21,
                     restarts={"total": 3, "consecutive": 2},
                     last_exit={"code": -11, "signal": "SIGSEGV", "duration_s": 30.0,
                                "reason": "crash", "time": now - 20})
        hb.update(pid=5000010, time=now - 20)
    elif kind == "fatal":
        reason = "config error: [ppo] batch_size: must divide n_steps * n_envs"
        ev += [{"time": now - 50, "event": "exit", "pid": 5000020, "code": 2, "signal": None,
                "duration_s": 3.0, "reason": "config_error"},
               {"time": now - 49, "event": "fatal", "reason": reason},
               {"time": now - 49, "event": "state", "state": "FATAL", "previous": "RUNNING"}]
        state.update(state="FATAL", worker_pid=None, fatal_reason=reason, updated=now - 49,
                     last_exit={"code": 2, "signal": None, "duration_s": 3.0,
                                "reason": "config_error", "time": now - 50})
        hb.update(pid=5000020, time=now - 52)
    elif kind == "stopped":
        state.update(state="STOPPED", worker_pid=None, updated=now - 600)
        hb.update(pid=5000030, time=now - 610, phase="exiting")
    elif kind == "stale":
        hb.update(time=now - 95)  # heartbeat_s 5 by default: 3 x 5 = 15 s
    for e in ev:
        append_jsonl(rd.events, e)
    atomic_write_json(rd.state, state)
    atomic_write_json(rd.heartbeat, hb)
    return rd.root


def screen(run_dir: Path, width: int = 120, height: int | None = None, now: float | None = None) -> str:
    snap = tui.snapshot(run_dir, now=now)
    console = Console(record=True, width=width, file=open(os.devnull, "w"), color_system=None)
    console.print(tui.render(snap, width=width, height=height))
    return console.export_text()


def chunk_row(text: str, milestone: int) -> str:
    rows = [ln for ln in text.splitlines() if ln.strip().startswith(f"{milestone} ")]
    assert rows, f"no row for chunk {milestone} in:\n{text}"
    return rows[0]


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([str(GO2TRAIN), "status", *args], capture_output=True, text=True,
                          timeout=30, env=e, stdin=subprocess.DEVNULL)


# ----------------------------------------------------------------------------- rendering


def test_running(tmp_path):
    now = time.time()
    text = screen(make_run(tmp_path, "running", now), now=now)
    assert "RUNNING" in text
    assert f"supervisor pid {os.getpid()} (alive)" in text
    assert "up 3h00m" in text
    assert "backend cpu / device cpu" in text
    assert str(tmp_path) in text
    # current chunk: 3200 of 12800 episodes toward milestone 200
    assert "chunk → 200" in text and "25%" in text and "3,200 / 12,800 episodes" in text
    assert "12,000 env-steps/s" in text and "timesteps 6,543,210" in text
    assert "ETA" in text
    # chunks table, newest first; reward mean/max formatted, speed, falls, duration, peak memory
    lines = text.splitlines()
    assert lines.index(chunk_row(text, 150)) < lines.index(chunk_row(text, 100)) < lines.index(
        chunk_row(text, 50))
    row150 = chunk_row(text, 150)
    assert "38,400" in row150 and "14.25" in row150 and "24.50" in row150 and "0.41" in row150
    assert "12.5%" in row150 and "6m52s" in row150 and "1.5 GB" in row150
    row100 = chunk_row(text, 100)
    assert "✓" in row100  # videos/chunk_000100.mp4 exists
    assert "✓" not in row150 and "✓" not in chunk_row(text, 50)
    # the segfault + restart fell between chunk 50's end and chunk 100's end
    assert row100.split()[7] == "1" and row150.split()[7] == "0"
    # sparklines, reward terms, events, memory
    assert "5.50 → 14.25" in text and "0.12 → 0.41 m/s" in text
    assert any(ch in text for ch in "▁▂▃▄▅▆▇█")
    assert "reward terms, chunk 150" in text and "height" in text and "+8.55" in text
    assert "SIGSEGV" in text and "restart in 2s (consecutive 1)" in text
    wide = screen(tmp_path, width=170, now=now)
    assert "crash after 55s · Fatal Python error: Segmentation fault" in wide  # the telling line
    assert "video of chunk 100 in 42s" in text
    assert "RUNNING ← STARTING" not in text and "peak RSS" not in text  # routine: not listed
    assert "memory now" in text and "supervisor " in text and "worker" in text
    assert "needs you" not in text  # nothing to warn about


def test_startup_phase_and_render_beside_the_chunk(tmp_path):
    now = time.time()
    run = make_run(tmp_path, "running", now)
    rd = RunDir.at(run)
    st = read_json(rd.state)
    st.update(state="STARTING", render_pid=os.getpid(), render_started=now - 62, render_chunk=150)
    atomic_write_json(rd.state, st)
    hb = read_json(rd.heartbeat)
    hb.update(phase="compiling_kernels", phase_started=now - 75, phase_s=73.0, timesteps=0)
    atomic_write_json(rd.heartbeat, hb)
    atomic_write_json(rd.render_progress, {"pid": os.getpid(), "chunk": 150, "phase": "rendering",
                                           "frames_done": 120, "frames_total": 400})
    text = screen(run, width=170, now=now)
    assert "phase compiling_kernels 1m15s" in text
    assert "first run on this machine, cached afterwards" in text
    assert "video chunk 150 120/400 frames (30%)" in text and "1m02s" in text
    snap = tui.snapshot(run, now=now)
    assert snap["render"]["frames_done"] == 120 and snap["progress"]["phase_s"] == 75
    # a progress file of another render (other pid) is not shown as this one's frames
    atomic_write_json(rd.render_progress, {"pid": 1, "chunk": 100, "frames_done": 400, "frames_total": 400})
    text = screen(run, width=170, now=now)
    assert "video chunk 150 starting" in text and "400/400" not in text


def test_backoff(tmp_path):
    now = time.time()
    text = screen(make_run(tmp_path, "backoff", now), now=now)
    assert "BACKOFF" in text
    assert "next retry in 21s" in text
    assert "restarts 3 total, 2 consecutive" in text
    assert "last exit: SIGSEGV (crash)" in text
    assert "restarts this chunk 1" in text  # the crash after chunk 150 finished
    assert "worker not running" in text
    assert "needs you" not in text  # backing off is the supervisor's job, not the user's


def test_fatal(tmp_path):
    now = time.time()
    text = screen(make_run(tmp_path, "fatal", now), now=now)
    assert "FATAL" in text
    warn = [ln for ln in text.splitlines() if "⚠" in ln]
    assert warn and "FATAL: config error: [ppo] batch_size" in warn[0]
    assert "fix it, then: go2train daemon start" in text
    assert "ran 2h59m" in text  # not "up": the daemon is not running


def test_starting_before_any_chunk(tmp_path):
    now = time.time()
    rd = RunDir.at(tmp_path)
    rd.make()
    atomic_write_json(rd.state, {"state": "STARTING", "supervisor_pid": os.getpid(), "worker_pid": None,
                                 "chunk": 50, "restarts": {"total": 0, "consecutive": 0},
                                 "last_exit": None, "next_retry": None, "started": now - 3,
                                 "updated": now, "fatal_reason": None, "run_dir": str(tmp_path)})
    text = screen(tmp_path, now=now)
    assert "STARTING" in text and "up 3s" in text
    assert "no heartbeat yet — next milestone 50" in text
    assert "no chunk finished yet" in text and "no events yet" in text
    fitted = screen(tmp_path, height=40, now=now)
    assert "no chunk finished yet" in fitted and len(fitted.splitlines()) <= 40


def test_stale_heartbeat(tmp_path):
    now = time.time()
    text = screen(make_run(tmp_path, "stale", now), now=now)
    warn = " ".join(ln for ln in text.splitlines() if "⚠" in ln or "│" in ln)
    assert "heartbeat: last sign of the worker 1m35s ago" in text
    assert "3 × heartbeat_s = 15s" in warn
    # not stale when the daemon is stopped, whatever the heartbeat's age
    other = tmp_path / "stopped"
    text2 = screen(make_run(other, "stopped", now), now=now)
    assert "STOPPED" in text2 and "heartbeat: last sign" not in text2


def test_stale_threshold_follows_config(tmp_path):
    now = time.time()
    run = make_run(tmp_path, "stale", now)
    (run / "go2train.toml").write_text("[chunk]\nheartbeat_s = 10\n")
    snap = tui.snapshot(run, now=now)
    assert [w["kind"] for w in snap["warnings"]] == ["stale_heartbeat"]
    snap = tui.snapshot(run, now=now - 70)  # heartbeat 25 s old: < 30 s
    assert snap["warnings"] == []


def test_lazy_optimum_warning_shown(tmp_path):
    now = time.time()
    text = screen(make_run(tmp_path, "lazy", now), now=now)
    warn = [ln for ln in text.splitlines() if "⚠" in ln]
    assert warn and "lazy optimum?" in warn[0]
    assert "10.00 → 17.00" in text and "0.33 → 0.01" in text
    assert "height +12.40" in text  # which term pays


def test_daemon_gone(tmp_path):
    now = time.time()
    run = make_run(tmp_path, "running", now)
    state = json.loads((run / "logs/state.json").read_text())
    state["supervisor_pid"] = 2**22 + 12345  # above pid_max's default: no such process
    atomic_write_json(run / "logs/state.json", state)
    snap = tui.snapshot(run, now=now)
    assert [w["kind"] for w in snap["warnings"]] == ["daemon_gone"]
    assert "(gone)" in screen(run, now=now)


def test_disk_nearly_full(tmp_path, monkeypatch):
    now = time.time()
    run = make_run(tmp_path, "running", now)
    du = shutil.disk_usage(run)
    monkeypatch.setattr(tui.reader.shutil, "disk_usage",
                        lambda p: du._replace(free=int(1.5e9), total=int(100e9)))
    text = screen(run, now=now)
    assert "disk nearly full: 1.5 GB free (1.5 %)" in text


def test_fits_terminal_height(tmp_path):
    now = time.time()
    run = make_run(tmp_path, "running", now)
    for i in range(4, 41):  # 40 chunks in all
        atomic_write_json(RunDir.at(run).chunk_metrics(50 * i),
                          chunk_metrics(50 * i, 14.0 + i, 0.45, now - 3600 + i))
    text = screen(run, height=50, now=now)
    assert len(text.splitlines()) <= 50
    assert "2000 " in text and "older chunks not shown" in text
    assert "reward terms, chunk 2000" in text
    full = screen(run, now=now)
    assert chunk_row(full, 50)  # unfitted: all 40 (≤ 50) shown


def test_broken_files_never_crash(tmp_path):
    now = time.time()
    run = make_run(tmp_path, "running", now)
    (run / "logs/chunks/chunk_000100.json").write_text("{torn")
    atomic_write_json(run / "logs/chunks/chunk_000150.json", {"reward_mean": "x", "chunk": 150})
    atomic_write_json(run / "logs/heartbeat.json", {"episodes": None, "time": "soon"})
    with open(run / "logs/events.jsonl", "a") as f:
        f.write('{"event": "restart", "time": "x"}\n[1, 2]\n{"time": 1.0, "event": "mystery", "x": 1}\n{"torn')
    text = screen(run, now=now)
    assert "RUNNING" in text and "mystery" in text
    assert "150" in text and "—" in text


def test_events_listed_are_the_notable_ones():
    assert not tui.notable({"event": "state", "state": "RUNNING"})
    assert not tui.notable({"event": "memory", "peak_rss_mb": 1.0, "gpu_leak": False})
    assert tui.notable({"event": "memory", "peak_rss_mb": 1.0, "gpu_leak": True})
    for kind in ("exit", "restart", "hang", "render", "start", "fatal", "warning"):
        assert tui.notable({"event": kind})


def test_reader_picks_up_new_files(tmp_path):
    now = time.time()
    run = make_run(tmp_path, "running", now)
    reader = tui.Reader(run)
    assert len(reader.snapshot(now)["chunks"]) == 3
    atomic_write_json(RunDir.at(run).chunk_metrics(200),
                      chunk_metrics(200, 18.0, 0.45, now - 100))
    append_jsonl(run / "logs/events.jsonl", {"time": now, "event": "hang", "pid": 7, "silent_s": 300.0})
    snap = reader.snapshot(now)
    assert [c["chunk"] for c in snap["chunks"]] == [50, 100, 150, 200]
    assert snap["events"][-1]["event"] == "hang"


# ----------------------------------------------------------------------------- the CLI


def test_cli_once_no_colour(tmp_path):
    run = make_run(tmp_path, "running")
    r = run_cli("--run-dir", str(run), "--once")
    assert r.returncode == 0, r.stderr
    assert "RUNNING" in r.stdout and "SIGSEGV" in r.stdout and "✓" in r.stdout
    assert "\x1b[" not in r.stdout  # not a terminal: no colour codes
    r2 = run_cli("--run-dir", str(run))  # stdout is not a terminal: like --once
    assert r2.returncode == 0 and "RUNNING" in r2.stdout and "\x1b[" not in r2.stdout


def test_cli_json(tmp_path):
    run = make_run(tmp_path, "fatal")
    r = run_cli("--run-dir", str(run), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["state"]["state"] == "FATAL"
    assert data["heartbeat"]["chunk"] == 200
    assert [c["chunk"] for c in data["chunks"]] == [50, 100, 150]
    assert data["chunks"][1]["video"] is True and data["chunks"][1]["restarts"] == 1
    assert data["events"][-1]["event"] == "fatal"
    assert data["warnings"][0]["kind"] == "fatal"


def test_cli_empty_dir(tmp_path):
    r = run_cli("--run-dir", str(tmp_path))
    assert r.returncode == 1
    lines = (r.stdout + r.stderr).strip().splitlines()
    assert lines == [f"no go2train run in {tmp_path} — start one with: "
                     f"go2train daemon start --run-dir {tmp_path}"]
    RunDir.at(tmp_path).make()  # empty models/ logs/ videos/ are still no run
    assert run_cli("--run-dir", str(tmp_path), "--json").returncode == 1


def test_cli_missing_dir_and_bad_config(tmp_path):
    r = run_cli("--run-dir", str(tmp_path / "nope"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "does not exist" in r.stderr
    run = make_run(tmp_path / "run", "running")
    (run / "go2train.toml").write_text("[chunk]\nepisodes = 0\n")
    r = run_cli("--run-dir", str(run), "--once")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "[chunk] episodes" in r.stderr


def _once_on_a_pty(run: Path, env: dict) -> str:
    """`go2train status --once` with stdout on a pseudo-terminal (as in a real terminal)."""
    import pty

    master, slave = pty.openpty()
    e = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    e.update(TERM="xterm-256color", COLUMNS="120", LINES="60", **env)
    p = subprocess.Popen([str(GO2TRAIN), "status", "--run-dir", str(run), "--once"],
                         stdout=slave, stderr=slave, stdin=subprocess.DEVNULL, env=e)
    os.close(slave)
    out = b""
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        out += data
    os.close(master)
    assert p.wait(timeout=30) == 0
    return out.decode("utf-8", "replace")


def test_once_on_a_terminal_colours_unless_no_color(tmp_path):
    run = make_run(tmp_path, "running")
    coloured = _once_on_a_pty(run, {})
    assert "RUNNING" in coloured and "\x1b[" in coloured
    assert "\x1b[1;32m" in coloured  # RUNNING in bold green
    plain = _once_on_a_pty(run, {"NO_COLOR": "1"})
    assert "RUNNING" in plain
    assert not re.search(r"\x1b\[[0-9;]*(3[0-9]|9[0-7]|38;)", plain), "colour codes despite NO_COLOR"


def test_status_imports_no_heavy_modules():
    code = ("import sys, go2train.cli, go2train.tui; "
            "bad = [m for m in ('torch', 'genesis', 'stable_baselines3') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr


def test_reader_imports_no_rich():
    """The data half (go2train/tui/reader.py, fmt.py) imports no rich: only render does."""
    import ast

    import go2train.tui.fmt as fmt_mod
    import go2train.tui.reader as reader_mod

    for mod in (reader_mod, fmt_mod):
        tree = ast.parse(Path(mod.__file__).read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [n for n in names if n == "rich" or n.startswith("rich.")], (mod.__name__, names)


# ----------------------------------------------------------------------------- a real terminal


@pytest.mark.skipif(shutil.which("tmux") is None,
                    reason="tmux is not installed (apt-get install -y tmux): no real-terminal smoke test")
def test_tmux_live_screen_and_q(tmp_path):
    run = make_run(tmp_path / "run", "running")
    session = f"go2train-status-{uuid.uuid4().hex[:8]}"
    sock = str(tmp_path / "tmux.sock")
    tmux = ["tmux", "-S", sock]
    done = tmp_path / "exit_code"
    cmd = f"{GO2TRAIN} status --run-dir {run}; echo $? > {done}"
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TMUX")}
    env["TERM"] = "xterm-256color"
    subprocess.run([*tmux, "new-session", "-d", "-s", session, "-x", "130", "-y", "45", cmd],
                   check=True, env=env, timeout=10)
    try:
        text = ""
        deadline = time.time() + 10
        while time.time() < deadline:
            time.sleep(0.3)
            text = subprocess.run([*tmux, "capture-pane", "-p", "-t", session], capture_output=True,
                                  text=True, timeout=5).stdout
            if "RUNNING" in text and "chunks (newest first)" in text:
                break
        (tmp_path / "screen.txt").write_text(text)
        assert "go2train status" in text and "RUNNING" in text, text
        assert "chunk → 200" in text
        row = chunk_row(text, 150)
        assert "14.25" in row
        assert "✓" in chunk_row(text, 100)
        assert "SIGSEGV" in text
        assert len(text.rstrip("\n").splitlines()) <= 45
        subprocess.run([*tmux, "send-keys", "-t", session, "q"], check=True, timeout=5)
        deadline = time.time() + 5
        while time.time() < deadline and not done.exists():
            time.sleep(0.1)
        assert done.exists(), "go2train status did not exit on q"
        assert done.read_text().strip() == "0"
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=5)


def _daemon_available() -> str | None:
    """Why the real-daemon smoke test cannot run, or None."""
    if shutil.which("tmux") is None:
        return "tmux is not installed (apt-get install -y tmux)"
    if not (Path(__file__).parent / "fake_worker.py").exists():
        return "tests/fake_worker.py (the supervisor's contract-honouring fake worker) is missing"
    r = subprocess.run([str(GO2TRAIN), "daemon", "--help"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0 or " start " not in r.stdout or " stop " not in r.stdout:
        return "`go2train daemon start/stop` is not available yet"
    return None


def test_tmux_with_a_real_daemon(tmp_path):
    """The real supervisor, driving the fake worker (a chunk, a SIGSEGV, a chunk, then a long
    one), watched by `go2train status` in a real terminal."""
    why = _daemon_available()
    if why:
        pytest.skip(why)
    run = tmp_path / "run"
    run.mkdir()
    (run / "fake_script.json").write_text(json.dumps({
        "episodes": 50, "default": {"do": "long"},
        "attempts": [{"do": "ok", "train_s": 0.3}, {"do": "signal", "sig": "SIGSEGV", "after": 0.2},
                     {"do": "ok", "train_s": 0.3}]}))
    (run / "go2train.toml").write_text("[supervisor]\nbackoff_initial_s = 0.2\n[video]\nevery_episodes = 50\n")
    fake = str(Path(__file__).parent / "fake_worker.py")
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TMUX")}
    env.update(
        TERM="xterm-256color",
        GO2TRAIN_WORKER_CMD=json.dumps([sys.executable, fake, "worker", "{run_dir}"]),
        GO2TRAIN_RENDER_CMD=json.dumps([sys.executable, fake, "render", "{run_dir}", "{chunk}"]),
        GO2TRAIN_GPU_PROBE_CMD="[]",
    )
    sock = str(tmp_path / "tmux.sock")
    tmux = ["tmux", "-S", sock]
    done = tmp_path / "exit_code"
    r = subprocess.run([str(GO2TRAIN), "daemon", "start", "--run-dir", str(run)], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        deadline = time.time() + 15
        while time.time() < deadline and not (run / "logs/chunks/chunk_000100.json").exists():
            time.sleep(0.1)
        assert (run / "logs/chunks/chunk_000100.json").exists(), "the daemon made no second chunk"
        subprocess.run([*tmux, "new-session", "-d", "-s", "status", "-x", "120", "-y", "40",
                        f"{GO2TRAIN} status --run-dir {run}; echo $? > {done}"],
                       check=True, env=env, timeout=10)
        text = ""
        deadline = time.time() + 10
        while time.time() < deadline:
            time.sleep(0.3)
            text = subprocess.run([*tmux, "capture-pane", "-p", "-t", "status"], capture_output=True,
                                  text=True, timeout=5).stdout
            if "RUNNING" in text and "chunk → 150" in text and "video of chunk 100" in text:
                break
        (tmp_path / "screen.txt").write_text(text)
        assert "RUNNING" in text and "(alive)" in text, text
        assert "chunk → 150" in text  # the long third attempt
        assert "restarts 1 total" in text
        assert chunk_row(text, 100).split()[-1] == "✓"  # fake render wrote videos/chunk_000100.mp4
        assert "SIGSEGV" in text and "restart in" in text
        assert "worker " in text and "(pid " in text  # memory of the live worker
        subprocess.run([*tmux, "send-keys", "-t", "status", "q"], check=True, timeout=5)
        deadline = time.time() + 5
        while time.time() < deadline and not done.exists():
            time.sleep(0.1)
        assert done.exists() and done.read_text().strip() == "0"
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=5)
        subprocess.run([str(GO2TRAIN), "daemon", "stop", "--run-dir", str(run), "--timeout", "10"],
                       env=env, capture_output=True, timeout=30)


def test_command_line_shows_the_curriculums_ranges_until_the_full_ones():
    """The status screen's command line: below level 1 the ranges the chunk drew from and the level;
    at level 1 (or a record from before the curriculum) the configured ranges."""
    from go2train.config import Config
    from go2train.train.worker import command_record
    from go2train.tui.render import describe_command

    cmd = Config().command
    assert describe_command(command_record(cmd, 0.25)) == \
        "vx -0.03…+0.78 vy ±0.12 m/s, yaw ±0.25 rad/s, stand 10% (curriculum level 0.25)"
    full = "vx ±1.00 vy ±0.50 m/s, yaw ±1.00 rad/s, stand 10%"
    assert describe_command(command_record(cmd, 1.0)) == full
    assert describe_command({"vx_range": [-1.0, 1.0], "vy_range": [-0.5, 0.5], "yaw_range": [-1.0, 1.0],
                             "standing_share": 0.1}) == full
