"""The time-to-walk criteria of `go2train walkbench` (on eval figures as `go2train eval` returns them)."""

from go2train.tools.evaluate import GRID, grid_summary
from go2train.tools.walkbench import failed_criteria, walks


def result(grid=None, **policy):
    """An eval result (`go2train eval --json`, issue 13) of a policy that tracks every grid command
    within 0.1 m/s and 0.1 rad/s; ``grid`` overrides fields of named rows."""
    base = {"forward_speed": 0.6, "displacement_speed": 0.58, "survival": 1.0, "base_height_mean": 0.27,
            "tilt_deg": 3.0}
    rows = []
    for name, (vx, vy, yaw) in GRID:
        row = {"name": name, "command": [vx, vy, yaw], "vx": vx - 0.05, "vy": vy, "yaw_rate": yaw * 0.9,
               "lin_error": 0.1, "yaw_error": 0.1, "survival": 1.0, "tilt_deg": 3.0, "reward": 10.0, "lazy": False}
        row.update((grid or {}).get(name, {}))
        rows.append(row)
    return {"policy": {**base, **policy}, "lazy_optimum": False, "reference": "forward 0.6", "cmd_vx": 0.6,
            "grid": rows, "summary": grid_summary(rows)}


def test_a_policy_tracking_the_grid_walks():
    assert walks(result()) and failed_criteria(result()) == []


def test_each_criterion_can_fail_alone():
    assert not walks(result({"forward 0.6": {"vx": 0.44}}))  # the reference command: 0.6 +- 0.15
    assert not walks(result({"forward 0.6": {"vx": 0.76}}))
    assert walks(result({"forward 0.6": {"vx": 0.74}}))
    assert not walks(result(displacement_speed=0.2))  # walking in circles (heading speed is fine)
    assert not walks(result({"left 0.3": {"survival": 0.9}}))  # survival on every command
    assert not walks(result({name: {"lin_error": 0.3} for name, _ in GRID}))  # mean lin error > 0.25
    assert walks(result({"forward 1.0": {"lin_error": 0.5}}))  # one bad command within the mean
    assert not walks(result({"turn left 0.8": {"yaw_error": 0.8}, "turn right 0.8": {"yaw_error": 0.5}}))
    # a forward-only policy: small mean error, but it stands on a sideways command
    assert not walks(result({"left 0.3": {"vx": 0.0, "vy": 0.1, "lin_error": 0.2}}))
    assert walks(result({"left 0.3": {"vx": 0.0, "vy": 0.16, "lin_error": 0.14}}))
    assert not walks(result(base_height_mean=0.23))
    assert not walks(result(tilt_deg=6.0))
    r = result()
    r["lazy_optimum"] = True
    assert failed_criteria(r) == ["lazy optimum"]


def test_sigterm_stops_walkbench_and_its_daemon(tmp_path):
    """A walkbench killed politely takes its daemon and worker with it (stand-in worker)."""
    import json
    import signal
    import subprocess
    import time
    from pathlib import Path

    from helpers import PY, clean_env, procs_mentioning

    fake = str(Path(__file__).with_name("fake_worker.py"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "go2train.toml").write_text(
        "[video]\nevery_episodes = 0\n[supervisor]\npoll_s = 0.05\nstop_timeout_s = 2.0\n")
    (run / "fake_script.json").write_text(json.dumps({"episodes": 50, "attempts": [], "default": {"do": "long"}}))
    env = clean_env(GO2TRAIN_WORKER_CMD=json.dumps([PY, fake, "worker", "{run_dir}"]), GO2TRAIN_GPU_PROBE_CMD="[]")
    p = subprocess.Popen([PY, "-m", "go2train", "walkbench", "--minutes", "5", "--run-dir", str(run)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 60
        state = run / "logs" / "state.json"
        while time.time() < deadline and not (state.exists() and '"RUNNING"' in state.read_text()):
            time.sleep(0.2)
        assert '"RUNNING"' in state.read_text(), "the daemon never ran its worker"
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        assert p.returncode != 0  # interrupted: no evaluation, not a success
        time.sleep(0.5)
        assert procs_mentioning(run) == [], procs_mentioning(run)
        assert json.loads(state.read_text())["state"] == "STOPPED"
    finally:
        if p.poll() is None:
            p.kill()
        for q in procs_mentioning(run):
            q.kill()


def test_timestep_budget_counts_the_newest_finished_chunk(tmp_path):
    """`walkbench --timesteps T` stops once a finished chunk's record reaches T timesteps."""
    import json

    from go2train.run.layout import RunDir
    from go2train.tools.walkbench import timesteps_trained

    rd = RunDir.at(tmp_path)
    rd.make()
    assert timesteps_trained(rd) == 0
    for chunk, total in ((1, 1_638_400), (2, 3_276_800)):
        rd.chunk_metrics(chunk).write_text(json.dumps({"chunk": chunk, "timesteps_total": total}))
    rd.chunk_logs.joinpath("chunk_000003.json.tmp").write_text("{")  # a half-written temp file is no record
    assert timesteps_trained(rd) == 3_276_800
