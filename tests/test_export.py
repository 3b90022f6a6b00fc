"""`go2train export` and :func:`go2train.tools.export.obs_layout` on a REAL small Genesis scene (CPU, 2 robots).

One scene per module (this pytest process): the layout test reads its observations, and the
checkpoint is a real SB3 model made by the project's factories (``ppo.make_ppo`` over
``ppo.normalize(Go2VecEnv)``), its VecNormalize stepped on the scene for non-trivial statistics,
saved with ``checkpoint.save`` as the worker saves a chunk. The exported ONNX and TorchScript
networks are then compared with SB3's deterministic policy (``model.predict`` on
``VecNormalize.normalize_obs`` of the same raw observations). The CLI runs as real subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import go2train, snapshot

from go2train.config import Config, DomainRandConfig
from go2train.robot import JOINT_NAMES
from go2train.run import checkpoint
from go2train.run.layout import RunDir, chunk_name
from go2train.tools.export import obs_layout

pytestmark = pytest.mark.genesis

N = 2
CHUNK = 3
TOL = 1e-5


def _config() -> Config:
    cfg = Config()
    e = cfg.env
    e.n_envs, e.episode_steps, e.backend = N, 30, "cpu"
    cfg.command.vx_range = [0.2, 0.8]  # robots get different commands
    cfg.command.vy_range = [0.3, 0.3]  # a non-zero lateral command: its scale is checked too
    cfg.command.standing_share, cfg.command.curriculum = 0.0, False
    cfg.domain_rand = DomainRandConfig.off(1)  # the observations are rebuilt exactly from state below
    e.obs_scale_dof_pos = 1.1  # every part's scale differs from 1 somewhere: a missing scale is caught
    e.clip_actions = 1.5  # the action space's bound (default 100): the exported clip is exercised
    p = cfg.ppo
    p.n_steps, p.batch_size, p.net_arch = 8, 16, [32, 32]
    p.ortho_init = False  # PyTorch's init: actions of order 1 (SB3's orthogonal init outputs ~0.01)
    return cfg


def _go2train(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return go2train(*args, timeout=timeout, new_session=False)


@pytest.fixture(scope="module")
def env():
    from go2train.sim.env import Go2Env

    return Go2Env(_config())


# ---------------------------------------------------------------- the observation layout
def test_obs_layout_matches_env_observation(env):
    """Every part of obs_layout is the env's observation at that slice, with that scale and offset,
    after steps with random actions (the layout must follow any change of ``_compute_obs``)."""
    layout = obs_layout(env.cfg)
    assert [p["start"] for p in layout] == [0] + [p["stop"] for p in layout[:-1]]  # contiguous, in order
    assert all(p["stop"] - p["start"] == p["size"] == len(p["components"]) == len(p["scale"]) == len(p["offset"])
               for p in layout)
    assert sum(p["size"] for p in layout) == layout[-1]["stop"] == env.num_obs

    env.reset()
    gen = torch.Generator().manual_seed(0)
    for _ in range(7):
        res = env.step(torch.rand((N, 12), generator=gen) * 1.6 - 0.8)
    obs = res.obs.clone()
    period = max(1, env.cfg.env.gait_period_steps)
    phase = 2 * np.pi * (env.episode_length.float() % period) / period
    quantity = {  # what each part measures, read from the env's state (not from _compute_obs)
        "base_ang_vel": env.base_ang_vel,
        "projected_gravity": env.projected_gravity,
        "commands": env.commands,
        "dof_pos": env.dof_pos,
        "dof_vel": env.dof_vel,
        "last_action": env.actions,
        "gait_clock": torch.stack([torch.sin(phase), torch.cos(phase)], 1),
    }
    if not env.gait_clock:
        quantity.pop("gait_clock")
    assert [p["name"] for p in layout] == list(quantity)
    for p in layout:
        want = (quantity[p["name"]] - torch.tensor(p["offset"])) * torch.tensor(p["scale"])
        got = obs[:, p["start"]:p["stop"]]
        assert torch.allclose(got, want, atol=1e-6), (p["name"], got, want)
        assert got.abs().max() > 0 or p["name"] == "projected_gravity", p["name"]  # a live part, not zeros
    assert quantity["commands"][:, 1].tolist() == pytest.approx([0.3] * N)
    assert layout[3]["offset"] == pytest.approx(env.default_dof_pos.tolist())
    assert [c for c in layout[3]["components"]] == [n.removesuffix("_joint") for n in JOINT_NAMES]


def test_obs_layout_without_gait_clock():
    cfg = Config()
    cfg.env.gait_period_steps = 0
    cfg.reward.gait_contact = cfg.reward.feet_swing_height = cfg.reward.swing_clearance = 0.0
    layout = obs_layout(cfg)
    assert [p["name"] for p in layout][-1] == "last_action" and layout[-1]["stop"] == 45


# ---------------------------------------------------------------- a real checkpoint
@pytest.fixture(scope="module")
def ckpt(env, tmp_path_factory):
    """A run dir with chunk CHUNK: a fresh make_ppo model whose VecNormalize has seen 40 steps of
    the real scene. Returns (run dir, model, VecNormalize, raw observations seen)."""
    from go2train.sim.vecenv import Go2VecEnv
    from go2train.train.ppo import make_ppo, normalize
    from go2train.train.worker import _write_with

    cfg = env.cfg
    vn = normalize(cfg.ppo, Go2VecEnv(env))
    model = make_ppo(cfg.ppo, vn, seed=0)
    vn.reset()
    rng = np.random.default_rng(0)
    raw = []
    for _ in range(40):
        vn.step(rng.uniform(-1, 1, (N, 12)).astype(np.float32))
        raw.append(vn.get_original_obs())
    vn.training = False
    assert np.abs(vn.obs_rms.mean).max() > 0.1 and np.ptp(vn.obs_rms.var) > 0.01  # statistics, not 0/1
    d = tmp_path_factory.mktemp("exportrun")
    rd = RunDir.at(d)
    rd.make()
    checkpoint.save(
        rd, chunk_name(CHUNK),
        {"model": lambda p: _write_with(p, model.save), "vecnorm": lambda p: vn.save(str(p))},
        {"kind": "chunk", "chunk": CHUNK, "timesteps": int(vn.obs_rms.count), "episodes_total": 0,
         "config": cfg.to_dict(), "run": {"t_start": 0.0, "run_name": "go2train"}},
    )
    return d, model, vn, np.concatenate(raw).astype(np.float32)


def _inputs(vn, real: np.ndarray) -> np.ndarray:
    """Raw observations: the scene's own, 1000 around the statistics (some beyond clip_obs), extremes."""
    rng = np.random.default_rng(1)
    std = np.sqrt(vn.obs_rms.var + vn.epsilon)
    around = vn.obs_rms.mean + std * rng.normal(0.0, 3.0, (1000, real.shape[1]))
    extreme = np.stack([np.full(real.shape[1], 1e3), np.full(real.shape[1], -1e3), np.zeros(real.shape[1])])
    return np.concatenate([real, around, extreme]).astype(np.float32)


