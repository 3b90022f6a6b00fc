"""The device rollout path (go2train/rollout.py) against SB3's numpy path, on a real tiny scene.

One Genesis scene (N = 4, short episodes so truncations and auto-resets happen inside a rollout)
is shared by the tests. For a fixed seed both paths must produce the same rollouts (observations,
actions, rewards with the truncation bootstrap, values, log-probs, advantages, returns), the same
VecNormalize statistics, the same episodes seen by the callback and the same updated policy; and a
model trained on the device path must save, load (model zip + VecNormalize pickle, as the worker
does) and continue.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.genesis]

N = 4
N_STEPS = 12


@pytest.fixture(scope="module")
def scene():
    import torch

    from go2train.config import Config
    from go2train.sim.env import Go2Env
    from go2train.sim.vecenv import Go2VecEnv

    torch.set_num_threads(1)
    cfg = Config.model_validate({
        "env": {"n_envs": N, "episode_steps": 7},
        "termination": {"max_roll_deg": 2.0, "max_pitch_deg": 2.0},  # some robots tip over, some are truncated
        "ppo": {"n_steps": N_STEPS, "batch_size": 16, "n_epochs": 2, "net_arch": [32, 32],
                "log_std_init": 0.5, "device": "cpu"},
    })
    env = Go2Env(cfg)
    return cfg, env, Go2VecEnv(env)


class Recorder:
    """A callback that records what the worker's callback reads, and every rollout buffer."""

    def __init__(self):
        from stable_baselines3.common.callbacks import BaseCallback

        rec = self
        self.episodes: list[tuple[int, int, dict]] = []
        self.buffers: list[dict[str, np.ndarray]] = []
        self.steps = 0

        class _Cb(BaseCallback):
            def _on_step(self) -> bool:
                infos, dones = self.locals["infos"], self.locals["dones"]
                assert isinstance(dones, np.ndarray) and dones.dtype == bool and len(infos) == N
                for i in dones.nonzero()[0]:
                    rec.episodes.append((rec.steps, int(i), infos[i]["episode"]))
                rec.steps += 1
                return True

            def _on_rollout_end(self) -> None:
                b = self.locals["rollout_buffer"]
                rec.buffers.append({k: _np(getattr(b, k)) for k in (
                    "observations", "actions", "rewards", "episode_starts", "values", "log_probs",
                    "advantages", "returns")})

        self.cb = _Cb()


def _np(x) -> np.ndarray:
    import torch

    if isinstance(x, torch.Tensor):
        x = x.cpu().numpy()
    x = np.asarray(x)
    if x.ndim >= 2 and x.shape[0] == N * N_STEPS:  # SB3 flattened env-major after get()
        x = x.reshape(N, N_STEPS, *x.shape[1:]).swapaxes(0, 1)
    return x.copy()


def train(scene, mode: str, iterations: int = 2, norm_obs: bool = True, norm_reward: bool = True):
    import torch
    from stable_baselines3.common.vec_env import VecNormalize

    from go2train.train.ppo import make_ppo

    cfg, env, venv = scene
    cfg.ppo.rollout = mode
    vn = VecNormalize(venv, gamma=cfg.ppo.gamma, clip_obs=cfg.ppo.clip_obs, norm_obs=norm_obs,
                      norm_reward=norm_reward)
    np.random.seed(0)
    torch.manual_seed(0)
    model = make_ppo(cfg.ppo, vn, seed=0)
    assert model.rollout_mode == mode
    rec = Recorder()
    model.learn(total_timesteps=iterations * N_STEPS * N, callback=rec.cb)
    return model, vn, rec


def test_device_path_matches_numpy_path(scene):
    import torch

    from go2train.train.rollout import TorchRolloutBuffer

    m_np, vn_np, rec_np = train(scene, "numpy")
    m_dev, vn_dev, rec_dev = train(scene, "device")
    assert isinstance(m_dev.rollout_buffer, TorchRolloutBuffer)
    assert not isinstance(m_np.rollout_buffer, TorchRolloutBuffer)

    # the same episodes reached the callback at the same steps, with the same contents
    assert len(rec_np.episodes) == len(rec_dev.episodes) > 0
    assert any(ep["fell"] for _, _, ep in rec_np.episodes) and any(not ep["fell"] for _, _, ep in rec_np.episodes)
    for (s1, i1, e1), (s2, i2, e2) in zip(rec_np.episodes, rec_dev.episodes):
        assert (s1, i1, e1["l"], e1["fell"]) == (s2, i2, e2["l"], e2["fell"])
        assert e1["r"] == pytest.approx(e2["r"], rel=1e-4, abs=1e-5)
        assert e1["terms"].keys() == e2["terms"].keys()

    # the same rollouts, advantages and returns (truncation bootstrap included)
    assert len(rec_np.buffers) == len(rec_dev.buffers) == 2
    for b1, b2 in zip(rec_np.buffers, rec_dev.buffers):
        for k in b1:
            np.testing.assert_allclose(b2[k], b1[k], rtol=2e-4, atol=2e-5, err_msg=k)

    # the same normalisation statistics in the VecNormalize (the checkpoint's pickle)
    for a, b in ((vn_np.obs_rms, vn_dev.obs_rms), (vn_np.ret_rms, vn_dev.ret_rms)):
        assert a.count == pytest.approx(b.count)
        np.testing.assert_allclose(b.mean, a.mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.var, a.var, rtol=1e-4, atol=1e-6)
        assert b.mean.dtype == np.float64 and isinstance(b.count, float)
    np.testing.assert_allclose(vn_dev.returns, vn_np.returns, rtol=1e-4, atol=1e-5)

    # the same updates (SB3's PPO.train on the same minibatches)
    for p1, p2 in zip(m_np.policy.parameters(), m_dev.policy.parameters()):
        torch.testing.assert_close(p2, p1, rtol=1e-3, atol=1e-4)
    assert m_np.num_timesteps == m_dev.num_timesteps
    assert isinstance(m_dev._last_obs, np.ndarray) and m_dev._last_obs.dtype == np.float32
    np.testing.assert_allclose(m_dev._last_obs, m_np._last_obs, rtol=2e-4, atol=2e-5)


