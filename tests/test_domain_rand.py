"""[domain_rand]: each randomisation changes what it claims, and switched off it changes nothing.

Two real (small) CPU scenes: ``rand`` built with every physical item on (per-robot joint and link
parameters), ``plain`` built with the items off (today's scene). Runtime items (pushes, observation
noise, action latency) are switched on and off on ``plain`` by swapping its config, as eval does.
"""

from __future__ import annotations

import pytest
import torch

from go2train.config import Config, ConfigError, DomainRandConfig, from_dict

pytestmark = pytest.mark.genesis

N = 6


def _cfg(dr: DomainRandConfig, n: int = N) -> Config:
    cfg = Config()
    cfg.env.n_envs = n
    cfg.env.episode_steps = 1000
    cfg.domain_rand = dr
    return cfg


# Physical items only (runtime items off), wide ranges so every draw is told apart from the nominal.
RAND = DomainRandConfig(
    friction_range=[0.3, 1.5], added_mass_range=[-1.0, 3.0], com_shift=0.05,
    motor_strength_range=[0.8, 1.2], kp_range=[0.7, 1.3], kd_range=[0.7, 1.3],
    joint_damping_range=[0.1, 1.0], joint_friction_range=[0.05, 0.3], armature_range=[0.01, 0.05],
    obs_noise=0.0, push_interval_s=0.0, action_latency_steps=[1, 1], slow_redraw_steps=4,
)


@pytest.fixture(scope="module")
def rand():
    from go2train.sim.env import Go2Env

    env = Go2Env(_cfg(RAND))
    assert env.batched_dofs and env.batched_links
    return env


@pytest.fixture(scope="module")
def plain():
    from go2train.sim.env import Go2Env

    env = Go2Env(_cfg(DomainRandConfig.off(1)))
    assert not env.batched_dofs and not env.batched_links
    return env


def _use(env, dr: DomainRandConfig):
    """Bind a new [domain_rand] to a built scene and restart it (what eval's _prepare does)."""
    env.cfg.domain_rand = dr
    env._alloc_buffers()
    env.scene.reset()
    return env.reset()


def _distinct(t: torch.Tensor) -> int:
    return len(torch.unique(t.flatten().round(decimals=5)))


# ---------------------------------------------------------------- config (no simulator)
def test_defaults_are_on_and_neutral_values_switch_each_item_off():
    dr = DomainRandConfig()
    items = ("friction", "mass", "com", "motor_strength", "kp", "kd", "damping", "joint_friction", "armature",
             "obs_noise", "push", "latency")
    assert all(dr.active(k) for k in items)
    assert dr.batched_dofs() and dr.batched_links()
    neutral = DomainRandConfig(friction_range=[1, 1], added_mass_range=[0, 0], com_shift=0, motor_strength_range=[1, 1],
                               kp_range=[1, 1], kd_range=[1, 1], joint_damping_range=[0, 0], joint_friction_range=[0, 0],
                               armature_range=[0.1, 0.1], obs_noise=0, push_interval_s=0, action_latency_steps=[1, 1])
    assert not any(neutral.active(k) for k in items)
    assert not neutral.batched_dofs() and not neutral.batched_links()
    assert not any(DomainRandConfig.off(1).active(k) for k in items)
    assert DomainRandConfig(enabled=False).latency_range() == (0, 0)  # the low end, fixed


def test_old_action_latency_key_is_one_line_naming_the_new_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        from_dict({"env": {"action_latency": True}}, "go2train.toml")
    msg = str(err.value)
    assert "\n" not in msg and "[env] action_latency" in msg and "[domain_rand] action_latency_steps" in msg
    # A checkpoint stored before [domain_rand] keeps what it trained with: no randomisation, its latency.
    old = from_dict({"env": {"action_latency": True, "n_envs": 4}}, "chunk.json", stored=True)
    assert old.domain_rand == DomainRandConfig.off(1) and old.env.n_envs == 4
    assert from_dict({"env": {"action_latency": False}}, stored=True).domain_rand.latency_range() == (0, 0)
    assert from_dict({"env": {}}, stored=True).domain_rand.latency_range() == (1, 1)
    new = Config().to_dict()
    assert from_dict(new, stored=True).domain_rand == DomainRandConfig()  # a new manifest is taken as it is


