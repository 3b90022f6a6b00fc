"""The chunk worker as real processes: resume, damaged checkpoints, crash mid-save, SIGTERM.

TensorBoard (issue 15) is read back along the same scenario: one TB run in ``logs/tb/``, every
tag's steps strictly increasing after the crash mid-save and the resumes, the discarded lineage hidden.

One run directory is carried through the scenario (each step is a real `go2train train-chunk`
process building a real Genesis scene), so the suite pays the process start-up only a few times.
The steps run in order inside one module fixture; each test reports one step (order-independent).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from go2train.run import checkpoint, exitcodes
from go2train.run.files import atomic_write_json, read_json
from go2train.run.layout import RunDir

pytestmark = [pytest.mark.genesis, pytest.mark.slow]

TINY = """
[env]
n_envs = 4
episode_steps = 20
[chunk]
episodes = 2
heartbeat_s = 0.5
[ppo]
n_steps = 8
batch_size = 16
net_arch = [32, 32]
[video]
width = 64
height = 48
steps = 3
"""
ROLLOUT = 8 * 4  # n_steps * n_envs: TensorBoard's steps are num_timesteps at rollout ends


def run_worker(run_dir: Path, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "go2train", "train-chunk", "--run-dir", str(run_dir), *args],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )


def load_model(rd: RunDir, name: str):
    from go2train.train.ppo import ChunkedPPO

    return ChunkedPPO.load(str(rd.models / f"{name}.zip"), device="cpu")


def load_vecnorm_count(rd: RunDir, name: str) -> float:
    import pickle

    with open(rd.models / f"{name}.vecnorm.pkl", "rb") as f:
        return float(pickle.load(f).obs_rms.count)


def adam_step(model) -> float:
    state = model.policy.optimizer.state_dict()["state"]
    return float(next(iter(state.values()))["step"])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("worker_run")
    (d / "go2train.toml").write_text(TINY)
    return RunDir.at(d)


def step_01_first_chunk(run, tmp_path):
    p = run_worker(run.root, "--set", "ppo.n_epochs=3", "--set", "env.episode_steps=20")  # `--set` (issue 15)
    assert p.returncode == exitcodes.CHUNK_DONE, p.stderr[-2000:]
    m = checkpoint.verify(run, "chunk_000002")
    assert m["chunk"] == 2 and m["episodes_total"] >= 8 and m["timesteps"] > 0
    assert m["config"]["env"]["n_envs"] == 4  # the exact config is stored beside the model
    assert m["config"]["ppo"]["n_epochs"] == 3 and m["config_overrides"] == ["ppo.n_epochs=3", "env.episode_steps=20"]
    metrics = read_json(run.chunk_metrics(2))
    assert metrics["episodes"] >= 8 and metrics["timesteps_total"] == m["timesteps"]
    assert set(metrics["reward_terms"]) >= {"height", "tracking_lin_vel", "action_rate"}
    assert 0.0 <= metrics["fall_rate"] <= 1.0 and metrics["peak_rss_mb"] > 100
    # issue 13: tracking by what was commanded (docs/CONTRACTS.md)
    # the command curriculum's first level: forward walking only (its window of 400 steps is longer
    # than this tiny chunk, so the level cannot move)
    assert metrics["command"] == {"vx_range": [-1.0, 1.0], "vy_range": [-0.5, 0.5], "yaw_range": [-1.0, 1.0],
                                  "standing_share": 0.1, "curriculum": True, "level": 0.0,
                                  "drawn": {"vx_range": [0.3, 0.7], "vy_range": [0.0, 0.0], "yaw_range": [0.0, 0.0]}}
    assert "command_vx" not in metrics and m["command_level"] == 0.0
    assert 0.3 - 1e-6 <= metrics["command_speed_mean"] <= 0.7 + 1e-6  # over steps told to move
    assert abs(metrics["speed_along_command_mean"]) < 1.0
    assert metrics["tracking_error_lin_mean"] >= 0 and metrics["tracking_error_yaw_mean"] >= 0
    assert 0.0 <= metrics["standing_share"] <= 1.0
    hb = read_json(run.heartbeat)
    assert hb["phase"] == "exiting" and hb["chunk"] == 2 and hb["timesteps"] == m["timesteps"]
    assert "faulthandler" not in p.stderr and run.worker_log.read_text().count("chunk_000002 done") == 1


def step_02_crash_mid_save_keeps_previous_checkpoint(run, tmp_path):
    p = run_worker(run.root, env={"GO2TRAIN_FAILPOINTS": "save_crash@4:0"})
    assert p.returncode == -signal.SIGSEGV, p.stderr[-2000:]
    assert "Segmentation fault" in run.worker_log.read_text()  # faulthandler left a traceback
    assert not (run.models / "chunk_000004.json").exists()  # no manifest: the checkpoint does not exist
    checkpoint.verify(run, "chunk_000002")
    assert load_model(run, "chunk_000002").num_timesteps > 0


def step_03_second_chunk_resumes_exactly(run, tmp_path):
    before = load_model(run, "chunk_000002")
    # as if chunk 2 had widened the command curriculum: the next chunk must continue from there
    mpath = run.models / "chunk_000002.json"
    atomic_write_json(mpath, {**read_json(mpath), "command_level": 0.35})
    p = run_worker(run.root)
    assert p.returncode == exitcodes.CHUNK_DONE, p.stderr[-2000:]
    assert "removed temp files of an interrupted save" in run.worker_log.read_text()
    assert not list(run.models.glob(".*.tmp"))
    m2, m4 = checkpoint.verify(run, "chunk_000002"), checkpoint.verify(run, "chunk_000004")
    after = load_model(run, "chunk_000004")
    # timesteps continue; the chunk trained on its own episodes only
    assert after.num_timesteps > before.num_timesteps == m2["timesteps"]
    assert m4["episodes_total"] >= m2["episodes_total"] + 8
    rec4 = read_json(run.chunk_metrics(4))
    assert rec4["resumed_from"] == "chunk_000002"
    assert m4["command_level"] == rec4["command"]["level"] == 0.35  # the curriculum resumed, not restarted
    assert rec4["command"]["drawn"]["vx_range"] == [-0.155, 0.805] and 0.0 < rec4["command_speed_mean"] <= math.hypot(0.805, 0.175)
    # optimizer state and VecNormalize statistics continue
    assert adam_step(after) > adam_step(before)
    assert load_vecnorm_count(run, "chunk_000004") > load_vecnorm_count(run, "chunk_000002")
    # the adaptive learning rate continues from the stored value, within one 1.5x step per update
    updates = (m4["timesteps"] - m2["timesteps"]) // (8 * 4)
    ratio = m4["lr"] / m2["lr"]
    assert 1.5 ** -updates - 1e-9 <= ratio <= 1.5 ** updates + 1e-9
    assert after.lr_current == pytest.approx(m4["lr"])
    # monitor.csv: one header, rows appended, no duplicate; one TensorBoard run
    lines = run.monitor_csv.read_text().splitlines()
    assert lines[0].startswith("#{") and lines[1] == "r,l,t,dist,fell"
    assert len(lines) - 2 == m4["episodes_total"]
    ts = [float(ln.split(",")[2]) for ln in lines[2:]]
    assert ts == sorted(ts)
    # one TensorBoard run: every worker's event file directly in logs/tb/ (no sub-runs)
    assert sorted(p.name.startswith("events.out.tfevents.") and p.is_file() for p in run.tensorboard.iterdir()) == [True] * 3


def tb_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} as TensorBoard shows ``path`` (a folder: all its event files merged)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(path), size_guidance={"scalars": 0})
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def assert_no_duplicate_steps(scalars: dict) -> None:
    for tag, points in scalars.items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), (tag, steps)


def step_03b_tensorboard_one_run_without_the_crashed_workers_steps(run, tmp_path):
    from go2train.sim.rewards import TERMS

    m2, m4 = checkpoint.verify(run, "chunk_000002"), checkpoint.verify(run, "chunk_000004")
    t2, t4 = m2["timesteps"], m4["timesteps"]
    tb = tb_scalars(run.tensorboard)
    want = {"go2/forward_speed", "go2/speed_along_command", "go2/fall_rate", "go2/episode_reward",
            "go2/tracking_error_lin", "go2/tracking_error_yaw", "go2/command_level", "train/learning_rate", "time/fps",
            "chunk/reward_mean", "chunk/fall_rate", "chunk/speed_along_command_mean", "chunk/steps_per_s"}
    want |= {f"go2/reward/{t}" for t in TERMS} | {f"chunk/reward/{t}" for t in ("height", "tracking_lin_vel")}
    assert want <= set(tb), sorted(want - set(tb))
    assert_no_duplicate_steps(tb)
    fps = [s for s, _ in tb["time/fps"]]
    assert fps == list(range(ROLLOUT, t4 + 1, ROLLOUT))  # every rollout once, across 3 workers
    assert all(0.0 <= v <= 1.0 for _, v in tb["go2/fall_rate"]) and all(v > 0 for _, v in tb["time/fps"])
    assert all(v > 0 for _, v in tb["train/learning_rate"])
    assert [s for s, _ in tb["chunk/reward_mean"]] == [t2, t4]
    assert tb["chunk/reward_mean"][0][1] == pytest.approx(read_json(run.chunk_metrics(2))["reward_mean"], rel=1e-5)
    # The worker that crashed mid-save (step 02) had logged chunk 4's rollouts past t2: its file holds
    # them, the merged view shows each step once (purge_step = t2 + 1 in the next worker's file).
    files = sorted(run.tensorboard.iterdir())
    crashed = [s for s, _ in tb_scalars(files[1])["time/fps"]]
    assert crashed and min(crashed) > t2 and set(crashed) <= set(fps)


def step_03c_milestone_render_writes_eval_scalars(run, tmp_path):
    p = subprocess.run(
        [sys.executable, "-m", "go2train", "video", "--chunk", "4", "--run-dir", str(run.root),
         "--progress-file", str(run.logs / "render.json")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    t4 = checkpoint.verify(run, "chunk_000004")["timesteps"]
    tb = tb_scalars(run.tensorboard)
    video = read_json(run.video(4).with_suffix(".json"))
    assert tb["eval/video/forward_speed"] == [(t4, pytest.approx(video["mean_forward_speed_mps"], abs=1e-4))]
    for tag in ("speed_along_command", "falls", "falls_per_min", "distance_m", "min_base_height_m"):
        assert [s for s, _ in tb[f"eval/video/{tag}"]] == [t4], tag
    assert_no_duplicate_steps(tb)


def step_04_truncated_newest_is_moved_aside_and_previous_used(run, tmp_path):
    zip4 = run.models / "chunk_000004.zip"
    data = zip4.read_bytes()
    zip4.write_bytes(data[: len(data) // 2])
    proc, hb, err = train_until_sigterm(run, tmp_path)
    assert hb["chunk"] == 1002  # built on chunk_000002, since chunk_000004 was damaged
    assert proc.returncode == exitcodes.STOPPED, err[-2000:]
    damaged = list(run.damaged.glob("chunk_000004.*"))
    assert len(damaged) == 1 and (damaged[0] / "chunk_000004.zip").read_bytes() == data[: len(data) // 2]
    assert "sha256" in json.loads((damaged[0] / "REASON.json").read_text())["reason"] or "bytes" in json.loads(
        (damaged[0] / "REASON.json").read_text())["reason"]
    assert not (run.models / "chunk_000004.json").exists()
    r = checkpoint.verify(run, "resume")
    assert r["kind"] == "resume" and r["chunk"] == 2 and r["target_chunk"] == 1002
    assert r["timesteps"] > checkpoint.verify(run, "chunk_000002")["timesteps"]


def step_05_sigterm_resume_point_is_used_by_next_chunk(run, tmp_path):
    r = checkpoint.verify(run, "resume")
    proc, hb, err = train_until_sigterm(run, tmp_path)
    assert hb["chunk"] == 1002 and hb["chunk_start_episodes"] == r["chunk_start_episodes"]
    assert hb["timesteps"] >= r["timesteps"]
    assert proc.returncode == exitcodes.STOPPED, err[-2000:]
    assert "resuming from resume" in run.worker_log.read_text()
    assert checkpoint.verify(run, "resume")["timesteps"] > r["timesteps"]


def step_06_a_complete_run_trains_nothing_and_announces_no_chunk(run, tmp_path):
    done_cfg = tmp_path / "done.toml"
    done_cfg.write_text(TINY.replace("episodes = 2", "episodes = 2\nmax_episodes = 2"))
    records = run.chunk_records()
    p = run_worker(run.root, "--config", str(done_cfg))
    assert p.returncode == exitcodes.RUN_COMPLETE, p.stderr[-2000:]
    hb = read_json(run.heartbeat)
    assert hb["phase"] == "exiting" and hb["chunk"] is None  # no 0 flag: None, nothing to train
    assert run.chunk_records() == records  # nothing trained, no record
    assert "run complete: chunk 2 reached max_episodes 2" in run.worker_log.read_text()
    p = run_worker(run.root, "--set", "chunk.max_timesteps=1")  # any trained chunk reaches it
    assert p.returncode == exitcodes.RUN_COMPLETE, p.stderr[-2000:]
    assert run.chunk_records() == records
    assert "run complete: chunk 2 reached max_timesteps 1 (" in run.worker_log.read_text()


def step_07_tensorboard_after_the_resumes(run, tmp_path):
    """chunk_000004 was damaged (step 04): the worker redid chunk 4 from chunk_000002, so its lineage
    (its rollouts, chunk/* and eval/* at its timesteps) is hidden; SIGTERM's resume points continued."""
    t2 = checkpoint.verify(run, "chunk_000002")["timesteps"]
    tr = checkpoint.verify(run, "resume")["timesteps"]
    tb = tb_scalars(run.tensorboard)
    assert_no_duplicate_steps(tb)
    assert [s for s, _ in tb["chunk/reward_mean"]] == [t2]
    assert not [t for t, points in tb.items() if t.startswith("eval/") and points]
    assert [s for s, _ in tb["time/fps"]] == list(range(ROLLOUT, tr + 1, ROLLOUT))
    raw = [s for f in run.tensorboard.iterdir() for s, _ in tb_scalars(f).get("time/fps", [])]
    assert len(raw) > len(tb["time/fps"])  # the hidden lineage is still in its files


def train_until_sigterm(run: RunDir, tmp_path: Path) -> tuple[subprocess.Popen, dict, str]:
    """A worker on a 1000-episode chunk, SIGTERMed once it trains: (process, its training heartbeat, stderr)."""
    long_cfg = tmp_path / "long.toml"
    long_cfg.write_text(TINY.replace("episodes = 2", "episodes = 1000"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "go2train", "train-chunk", "--run-dir", str(run.root), "--config", str(long_cfg)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        hb = wait_training(run, proc.pid)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc, hb, err


def wait_training(run: RunDir, pid: int, timeout: float = 240) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        hb = read_json(run.heartbeat) or {}
        if hb.get("pid") == pid and hb.get("phase") == "training" and hb.get("timesteps", 0) > 0:
            first = hb["timesteps"]
            while time.time() < deadline:  # let it make some progress beyond the start
                hb = read_json(run.heartbeat) or {}
                if hb.get("timesteps", 0) > first:
                    return hb
                time.sleep(0.2)
        time.sleep(0.2)
    raise AssertionError(f"worker {pid} never reached training: {read_json(run.heartbeat)}")


def test_the_worker_alone_decides_its_chunk(tmp_path):
    """Chunk = the checkpoint built on + [chunk] episodes; None (no 0 flag) once max_episodes is reached."""
    from go2train.config import load
    from go2train.train.worker import Worker

    (tmp_path / "go2train.toml").write_text(TINY.replace("episodes = 2", "episodes = 2\nmax_episodes = 4"))
    rd = RunDir.at(tmp_path)
    rd.make()
    w = Worker(rd, load(None, rd.root))
    assert w.chunk is None and w.heartbeat()["chunk"] is None  # nothing decided yet
    w._decide_chunk(0)
    assert (w.prev_milestone, w.chunk) == (0, 2)
    w._decide_chunk(2)
    assert (w.prev_milestone, w.chunk) == (2, 4) and w.heartbeat()["chunk"] == 4
    w._decide_chunk(4)  # the run is complete: nothing to train
    assert (w.prev_milestone, w.chunk) == (4, None) and w.heartbeat()["chunk"] is None
    w.cfg = load(None, rd.root, overrides=["chunk.max_episodes=0", "chunk.max_timesteps=1000"])
    w._decide_chunk(2, 999)
    assert w.chunk == 4  # below the timestep limit
    w._decide_chunk(2, 1000)  # the newest chunk reached [chunk] max_timesteps
    assert w.chunk is None and w._limit_reached(2, 999) == "" and w._limit_reached(2, 1000) == "max_timesteps 1,000 (1,000 trained)"


# ---------------------------------------------------------------- the scenario, order-independent
# The steps above are one scenario on one run directory, each building on the run the previous
# ones left. The module fixture runs them all, in this order, once; each test reports one step's
# outcome, so the tests pass or fail the same whatever order pytest runs them in.
STEPS = [step_01_first_chunk, step_02_crash_mid_save_keeps_previous_checkpoint, step_03_second_chunk_resumes_exactly, step_03b_tensorboard_one_run_without_the_crashed_workers_steps, step_03c_milestone_render_writes_eval_scalars, step_04_truncated_newest_is_moved_aside_and_previous_used, step_05_sigterm_resume_point_is_used_by_next_chunk, step_06_a_complete_run_trains_nothing_and_announces_no_chunk, step_07_tensorboard_after_the_resumes]


@pytest.fixture(scope="module")
def scenario(run, tmp_path_factory) -> dict[str, BaseException | None]:
    outcome: dict[str, BaseException | None] = {}
    for step in STEPS:
        try:
            step(run, tmp_path_factory.mktemp(step.__name__))
            outcome[step.__name__] = None
        except Exception as exc:  # reported by the step's own test below
            outcome[step.__name__] = exc
    return outcome


@pytest.mark.parametrize("step", [s.__name__ for s in STEPS], ids=[s.__name__[5:] for s in STEPS])
def test_scenario_step(scenario, step):
    if scenario[step] is not None:
        raise scenario[step]