def test_device_path_without_normalisation_matches_numpy_path(scene):
    """``[ppo] normalize_obs = normalize_reward = false``: SB3's VecNormalize then has no obs_rms."""
    m_np, vn_np, rec_np = train(scene, "numpy", iterations=1, norm_obs=False, norm_reward=False)
    m_dev, vn_dev, rec_dev = train(scene, "device", iterations=1, norm_obs=False, norm_reward=False)
    assert not hasattr(vn_dev, "obs_rms")
    (b1,), (b2,) = rec_np.buffers, rec_dev.buffers
    for k in b1:
        np.testing.assert_allclose(b2[k], b1[k], rtol=2e-4, atol=2e-5, err_msg=k)
    raw = b1["observations"]
    assert np.abs(raw).max() > 10.0 or not np.allclose(raw.mean((0, 1)), 0.0, atol=0.1)  # raw, not normalised
    np.testing.assert_allclose(vn_dev.returns, vn_np.returns, rtol=1e-4, atol=1e-5)


def test_save_load_continue(scene, tmp_path):
    """Train on the device path, save as the worker does, load as the worker/eval do, continue."""
    import pickle

    from stable_baselines3.common.vec_env import VecNormalize

    from go2train.train.ppo import ChunkedPPO, apply_schedule, ppo_kwargs

    cfg, env, venv = scene
    model, vn, _ = train(scene, "device", iterations=1)
    count = vn.obs_rms.count
    assert count == pytest.approx(1e-4 + N + N_STEPS * N)  # reset + every step, pushed to the VecNormalize
    with open(tmp_path / "m.zip", "wb") as f:
        model.save(f)
    vn.save(str(tmp_path / "m.vecnorm.pkl"))
    with open(tmp_path / "m.vecnorm.pkl", "rb") as f:
        stored = pickle.load(f)
    assert type(stored) is VecNormalize and stored.obs_rms.count == count
    np.testing.assert_array_equal(stored.obs_rms.mean, vn.obs_rms.mean)

    # load exactly as worker._load does
    vn2 = VecNormalize.load(str(tmp_path / "m.vecnorm.pkl"), venv)
    vn2.training = True
    model2 = ChunkedPPO.load(str(tmp_path / "m.zip"), env=vn2, device="cpu", **ppo_kwargs(cfg.ppo, N))
    apply_schedule(model2, cfg.ppo)
    assert model2.rollout_mode == "device" and model2._device_rollout is None
    assert not any(isinstance(v, __import__('torch').Tensor) for v in vars(model2).values())  # nothing device-bound pickled
    model2._last_obs = None  # the worker starts fresh episodes in a new process
    steps0 = model2.num_timesteps
    model2.learn(total_timesteps=N_STEPS * N, reset_num_timesteps=False)
    assert model2.num_timesteps == steps0 + N_STEPS * N
    assert vn2.obs_rms.count == pytest.approx(count + N + N_STEPS * N)
    assert np.isfinite(vn2.obs_rms.mean).all() and np.isfinite(vn2.ret_rms.var)

    # eval-style load without an env still works (the zip holds no device tensors)
    m3 = ChunkedPPO.load(str(tmp_path / "m.zip"), device="cpu")
    act, _ = m3.predict(vn.normalize_obs(np.zeros((1, env.num_obs), np.float32)), deterministic=True)
    assert act.shape == (1, 12)

    # switching the same model back to the numpy path continues from the same statistics
    model2.rollout_mode = "numpy"
    model2.learn(total_timesteps=N_STEPS * N, reset_num_timesteps=False)
    assert vn2.obs_rms.count == pytest.approx(count + N + 2 * N_STEPS * N)