@pytest.mark.parametrize("bad", [{"kp_range": [1.2, 0.9]}, {"friction_range": [0.0, 1.0]}, {"armature_range": [0, 0.1]},
                                 {"action_latency_steps": [0, 1, 2]}, {"joint_damping_range": [-0.1, 0.5]}])
def test_bad_ranges_name_the_key(bad):
    with pytest.raises(ConfigError, match=rf"\[domain_rand\] {list(bad)[0]}"):
        from_dict({"domain_rand": bad}, "go2train.toml")


# ---------------------------------------------------------------- physical items (per robot, at reset)
def test_friction_is_drawn_per_robot_for_the_robot_and_the_plane(rand):
    rand.reset()
    ratio = rand.rigid.get_geoms_friction_ratio()  # (n_envs, n_geoms)
    mu = ratio * rand.geoms_friction  # the coefficient every geom of that robot's world gets
    assert torch.allclose(mu, mu[:, :1].expand_as(mu), atol=1e-5)  # one coefficient per world
    assert torch.allclose(mu[:, 0], rand.friction[:, 0], atol=1e-5)
    assert (mu >= 0.3 - 1e-5).all() and (mu <= 1.5 + 1e-5).all() and _distinct(mu[:, 0]) == N


def test_added_mass_and_com_shift_per_robot(rand):
    rand.reset()
    base = [rand.base_link]
    mass = rand.robot.get_links_mass(base)[:, 0]
    add = mass - rand.nominal["mass"]
    assert (add >= -1.0 - 1e-4).all() and (add <= 3.0 + 1e-4).all() and _distinct(mass) == N
    total = rand.robot.get_mass()
    assert _distinct(total) == N  # the robot's mass via Genesis's API differs per robot
    shift = rand.robot.get_links_COM(base)[:, 0] - rand.nominal["com"]
    assert (shift.abs() <= 0.05 + 1e-5).all() and _distinct(shift) > N


def test_motor_gains_and_joint_parameters_per_robot_and_joint(rand):
    rand.reset()
    d = rand.motor_dofs
    kp, kd = rand.robot.get_dofs_kp(d), rand.robot.get_dofs_kv(d)
    e = rand.cfg.env
    assert (kp >= e.kp * 0.8 * 0.7 - 1e-4).all() and (kp <= e.kp * 1.2 * 1.3 + 1e-4).all() and _distinct(kp) > N
    assert (kd >= e.kd * 0.8 * 0.7 - 1e-5).all() and (kd <= e.kd * 1.2 * 1.3 + 1e-5).all() and _distinct(kd) > N
    lo, hi = rand.robot.get_dofs_force_range(d)
    s = hi / rand.nominal["force_hi"]  # the motor strength scales the torque limit too
    assert (s >= 0.8 - 1e-5).all() and (s <= 1.2 + 1e-5).all() and torch.allclose(lo, -hi)
    for getter, (a, b) in ((rand.robot.get_dofs_damping, (0.1, 1.0)), (rand.robot.get_dofs_frictionloss, (0.05, 0.3)),
                           (rand.robot.get_dofs_armature, (0.01, 0.05))):
        v = getter(d)
        assert v.shape == (N, 12) and (v >= a - 1e-6).all() and (v <= b + 1e-6).all() and _distinct(v) > N