def _sb3(model, vn, x: np.ndarray) -> np.ndarray:
    a, _ = model.predict(vn.normalize_obs(x), deterministic=True)
    return a


@pytest.fixture(scope="module")
def exported(ckpt):
    from go2train.tools.export import export

    d, *_ = ckpt
    res = export(d, "latest")
    return Path(res["out"]), res


def test_export_matches_sb3_policy(ckpt, exported):
    """ONNX (onnxruntime) and TorchScript outputs equal SB3's deterministic policy on raw observations."""
    import onnxruntime as ort

    d, model, vn, real = ckpt
    out, _ = exported
    assert out == d / "exports" / chunk_name(CHUNK)
    x = _inputs(vn, real)
    want = _sb3(model, vn, x)
    sess = ort.InferenceSession(str(out / "policy.onnx"), providers=["CPUExecutionProvider"])
    got_onnx = sess.run(["action"], {"obs": x})[0]
    ts = torch.jit.load(str(out / "policy.pt"))
    with torch.no_grad():
        got_ts = ts(torch.from_numpy(x)).numpy()
    assert got_onnx.shape == got_ts.shape == want.shape == (len(x), 12)
    assert np.abs(got_onnx - want).max() <= TOL
    assert np.abs(got_ts - want).max() <= TOL
    one = sess.run(["action"], {"obs": x[:1]})[0]  # the batch axis is dynamic
    assert np.abs(one - want[:1]).max() <= TOL
    # The comparison can fail: without the baked-in normalisation the answers differ by far more.
    assert np.abs(_sb3(model, vn, vn.normalize_obs(x)) - want).max() > 100 * TOL  # normalised twice
    raw, _ = model.predict(x, deterministic=True)  # not normalised
    assert np.abs(raw - want).max() > 100 * TOL
    assert np.abs(want).max() > 0.2 and (np.abs(want) == 1.5).any()  # live actions, the clip reached


