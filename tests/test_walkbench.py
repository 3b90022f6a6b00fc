"""The time-to-walk criteria of `go2train walkbench` (on eval figures as `go2train eval` returns them)."""

from go2train.walkbench import walks


def result(**policy):
    base = {"forward_speed": 0.5, "displacement_speed": 0.48, "survival": 1.0, "base_height_mean": 0.27,
            "tilt_deg": 3.0}
    return {"policy": {**base, **policy}, "lazy_optimum": False}


def test_a_straight_upright_walk_at_the_command_walks():
    assert walks(result(), 0.5)


def test_each_criterion_can_fail_alone():
    assert not walks(result(forward_speed=0.44), 0.5)
    assert not walks(result(displacement_speed=0.2), 0.5)  # walking in circles (heading speed is fine)
    assert not walks(result(survival=0.9), 0.5)
    assert not walks(result(base_height_mean=0.23), 0.5)
    assert not walks(result(tilt_deg=6.0), 0.5)
    assert not walks({**result(), "lazy_optimum": True}, 0.5)


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

    from go2train.runfiles import RunDir
    from go2train.walkbench import timesteps_trained

    rd = RunDir.at(tmp_path)
    rd.make()
    assert timesteps_trained(rd) == 0
    for chunk, total in ((1, 1_638_400), (2, 3_276_800)):
        rd.chunk_metrics(chunk).write_text(json.dumps({"chunk": chunk, "timesteps_total": total}))
    rd.chunk_logs.joinpath("chunk_000003.json.tmp").write_text("{")  # a half-written temp file is no record
    assert timesteps_trained(rd) == 3_276_800