def test_a_reset_redraws_only_the_reset_robots(rand):
    rand.reset()
    d = rand.motor_dofs
    kp0, mass0, mu0 = rand.robot.get_dofs_kp(d).clone(), rand.robot.get_mass().clone(), rand.friction.clone()
    rand.reset_idx(torch.tensor([2], device=rand.device))
    kp1, mass1, mu1 = rand.robot.get_dofs_kp(d), rand.robot.get_mass(), rand.friction
    keep = [i for i in range(N) if i != 2]
    assert torch.equal(kp1[keep], kp0[keep]) and torch.equal(mass1[keep], mass0[keep]) and torch.equal(mu1[keep], mu0[keep])
    assert not torch.equal(kp1[2], kp0[2]) and mass1[2] != mass0[2] and mu1[2] != mu0[2]


def test_an_auto_reset_redraws_mass_com_and_armature_at_the_next_slow_redraw_boundary(rand):
    import math

    rand.reset()
    d, base = rand.motor_dofs, [rand.base_link]
    for _ in range(200):  # land; stop just past a boundary (every 4 steps) with nothing pending
        rand.step(torch.zeros(N, 12))
        if rand.step_count % 4 == 1 and not rand.slow_pending.any():
            break
    assert not rand.slow_pending.any()
    mass0, com0 = rand.robot.get_links_mass(base).clone(), rand.robot.get_links_COM(base).clone()
    arm0, kp0 = rand.robot.get_dofs_armature(d).clone(), rand.robot.get_dofs_kp(d).clone()
    half = math.radians(60) / 2  # robot 2 rolled 60 degrees: it terminates and is auto-reset
    rand.robot.set_quat(torch.tensor([[math.cos(half), math.sin(half), 0.0, 0.0]]), envs_idx=[2], zero_velocity=True)
    res = rand.step(torch.zeros(N, 12))
    assert 2 in res.done_idx.tolist() and rand.slow_pending[2]
    reset = rand.slow_pending.clone()
    assert not torch.equal(rand.robot.get_dofs_kp(d)[2], kp0[2])  # the cheap items: at the reset
    for _ in range(2):  # step_count 2 -> 3 -> 4: the boundary is the start of the step at count 4
        assert torch.equal(rand.robot.get_links_mass(base), mass0) and torch.equal(rand.robot.get_dofs_armature(d), arm0)
        rand.step(torch.zeros(N, 12))
        reset |= rand.slow_pending
    assert torch.equal(rand.robot.get_links_mass(base), mass0) and rand.slow_pending[2]
    rand.step(torch.zeros(N, 12))
    assert not rand.slow_pending[reset].any()
    mass1, com1, arm1 = rand.robot.get_links_mass(base), rand.robot.get_links_COM(base), rand.robot.get_dofs_armature(d)
    keep = (~reset & ~rand.slow_pending).nonzero().flatten()
    assert torch.equal(mass1[keep], mass0[keep]) and torch.equal(arm1[keep], arm0[keep]) and torch.equal(com1[keep], com0[keep])
    assert mass1[2] != mass0[2] and not torch.equal(arm1[2], arm0[2]) and not torch.equal(com1[2], com0[2])


def test_items_switched_off_on_a_batched_scene_get_the_nominal_values(rand):
    try:
        _use(rand, DomainRandConfig(enabled=False, action_latency_steps=[1, 1]))
        d = rand.motor_dofs
        assert torch.allclose(rand.robot.get_dofs_kp(d), torch.full((N, 12), rand.cfg.env.kp))
        assert torch.allclose(rand.robot.get_dofs_kv(d), torch.full((N, 12), rand.cfg.env.kd))
        assert torch.allclose(rand.robot.get_dofs_armature(d), rand.nominal["armature"].expand(N, 12))
        assert (rand.robot.get_dofs_damping(d) == 0).all() and (rand.robot.get_dofs_frictionloss(d) == 0).all()
        assert torch.allclose(rand.robot.get_links_mass([rand.base_link])[:, 0], rand.nominal["mass"].expand(N))
        assert (rand.rigid.get_geoms_friction_ratio() == 1.0).all()  # the scene's own (restored by the reset)
    finally:
        _use(rand, RAND)


