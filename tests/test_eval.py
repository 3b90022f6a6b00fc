"""`go2train eval` on a REAL tiny checkpoint (real worker, real Genesis on the CPU).

Genesis processes: the worker that trains the tiny chunk (subprocess) and this pytest process
(every evaluation shares its one scene). The bad-input CLI tests run `go2train eval` as
subprocesses that stop before importing torch or genesis.

Checkpoints in the run:
* chunk_000001: trained by `go2train train-chunk` (2 robots, 30-step episodes, one chunk; the session's tiny_trained_run, copied).
* chunk_000002: the same model with its action head zeroed (mean action 0, log_std -20), saved
  through checkpoint.save with a valid manifest: a stand-still policy, which must be flagged.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import TINY_RUN_TOML, copy_run, go2train

from go2train.run import checkpoint
from go2train.run.files import read_json
from go2train.run.layout import RunDir, chunk_name
from go2train.tools.evaluate import GRID, LEGS, is_lazy_command, is_lazy_optimum

pytestmark = pytest.mark.genesis

EPISODES = 2
TOML = TINY_RUN_TOML


def _go2train(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return go2train(*args, timeout=timeout, new_session=False)


def _zero_policy_checkpoint(rd: RunDir, src: int, dst: int) -> None:
    """chunk ``dst``: chunk ``src``'s policy with a zeroed action head (it always outputs 0)."""
    import torch

    from go2train.train.ppo import ChunkedPPO
    from go2train.train.worker import _write_with

    m = checkpoint.verify(rd, chunk_name(src))
    model = ChunkedPPO.load(str(checkpoint.model_path(rd, m, "model")), device="cpu")
    with torch.no_grad():
        model.policy.action_net.weight.zero_()
        model.policy.action_net.bias.zero_()
        model.policy.log_std.fill_(-20.0)
    vecnorm = checkpoint.model_path(rd, m, "vecnorm")
    meta = {k: m[k] for k in ("timesteps", "episodes_total", "config", "run")}
    checkpoint.save(
        rd,
        chunk_name(dst),
        {"model": lambda p: _write_with(p, model.save), "vecnorm": lambda p: shutil.copyfile(vecnorm, p)},
        {"kind": "chunk", "chunk": dst, **meta},
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_trained_run) -> Path:
    d = copy_run(tiny_trained_run, tmp_path_factory.mktemp("evalrun") / "run", TOML)
    rd = RunDir.at(d)
    assert checkpoint.chunk_milestones(rd) == [1]
    _zero_policy_checkpoint(rd, 1, 2)
    checkpoint.verify(rd, chunk_name(2))
    return d


@pytest.fixture(scope="module")
def trained(run_dir):
    from go2train.tools.evaluate import evaluate

    return evaluate(run_dir, 1, episodes=EPISODES)


@pytest.fixture(scope="module")
def zero(run_dir, trained):
    from go2train.tools.evaluate import evaluate

    return evaluate(run_dir, "latest", episodes=EPISODES)


def _check_figs(f: dict, steps: int, dt: float) -> None:
    finite = lambda v: isinstance(v, float) and math.isfinite(v)  # noqa: E731
    for key in ("forward_speed", "displacement_speed", "tracking_error", "survival", "time_alive_s",
                "base_height_mean", "base_height_std", "tilt_deg", "distance_m", "lateral_drift_m",
                "foot_clearance_swing_m", "foot_clearance_max_m", "touchdowns_per_s", "action_smoothness",
                "reward"):
        assert finite(f[key]), (key, f[key])
    assert 0.0 <= f["survival"] <= 1.0
    assert 0.0 < f["time_alive_s"] <= steps * dt + 1e-6
    assert 0.0 < f["base_height_mean"] < 0.6
    assert 0.0 <= f["base_height_std"] < 0.3
    assert 0.0 <= f["tilt_deg"] < 90.0
    assert abs(f["forward_speed"]) < 3.0 and abs(f["displacement_speed"]) < 3.0
    assert f["tracking_error"] >= 0.0
    assert 0.0 <= f["lateral_drift_m"] < 1.0
    assert abs(f["distance_m"]) < 2.0
    assert set(f["foot_air_fraction_per_foot"]) == set(LEGS)
    for v in list(f["foot_air_fraction_per_foot"].values()) + [f["foot_air_fraction"]]:
        assert v is None or 0.0 <= v <= 1.0
    assert 0.0 <= f["foot_clearance_swing_m"] < 0.3
    assert -0.02 < f["foot_clearance_max_m"] < 0.5  # sphere radius above the ground: ~0 when standing
    assert f["swing_clearance_m"] is None or 0.03 <= f["swing_clearance_m"] <= f["foot_clearance_max_m"] + 1e-6
    assert f["air_time_per_swing_s"] is None or 0.0 < f["air_time_per_swing_s"] <= steps * dt
    assert f["touchdowns_per_s"] >= 0.0 and f["action_smoothness"] >= 0.0
    for key in ("diagonal_sync", "pair_sync"):
        assert f[key] is None or -1.0 - 1e-6 <= f[key] <= 1.0 + 1e-6, (key, f[key])
    assert f["invalid_resets"] == 0
    terms = f["reward_terms"]
    assert {"height", "tracking_lin_vel"} <= set(terms)
    assert all(finite(v) for v in terms.values())
    # The episode reward is the sum of the weighted terms.
    assert f["reward"] == pytest.approx(sum(terms.values()), abs=1e-3)


