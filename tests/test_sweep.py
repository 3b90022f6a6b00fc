"""`go2train sweep`: the plan (unit), and real sweeps on real local Ray with real supervisors, driven
by tests/fake_worker.py through GO2TRAIN_WORKER_CMD (which must reach Ray's worker processes), and
the comparison's aggregation (unit)."""

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
from helpers import TINY_DAEMON_HEAD, go2train, procs_mentioning, snapshot

from go2train.run.files import read_json, read_jsonl
from go2train.run.layout import RunDir
from go2train.sweep import compare, plan

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
FAKE = str(ROOT / "tests" / "fake_worker.py")

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("no_leftovers")]

BASE = """[chunk]
episodes = 50

[supervisor]
backoff_initial_s = 0.1
backoff_max_s = 0.3
crash_loop_max = 20
stop_timeout_s = 2.0
poll_s = 0.05

[video]
every_episodes = 0
"""

try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:  # pragma: no cover
    HAVE_RAY = False
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray not installed (pip install 'go2train[sweep]')")


def project(tmp_path: Path, script: dict) -> tuple[Path, dict]:
    """A project folder with a base go2train.toml, and the environment of a fake-worker sweep."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "go2train.toml").write_text(BASE)
    (tmp_path / "script.json").write_text(json.dumps({"episodes": 50, **script}))
    env = dict(os.environ)
    env["GO2TRAIN_WORKER_CMD"] = json.dumps([PY, FAKE, "worker", "{run_dir}"])
    env["GO2TRAIN_RENDER_CMD"] = json.dumps([PY, FAKE, "render", "{run_dir}", "{chunk}"])
    env["GO2TRAIN_GPU_PROBE_CMD"] = "[]"
    env["GO2TRAIN_FAKE_SCRIPT"] = str(tmp_path / "script.json")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return proj, env


def cli(*args, env=None, cwd=None, timeout=90):
    return go2train(*args, env=env, cwd=cwd, timeout=timeout)


def book(sweep: Path, name: str) -> dict:
    return read_json(sweep / "logs" / "trials" / f"{name}.json") or {}


def chunks(run: Path) -> list[int]:
    return RunDir.at(run).chunk_records()


def wait_for(pred, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        val = pred()
        if val:
            return val
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# ---------------------------------------------------------------------- the plan
def test_grid_names_seeds_and_trial_configs():
    sets = [plan.parse_set("ppo.learning_rate=3e-4,1e-3"), plan.parse_set("command.vx_range=[0.5, 0.5],[0.3,0.6]")]
    base = {"env": {"n_envs": 4, "seed": 10}, "ppo": {"seed": 7}, "reward": {"height": {"weight": 2.0}}}
    trials = plan.make_trials(base, sets, 2)
    assert [t.name for t in trials] == [
        "lr3e-4_vr0.5-0.5_seed0", "lr3e-4_vr0.5-0.5_seed1", "lr3e-4_vr0.3-0.6_seed0", "lr3e-4_vr0.3-0.6_seed1",
        "lr1e-3_vr0.5-0.5_seed0", "lr1e-3_vr0.5-0.5_seed1", "lr1e-3_vr0.3-0.6_seed0", "lr1e-3_vr0.3-0.6_seed1"]
    t = trials[3]
    assert t.values == {"ppo.learning_rate": 3e-4, "command.vx_range": [0.3, 0.6]} and t.seed == 1
    assert t.config["ppo"] == {"seed": 8, "learning_rate": 3e-4}  # base seed + s, in both sections
    assert t.config["env"] == {"n_envs": 4, "seed": 11}
    assert base["ppo"] == {"seed": 7}  # the base is not modified
    # the trial's go2train.toml reads back as the same data and loads like any config file
    import tomllib

    from go2train.config import from_dict

    text = plan.dump_toml(t.config)
    assert tomllib.loads(text) == t.config and "[reward.height]" in text
    assert from_dict(tomllib.loads(text)).ppo.learning_rate == 3e-4
    assert [t.name for t in plan.make_trials({}, [], 3)] == ["seed0", "seed1", "seed2"]
    # values: TOML when they parse, else a bare string; commas inside brackets/quotes stay
    s = plan.parse_set('env.backend=cpu,"gpu"')
    assert s.values == ("cpu", "gpu") and s.texts == ("cpu", '"gpu"')
    assert plan.split_values('1,[2, 3],"a,b"') == ["1", "[2, 3]", '"a,b"']
    # labels stay distinct
    assert plan.abbreviations(["ppo.learning_rate", "ppo.gamma"]) == {"ppo.learning_rate": "lr", "ppo.gamma": "gamma"}
    assert plan.abbreviations(["ppo.n_steps", "env.n_steps"]) == {"ppo.n_steps": "ppo-n_steps", "env.n_steps": "env-n_steps"}
    assert plan.grid_of(sets, 2) == {"set": {"ppo.learning_rate": ["3e-4", "1e-3"],
                                            "command.vx_range": ["[0.5, 0.5]", "[0.3,0.6]"]}, "seeds": 2}


@pytest.mark.parametrize("spec, line", [
    ("ppo.lerning_rate=1e-3", "--set ppo.lerning_rate=1e-3: [ppo] lerning_rate: unknown key"),
    ("ppo.learning_rate=3e-4,-1", "--set ppo.learning_rate=-1: [ppo] learning_rate: Input should be greater than 0"),
    ("env.backend=cpu,tpu", "--set env.backend=tpu: [env] backend: Input should be 'auto', 'cpu' or 'gpu'"),
    ("learning_rate=1", "--set 'learning_rate=1': expected section.key=value"),
    ("ppo.learning_rate", "--set 'ppo.learning_rate': expected section.key=value"),
    ("ppo.seed=3", "--set ppo.seed: seeds are set by --seeds"),
    ("ppo.n_epochs=2,,3", "an empty value"),
])
def test_bad_set_is_one_line_exit_2_and_writes_nothing(tmp_path, spec, line):
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "go2train.toml").write_text(BASE)
    before = snapshot(tmp_path)
    res = cli("sweep", "--seeds", "2", "--set", spec, "--timesteps", "100", cwd=proj)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("go2train: ") and line in lines[0], lines
    assert snapshot(tmp_path) == before


def test_missing_ray_is_one_line(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    code = ("import sys; sys.modules['ray'] = None\n"
            "from go2train.cli import main\n"
            "sys.argv = ['go2train', 'sweep', '--seeds', '1', '--dir', 'sw']\n"
            "main()\n")
    res = subprocess.run([PY, "-c", code], cwd=proj, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip() == "go2train: sweep needs ray: pip install 'go2train[sweep]'"
    assert list(proj.iterdir()) == []


# ---------------------------------------------------------------------- real sweeps on local Ray
@needs_ray
def test_two_seed_sweep_survives_segfaults_runs_to_done_and_shows_status(tmp_path):
    # every trial's first worker attempt segfaults: the supervisor's restart policy carries it on
    proj, env = project(tmp_path, {"attempts": [{"do": "signal", "sig": "SIGSEGV", "after": 0.1}],
                                   "default": {"do": "ok"}})
    t0 = time.monotonic()
    res = cli("sweep", "--seeds", "2", "--timesteps", "2000", env=env, cwd=proj)
    wall = time.monotonic() - t0
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout.splitlines()
    assert out[0].startswith("sweep: 2 of 2 trials to run on local Ray (1 CPU per trial; budget 2,000 timesteps)")
    assert out[-1] == "sweep: 2 of 2 trials done"
    print(f"2-trial fake sweep: {wall:.1f} s wall; {out[0].rsplit(';', 1)[1].strip()}")
    sweep = proj / "logs" / "sweep"
    doc = read_json(sweep / "sweep.json")
    assert doc["grid"] == {"set": {}, "seeds": 2} and doc["budget"] == {"minutes": None, "timesteps": 2000}
    assert [t["name"] for t in doc["trials"]] == ["seed0", "seed1"]
    for name, seed in (("seed0", 0), ("seed1", 1)):
        run = sweep / "trials" / name
        assert (run / "fake_log.jsonl").exists()  # GO2TRAIN_WORKER_CMD reached Ray's workers
        b = book(sweep, name)
        assert b["state"] == "done" and b["reason"] == "timesteps" and b["timesteps"] >= 2000
        exits = [e for e in read_jsonl(run / "logs" / "events.jsonl") if e["event"] == "exit"]
        assert (exits[0]["signal"], exits[0]["reason"]) == ("SIGSEGV", "crash")
        # the budget is the run's [chunk] max_timesteps: its worker ended the run after the chunk
        # that reached it (the runner's own check is only the backstop)
        assert (exits[-1]["code"], exits[-1]["reason"]) == (3, "run_complete")
        assert read_json(run / "logs" / "state.json")["state"] == "DONE"
        cs = chunks(run)
        assert cs == list(range(50, 50 * len(cs) + 1, 50))  # contiguous, none twice
        totals = [read_json(run / "logs" / "chunks" / f"chunk_{c:06d}.json")["timesteps_total"] for c in cs]
        assert totals[-1] >= 2000 and all(t < 2000 for t in totals[:-1])  # not one chunk past the budget
        assert f"seed = {seed}" in (run / "go2train.toml").read_text()

    res = cli("sweep", "status", "--json", cwd=proj)
    assert res.returncode == 0, res.stderr
    snap = json.loads(res.stdout)
    assert not snap["running"] and snap["counts"] == {"done": 2}
    for row in snap["trials"]:
        assert (row["sweep_state"], row["state"], row["restarts"]) == ("done", "DONE", 1)
        assert row["timesteps"] >= 2000 and row["chunk"] >= 50
    table = cli("sweep", "status", cwd=proj).stdout
    assert "seed0" in table and "seed1" in table and "2 done" in table
    res = cli("status", "--run-dir", str(sweep), "--once")  # the status TUI on a sweep dir: the table
    assert res.returncode == 0 and "seed1" in res.stdout and "DONE" in res.stdout

    # eval --sweep: no checkpoints from the fake worker, so no figures; time to walk: not yet
    res = cli("eval", "--sweep", str(sweep), "--json", cwd=proj)
    assert res.returncode == 0, res.stderr
    ev = json.loads(res.stdout)
    assert [r["eval"] for r in ev["trials"]] == [None, None]
    assert [r["time_to_walk"]["wall_s"] for r in ev["trials"]] == [None, None]
    assert ev["groups"][0]["trials"] == ["seed0", "seed1"]

    # same command again: nothing to do (no Ray started); another grid: one line, exit 2
    res = cli("sweep", "--seeds", "2", "--timesteps", "2000", env=env, cwd=proj)
    assert res.returncode == 0 and res.stdout.strip() == f"sweep: all 2 trials are done ({sweep})"
    res = cli("sweep", "--seeds", "3", "--timesteps", "2000", env=env, cwd=proj)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "holds another sweep" in res.stderr
    assert not procs_mentioning(tmp_path)


@needs_ray
def test_stop_leaves_resumable_trials_and_a_second_start_finishes_them(tmp_path):
    # both trials at once (each declares half the CPUs): seed0 finishes (its first chunk spends the
    # 1-timestep budget); seed1's first worker trains without end (fake "long") until the sweep is
    # stopped; after the resume its second worker finishes the chunk
    proj, env = project(tmp_path, {"attempts": [], "default": {"do": "ok"}})
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "default.json").write_text(json.dumps({"episodes": 50, "attempts": [], "default": {"do": "ok"}}))
    (scripts / "seed1.json").write_text(json.dumps({"episodes": 50, "attempts": [{"do": "long"}],
                                                    "default": {"do": "ok"}}))
    env["GO2TRAIN_FAKE_SCRIPT"] = str(scripts)
    sweep = tmp_path / "sw"
    try:
        from ray._private.utils import get_num_cpus  # what a local Ray will offer

        cpus = str(get_num_cpus() / 2)
    except Exception:  # pragma: no cover
        cpus = str((os.cpu_count() or 2) / 2)
    args = ["--dir", str(sweep), "--seeds", "2", "--timesteps", "1", "--cpus-per-trial", cpus]
    proc = subprocess.Popen([PY, "-m", "go2train", "sweep", *args], env=env, cwd=proj, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    run1 = sweep / "trials" / "seed1"

    def worker_trains():  # its SIGTERM handler is set once it beats "training"
        st, hb = read_json(run1 / "logs" / "state.json") or {}, read_json(run1 / "logs" / "heartbeat.json") or {}
        return hb.get("pid") == st.get("worker_pid") and hb.get("phase") == "training" and hb.get("timesteps", 0) > 0

    try:
        wait_for(lambda: worker_trains() and book(sweep, "seed0").get("state") == "done", 60,
                 "seed0 done and seed1's worker training")
        res = cli("sweep", "stop", "--dir", str(sweep), env=env)
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith(f"go2train sweep stopped: pid {proc.pid}")
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "sweep stopped: 1 of 2 trials done; run the same command to resume" in out
    st1 = read_json(run1 / "logs" / "state.json")
    assert st1["state"] == "STOPPED" and book(sweep, "seed1")["state"] == "stopped"
    exits = [e for e in read_jsonl(run1 / "logs" / "events.jsonl") if e["event"] == "exit"]
    assert (exits[-1]["code"], exits[-1]["reason"]) == (4, "stopped")  # the worker's resume point
    assert not procs_mentioning(tmp_path)
    seed0 = sweep / "trials" / "seed0"
    done_chunks, done_attempts = chunks(seed0), (seed0 / "fake_attempts").stat().st_size
    assert cli("sweep", "stop", "--dir", str(sweep)).returncode == 1  # nothing runs now
    res = cli("sweep", "status", "--dir", str(sweep), "--json")
    assert [r["sweep_state"] for r in json.loads(res.stdout)["trials"]] == ["done", "stopped"]

    res = cli("sweep", *args, env=env, cwd=proj)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.splitlines()[0].startswith("sweep: 1 of 2 trials to run")
    assert book(sweep, "seed1")["state"] == "done"
    assert chunks(seed0) == done_chunks  # the done trial was not run again
    assert (seed0 / "fake_attempts").stat().st_size == done_attempts
    assert chunks(run1) == [50]  # resumed: its second worker trained the chunk, once
    assert [e["code"] for e in read_jsonl(run1 / "logs" / "events.jsonl") if e["event"] == "exit"][:2] == [4, 3]
    assert not procs_mentioning(tmp_path)


@needs_ray
def test_kill_9_of_the_sweep_still_stops_its_trial_with_a_resume_point(tmp_path):
    proj, env = project(tmp_path, {"attempts": [], "default": {"do": "long"}})
    sweep = tmp_path / "sw"
    proc = subprocess.Popen([PY, "-m", "go2train", "sweep", "--dir", str(sweep), "--seeds", "1", "--minutes", "5"],
                            env=env, cwd=proj, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    run = sweep / "trials" / "seed0"
    try:
        wait_for(lambda: (read_json(run / "logs" / "state.json") or {}).get("state") == "RUNNING", 60, "RUNNING")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # the actor dies with the sweep; PR_SET_PDEATHSIG sends SIGTERM to the trial's supervisor
        wait_for(lambda: (read_json(run / "logs" / "state.json") or {}).get("state") == "STOPPED", 30, "STOPPED")
    finally:
        proc.kill()
        for p in psutil.process_iter():  # Ray's agents outlive a SIGKILLed driver (docs/SWEEP.md)
            try:
                if os.getsid(p.pid) == proc.pid:
                    p.kill()
            except (OSError, psutil.Error):
                pass
    exits = [e for e in read_jsonl(run / "logs" / "events.jsonl") if e["event"] == "exit"]
    assert (exits[-1]["code"], exits[-1]["reason"]) == (4, "stopped")
    res = cli("sweep", "status", "--dir", str(sweep), "--json")
    (row,) = json.loads(res.stdout)["trials"]
    assert (row["sweep_state"], row["state"]) == ("interrupted", "STOPPED")
    wait_for(lambda: not procs_mentioning(tmp_path), 10, "no process left")


@needs_ray
def test_address_runs_trials_on_a_separate_cluster_and_passes_the_environment(tmp_path):
    """`--address`: a Ray head started on its own with a bare environment (no GO2TRAIN_*, no
    PYTHONPATH to this checkout): the trials still import this go2train and run the fake worker,
    so the sweep's environment reached Ray's workers through runtime_env."""
    import socket
    import tempfile

    proj, env = project(tmp_path, {"attempts": [], "default": {"do": "ok"}})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp = tempfile.mkdtemp(prefix="r", dir="/tmp")  # Ray's socket paths must stay short
    bare = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp"),
            "RAY_AUTH_MODE": "disabled"}
    head = subprocess.Popen([str(Path(PY).parent / "ray"), "start", "--head", "--block", f"--port={port}",
                             "--node-ip-address=127.0.0.1", "--num-cpus=2", "--include-dashboard=false",
                             "--disable-usage-stats", f"--temp-dir={temp}"],
                            env=bare, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        def listening():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0
        wait_for(listening, 60, "the Ray head")
        res = cli("sweep", "--seeds", "2", "--timesteps", "1000", "--address", f"127.0.0.1:{port}",
                  env={**env, "RAY_AUTH_MODE": "disabled"}, cwd=proj)
        assert res.returncode == 0, res.stdout + res.stderr
        assert res.stdout.startswith(f"sweep: 2 of 2 trials to run on 127.0.0.1:{port}")
        sweep = proj / "logs" / "sweep"
        for name in ("seed0", "seed1"):
            assert book(sweep, name)["state"] == "done"
            assert (sweep / "trials" / name / "fake_log.jsonl").exists()
        assert read_json(sweep / "sweep.json")["address"] == f"127.0.0.1:{port}"
    finally:
        for p in psutil.process_iter():  # the head and everything it started: its session
            try:
                if os.getsid(p.pid) == head.pid:
                    p.kill()
            except (OSError, psutil.Error):
                pass
        head.wait(timeout=10)
        import shutil

        shutil.rmtree(temp, ignore_errors=True)


# ---------------------------------------------------------------------- the comparison (unit)
def test_time_to_walk_and_aggregation(tmp_path):
    rd = RunDir.at(tmp_path / "run")
    rd.make()
    recs = [  # (speed along command, commanded, tracking error, fall rate)
        (0.10, 0.6, 0.50, 0.30), (0.40, 0.6, 0.30, 0.10), (0.55, 0.6, 0.20, 0.02), (0.58, 0.6, 0.15, 0.0)]
    for i, (sp, cmd, err, falls) in enumerate(recs, 1):
        rd.chunk_metrics(50 * i).write_text(json.dumps({
            "chunk": 50 * i, "timesteps_total": 1000 * i, "startup_s": 5.0, "train_s": 20.0, "save_s": 1.0,
            "speed_along_command_mean": sp, "command_speed_mean": cmd, "tracking_error_lin_mean": err,
            "fall_rate": falls}))
    assert compare.time_to_walk(rd) == {"chunk": 150, "wall_s": 78.0, "timesteps": 3000, "chunks": 4}
    assert len(compare.train_misses({"speed_along_command_mean": 0.1, "command_speed_mean": 0.6})) == 3
    empty = RunDir.at(tmp_path / "none")
    assert compare.time_to_walk(empty)["wall_s"] is None

    def row(name, lr, vx, walks):
        return {"name": name, "values": {"ppo.learning_rate": lr}, "walks": walks,
                "eval": None if vx is None else {n: (vx if n == "reference_vx" else 1.0) for n, _ in compare.FIGURES},
                "time_to_walk": {"wall_s": 10.0 if walks else None}}

    groups = compare.aggregate([row("a0", 1e-3, 0.5, True), row("a1", 1e-3, 0.7, False), row("b0", 3e-4, 0.2, False),
                                row("b1", 3e-4, None, None)])
    a, b = groups
    assert a["values"] == {"ppo.learning_rate": 1e-3} and a["trials"] == ["a0", "a1"]
    assert a["figures"]["reference_vx"]["mean"] == pytest.approx(0.6)
    assert a["figures"]["reference_vx"]["spread"] == pytest.approx(0.1414, abs=1e-4)  # sample std
    assert (a["walks"], a["evaluated"], a["walk_at_train_time"]) == (1, 2, 1)
    assert b["figures"]["reference_vx"] == {"mean": 0.2, "spread": 0.0, "n": 1} and b["evaluated"] == 1


# ---------------------------------------------------------------------- one real trial (Genesis)
TINY = TINY_DAEMON_HEAD + """
[chunk]
episodes = 1
heartbeat_s = 1.0