def test_randomised_robots_stand_and_walk_targets_do_not_blow_up(rand):
    rand.reset()
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        res = rand.step(0.3 * (2 * torch.rand((N, 12), generator=g) - 1))
        assert torch.isfinite(res.obs).all()
    assert rand.invalid_count == 0


# ---------------------------------------------------------------- runtime items
def test_push_adds_push_vel_horizontally_at_the_interval(plain):
    dr = DomainRandConfig.off(1).model_copy(update={"enabled": True, "push_interval_s": 0.1, "push_vel": 0.5})
    try:
        _use(plain, dr)
        every = 5  # 0.1 s / dt 0.02
        pushed_at = []
        for t in range(1, 13):
            plain.step(torch.zeros(N, 12))
            if plain.pushed.any():
                assert plain.pushed.all()
                pushed_at.append(t)  # the kick is applied in the step that starts at episode_length % every == 0
        assert pushed_at == [every + 1, 2 * every + 1]
        # The kick itself: exactly push_vel, horizontal, in a random direction per robot.
        plain.episode_length[:] = every
        plain.episode_length[0] = every + 1  # robot 0 is not due
        v0 = plain.robot.get_vel().clone()
        plain._push_robots()
        dv = plain.robot.get_vel() - v0
        assert torch.allclose(dv[1:, :2].norm(dim=1), torch.full((N - 1,), 0.5), atol=1e-4)
        assert torch.allclose(dv[:, 2], torch.zeros(N), atol=1e-5) and torch.allclose(dv[0], torch.zeros(3), atol=1e-6)
        assert _distinct(torch.atan2(dv[1:, 1], dv[1:, 0])) == N - 1
    finally:
        _use(plain, DomainRandConfig.off(1))


def _applied_targets(env, actions: list[torch.Tensor]) -> list[torch.Tensor]:
    """The PD targets the env hands Genesis for each step of ``actions``."""
    seen = []
    orig = env.robot.control_dofs_position

    def spy(target, dofs):
        seen.append(target.clone())
        return orig(target, dofs)

    env.robot.control_dofs_position = spy
    try:
        for a in actions:
            env.step(a)
    finally:
        del env.robot.control_dofs_position
    return seen


@pytest.mark.parametrize("k", [0, 1, 2])
def test_fixed_latency_k_delays_the_applied_targets_by_k_steps(plain, k):
    g = torch.Generator().manual_seed(k)
    acts = [0.5 * (2 * torch.rand((N, 12), generator=g) - 1) for _ in range(6)]
    try:
        _use(plain, DomainRandConfig.off(k))
        seen = _applied_targets(plain, acts)
        scale, q0 = plain.cfg.env.action_scale, plain.default_dof_pos
        for t in range(6):
            want = acts[t - k] * scale + q0 if t >= k else q0.expand(N, 12)
            assert torch.equal(seen[t], want), t
    finally:
        _use(plain, DomainRandConfig.off(1))


def test_random_latency_is_drawn_per_robot_and_episode(plain):
    dr = DomainRandConfig.off(0).model_copy(update={"enabled": True, "action_latency_steps": [0, 2]})
    g = torch.Generator().manual_seed(3)
    acts = [0.5 * (2 * torch.rand((N, 12), generator=g) - 1) for _ in range(5)]
    try:
        _use(plain, dr)
        lat = plain.latency.clone()
        assert set(lat.tolist()) <= {0, 1, 2}
        seen = _applied_targets(plain, acts)
        scale, q0 = plain.cfg.env.action_scale, plain.default_dof_pos
        for i in range(N):
            k = int(lat[i])
            for t in range(5):
                want = acts[t - k][i] * scale + q0 if t >= k else q0
                assert torch.equal(seen[t][i], want), (i, k, t)
        draws = set()
        for _ in range(6):
            plain.reset()
            draws |= set(plain.latency.tolist())
        assert draws == {0, 1, 2}
    finally:
        _use(plain, DomainRandConfig.off(1))


