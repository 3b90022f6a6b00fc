"""The batched Genesis Go2 environment and its SB3 VecEnv adapter, on a real (small) CPU scene."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from go2train.config import Config, DomainRandConfig
from go2train.sim import rewards

pytestmark = pytest.mark.genesis

N = 4


@pytest.fixture(scope="module")
def env():
    from go2train.sim.env import Go2Env

    cfg = Config()
    cfg.env.n_envs = N
    cfg.env.episode_steps = 30
    cfg.domain_rand = DomainRandConfig.off(1)  # the env before randomisation (tests/test_domain_rand.py: with it)
    # the command before issue 13: 0.5 m/s forward for every robot (the tests below rely on it)
    cfg.command.vx_range, cfg.command.vy_range, cfg.command.yaw_range = [0.5, 0.5], [0.0, 0.0], [0.0, 0.0]
    cfg.command.standing_share, cfg.command.curriculum = 0.0, False
    return Go2Env(cfg)


@pytest.fixture()
def venv(env):
    from go2train.sim.vecenv import Go2VecEnv

    v = Go2VecEnv(env)
    v.reset()
    return v


def test_observation_layout(env):
    obs = env.reset()
    assert obs.shape == (N, 47 if env.cfg.env.gait_period_steps > 0 else 45) == (N, env.num_obs)
    assert torch.allclose(obs[:, 3:6], torch.tensor([0.0, 0.0, -1.0]).expand(N, 3))  # projected gravity
    assert torch.allclose(obs[:, 6], torch.full((N,), 0.5 * 2.0))  # command vx x lin_vel scale
    noise = env.cfg.env.reset_joint_noise
    assert torch.all(obs[:, 9:21].abs() <= noise + 1e-6)  # default pose + reset noise
    assert obs[:, 9:21].abs().max() > 0  # the noise is there (robots do not start identical)
    assert torch.all(obs[:, 21:45] == 0)  # zero velocity, zero last action
    if env.gait_clock:  # phase 0 at the episode start: sin 0, cos 1
        assert torch.allclose(obs[:, 45:47], torch.tensor([0.0, 1.0]).expand(N, 2))
    assert env.default_dof_pos.tolist() == pytest.approx([0.0, 0.8, -1.5, 0.0, 0.8, -1.5, 0.0, 1.0, -1.5, 0.0, 1.0, -1.5])


@pytest.mark.parametrize("z,expected", [(0.14, -25.0), (0.27, 2.5), (0.37, 2.5 * np.exp(-0.5)), (0.15, 2.5 * np.exp(-0.6))])
def test_height_reward_at_exact_heights(env, z, expected):
    env.reset()
    env.step(torch.zeros(N, 12))
    env.base_pos[:, 2] = z
    assert env.weighted_terms()["height"].tolist() == pytest.approx([expected] * N, rel=1e-5)


def test_step_reward_is_sum_of_weighted_terms_times_dt(env):
    env.reset()
    res = env.step(torch.zeros(N, 12))
    if len(res.done_idx):
        pytest.skip("a robot finished on the first step")
    total = sum(env.weighted_terms().values()) * env.dt
    assert res.reward.tolist() == pytest.approx(total.tolist(), rel=1e-4, abs=1e-6)


def test_env_runs_the_reward_table(env):
    """The env's terms are go2train/sim/rewards.py's, those with a weight, in the table's order;
    each returns one value per robot; no reward method is left on the env."""
    from go2train.sim.env import Go2Env

    on = [n for n, w in env.cfg.reward.term_weights().items() if w != 0.0]
    assert list(env.reward_functions) == list(env.reward_weights) == list(env.episode_terms) == on
    assert all(env.reward_functions[n] is rewards.TERMS[n].fn for n in on)
    env.reset()
    env.step(torch.zeros(N, 12))
    for n, t in rewards.TERMS.items():
        if not t.contacts or env.needs_contacts:
            assert t.fn(env).shape == (N,), n
    assert not [m for m in dir(Go2Env) if m.startswith("_reward_")]


def test_grace_period(env):
    env.reset()
    env.step(torch.zeros(N, 12))
    env.base_pos[:, 2] = 0.10
    env.episode_length[:] = 5
    assert not env.check_termination().any()  # 0.10 m > grace_min_height 0.08 during the first 20 steps
    env.episode_length[:] = 25
    assert env.check_termination().all()  # 0.10 m < min_height 0.12 afterwards
    env.base_pos[:, 2] = 0.07
    env.episode_length[:] = 5
    assert env.check_termination().all()  # below the grace floor even during the grace period


def test_tilted_robot_terminates_and_auto_resets(venv, env):
    half = np.deg2rad(60) / 2  # rolled 60 degrees: beyond max_roll_deg (10)
    env.robot.set_quat(torch.tensor([[np.cos(half), np.sin(half), 0.0, 0.0]]), envs_idx=[1], zero_velocity=True)
    obs, rew, done, infos = venv.step(np.zeros((N, 12), np.float32))
    assert done[1] and not done[0]
    info = infos[1]
    assert info["TimeLimit.truncated"] is False and info["episode"]["fell"] is True
    assert info["episode"]["l"] == 1 and "terminal_observation" in info
    assert info["terminal_observation"].shape == (env.num_obs,)
    assert set(info["episode"]["terms"]) == set(env.reward_weights)
    # the returned observation is the new episode's first: default pose, zero last action
    assert np.all(np.abs(obs[1, 9:21]) <= env.cfg.env.reset_joint_noise + 1e-6)
    assert np.all(obs[1, 21:45] == 0) and env.episode_length[1] == 0
    assert "terminal_observation" not in infos[0]


def test_truncation_and_episode_info(venv, env):
    steps = env.cfg.env.episode_steps
    for t in range(steps):
        obs, rew, done, infos = venv.step(np.zeros((N, 12), np.float32))
        if t < steps - 1:
            assert not done.any(), f"robot finished early at step {t}"
    assert done.all()
    for info in infos:
        ep = info["episode"]
        assert info["TimeLimit.truncated"] is True and ep["fell"] is False
        assert ep["l"] == steps and ep["t"] >= 0
        assert ep["r"] == pytest.approx(sum(ep["terms"].values()), rel=1e-4, abs=1e-5)
        assert abs(ep["dist"]) < 0.5 and ep["cmd_vx"] == 0.5
        tr = ep["track"]  # tracking sums by what was commanded: 0.5 m/s every step
        assert tr["move_steps"] == steps and tr["stand_steps"] == 0
        assert tr["cmd_speed"] == pytest.approx(0.5 * steps, rel=1e-5)
        assert 0.0 <= tr["lin_err"] / steps < 1.0 and abs(tr["speed_along"] / steps) < 0.5
    assert np.all(obs[:, 21:45] == 0) and np.all(np.abs(obs[:, 9:21]) <= env.cfg.env.reset_joint_noise + 1e-6)


def test_invalid_state_is_reset_and_never_reaches_learner(venv, env):
    env.robot.set_pos(torch.tensor([[float("nan"), 0.0, 0.4]]), envs_idx=[2], zero_velocity=True)
    before = env.invalid_count
    obs, rew, done, infos = venv.step(np.zeros((N, 12), np.float32))
    assert env.invalid_count == before + 1 and done[2]
    assert np.isfinite(obs).all() and np.isfinite(rew).all()
    assert np.isfinite(infos[2]["terminal_observation"]).all()
    obs, rew, done, infos = venv.step(np.zeros((N, 12), np.float32))  # the robot is usable again
    assert np.isfinite(obs).all() and not done[2]


def test_seed_makes_rollouts_reproducible(venv):
    def rollout():
        venv.seed(7)
        venv.reset()
        rng = np.random.default_rng(7)
        out = [venv.step(rng.uniform(-1, 1, (N, 12)).astype(np.float32))[0] for _ in range(5)]
        return np.stack(out)

    a, b = rollout(), rollout()
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_ppo_learns_end_to_end_with_vecnormalize(venv, env):
    from stable_baselines3.common.vec_env import VecNormalize

    from go2train.train.ppo import make_ppo

    cfg = env.cfg
    cfg.ppo.n_steps = 8
    cfg.ppo.batch_size = 16
    cfg.ppo.net_arch = [32, 32]
    vn = VecNormalize(venv)
    model = make_ppo(cfg.ppo, vn, seed=0)
    params = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(total_timesteps=3 * 8 * N)
    assert model.num_timesteps == 3 * 8 * N
    assert any(not torch.equal(a, b) for a, b in zip(params, model.policy.parameters()))
    assert vn.obs_rms.count > 3 * 8 * N


def test_quaternion_helpers_match_genesis():
    from genesis.utils.geom import inv_quat, quat_to_xyz, transform_by_quat

    from go2train.sim.env import quat_rotate_inverse, quat_to_rpy_deg

    g = torch.Generator().manual_seed(0)
    q = torch.randn(64, 4, generator=g)
    q = q / q.norm(dim=-1, keepdim=True)
    v = torch.randn(64, 3, generator=g)
    torch.testing.assert_close(quat_rotate_inverse(q, v), transform_by_quat(v, inv_quat(q)), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(quat_to_rpy_deg(q), quat_to_xyz(q, rpy=True, degrees=True), atol=1e-3, rtol=1e-4)


def test_feet_air_time_times_swings_at_touchdown():
    from go2train.sim.env import Go2Env

    cfg = Config()
    cfg.env.n_envs = 2
    cfg.reward.feet_air_time = 1.0
    cfg.domain_rand = DomainRandConfig.off(1)
    env = Go2Env(cfg)
    env.reset()
    for _ in range(40):  # settle on four feet
        env.step(torch.zeros(2, 12))
    assert env.last_contacts.all(), "a standing robot has four feet on the ground"
    env.episode_terms["feet_air_time"].zero_()
    # robot 0 lifts its FR foot for 20 steps, robot 1 keeps standing
    fr_touchdown = torch.zeros(2)
    for t in range(40):
        a = torch.zeros(2, 12)
        if t < 20:
            a[0, 1], a[0, 2] = 2.0, 3.0  # FR thigh forward/up, calf folded
        env.step(a)
        fr_touchdown = torch.maximum(fr_touchdown, env.touchdown_air_time[:, 0])
    assert fr_touchdown[0] >= 0.1 and fr_touchdown[1] == 0.0, fr_touchdown  # the swing is timed at touchdown
    terms = env.episode_terms["feet_air_time"]
    assert terms[0] != 0.0 and terms[1] == 0.0  # standing still earns (and pays) nothing


def test_heading_command_steers_back_and_heading_frame_tracking_pays_no_circles(env):
    env.reset()
    env.step(torch.zeros(N, 12))
    cfg = env.cfg
    saved = cfg.command.heading, cfg.reward.tracking_frame
    try:
        cfg.command.heading = True
        half = np.deg2rad(30) / 2  # robots turned 30 degrees to the left
        env.robot.set_quat(torch.tensor([[np.cos(half), 0.0, 0.0, np.sin(half)]] * N), zero_velocity=True)
        env.step(torch.zeros(N, 12))
        assert env.commands[:, 2].tolist() == pytest.approx([-0.5 * np.deg2rad(30)] * N, abs=0.02)  # turn right
        # walking at the commanded 0.5 m/s but 30 degrees off course
        env.world_lin_vel[:] = torch.tensor([0.5 * np.cos(2 * half), 0.5 * np.sin(2 * half), 0.0])
        env.base_lin_vel[:] = torch.tensor([0.5, 0.0, 0.0])
        cfg.reward.tracking_frame = "base"
        assert rewards.tracking_lin_vel(env).tolist() == pytest.approx([1.0] * N)
        cfg.reward.tracking_frame = "heading"
        off = 0.25 * ((1 - np.cos(2 * half)) ** 2 + np.sin(2 * half) ** 2)
        assert rewards.tracking_lin_vel(env).tolist() == pytest.approx([np.exp(-off / 0.25)] * N, rel=1e-4)
        cfg.reward.tracking_frame = "both"  # the same: facing its way of walking, but off course
        assert rewards.tracking_lin_vel(env).tolist() == pytest.approx([np.exp(-off / 0.25)] * N, rel=1e-4)
        # Crab walking: facing 90 degrees left, moving along the start heading at the command.
        env.base_euler[:, 2] = 90.0
        env.world_lin_vel[:] = torch.tensor([0.5, 0.0, 0.0])
        assert rewards.tracking_lin_vel(env).tolist() == pytest.approx([np.exp(-0.5 / 0.25)] * N, rel=1e-4)
        cfg.reward.tracking_frame = "heading"
        assert rewards.tracking_lin_vel(env).tolist() == pytest.approx([1.0] * N)  # paid in full
    finally:
        cfg.command.heading, cfg.reward.tracking_frame = saved
        env.reset()


def test_trot_clock_terms_pay_a_diagonal_step_not_a_stand():
    from go2train.config import ConfigError, from_dict
    from go2train.sim.env import Go2Env

    with pytest.raises(ConfigError, match=r"\[reward\] gait_contact needs a gait clock"):
        from_dict({"env": {"gait_period_steps": 0}, "reward": {"gait_contact": 0.5, "feet_swing_height": 0.0}},
                  "go2train.toml")
    from_dict({"env": {"gait_period_steps": 0}, "reward": {"gait_contact": 0.0, "feet_swing_height": 0.0,
                                                           "swing_clearance": 0.0}})
    cfg = from_dict({"env": {"n_envs": 2, "gait_period_steps": 20},
                     "reward": {"feet_air_time": 0.0, "gait_contact": 1.0, "feet_swing_height": -1.0},
                     "domain_rand": {"enabled": False, "action_latency_steps": [1, 1]}})
    env = Go2Env(cfg)
    env.reset()
    for _ in range(45):  # settle on four feet; the clock is at step 45 = phase 0.25
        env.step(torch.zeros(2, 12))
    stance, swing = env.trot_schedule()
    assert stance[0].tolist() == [True, False, False, True]  # FR+RL in stance, FL+RR swing
    assert swing[0].tolist() == pytest.approx([0.0, 0.5, 0.5, 0.0])  # mid-swing
    clear = env.foot_clearance()
    assert clear.abs().max() < 0.01, clear  # standing: every foot on the ground
    # A stand agrees with the clock on 2 feet of 4 and misses the swing height on the other two.
    assert rewards.gait_contact(env).tolist() == pytest.approx([0.5, 0.5])
    h = cfg.reward.swing_height
    assert rewards.feet_swing_height(env).tolist() == pytest.approx([2 * h**2] * 2, abs=2 * 0.01 * h + 1e-4)
    assert rewards.swing_clearance(env).abs().max() < 0.01 / h  # feet down in swing: (almost) nothing paid
    # Robot 0 lifts its FR foot: the clearance sees it, the other feet stay down.
    peak = torch.full((2, 4), -1.0)
    paid = torch.zeros(2)
    for _ in range(20):
        a = torch.zeros(2, 12)
        a[0, 1], a[0, 2] = 2.0, 3.0
        env.step(a)
        clear = env.foot_clearance()
        peak = torch.maximum(peak, clear)
        stance, _ = env.trot_schedule()
        # swing_clearance pays the swing feet's clearance up to swing_height: FR counts while the
        # clock has it in swing, a lifted stance foot earns nothing.
        expect = ((clear / h).clamp(0, 1) * ~stance).sum(1) / 2
        got = rewards.swing_clearance(env)
        assert got.tolist() == pytest.approx(expect.tolist(), abs=1e-5)
        paid = torch.maximum(paid, got)
    assert peak[0, 0] > 0.03 and peak[1].abs().max() < 0.01, peak
    assert paid[0] > 0.15 and paid[1] < 0.1, paid  # FR lifted in its swing: paid; robot 1 stands


def test_commands_respect_ranges_standing_share_and_resample_schedule():
    """Issue 13: a real 64-robot scene with the default [command] ranges. Each draw lies in its
    range, about standing_share of them are stand-still, and commands change only at an episode
    start or every resample_steps steps."""
    from go2train.sim.env import Go2Env

    cfg = Config()
    cfg.env.n_envs = 64
    cfg.env.episode_steps = 25
    cfg.command.resample_steps = 10
    cfg.command.heading = False  # the yaw slot is then the drawn yaw rate, constant between draws
    cfg.command.curriculum = False  # the full ranges from the first draw
    c = cfg.command
    assert (c.vx_range, c.vy_range, c.yaw_range, c.standing_share) == ([-1.0, 1.0], [-0.5, 0.5], [-1.0, 1.0], 0.1)
    env = Go2Env(cfg)
    env.reset()
    draws = [env.commands.clone()]
    resampled_total = changed_total = 0
    for _ in range(50):
        prev = env.commands.clone()
        res = env.step(torch.zeros(64, 12))
        changed = (env.commands != prev).any(1)
        due = env.episode_length % 10 == 0  # on schedule (a reset robot's length is 0: also due)
        due[res.done_idx] = True
        assert not (changed & ~due).any(), "a command changed between resamples"
        if bool(due.any()):
            draws.append(env.commands[due].clone())
        resampled_total += int(due.sum())
        changed_total += int((changed & due).sum())
    assert changed_total >= 0.95 * resampled_total  # stand-still to stand-still keeps the command: rare
    d = torch.cat(draws)
    assert len(d) >= 6 * 64
    lo = torch.tensor([-1.0, -0.5, -1.0])
    assert ((d >= lo - 1e-6) & (d <= -lo + 1e-6)).all()
    for k, hi in enumerate((1.0, 0.5, 1.0)):  # the draws cover each range, both signs
        assert d[:, k].max() > 0.8 * hi and d[:, k].min() < -0.8 * hi
    standing = (d == 0).all(1).float().mean()
    assert 0.04 <= float(standing) <= 0.18, standing
    # The gait terms do not ask a robot told to stand to step; a robot told to move or turn is asked.
    env.set_commands(torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.8]]).repeat(22, 1)[:64])
    assert env.standing.tolist() == [True, False, False] * 21 + [True]
    moving = rewards.moving(env)
    assert moving.tolist() == [False, True, True] * 21 + [False]
    assert (rewards.gait_contact(env)[env.standing] == 0).all()
    assert (rewards.feet_swing_height(env)[env.standing] == 0).all()
    # Fixed commands stay fixed across resamples and resets (eval, video).
    for _ in range(30):
        env.step(torch.zeros(64, 12))
    assert env.commands[:3].flatten().tolist() == pytest.approx([0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.8])


def test_heading_mode_turns_the_commanded_heading_at_the_yaw_rate():
    from go2train.sim.env import Go2Env

    cfg = Config()
    cfg.env.n_envs = 2
    cfg.command.heading = True
    env = Go2Env(cfg)
    env.set_commands([[0.0, 0.0, 0.8], [0.0, 0.0, 0.0]])
    env.reset()
    assert env.commands[:, 2].tolist() == pytest.approx([0.8, 0.0])  # no heading error at the start
    for _ in range(10):
        env.step(torch.zeros(2, 12))
    # the commanded heading turned 0.8 rad/s x 0.2 s; the standing robot's stays at the start heading
    assert env.heading_target.tolist() == pytest.approx([0.16, 0.0], abs=1e-5)
    yaw = torch.deg2rad(env.base_euler[:, 2])
    want = torch.clip(env.yaw_command + 0.5 * (env.heading_target - yaw), -1.0, 1.0)
    assert env.commands[:, 2].tolist() == pytest.approx(want.tolist(), abs=1e-4)
    assert float(env.commands[0, 2]) > 0.8  # behind the commanded heading: turn faster


def test_command_curriculum_widens_only_when_the_robots_move_along_the_command():
    """[command] curriculum on a real scene: robots that stand through a window leave the level at 0;
    robots whose bases move at the commanded velocity (driven through Genesis, as a push is) raise it
    by curriculum_step per window, and the next draws come from the wider ranges. Fixed commands
    (eval, video) never move it; set_command_level (a resume) clamps it to [0, 1]."""
    from go2train.config import from_dict
    from go2train.sim.env import Go2Env

    cfg = from_dict({"env": {"n_envs": 8, "episode_steps": 400},
                     "command": {"curriculum_vx_start": [0.5, 0.5], "standing_share": 0.0, "heading": False,
                                 "curriculum_window_steps": 5, "curriculum_step": 0.25, "curriculum_threshold": 0.5},
                     "domain_rand": {"enabled": False, "action_latency_steps": [0, 0]}})
    env = Go2Env(cfg)
    env.reset()
    assert env.command_level == 0.0 and env.commands[:, 0].tolist() == [0.5] * 8
    assert env.commands[:, 1:].abs().max() == 0
    zeros = torch.zeros(8, 12)
    for _ in range(5):  # standing: no progress along the command
        env.step(zeros)
    assert env.command_level == 0.0

    def drive(steps: int) -> None:
        for _ in range(steps):
            vel = env.robot.get_dofs_velocity(env.base_lin_dofs)
            vel[:, :2] = env.commands[:, :2]  # heading 0 and no yaw: the world frame is the command's
            env.robot.set_dofs_velocity(vel, env.base_lin_dofs)
            env.step(zeros)

    drive(4)
    assert env.command_level == 0.0  # the window is not over yet
    drive(1)
    assert env.command_level == 0.25
    env.reset()  # new draws from the level's ranges: vx in [0.125, 0.625], vy in +-0.125, yaw in +-0.25
    lo, hi = torch.tensor([0.125, -0.125, -0.25]), torch.tensor([0.625, 0.125, 0.25])
    assert ((env.commands >= lo - 1e-6) & (env.commands <= hi + 1e-6)).all()
    assert env.commands[:, 1].abs().max() > 0 and env.yaw_command.abs().max() > 0

    env.set_command(0.5)  # eval: fixed commands, the level stays
    env.set_command_level(0.25)
    drive(10)
    assert env.command_level == 0.25
    env.set_command_level(3.0)
    assert env.command_level == 1.0
    env.close()