def test_eval_figures_sane(run_dir, trained):
    r = trained
    stored = read_json(Path(run_dir) / "models" / "chunk_000001.json")["config"]
    assert r["chunk"] == 1 and r["episodes"] == EPISODES
    assert r["episode_steps"] == stored["env"]["episode_steps"] == 30
    assert r["reference"] == "forward 0.6" and r["cmd_vx"] == 0.6  # the grid's, not the stored ranges
    assert "command_vx" not in stored["env"] and stored["command"]["vx_range"] == [-1.0, 1.0]
    for side in ("policy", "baseline"):
        _check_figs(r[side], r["episode_steps"], r["dt"])
    assert isinstance(r["lazy_optimum"], bool)
    # The baseline holds the default pose: no action changes at all.
    assert r["baseline"]["action_smoothness"] == 0.0
    assert r["baseline"]["reward_terms"].get("action_rate", 0.0) == 0.0


def test_push_test_randomises_and_kicks(run_dir, trained):
    """`eval --push`: the default [domain_rand] plus 4 kicks of 0.5 m/s, 4 s apart (18 s episodes)."""
    from go2train.tools.evaluate import evaluate

    r = evaluate(run_dir, 1, episodes=EPISODES, push=True)
    assert trained["push"] is None
    assert r["push"] == {"vel": 0.5, "interval_s": 4.0, "pushes": 4} and r["episode_steps"] == 900
    for side in ("policy", "baseline"):
        f = r[side]
        assert 0.0 <= f["survival"] <= 1.0 and 0.0 < f["time_alive_s"] <= 18.0 + 1e-6
        assert f["invalid_resets"] == 0 and math.isfinite(f["reward"])
    assert r["policy"] != trained["policy"]


