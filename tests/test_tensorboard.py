"""TensorBoard without a simulator (issue 15): the purge that hides a crashed worker's steps past the
resume point, the tags of each writer, eval figures into the run's folder, and W&B's one-line errors.

The real worker, its crash mid-save, resumes and the milestone render are read back in
tests/test_worker.py (``test_03b``, ``test_03c``, ``test_07``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from go2train.run.layout import RunDir
from go2train.train import tblog


def tb_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(path), size_guidance={"scalars": 0})
    ea.Reload()
    return {tag: [(e.step, round(e.value, 6)) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def test_purge_hides_what_a_crashed_worker_logged_past_the_resume_point(tmp_path):
    d = tmp_path / "tb"
    # Worker 1 (fresh): rollouts at 10..50, its chunk ends at 30 (chunk/*), a resume point at 40,
    # then it crashes after logging 50 (no close).
    logger, fmt = tblog.make_logger(d, purge_step=0 + 1)
    for step in (10, 20, 30, 40, 50):
        logger.record("go2/x", step / 10)
        logger.dump(step)
    fmt.scalars({"chunk/y": 1.0}, 30)
    time.sleep(1.05)  # event files sort by their creation second (then host, pid)
    tblog.write_scalars(d, {"eval/video/z": 5.0}, 30, "render")  # the milestone render of 30
    time.sleep(1.05)
    # Worker 2 resumes from the resume point at 40: 50 again (other values), 60, chunk/* at 60.
    logger2, fmt2 = tblog.make_logger(d, purge_step=40 + 1)
    for step in (50, 60):
        logger2.record("go2/x", 100 + step / 10)
        logger2.dump(step)
    fmt2.scalars({"chunk/y": 2.0}, 60)
    fmt2.close()
    tb = tb_scalars(d)
    assert tb["go2/x"] == [(10, 1.0), (20, 2.0), (30, 3.0), (40, 4.0), (50, 105.0), (60, 106.0)]
    assert tb["chunk/y"] == [(30, 1.0), (60, 2.0)]  # the resume step itself is kept (purge at T + 1)
    assert tb["eval/video/z"] == [(30, 5.0)]  # another process's file, same run
    assert len(list(d.iterdir())) == 3 and all(p.name.startswith("events.out.tfevents.") for p in d.iterdir())


def test_no_tensorboard_logger_writes_nothing(tmp_path):
    logger, fmt = tblog.make_logger(None)
    logger.record("go2/x", 1.0)
    logger.dump(10)
    assert fmt is None and not list(tmp_path.iterdir())


def test_rollout_scalars_name_every_reward_term():
    from go2train.sim.rewards import TERMS
    from go2train.train.worker import ChunkStats

    st = ChunkStats()
    st.add({"r": 2.0, "l": 10, "speed": 0.3, "fell": True, "terms": {"height": 1.5, "tracking_lin_vel": 0.5},
            "track": {"move_steps": 10, "cmd_speed": 5.0, "speed_along": 2.0, "lin_err": 3.0, "yaw_err": 1.0,
                      "stand_steps": 0}})
    st.add({"r": 4.0, "l": 30, "speed": 0.5, "fell": False, "terms": {"height": 4.0}})
    out = tblog.rollout_scalars(st.summary(), st.n, episodes_total=12, n_envs=4)
    assert {f"go2/reward/{t}" for t in TERMS} <= set(out)
    assert out["go2/reward/height"] == pytest.approx(2.75) and out["go2/fall_rate"] == 0.5
    assert out["go2/episode_reward"] == 3.0 and out["go2/forward_speed"] == pytest.approx(0.4)
    assert out["go2/speed_along_command"] == pytest.approx(0.2) and out["go2/tracking_error_lin"] == pytest.approx(0.3)
    assert out["go2/episodes_per_robot"] == 3.0 and out["go2/episodes"] == 2.0
    # a rollout in which no episode finished: only the episode count per robot
    assert tblog.rollout_scalars(ChunkStats().summary(), 0, 12, 4) == {"go2/episodes_per_robot": 3.0}


def test_chunk_and_video_scalars_leave_out_nulls():
    rec = {"chunk": 50, "reward_mean": 1.0, "fall_rate": 0.25, "peak_gpu_mb": None, "speed_along_command_mean": None,
           "reward_terms": {"height": 2.0}, "started": 1.7e9, "backend": "cpu"}
    assert tblog.chunk_scalars(rec) == {"chunk/milestone": 50.0, "chunk/reward_mean": 1.0, "chunk/fall_rate": 0.25,
                                        "chunk/reward/height": 2.0}
    meta = {"command": [0.6, 0.0, 0.0], "mean_velocity": [0.3, 0.1, 0.05], "mean_forward_speed_mps": 0.28,
            "falls": 1, "sim_seconds": 8.0, "distance_m": 2.2, "min_base_height_m": None}
    v = tblog.video_scalars(meta)
    assert v["eval/video/speed_along_command"] == pytest.approx(0.3) and v["eval/video/falls_per_min"] == 7.5
    assert "eval/video/min_base_height_m" not in v and v["eval/video/forward_speed"] == 0.28


RESULT = {
    "policy": {"forward_speed": 0.4, "survival": 0.75, "tilt_deg": 3.0, "diagonal_sync": None,
               "reward_terms": {"height": 1.0}},
    "summary": {"lin_error_moving": 0.2, "worst_command": "forward 1.0", "lazy_commands": []},
    "grid": [{"name": "turn left 0.8", "vx": 0.01, "yaw_error": 0.5, "survival": 1.0}],
    "lazy_optimum": False,
}


def test_eval_writes_its_figures_at_the_checkpoints_timesteps(tmp_path):
    from go2train.run.files import atomic_write_json
    from go2train.tools.evaluate import _log_tensorboard

    rd = RunDir.at(tmp_path)
    rd.make()
    manifests = [{"chunk": c, "timesteps": 320 * c, "config": {}} for c in (2, 4, 6)]
    for m in manifests:
        atomic_write_json(rd.models / f"chunk_{m['chunk']:06d}.json", m)
    _log_tensorboard(rd, manifests[:1], [RESULT], push=False)
    _log_tensorboard(rd, manifests[2:], [{**RESULT, "lazy_optimum": True}], push=False)
    _log_tensorboard(rd, manifests[1:2], [RESULT], push=False)  # chunk 4 after chunk 6: still in step order
    _log_tensorboard(rd, manifests[:1], [{**RESULT, "policy": {"forward_speed": 0.5}}], push=False)  # again
    _log_tensorboard(rd, manifests[:1], [RESULT], push=True)
    off = {"chunk": 8, "timesteps": 2560, "config": {"log": {"tensorboard": False}}}  # trained without TB
    _log_tensorboard(rd, [off], [RESULT], push=False)
    files = sorted(p.name.rsplit(".", 1)[-1] for p in rd.tensorboard.iterdir())
    assert files == ["eval", "eval_push"]  # one file per kind, rewritten in step order
    raw = tb_scalars(next(rd.tensorboard.glob("*.eval")))
    assert raw["eval/forward_speed"] == [(640, 0.5), (1280, 0.4), (1920, 0.4)]  # the newest eval of 640 won
    assert raw["eval/lazy_optimum"] == [(640, 0.0), (1280, 0.0), (1920, 1.0)]
    assert raw["eval/tilt_deg"] == [(1280, 3.0), (1920, 3.0)]  # 640's newest eval has no tilt: replaced whole
    tb = tb_scalars(rd.tensorboard)
    assert tb["eval/lazy_optimum"] == raw["eval/lazy_optimum"] and tb["eval_push/survival"] == [(640, 0.75)]
    (rd.models / "chunk_000004.json").unlink()  # chunk 4 damaged and moved aside: its eval goes at the next write
    _log_tensorboard(rd, manifests[2:], [RESULT], push=False)
    assert [s for s, _ in tb_scalars(rd.tensorboard)["eval/lazy_optimum"]] == [640, 1920]
    tb = tb_scalars(rd.tensorboard)
    assert tb["eval/fall_rate"] == [(1920, 0.25)]
    assert tb["eval/reward/height"] == [(1920, 1.0)]
    assert tb["eval/grid/lin_error_moving"] == [(640, 0.2), (1920, 0.2)]
    assert tb["eval/cmd/turn_left_0.8/yaw_error"] == [(640, 0.5), (1920, 0.5)]
    assert "eval/diagonal_sync" not in tb


def test_wandb_without_the_package_is_one_line_and_exit_2(tmp_path):
    """`[log] wandb = true` needs the wandb package (not installed here): config load refuses it, so
    `daemon start` and the worker stop before anything is trained or written."""
    from go2train.config import ConfigError, load, wandb_installed

    if wandb_installed():
        pytest.skip("wandb is installed here")
    (tmp_path / "go2train.toml").write_text("[log]\nwandb = true\n")
    with pytest.raises(ConfigError) as err:
        load(None, tmp_path)
    assert str(err.value) == f"{tmp_path / 'go2train.toml'}: [log] wandb = true needs the wandb package (pip install wandb)"
    p = subprocess.run([sys.executable, "-m", "go2train", "train-chunk", "--run-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, env={**os.environ})
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [f"go2train: {err.value}"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["go2train.toml"]  # nothing written


def test_wandb_run_id_is_one_per_run_directory(tmp_path):
    rid = tblog.wandb_run_id(tmp_path)
    assert rid and tblog.wandb_run_id(tmp_path) == rid == (tmp_path / tblog.WANDB_ID_FILE).read_text().strip()