def test_policy_json_describes_the_export(ckpt, exported):
    d, model, vn, _ = ckpt
    out, _ = exported
    doc = json.loads((out / "policy.json").read_text())
    cfg = _config()
    assert doc["observation"]["layout"] == obs_layout(cfg)
    n = doc["observation"]["size"]
    assert n == model.observation_space.shape[0] == sum(p["size"] for p in doc["observation"]["layout"])
    assert doc["input"]["shape"] == ["batch", n] and doc["output"]["shape"] == ["batch", 12]
    norm = doc["observation"]["normalization"]
    assert norm["mean"] == pytest.approx(vn.obs_rms.mean.tolist()) and norm["var"] == pytest.approx(vn.obs_rms.var.tolist())
    assert (norm["epsilon"], norm["clip_obs"]) == (vn.epsilon, vn.clip_obs)
    j = doc["joints"]
    assert j["names"] == JOINT_NAMES and j["default_pos_rad"] == cfg.env.default_dof_pos()
    assert (j["kp"], j["kd"], j["action_scale"], j["clip_actions"]) == (cfg.env.kp, cfg.env.kd, cfg.env.action_scale,
                                                                          cfg.env.clip_actions)
    c = doc["control"]
    assert (c["dt_s"], c["substeps"], c["action_latency_steps"]) == (cfg.env.dt, cfg.env.substeps, [1, 1])
    assert doc["gait_clock"]["period_steps"] == cfg.env.gait_period_steps
    assert (doc["output"]["low"], doc["output"]["high"]) == (-1.5, 1.5)  # the action space = +-clip_actions
    assert doc["check"]["observations"] >= 100 and max(doc["check"]["max_abs_diff"].values()) <= TOL
    from go2train import __version__

    assert doc["go2train_version"] == __version__
    manifest = checkpoint.verify(RunDir.at(d), chunk_name(CHUNK))
    assert doc["source"]["checkpoint"] == chunk_name(CHUNK)
    assert {f: i["sha256"] for f, i in doc["source"]["files"].items()} == {
        f: i["sha256"] for f, i in manifest["files"].items()}
    for name in ("policy.onnx", "policy.pt"):
        data = (out / name).read_bytes()
        assert doc["files"][name] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def test_loading_an_export_runs_no_pickle(exported, monkeypatch):
    """onnx, onnxruntime, torch.jit.load and json load the export with Python's pickle disabled."""
    import onnx
    import onnxruntime as ort

    out, _ = exported

    def refuse(*_a, **_k):
        raise AssertionError("pickle used while loading an export")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    onnx.checker.check_model(onnx.load(str(out / "policy.onnx")))
    ort.InferenceSession(str(out / "policy.onnx"), providers=["CPUExecutionProvider"])
    torch.jit.load(str(out / "policy.pt"))
    json.loads((out / "policy.json").read_text())


def test_closed_loop_from_policy_json_alone(env, ckpt, exported):
    """docs/EXPORT.md's loop on the real scene: observations built from the robot's state with
    policy.json only (gravity from the base quaternion by the documented formula, the gait phase
    from the step count) equal the env's own, and the ONNX actions equal SB3's on them."""
    import onnxruntime as ort

    _, model, vn, _ = ckpt
    out, _ = exported
    spec = json.loads((out / "policy.json").read_text())
    layout, period = spec["observation"]["layout"], max(1, spec["gait_clock"]["period_steps"])
    sess = ort.InferenceSession(str(out / "policy.onnx"), providers=["CPUExecutionProvider"])
    obs_env = env.reset().cpu().numpy()
    last = np.zeros((N, 12), np.float32)
    for _ in range(12):
        w, u = env.base_quat[:, :1].numpy().astype(np.float64), env.base_quat[:, 1:].numpy().astype(np.float64)
        v = np.array([0.0, 0.0, -1.0])
        gravity_b = v * (2 * w * w - 1) - 2 * w * np.cross(u, v) + 2 * u * (u @ v)[:, None]
        phase = 2 * np.pi * (env.episode_length.numpy() % period) / period
        quantity = {"base_ang_vel": env.base_ang_vel.numpy(), "projected_gravity": gravity_b,
                    "commands": env.commands.numpy(), "dof_pos": env.dof_pos.numpy(), "dof_vel": env.dof_vel.numpy(),
                    "last_action": last, "gait_clock": np.stack([np.sin(phase), np.cos(phase)], 1)}
        obs = np.concatenate([(quantity[p["name"]] - p["offset"]) * np.array(p["scale"]) for p in layout], 1)
        assert np.abs(obs - obs_env).max() < 1e-5
        action = sess.run(["action"], {"obs": obs.astype(np.float32)})[0]
        assert np.abs(action - _sb3(model, vn, obs_env)).max() <= TOL
        res = env.step(torch.from_numpy(action))
        obs_env, last = res.obs.cpu().numpy(), action.copy()
        last[res.done_idx.numpy()] = 0.0  # a robot that finished starts a new episode