def test_gait_sync_tells_a_trot_from_a_pace_and_a_shuffle():
    """The gait figures on synthetic foot heights (FR, FL, RR, RL) of three robots."""
    import torch

    from go2train.tools.evaluate import _GaitSync

    t = torch.arange(200, dtype=torch.float64) * 0.02
    lift = lambda phase: 0.05 * torch.clamp(torch.sin(2 * math.pi * 2.0 * t + phase), min=0)  # noqa: E731
    trot = torch.stack([lift(0), lift(math.pi), lift(math.pi), lift(0)], 1)
    pace = torch.stack([lift(0), lift(math.pi), lift(0), lift(math.pi)], 1)  # lateral pairs together
    shuffle = 0.002 * torch.rand(200, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    figs = {}
    for name, c in (("trot", trot), ("pace", pace), ("shuffle", shuffle)):
        g = _GaitSync(1, "cpu")
        for k in range(200):
            g.add(c[k : k + 1].float(), torch.ones(1))
        figs[name] = g.figures()
    assert figs["trot"]["diagonal_sync"] > 0.95 and figs["trot"]["pair_sync"] < -0.3
    assert figs["pace"]["diagonal_sync"] < -0.3 and figs["pace"]["pair_sync"] < -0.3
    assert abs(figs["shuffle"]["diagonal_sync"]) < 0.2 and abs(figs["shuffle"]["pair_sync"]) < 0.2
    # Too few alive samples: no figure rather than a made-up one.
    g = _GaitSync(1, "cpu")
    g.add(trot[:1].float(), torch.ones(1))
    assert g.figures() == {"diagonal_sync": None, "pair_sync": None}


def test_lazy_optimum_fires_on_stand_still_policy(zero, trained):
    r = zero
    assert r["chunk"] == 2 and r["scene_reused"]  # one scene for both chunks
    _check_figs(r["policy"], r["episode_steps"], r["dt"])
    # A policy that outputs zeros is the baseline: same trajectory, same reward.
    assert r["policy"]["action_smoothness"] == 0.0
    assert r["policy"]["reward"] == pytest.approx(r["baseline"]["reward"], rel=1e-5)
    assert r["policy"]["forward_speed"] < 0.5 * r["cmd_vx"]
    assert r["lazy_optimum"] is True
    # ... and lazy on every command that asks for movement (it is the baseline everywhere)
    assert r["summary"]["lazy_commands"] == [name for name, _ in GRID if name != "stand still"]
    assert r["baseline"] == trained["baseline"]  # computed once, identical


def test_is_lazy_optimum_rule(zero):
    pol, base, cmd = zero["policy"], zero["baseline"], zero["cmd_vx"]
    assert cmd > 0
    assert is_lazy_optimum(pol, base, cmd)
    # A policy that moves (heading-frame speed >= half the command) is not lazy, whatever it earns.
    moving = dict(pol, forward_speed=0.5 * cmd, reward=base["reward"] + 5.0)
    assert not is_lazy_optimum(moving, base, cmd)
    assert not is_lazy_optimum(dict(moving, forward_speed=cmd), base, cmd)
    # Slow but earning less than standing still: not the lazy optimum (just bad).
    assert not is_lazy_optimum(dict(pol, reward=base["reward"] - 0.1), base, cmd)
    # Slow and earning more: lazy.
    assert is_lazy_optimum(dict(pol, reward=base["reward"] + 1.0, forward_speed=0.49 * cmd), base, cmd)
    # Walking backwards at a forward command is slow; a backward command flips the direction.
    assert is_lazy_optimum(dict(pol, forward_speed=-cmd), base, cmd)
    assert not is_lazy_optimum(dict(pol, forward_speed=-cmd), base, -cmd)
    # Nothing to walk towards, or missing figures: never flagged.
    assert not is_lazy_optimum(pol, base, 0.0)
    assert not is_lazy_optimum({}, base, cmd)
    assert not is_lazy_optimum(dict(pol, reward=float("nan")), base, cmd)


def test_cli_compare_json_and_table(run_dir, trained, zero):
    from typer.testing import CliRunner

    from go2train.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["eval", "--run-dir", str(run_dir), "--compare", "1,2", "--episodes",
                              str(EPISODES), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert [r["chunk"] for r in out] == [1, 2]
    # Same process, same scene, each pass from the scene's initial state: reproducible figures.
    assert out[0]["policy"] == trained["policy"] and out[1]["policy"] == zero["policy"]
    assert [r["lazy_optimum"] for r in out] == [trained["lazy_optimum"], True]

    assert [r["grid"] for r in out] == [trained["grid"], zero["grid"]]

    res = runner.invoke(app, ["eval", "--run-dir", str(run_dir), "--chunk", "2", "--episodes", str(EPISODES)],
                        env={"COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    assert "baseline (zero action)" in res.stdout and "lazy optimum" in res.stdout
    assert "YES" in res.stdout and "term height" in res.stdout
    assert "command grid" in res.stdout and "turn left 0.8" in res.stdout and "mean lin error" in res.stdout
    res = runner.invoke(app, ["eval", "--run-dir", str(run_dir), "--chunk", "2", "--cmd", "0.5"])
    assert res.exit_code == 2  # no such option (the old single command is `--command`, below)


def test_eval_command_replaces_the_grid(run_dir, trained):
    """`eval --command vx,vy,yaw` (repeatable): those commands instead of the grid, the first the
    reference (a policy trained on one command is judged at that command)."""
    from typer.testing import CliRunner

    from go2train.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["eval", "--run-dir", str(run_dir), "--chunk", "1", "--episodes", str(EPISODES),
                              "--json", "--command", "0.5", "--command", "0,0,0.8"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)  # one chunk: one object
    assert [row["command"] for row in r["grid"]] == [[0.5, 0.0, 0.0], [0.0, 0.0, 0.8]]
    assert [row["name"] for row in r["grid"]] == ["command +0.50,+0.00,+0.00", "command +0.00,+0.00,+0.80"]
    assert r["reference"] == r["grid"][0]["name"] and r["cmd_vx"] == 0.5 and r["robots"] == 2 * EPISODES
    assert [row["command"] for row in r["baseline_grid"]] == [row["command"] for row in r["grid"]]
    for row in r["grid"] + r["baseline_grid"]:
        vx, vy, yaw = row["command"]
        assert row["lin_error"] >= math.hypot(vx - row["vx"], vy - row["vy"]) - 1e-6, row
    assert r["summary"]["reference_vx"] == r["grid"][0]["vx"] and r["summary"]["yaw_error_turning"] == r["grid"][1]["yaw_error"]
    assert r["policy"]["forward_speed"] != trained["policy"]["forward_speed"]  # not the grid's forward 0.6
    res = runner.invoke(app, ["eval", "--run-dir", str(run_dir), "--chunk", "1", "--episodes", str(EPISODES),
                              "--command", "0.5,0"], env={"COLUMNS": "160"})
    assert res.exit_code == 0 and "command +0.50,+0.00,+0.00" in res.stdout and "turn left" not in res.stdout
    for bad in ("fast", "1,2,3,4", "nan", "9"):
        p = _go2train("eval", "--run-dir", str(run_dir), "--chunk", "1", "--command", bad)
        assert p.returncode == 2 and p.stdout == "", (bad, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "--command takes vx,vy,yaw" in lines[0] and repr(bad) in lines[0], p.stderr


def test_cli_bad_chunk_is_one_line(run_dir, tmp_path):
    for arg, needle in (("abc", "integer"), ("1.5", "integer"), ("-3", "integer"), ("7", "available: 1, 2")):
        p = _go2train("eval", "--run-dir", str(run_dir), "--chunk", arg)
        assert p.returncode == 2, (arg, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], (arg, p.stderr)
        assert p.stdout == ""
    p = _go2train("eval", "--run-dir", str(run_dir), "--compare", "1,zz")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "--compare" in p.stderr

    # A damaged checkpoint: one line naming it, exit 2.
    d = tmp_path / "run"
    shutil.copytree(Path(run_dir) / "models", d / "models")
    zp = d / "models" / "chunk_000001.zip"
    data = bytearray(zp.read_bytes())
    data[len(data) // 2] ^= 0xFF
    zp.write_bytes(bytes(data))
    p = _go2train("eval", "--run-dir", str(d), "--chunk", "1")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "chunk_000001" in lines[0] and "damaged" in lines[0], p.stderr
    # Unknown chunk in an empty run directory.
    (tmp_path / "empty").mkdir()
    p = _go2train("eval", "--run-dir", str(tmp_path / "empty"))
    assert p.returncode == 2 and "no chunk checkpoints" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert os.path.isdir(d / "models") and zp.exists()  # eval never moves or deletes files


def test_policy_acts_on_each_steps_observation(run_dir, trained):
    """Regression: the policy must see the observation of every step, not the first one forever."""
    import torch

    from go2train.tools import evaluate as ev

    stored = read_json(Path(run_dir) / "models" / "chunk_000001.json")["config"]
    cfg = ev._eval_config(stored, EPISODES)
    env = ev._get_env(cfg)
    seen = []

    def act(obs):
        seen.append(obs.clone())
        return torch.zeros((env.n_envs, env.num_actions))

    ev._run_pass(env, ev._eval_config(stored, EPISODES), 10, ev.grid_commands(EPISODES), act)
    assert len(seen) == 10
    # joint velocities change as the robot settles: the observations must differ step to step
    assert not torch.equal(seen[0], seen[5])
    assert all(not torch.equal(a, b) for a, b in zip(seen, seen[1:]))


def test_grid_has_one_row_per_command_in_one_scene(trained, zero):
    """Issue 13 item 2: one row per grid command with its figures, all robots in one scene."""
    r = trained
    assert r["robots"] == len(GRID) * EPISODES and len(GRID) == 9
    names = [name for name, _ in GRID]
    assert {"forward 0.3", "forward 0.6", "forward 1.0", "backward 0.5", "left 0.3", "right 0.3",
            "turn left 0.8", "turn right 0.8", "stand still"} == set(names)
    for res in (trained, zero):
        for side in ("grid", "baseline_grid"):
            rows = res[side]
            assert [row["name"] for row in rows] == names
            for row, (_, cmd) in zip(rows, GRID):
                assert row["command"] == list(cmd)
                for k in ("vx", "vy", "yaw_rate", "lin_error", "yaw_error", "survival", "tilt_deg", "reward"):
                    assert isinstance(row[k], float) and math.isfinite(row[k]), (side, row["name"], k)
                assert 0.0 <= row["survival"] <= 1.0 and row["lin_error"] >= 0 and row["yaw_error"] >= 0
        for row in res["grid"]:
            assert isinstance(row["lazy"], bool) and row["baseline_reward"] == pytest.approx(
                next(b["reward"] for b in res["baseline_grid"] if b["name"] == row["name"]))
    # Each group got its own command: errors are measured against it (mean of |error| >= |mean
    # error|), and robots standing still (the baseline) miss a bigger command by more.
    for res in (trained, zero):
        for row in res["grid"] + res["baseline_grid"]:
            vx, vy, yaw = row["command"]
            assert row["lin_error"] >= math.hypot(vx - row["vx"], vy - row["vy"]) - 1e-6, row
            assert row["yaw_error"] >= abs(yaw - row["yaw_rate"]) - 1e-6, row
    b = {row["name"]: row for row in trained["baseline_grid"]}
    assert b["forward 0.3"]["lin_error"] < b["forward 0.6"]["lin_error"] < b["forward 1.0"]["lin_error"]
    assert min(b["turn left 0.8"]["yaw_error"], b["turn right 0.8"]["yaw_error"]) > b["stand still"]["yaw_error"] + 0.5
    sm = trained["summary"]
    assert set(sm) >= {"lin_error_moving", "yaw_error_turning", "worst_command", "worst_lin_error",
                       "survival_min", "reference_vx", "lazy_commands", "progress_min", "progress_min_command"}
    assert sm["worst_command"] in names and sm["reference_vx"] == trained["grid"][1]["vx"]
    moving = [row["lin_error"] for row in trained["grid"] if row["name"] != "stand still"]
    assert sm["lin_error_moving"] == pytest.approx(sum(moving) / len(moving))
    print(f"grid eval ({trained['robots']} robots, {trained['episode_steps']} steps, policy + baseline): "
          f"{trained['seconds']:.1f} s with the scene build, {zero['seconds']:.1f} s reusing it")


def test_command_progress():
    from go2train.tools.evaluate import command_progress

    row = lambda cmd, vx=0.0, vy=0.0, w=0.0: {"command": cmd, "vx": vx, "vy": vy, "yaw_rate": w}  # noqa: E731
    assert command_progress(row([0.6, 0, 0], vx=0.3)) == pytest.approx(0.5)
    assert command_progress(row([-0.5, 0, 0], vx=-0.5)) == pytest.approx(1.0)
    assert command_progress(row([0, -0.3, 0], vx=0.6, vy=-0.15)) == pytest.approx(0.5)
    assert command_progress(row([0, 0, -0.8], w=-0.4)) == pytest.approx(0.5)
    assert command_progress(row([0, 0, 0])) is None and command_progress({}) is None


def test_is_lazy_command_rule():
    base = {"reward": 1.0}
    row = lambda cmd, vx=0.0, vy=0.0, w=0.0, r=1.0: {"command": cmd, "vx": vx, "vy": vy, "yaw_rate": w, "reward": r}  # noqa: E731
    assert is_lazy_command(row([0.6, 0, 0]), base)  # stands, earns as much
    assert not is_lazy_command(row([0.6, 0, 0], vx=0.3), base)  # half the command: moving
    assert not is_lazy_command(row([0.6, 0, 0], r=0.5), base)  # earns less: bad, not lazy
    assert is_lazy_command(row([0, 0.3, 0], vx=0.5), base)  # fast, but not where told
    assert not is_lazy_command(row([0, -0.3, 0], vy=-0.2), base)
    assert is_lazy_command(row([-0.5, 0, 0], vx=0.5), base)  # forward at a backward command
    assert is_lazy_command(row([0, 0, 0.8], w=0.1), base) and not is_lazy_command(row([0, 0, -0.8], w=-0.5), base)
    assert not is_lazy_command(row([0, 0, 0]), base)  # stand still: nothing to be lazy about
    assert not is_lazy_command({}, base)