def test_obs_noise_levels_per_part_and_off_gives_the_exact_observation(plain):
    try:
        _use(plain, DomainRandConfig.off(1))
        plain.step(torch.zeros(N, 12))
        clean = plain._compute_obs().clone()
        e = plain.cfg.env
        expect = torch.cat([plain.base_ang_vel * e.obs_scale_ang_vel, plain.projected_gravity,
                            plain.commands * plain.commands_scale, (plain.dof_pos - plain.default_dof_pos) * e.obs_scale_dof_pos,
                            plain.dof_vel * e.obs_scale_dof_vel, plain.actions], dim=-1)
        assert torch.equal(clean[:, :45], expect)
        plain.cfg.domain_rand = DomainRandConfig.off(1).model_copy(update={"enabled": True, "obs_noise": 2.0})
        plain.noise_levels = plain._noise_levels()  # what _alloc_buffers sets, without restarting the robots
        assert torch.allclose(plain.noise_levels, 2.0 * torch.tensor([0.2] * 3 + [0.05] * 3 + [0.01] * 12 + [1.5] * 12))
        noisy = plain._compute_obs().clone()
        diff = (noisy - clean).abs()
        bound = torch.tensor([0.4 * e.obs_scale_ang_vel] * 3 + [0.1] * 3 + [0.0] * 3 + [0.02 * e.obs_scale_dof_pos] * 12
                             + [3.0 * e.obs_scale_dof_vel] * 12 + [0.0] * (plain.num_obs - 33))
        assert (diff <= bound + 1e-6).all()
        assert (diff[:, 6:9] == 0).all() and (diff[:, 33:] == 0).all()  # commands, actions, clock: exact
        for a, b in ((0, 3), (3, 6), (9, 21), (21, 33)):
            assert diff[:, a:b].max() > 0.3 * bound[a]  # each part is noisy, at about its level
    finally:
        _use(plain, DomainRandConfig.off(1))


def test_everything_off_is_todays_env(plain, monkeypatch):
    """Off: no physical setter is called, the randomisation stream is never drawn, the PD target is the
    last step's action (the old ``action_latency = true``) and the observation has no noise."""
    _use(plain, DomainRandConfig.off(1))
    for name in ("set_dofs_kp", "set_dofs_kv", "set_dofs_damping", "set_dofs_frictionloss", "set_dofs_armature",
                 "set_dofs_force_range", "set_links_mass", "set_links_COM"):
        monkeypatch.setattr(plain.robot, name, lambda *a, **k: pytest.fail("a setter was called with rand off"))
    set_vel = plain.robot.set_dofs_velocity

    def no_push(vel, dofs_idx_local=None, *a, **k):  # resets zero every velocity; a push writes the base's x, y
        assert dofs_idx_local != plain.base_lin_dofs, "a push with rand off"
        return set_vel(vel, dofs_idx_local, *a, **k)

    monkeypatch.setattr(plain.robot, "set_dofs_velocity", no_push)
    monkeypatch.setattr(plain.rigid, "set_geoms_friction_ratio", lambda *a, **k: pytest.fail("friction set"))
    state = plain.rand_gen.get_state().clone()
    g = torch.Generator().manual_seed(1)
    prev = torch.zeros(N, 12)
    for t in range(30):
        a = 0.5 * (2 * torch.rand((N, 12), generator=g) - 1)
        seen = _applied_targets(plain, [a])
        assert torch.equal(seen[0], prev * plain.cfg.env.action_scale + plain.default_dof_pos)
        prev = a
    plain.reset()
    assert torch.equal(plain.rand_gen.get_state(), state)