[video]
every_episodes = 0

[supervisor]
startup_timeout_s = 400.0
stop_timeout_s = 30.0
poll_s = 0.5
"""


@needs_ray
@pytest.mark.slow
@pytest.mark.genesis
@pytest.mark.timeout(600)
@pytest.mark.skipif(os.environ.get("GO2TRAIN_SKIP_E2E") == "1", reason="GO2TRAIN_SKIP_E2E=1")
def test_one_real_trial_trains_stops_at_its_budget_and_evaluates(tmp_path):
    """The real worker under the sweep: one trial of a tiny config, stopped by its timestep budget
    after its first chunk, then `eval --sweep` evaluates its checkpoint."""
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "go2train.toml").write_text(TINY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO2TRAIN_")}
    res = cli("sweep", "--seeds", "1", "--set", "ppo.learning_rate=5e-4", "--timesteps", "1",
              env=env, cwd=proj, timeout=500)
    assert res.returncode == 0, res.stdout + res.stderr
    sweep = proj / "logs" / "sweep"
    run = sweep / "trials" / "lr5e-4_seed0"
    assert book(sweep, "lr5e-4_seed0")["state"] == "done"
    assert RunDir.at(run).checkpoints()[0] == 1
    manifest = read_json(run / "models" / "chunk_000001.json")
    assert manifest["config"]["ppo"]["learning_rate"] == 5e-4 and manifest["config"]["ppo"]["seed"] == 0
    res = cli("eval", "--sweep", str(sweep), "--json", "--episodes", "1", env=env, cwd=proj, timeout=400)
    assert res.returncode == 0, res.stderr
    ev = json.loads(res.stdout)
    (row,) = ev["trials"]
    assert row["chunk"] >= 1 and row["walks"] is False and row["misses"]
    assert row["eval"]["survival_min"] is not None and row["time_to_walk"]["wall_s"] is None
    (grp,) = ev["groups"]
    assert grp["values"] == {"ppo.learning_rate": 5e-4} and grp["evaluated"] == 1
    assert not procs_mentioning(tmp_path)


# ---------------------------------------------------------------------- the live screen
def test_status_on_a_sweep_dir_is_a_live_screen_on_a_terminal_and_q_quits(tmp_path):
    """`go2train status --run-dir SWEEP` on a terminal (a real pty) redraws until q; piped, it prints once."""
    import pty

    sd = plan.SweepDir.at(tmp_path / "sweep")
    sets = [plan.parse_set("ppo.learning_rate=3e-4,1e-3")]
    plan.write(sd, plan.make_trials({}, sets, 1), plan.grid_of(sets, 1), {"budget": {"minutes": 5}}, None)
    piped = go2train("status", "--run-dir", str(sd.root))
    assert piped.returncode == 0 and "lr3e-4_seed0" in piped.stdout and "lr1e-3_seed0" in piped.stdout

    master, slave = pty.openpty()
    env = {**os.environ, "COLUMNS": "140", "LINES": "30", "TERM": "xterm"}
    proc = subprocess.Popen([PY, "-m", "go2train", "status", "--run-dir", str(sd.root)],
                            stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    out = b""
    try:
        deadline = time.monotonic() + 60
        while b"lr1e-3_seed0" not in out and time.monotonic() < deadline:
            import select

            if select.select([master], [], [], 0.5)[0]:
                out += os.read(master, 65536)
        assert b"lr1e-3_seed0" in out, out[-2000:]
        time.sleep(2.5)  # live: still running, redrawing
        assert proc.poll() is None
        os.write(master, b"q")
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        os.close(master)
