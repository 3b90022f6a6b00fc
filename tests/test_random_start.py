"""``[env] random_episode_start``: training robots start their episode clocks at random steps (rsl_rl's
``init_at_random_ep_len``), on a real small CPU scene."""

from __future__ import annotations

import numpy as np
import pytest

from go2train.config import Config

pytestmark = pytest.mark.genesis

N, STEPS = 6, 30


@pytest.fixture(scope="module")
def env():
    from go2train.sim.env import Go2Env

    cfg = Config()
    cfg.env.n_envs = N
    cfg.env.episode_steps = STEPS
    return Go2Env(cfg)


def test_random_start_desynchronises_time_outs_and_counts_the_steps_lived(env):
    from go2train.sim.vecenv import Go2VecEnv

    venv = Go2VecEnv(env, random_start=True)
    obs = venv.reset()
    start = env.episode_length.cpu().numpy().copy()
    assert start.min() >= 0 and start.max() < STEPS and len(set(start.tolist())) > 1, start
    phase = 2 * np.pi * (start % env.cfg.env.gait_period_steps) / env.cfg.env.gait_period_steps
    np.testing.assert_allclose(obs[:, -2], np.sin(phase), atol=1e-5)  # the clock follows the start step
    finished = {}
    for t in range(1, STEPS + 1):
        _, _, done, infos = venv.step(np.zeros((N, 12), np.float32))
        for i in np.flatnonzero(done):
            finished.setdefault(int(i), (t, infos[i]))
    assert sorted(finished) == list(range(N))  # every robot timed out within one episode length
    for i, (t, info) in finished.items():
        assert info["TimeLimit.truncated"] is True
        assert t == STEPS - start[i]  # ...after the steps it had left, not in lockstep
        assert info["episode"]["l"] == t  # statistics count the steps lived, not the random offset
    assert (env.episode_length < STEPS).all() and (env.episode_offset == 0).all()  # next episodes: full


def test_without_random_start_every_clock_starts_at_zero(env):
    from go2train.sim.vecenv import Go2VecEnv

    Go2VecEnv(env).reset()
    assert (env.episode_length == 0).all()