def test_everything_off_reproduces_the_rollout_from_before_randomisation(plain):
    """Same seed, same actions: the observations, rewards and final positions recorded with the env
    before [domain_rand] (tests/data/rollout_before_rand.json, CPU backend; re-recorded once after
    issue 13's command draws moved the reset noise stream, see its "source")."""
    import json
    from pathlib import Path

    if plain.backend != "cpu":
        pytest.skip("recorded on the CPU backend")
    ref = json.loads((Path(__file__).parent / "data" / "rollout_before_rand.json").read_text())
    saved = plain.cfg.env.episode_steps, plain.cfg.command, plain.cfg.reward
    try:
        plain.cfg.env.episode_steps = 60
        plain.cfg.reward = plain.cfg.reward.model_copy(update={"swing_clearance": 0.0})  # a term of after it
        plain._setup_rewards()
        # the command of before issue 13 too: 0.5 m/s forward for every robot
        plain.cfg.command = plain.cfg.command.model_copy(update={
            "vx_range": [0.5, 0.5], "vy_range": [0.0, 0.0], "yaw_range": [0.0, 0.0], "standing_share": 0.0,
            "curriculum": False})
        plain.seed(plain.cfg.env.seed)  # whatever this module's other tests ran on the env before
        _use(plain, DomainRandConfig.off(1))
        obs = [plain.reset().clone()]
        g = torch.Generator().manual_seed(5)
        rew = torch.zeros(N)
        for _ in range(80):
            r = plain.step(0.8 * (2 * torch.rand((N, 12), generator=g) - 1))
            obs.append(r.obs.clone())
            rew += r.reward
        for s in ref["steps"]:
            torch.testing.assert_close(obs[s], torch.tensor(ref["obs"][str(s)]), atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(rew, torch.tensor(ref["reward_sum"]), atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(plain.base_pos, torch.tensor(ref["final_pos"]), atol=2e-5, rtol=1e-5)
    finally:
        plain.cfg.env.episode_steps, plain.cfg.command, plain.cfg.reward = saved
        plain._setup_rewards()
        _use(plain, DomainRandConfig.off(1))


def test_swing_clearance_is_the_median_of_each_swings_peak(plain):
    """eval's ``swing_clearance_m``: every robot lifts its FR foot once (a swing of ~20 steps) and
    puts it down; the figure is the median over those swings of each one's highest clearance."""
    from go2train.tools.evaluate import _figures, _run_pass

    cfg = plain.cfg.model_copy(deep=True)
    cfg.domain_rand = DomainRandConfig.off(1)
    cfg.termination.max_roll_deg = cfg.termination.max_pitch_deg = 60.0  # three legs tilt the base: keep going
    peaks = torch.zeros(N)
    t = [0]

    def act(obs):
        if t[0] >= 25:  # landed from the spawn height (not a swing)
            peaks.copy_(torch.maximum(peaks, plain.foot_clearance()[:, 0]))
        a = torch.zeros(N, 12)
        if 30 <= t[0] < 50:
            a[:, 1], a[:, 2] = 2.0, 3.0  # FR thigh forward/up, calf folded
        t[0] += 1
        return a

    own_cfg = plain.cfg
    try:
        figs = _figures(_run_pass(plain, cfg, 90, [(0.5, 0.0, 0.0)] * N, act), torch.ones(N, dtype=torch.bool))
    finally:  # eval bound its config and fixed the commands: give the module's env back as it was
        plain.cfg, plain.fixed_commands = own_cfg, None
        plain._setup_rewards()
        _use(plain, DomainRandConfig.off(1))
    assert figs["survival"] == 1.0
    assert (peaks > 0.03).all(), peaks  # every robot made one real swing
    assert figs["swing_clearance_m"] == pytest.approx(float(peaks.median()), abs=0.01)
    assert figs["swing_clearance_m"] > figs["foot_clearance_swing_m"] + 0.005  # the peak, not the mean
    assert figs["swing_clearance_m"] <= figs["foot_clearance_max_m"] + 1e-6