# ---------------------------------------------------------------- the command line
def test_cli_export(ckpt, tmp_path):
    d, model, vn, real = ckpt
    out = tmp_path / "deep" / "export"
    p = _go2train("export", "--chunk", str(CHUNK), "--run-dir", str(d), "--out", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0], p.stdout
    assert sorted(x.name for x in out.iterdir()) == ["policy.json", "policy.onnx", "policy.pt"]
    import onnxruntime as ort

    x = _inputs(vn, real)[:64]
    got = ort.InferenceSession(str(out / "policy.onnx"), providers=["CPUExecutionProvider"]).run(None, {"obs": x})[0]
    assert np.abs(got - _sb3(model, vn, x)).max() <= TOL


@pytest.mark.parametrize("case", ["unknown chunk", "bad chunk", "missing run dir", "out is a file",
                                  "out under a file", "out unwritable"])
def test_cli_bad_input_one_line_nothing_written(ckpt, tmp_path, case):
    d, *_ = ckpt
    a_file = d / "models" / f"{chunk_name(CHUNK)}.json"
    args, needle = {
        "unknown chunk": (["--chunk", "99"], "chunk 99"),
        "bad chunk": (["--chunk", "3x"], "'3x'"),
        "missing run dir": (["--run-dir", str(tmp_path / "nope")], str(tmp_path / "nope")),
        "out is a file": (["--out", str(a_file)], str(a_file)),
        "out under a file": (["--out", str(a_file / "sub")], str(a_file)),
        "out unwritable": (["--out", "/proc/go2train-export"], "/proc"),  # root too cannot write /proc
    }[case]
    if "--run-dir" not in args:
        args = [*args, "--run-dir", str(d)]
    before = snapshot(d)
    p = _go2train("export", *args, timeout=120)
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("go2train: ") and needle in lines[0], p.stderr
    assert p.stdout == ""
    assert snapshot(d) == before
    assert not (tmp_path / "nope").exists()


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    """A write that fails midway (full disk, read-only mount) removes what this export made."""
    from go2train.tools import export as ex

    calls = []

    def flaky(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)

    monkeypatch.setattr(ex, "atomic_write_bytes", flaky)
    dest = tmp_path / "a" / "b"
    with pytest.raises(ex.ExportError, match="cannot be written: No space left on device"):
        ex._write_all(dest, [("policy.onnx", b"1"), ("policy.pt", b"2"), ("policy.json", b"3")])
    assert list(tmp_path.iterdir()) == []


def test_export_without_obs_normalisation(env, tmp_path):
    """``[ppo] normalize_obs = false``: SB3's VecNormalize keeps no ``obs_rms``; the export is the bare
    policy (mean 0, std 1, no clip) and still equals SB3's."""
    import copy

    import onnxruntime as ort

    from go2train.sim.vecenv import Go2VecEnv
    from go2train.tools.export import export
    from go2train.train.ppo import make_ppo, normalize
    from go2train.train.worker import _write_with

    cfg = copy.deepcopy(env.cfg)
    cfg.ppo.normalize_obs = False
    vn = normalize(cfg.ppo, Go2VecEnv(env))
    assert not hasattr(vn, "obs_rms")
    model = make_ppo(cfg.ppo, vn, seed=0)
    rd = RunDir.at(tmp_path)
    rd.make()
    checkpoint.save(
        rd, chunk_name(CHUNK),
        {"model": lambda p: _write_with(p, model.save), "vecnorm": lambda p: vn.save(str(p))},
        {"kind": "chunk", "chunk": CHUNK, "timesteps": 0, "episodes_total": 0,
         "config": cfg.to_dict(), "run": {"t_start": 0.0, "run_name": "go2train"}},
    )
    res = export(tmp_path, "latest")
    out = Path(res["out"])
    meta = json.loads((out / "policy.json").read_text())
    assert meta["observation"]["normalization"]["enabled"] is False
    x = np.random.default_rng(2).normal(0.0, 3.0, (200, env.num_obs)).astype(np.float32)
    want, _ = model.predict(x, deterministic=True)
    got = ort.InferenceSession(str(out / "policy.onnx"), providers=["CPUExecutionProvider"]).run(["action"], {"obs": x})[0]
    assert np.abs(got - want).max() <= TOL
