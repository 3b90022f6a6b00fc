"""The batched Genesis Go2 environment: physics, observations, reward terms, termination.

One Genesis scene holds a plane and ``n_envs`` Go2 robots built with ``scene.build(n_envs=N)``.
Tensors stay batched on ``gs.device``; there is no per-robot Python work here.

Observation layout (45 floats, +2 when ``[env] gait_period_steps`` > 0, the default), as in Genesis's
``examples/locomotion/go2_env.py``:

====  =====================================================  =======================
idx   content                                                scale
====  =====================================================  =======================
0:3   base angular velocity (base frame)                     ``obs_scale_ang_vel``
3:6   projected gravity (base frame)                         1
6:9   command (vx, vy, yaw rate), ``[command]``              lin, lin, ang scales
9:21  joint position - default pose (FR, FL, RR, RL x        ``obs_scale_dof_pos``
      hip, thigh, calf)
21:33 joint velocity                                         ``obs_scale_dof_vel``
33:45 last action                                            1
45:47 gait clock (sin, cos of the trot phase), optional      1
====  =====================================================  =======================

Commands (``[command]``, docs/ENV.md "Commands"): each robot draws (vx, vy, yaw rate) at every
episode start and every ``resample_steps`` steps, uniformly from the ranges, or (0, 0, 0) with
probability ``standing_share``. ``self.commands`` holds what the policy observes: vx, vy and the
yaw-rate slot, which in heading mode carries the drawn yaw rate plus a correction towards the
commanded heading (``self.heading_target``: the start heading turning at the drawn rate,
``self.yaw_command``). Eval and video fix the commands per robot (:meth:`Go2Env.set_commands`).

Reward: the terms are functions in go2train/sim/rewards.py (``TERMS``), one per-robot tensor each;
:meth:`Go2Env._compute_reward` multiplies each by its weight from ``[reward]`` (and by ``dt`` when
``[reward] scale_by_dt``, as legged_gym and Genesis do) and sums them. A weight of 0 switches a term
off (it is not even computed). The Go2's joints, pose, gains and links come from go2train/robot.py.
"""

from __future__ import annotations

import math
import os
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import torch

from go2train import robot
from go2train.config import Config
from go2train.sim import qdfast
from go2train.sim.rewards import TERMS

RAND_SEED_OFFSET = 7919  # the randomisation stream's seed: [env] seed + this

qdfast.install()  # before anything imports genesis: ~5 s less start-up CPU (go2train/sim/qdfast.py)
_GS_READY = False


_ROBOT_XML: str | None = None
# Columns of Go2Env.episode_track (per-episode sums over steps), as the VecEnv's episode info names them.
TRACK_KEYS = ("move_steps", "cmd_speed", "speed_along", "lin_err", "yaw_err", "stand_steps")


def robot_urdf(visual: bool) -> str:
    """The Go2 URDF for a scene: the asset's path when it renders (``visual``), else the same URDF
    without its ``<visual>`` elements, as XML content. Parsing the 17 Collada visual meshes (twice)
    took ~3.5 s of CPU of a worker's ~22 s start-up, and a training scene never draws them; the
    collision geometry is all primitives, so the physics is the same (bitwise-equal rollouts,
    docs/CHUNKS.md)."""
    global _ROBOT_XML
    if visual:
        return robot.URDF
    if _ROBOT_XML is None:
        from genesis.utils.misc import get_assets_dir

        root = ET.parse(os.path.join(get_assets_dir(), robot.URDF)).getroot()
        for link in root.iter("link"):
            for v in link.findall("visual"):
                link.remove(v)
        _ROBOT_XML = ET.tostring(root, encoding="unicode")
    return _ROBOT_XML


def foot_geometry() -> dict[str, Any]:
    """From Genesis's go2.urdf: each ``<leg>_foot`` link's offset in its calf frame (the fixed
    ``<leg>_foot_joint``, which Genesis merges into the calf), its collision sphere centre and radius.
    """
    out = {"joint": list(robot.FOOT_JOINT_XYZ), "sphere": list(robot.FOOT_SPHERE_XYZ), "radius": robot.FOOT_RADIUS}
    try:
        from genesis.utils.misc import get_assets_dir

        root = ET.parse(os.path.join(get_assets_dir(), robot.URDF)).getroot()
        j = root.find("joint[@name='FR_foot_joint']/origin")
        link = root.find("link[@name='FR_foot']/collision")
        if j is not None:
            out["joint"] = [float(x) for x in j.get("xyz", "0 0 0").split()]
        if link is not None:
            o, s = link.find("origin"), link.find("geometry/sphere")
            if o is not None:
                out["sphere"] = [float(x) for x in o.get("xyz", "0 0 0").split()]
            if s is not None:
                out["radius"] = float(s.get("radius"))
    except Exception:  # noqa: BLE001 - fall back to the Go2's published geometry
        pass
    return out


def init_genesis(backend: str = "auto", seed: int | None = None) -> str:
    """Initialise Genesis once per process. ``auto`` picks the GPU when torch sees CUDA.

    Returns the backend actually used ("cpu" or "gpu").
    """
    global _GS_READY
    import genesis as gs

    if backend == "auto":
        backend = "gpu" if torch.cuda.is_available() else "cpu"
    if not _GS_READY:
        gs.init(
            backend=gs.gpu if backend == "gpu" else gs.cpu,
            precision="32",
            logging_level=os.environ.get("GO2TRAIN_GS_LOG", "warning"),
            seed=seed,
        )
        _GS_READY = True
    return backend


def release_genesis() -> None:
    """Destroy the simulator and free CUDA memory (called before a worker exits)."""
    global _GS_READY
    import genesis as gs

    if _GS_READY:
        try:
            gs.destroy()
        finally:
            _GS_READY = False
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def quat_rotate_inverse(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Rotate world vectors ``v`` into the frame of quaternions ``q`` (w, x, y, z), batched."""
    w, u = q[:, :1], q[:, 1:]
    return v * (2.0 * w * w - 1.0) - 2.0 * w * torch.cross(u, v, dim=-1) + 2.0 * u * (u * v).sum(-1, keepdim=True)


def quat_to_rpy_deg(q: torch.Tensor) -> torch.Tensor:
    """Roll, pitch, yaw (degrees) of quaternions (w, x, y, z), batched."""
    w, x, y, z = q.unbind(-1)
    roll = torch.atan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = torch.asin(torch.clamp(2 * (w * y - z * x), -1.0, 1.0))
    yaw = torch.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return torch.rad2deg(torch.stack([roll, pitch, yaw], -1))


@dataclass
class StepResult:
    """What one batched step returns (all tensors of leading size n_envs)."""

    obs: torch.Tensor  # observation after auto-reset (new episode's first for finished robots)
    reward: torch.Tensor
    terminated: torch.Tensor  # bool: fell / tilted / invalid
    truncated: torch.Tensor  # bool: reached episode_steps
    done_idx: torch.Tensor  # indices of finished robots
    terminal_obs: torch.Tensor  # observation before reset, rows of done_idx
    invalid: torch.Tensor  # bool: solver error or NaN (reset and counted)
    episodes: dict  # finished episodes (rows of done_idx): r, l, dist, terms{name: sum}


class Go2Env:
    """Batched Go2 locomotion environment on one Genesis scene."""

    num_actions = robot.NUM_JOINTS

    def __init__(self, cfg: Config, n_envs: int | None = None, camera: tuple[int, int] | None = None):
        import genesis as gs

        self.cfg = cfg
        e = cfg.env
        self.backend = init_genesis(e.backend, seed=e.seed)
        self.device = gs.device
        self.n_envs = n_envs if n_envs is not None else e.n_envs
        self.dt = e.dt
        self.gait_clock = e.gait_period_steps > 0
        self.num_obs = 45 + (2 if self.gait_clock else 0)

        self.scene = gs.Scene(
            sim_options=gs.options.SimOptions(dt=e.dt, substeps=e.substeps),
            rigid_options=gs.options.RigidOptions(
                constraint_solver=gs.constraint_solver.Newton,
                enable_collision=True,
                enable_joint_limit=True,
                # Per-robot joint / link parameters (domain randomisation) only when [domain_rand] needs them:
                # batched parameters cost memory bandwidth in every step (docs/ENV.md, "Randomisation").
                **({"batch_dofs_info": True} if cfg.domain_rand.batched_dofs() else {}),
                **({"batch_links_info": True} if cfg.domain_rand.batched_links() else {}),
            ),
            vis_options=gs.options.VisOptions(rendered_envs_idx=[0]) if camera else None,
            show_viewer=False,
        )
        self.scene.add_entity(gs.morphs.URDF(file="urdf/plane/plane.urdf", fixed=True))
        self.base_init_pos = torch.tensor([0.0, 0.0, e.base_init_height], device=self.device)
        self.base_init_quat = torch.tensor([1.0, 0.0, 0.0, 0.0], device=self.device)
        self.robot = self.scene.add_entity(
            gs.morphs.URDF(
                file=robot_urdf(visual=bool(camera)),
                pos=tuple(self.base_init_pos.tolist()),
                quat=tuple(self.base_init_quat.tolist()),
            )
        )
        self.camera = None
        if camera:
            self.camera = self.scene.add_camera(res=camera, pos=(2.0, -2.0, 1.0), lookat=(0, 0, 0.3), fov=40, GUI=False)
        self.scene.build(n_envs=self.n_envs)
        self.rigid = self.scene.sim.rigid_solver

        # The feet are fixed links merged into the calves: contacts are read on the calf links.
        self.foot_links = [self.robot.get_link(name).idx_local for name in robot.FOOT_LINKS]
        g = foot_geometry()
        self.foot_radius = g["radius"]
        self.foot_offset = torch.tensor([a + b for a, b in zip(g["joint"], g["sphere"])], device=self.device)
        self.motor_dofs = [self.robot.get_joint(name).dofs_idx_local[0] for name in robot.JOINT_NAMES]
        self.robot.set_dofs_kp([e.kp] * 12, self.motor_dofs)
        self.robot.set_dofs_kv([e.kd] * 12, self.motor_dofs)
        self._init_rand()

        self._setup_rewards()
        self._alloc_buffers()
        self.invalid_count = 0
        self.reset()

    # ------------------------------------------------------------------ setup
    def _setup_rewards(self) -> None:
        """The terms switched on (weight != 0), in TERMS order (go2train/sim/rewards.py)."""
        r = self.cfg.reward
        self.reward_weights = {k: w for k, w in r.term_weights().items() if w != 0.0}
        self.reward_scale = self.dt if r.scale_by_dt else 1.0
        self.reward_functions = {k: TERMS[k].fn for k in self.reward_weights}
        self.needs_contacts = any(TERMS[k].contacts for k in self.reward_weights)

    def _alloc_buffers(self) -> None:
        n, dev, f = self.n_envs, self.device, torch.float32
        e = self.cfg.env
        z3 = lambda: torch.zeros((n, 3), device=dev, dtype=f)  # noqa: E731
        self.base_pos, self.base_lin_vel, self.base_ang_vel = z3(), z3(), z3()
        self.world_lin_vel = z3()
        self.projected_gravity = z3()
        self.base_euler = z3()
        self.base_quat = torch.zeros((n, 4), device=dev, dtype=f)
        self.global_gravity = torch.tensor([0.0, 0.0, -1.0], device=dev, dtype=f).repeat(n, 1)
        self.commands = z3()  # observed: vx, vy, yaw-rate slot (heading correction included)
        self.yaw_command = torch.zeros((n,), device=dev, dtype=f)  # drawn yaw rate, rad/s
        self.heading_target = torch.zeros((n,), device=dev, dtype=f)  # commanded heading, rad
        self.standing = torch.zeros((n,), device=dev, dtype=torch.bool)  # drew the stand-still command
        self.fixed_commands: torch.Tensor | None = None  # (n, 3): eval/video, no resampling
        # Command curriculum ([command] curriculum_*): the level, and this window's sums over the
        # robots told to move of the commanded speed and the speed along the command.
        self.command_level = self.cfg.command.start_level()
        self.level_sums = torch.zeros((2,), device=dev, dtype=f)
        self.level_steps = 0
        # per-episode tracking sums (chunk records): steps told to move (|cmd_xy| > MOVE_EPS),
        # commanded speed and speed along the command on those steps, |cmd_xy - v_xy|, |yaw - w_z|,
        # steps told to stand still
        self.episode_track = torch.zeros((n, 6), device=dev, dtype=f)
        self.commands_scale = torch.tensor(
            [e.obs_scale_lin_vel, e.obs_scale_lin_vel, e.obs_scale_ang_vel], device=dev, dtype=f
        )
        self.actions = torch.zeros((n, 12), device=dev, dtype=f)
        self.last_actions = torch.zeros_like(self.actions)
        self.dof_pos = torch.zeros_like(self.actions)
        self.dof_vel = torch.zeros_like(self.actions)
        self.default_dof_pos = torch.tensor(e.default_dof_pos(), device=dev, dtype=f)
        self.episode_length = torch.zeros((n,), device=dev, dtype=torch.int64)
        self.episode_offset = torch.zeros_like(self.episode_length)  # random start (steps not lived)
        self.episode_return = torch.zeros((n,), device=dev, dtype=f)
        self.episode_terms = {k: torch.zeros((n,), device=dev, dtype=f) for k in self.reward_weights}
        self.start_xy = torch.zeros((n, 2), device=dev, dtype=f)
        self.feet_air_time = torch.zeros((n, 4), device=dev, dtype=f)
        self.last_contacts = torch.zeros((n, 4), device=dev, dtype=torch.bool)
        self.trot_offsets = torch.tensor(robot.TROT_OFFSETS, device=dev, dtype=f)  # FR, FL, RR, RL
        self.obs_buf = torch.zeros((n, self.num_obs), device=dev, dtype=f)
        self.rew_buf = torch.zeros((n,), device=dev, dtype=f)
        self.gen = torch.Generator(device=dev)
        self.gen.manual_seed(e.seed)
        # Randomisation draws from its own stream, so switching an item on or off leaves the reset noise
        # and the commands of a seed as they were.
        self.rand_gen = torch.Generator(device=dev)
        self.rand_gen.manual_seed(e.seed + RAND_SEED_OFFSET)
        lo, hi = self.cfg.domain_rand.latency_range()
        self.latency = torch.full((n,), lo, device=dev, dtype=torch.int64)
        self.action_hist = torch.zeros((n, hi + 1, 12), device=dev, dtype=f)  # [:, k] = action of k steps ago
        self.env_arange = torch.arange(n, device=dev)
        self.pushed = torch.zeros((n,), device=dev, dtype=torch.bool)  # pushed at the last step
        self.friction = torch.ones((n, 1), device=dev, dtype=f)  # contact friction drawn at the last reset
        self.noise_levels = self._noise_levels()
        self.slow_every = self.cfg.domain_rand.slow_redraw_steps if self.batched_dofs or self.batched_links else 1
        self.slow_pending = torch.zeros((n,), device=dev, dtype=torch.bool)  # reset, slow items not yet redrawn
        self.step_count = 0

    def seed(self, seed: int) -> None:
        """Reseed both random streams and restart the slow-redraw schedule, so that a seeded reset
        reproduces the same rollout whatever this env ran before."""
        self.gen.manual_seed(int(seed))
        self.rand_gen.manual_seed(int(seed) + RAND_SEED_OFFSET)
        self.step_count = 0
        self.slow_pending[:] = False

    # ------------------------------------------------------------------ state
    def _read_state(self) -> None:
        self.base_pos[:] = self.robot.get_pos()
        self.base_quat[:] = self.robot.get_quat()
        q = self.base_quat  # the initial orientation is the identity, so this is the base's own rotation
        self.base_euler[:] = quat_to_rpy_deg(q)
        self.world_lin_vel[:] = self.robot.get_vel()
        self.base_lin_vel[:] = quat_rotate_inverse(q, self.world_lin_vel)
        self.base_ang_vel[:] = quat_rotate_inverse(q, self.robot.get_ang())
        self.projected_gravity[:] = quat_rotate_inverse(q, self.global_gravity)
        self.dof_pos[:] = self.robot.get_dofs_position(self.motor_dofs)
        self.dof_vel[:] = self.robot.get_dofs_velocity(self.motor_dofs)

    @property
    def heading_speed(self) -> torch.Tensor:
        """Forward speed in the heading (yaw-only) frame, m/s."""
        yaw = torch.deg2rad(self.base_euler[:, 2])
        return self.world_lin_vel[:, 0] * torch.cos(yaw) + self.world_lin_vel[:, 1] * torch.sin(yaw)

    def gait_phase(self) -> torch.Tensor:
        period = max(1, self.cfg.env.gait_period_steps)
        return 2 * math.pi * (self.episode_length.float() % period) / period

    def _compute_obs(self) -> torch.Tensor:
        e = self.cfg.env
        ang_vel, gravity, dof_pos, dof_vel = self._obs_noise()
        parts = [
            ang_vel * e.obs_scale_ang_vel,
            gravity,
            self.commands * self.commands_scale,
            (dof_pos - self.default_dof_pos) * e.obs_scale_dof_pos,
            dof_vel * e.obs_scale_dof_vel,
            self.actions,
        ]
        if self.gait_clock:
            ph = self.gait_phase()
            parts += [torch.sin(ph)[:, None], torch.cos(ph)[:, None]]
        torch.cat(parts, dim=-1, out=self.obs_buf)
        return self.obs_buf

    def _resample_commands(self, idx: torch.Tensor) -> None:
        """New commands for robots ``idx``: the fixed ones (eval/video), else drawn from [command]."""
        if len(idx) == 0:
            return
        if self.fixed_commands is not None:
            cmd = self.fixed_commands[idx]
        else:
            c = self.cfg.command
            u = torch.rand((len(idx), 4), generator=self.gen, device=self.device)
            ranges = c.ranges_at(self.command_level)
            lo = torch.tensor([r[0] for r in ranges], device=self.device)
            hi = torch.tensor([r[1] for r in ranges], device=self.device)
            cmd = lo + (hi - lo) * u[:, :3]
            cmd = cmd * (u[:, 3:] >= c.standing_share)  # standing_share of draws: (0, 0, 0)
        self.commands[idx] = cmd
        self.yaw_command[idx] = cmd[:, 2]
        self.standing[idx] = (cmd == 0).all(1)

    def set_commands(self, commands) -> None:
        """Fix each robot's command (an (n, 3) tensor or sequence of vx, vy, yaw rate; one row:
        every robot) for eval and video: no resampling; applied now and at every reset."""
        cmd = torch.as_tensor(commands, dtype=torch.float32, device=self.device).reshape(-1, 3)
        self.fixed_commands = cmd.expand(self.n_envs, 3).clone()
        self._resample_commands(torch.arange(self.n_envs, device=self.device))

    def set_command(self, vx: float, vy: float = 0.0, yaw: float = 0.0) -> None:
        """Fix one command (vx, vy, yaw rate) for every robot (eval/video)."""
        self.set_commands([float(vx), float(vy), float(yaw)])

    def _steer(self) -> None:
        """Heading mode: the yaw-rate slot steers towards the commanded heading (which turns at the
        drawn yaw rate): ``clip(yaw + heading_gain * heading error, +-max(1, |yaw_range|))``."""
        c = self.cfg.command
        if not c.heading:
            self.commands[:, 2] = self.yaw_command
            return
        err = torch.remainder(self.heading_target - torch.deg2rad(self.base_euler[:, 2]) + math.pi, 2 * math.pi) - math.pi
        lim = max(1.0, abs(c.yaw_range[0]), abs(c.yaw_range[1]))
        if self.fixed_commands is not None:
            lim = max(lim, float(self.fixed_commands[:, 2].abs().max()))
        self.commands[:, 2] = torch.clip(self.yaw_command + c.heading_gain * err, -lim, lim)

    def own_velocity(self) -> torch.Tensor:
        """(n, 2) horizontal linear velocity along the robot's own facing (yaw frame): x forward,
        y left. What a command's vx, vy ask for."""
        yaw = torch.deg2rad(self.base_euler[:, 2])
        c, s = torch.cos(yaw), torch.sin(yaw)
        v = self.world_lin_vel
        return torch.stack([v[:, 0] * c + v[:, 1] * s, -v[:, 0] * s + v[:, 1] * c], dim=1)

    def heading_velocity(self) -> torch.Tensor:
        """(n, 2) horizontal linear velocity in the commanded-heading frame (the start heading
        while no yaw rate is commanded)."""
        c, s = torch.cos(self.heading_target), torch.sin(self.heading_target)
        v = self.world_lin_vel
        return torch.stack([v[:, 0] * c + v[:, 1] * s, -v[:, 0] * s + v[:, 1] * c], dim=1)

    MOVE_EPS = 0.1  # m/s or rad/s: a command smaller than this asks to stand (gait terms, records)

    def _track_step(self) -> None:
        """Per-step tracking sums for the episode record (what was commanded vs achieved)."""
        v = self.own_velocity()
        cmd = self.commands[:, :2]
        speed = torch.norm(cmd, dim=1)
        moving = speed > self.MOVE_EPS
        along = (v * cmd).sum(1) / speed.clamp_min(1e-6)
        speed_moving, along_moving = speed * moving, along * moving
        t = self.episode_track
        t[:, 0] += moving
        t[:, 1] += speed_moving
        t[:, 2] += along_moving
        t[:, 3] += torch.norm(cmd - v, dim=1)
        t[:, 4] += (self.yaw_command - self.base_ang_vel[:, 2]).abs()
        t[:, 5] += self.standing
        self._curriculum_step(speed_moving, along_moving)

    def set_command_level(self, level: float) -> None:
        """Set the curriculum level (a resumed run's, from its checkpoint manifest); 1 without a
        curriculum. Starts a new window. Takes effect at the next draw."""
        self.command_level = min(1.0, max(0.0, float(level))) if self.cfg.command.curriculum else 1.0
        self.level_sums.zero_()
        self.level_steps = 0

    def _curriculum_step(self, cmd_speed: torch.Tensor, along: torch.Tensor) -> None:
        """Add this step to the curriculum window; at its end raise the level by ``curriculum_step``
        when the speed along the command reached ``curriculum_threshold`` of the commanded speed.
        Training only (fixed commands: eval and video never change the level)."""
        c = self.cfg.command
        if not c.curriculum or self.command_level >= 1.0 or self.fixed_commands is not None:
            return
        self.level_sums += torch.stack([cmd_speed.sum(), along.sum()])
        self.level_steps += 1
        if self.level_steps < c.curriculum_window_steps:
            return
        commanded, achieved = self.level_sums.tolist()
        self.level_sums.zero_()
        self.level_steps = 0
        if commanded > 0 and achieved >= c.curriculum_threshold * commanded:
            self.command_level = min(1.0, round(self.command_level + c.curriculum_step, 6))

    # ------------------------------------------------------------------ reset
    def reset_idx(self, idx: torch.Tensor, defer_slow: bool = False) -> None:
        """Restart robots ``idx``. ``defer_slow`` (the step's auto-reset): their base mass, CoM and
        armature are redrawn with the other pending robots' at the next ``slow_redraw_steps`` boundary."""
        if len(idx) == 0:
            return
        self._rand_friction(idx)
        if defer_slow and self.slow_every > 1:
            self.slow_pending[idx] = True
        else:
            self._rand_slow(idx)
            self.slow_pending[idx] = False  # redrawn now
        self._rand_motors(idx)
        self._rand_joints(idx)
        self._rand_latency(idx)
        noise = self.cfg.env.reset_joint_noise
        self.dof_pos[idx] = self.default_dof_pos
        if noise > 0:
            u = torch.rand((len(idx), 12), generator=self.gen, device=self.device)
            self.dof_pos[idx] += (2 * u - 1) * noise
        self.dof_vel[idx] = 0.0
        self.robot.set_dofs_position(self.dof_pos[idx], self.motor_dofs, envs_idx=idx, zero_velocity=True)
        self.base_pos[idx] = self.base_init_pos
        self.base_quat[idx] = self.base_init_quat
        self.robot.set_pos(self.base_pos[idx], envs_idx=idx, zero_velocity=False)
        self.robot.set_quat(self.base_quat[idx], envs_idx=idx, zero_velocity=False)
        self.robot.zero_all_dofs_velocity(idx)
        self.base_lin_vel[idx] = 0.0
        self.world_lin_vel[idx] = 0.0
        self.base_ang_vel[idx] = 0.0
        self.base_euler[idx] = 0.0
        self.projected_gravity[idx] = self.global_gravity[idx]
        self.actions[idx] = 0.0
        self.last_actions[idx] = 0.0
        self.action_hist[idx] = 0.0
        self.episode_length[idx] = 0
        self.episode_offset[idx] = 0
        self.episode_return[idx] = 0.0
        for v in self.episode_terms.values():
            v[idx] = 0.0
        self.start_xy[idx] = self.base_pos[idx, :2]
        self.feet_air_time[idx] = 0.0
        self.last_contacts[idx] = False
        self.episode_track[idx] = 0.0
        self.heading_target[idx] = 0.0  # the start heading (the reset orientation's yaw)
        self._resample_commands(idx)
        if self.cfg.command.heading:
            self.commands[idx, 2] = self.yaw_command[idx]  # heading error 0 at the start

    def reset(self) -> torch.Tensor:
        self.reset_idx(torch.arange(self.n_envs, device=self.device))
        return self._compute_obs().clone()

    def randomize_episode_lengths(self) -> torch.Tensor:
        """Start every robot's episode clock at a random step in [0, episode_steps) (rsl_rl's
        ``init_at_random_ep_len``), so that time-outs, command resamples and gait clocks are not in
        lockstep across robots; returns the observation. Training only: eval and video start at 0."""
        self.episode_length[:] = torch.randint(0, self.cfg.env.episode_steps, (self.n_envs,), generator=self.gen,
                                               device=self.device)
        self.episode_offset[:] = self.episode_length  # episode statistics count the steps lived
        return self._compute_obs().clone()

    # ------------------------------------------------------------------ step
    def _error_envs(self) -> torch.Tensor:
        try:
            return self.rigid.get_error_envs_mask().to(self.device).reshape(-1)[: self.n_envs]
        except Exception:  # older/other solvers: rely on the NaN check only
            return torch.zeros((self.n_envs,), dtype=torch.bool, device=self.device)

    def step(self, actions: torch.Tensor) -> StepResult:
        e = self.cfg.env
        self.actions[:] = torch.clip(actions, -e.clip_actions, e.clip_actions)
        self._redraw_pending_slow()
        exec_actions = self._delayed_actions()
        self.robot.control_dofs_position(exec_actions * e.action_scale + self.default_dof_pos, self.motor_dofs)
        self._push_robots()
        self.scene.step()
        self.episode_length += 1
        self.step_count += 1
        self._read_state()

        # Invalid solver state (Genesis error envs) or NaNs: reset, count, never leak to the learner.
        invalid = self._error_envs() | ~torch.isfinite(self.base_pos).all(1) | ~torch.isfinite(self.dof_vel).all(1)
        invalid |= ~torch.isfinite(self.base_quat).all(1) | ~torch.isfinite(self.dof_pos).all(1)
        if bool(invalid.any()):
            self._sanitize(invalid)

        self._compute_reward(invalid)
        self.episode_return += self.rew_buf
        self._track_step()

        terminated = self.check_termination() | invalid
        truncated = (self.episode_length >= e.episode_steps) & ~terminated
        done = terminated | truncated

        # The commanded heading turns at the drawn yaw rate; resample commands on schedule (the
        # new yaw rate turns the heading from where it is); steer towards it in heading mode.
        self.heading_target += self.yaw_command * self.dt
        resample = (self.episode_length % self.cfg.command.resample_steps == 0).nonzero().flatten()
        self._resample_commands(resample)
        self._steer()

        obs = self._compute_obs()
        done_idx = done.nonzero().flatten()
        terminal_obs = obs[done_idx].clone()
        episodes = {}
        if len(done_idx):
            episodes = {
                "r": self.episode_return[done_idx].clone(),
                "l": self.episode_length[done_idx] - self.episode_offset[done_idx],
                "dist": self.forward_distance()[done_idx],
                "track": self.episode_track[done_idx].clone(),
                "terms": {k: v[done_idx].clone() for k, v in self.episode_terms.items()},
            }
        self.last_actions[:] = self.actions
        if len(done_idx):
            self.reset_idx(done_idx, defer_slow=True)
            obs = self._compute_obs()
        return StepResult(obs, self.rew_buf, terminated, truncated, done_idx, terminal_obs, invalid, episodes)

    def _compute_reward(self, invalid: torch.Tensor) -> None:
        """``rew_buf`` = the sum of the weighted terms (times dt), 0 for invalid robots; per-term episode sums."""
        if self.needs_contacts:
            self._update_feet()
        self.rew_buf.zero_()
        for name, fn in self.reward_functions.items():
            r = fn(self) * (self.reward_weights[name] * self.reward_scale)
            self.rew_buf += r
            self.episode_terms[name] += r
        self.rew_buf[invalid] = 0.0

    def _sanitize(self, invalid: torch.Tensor) -> None:
        import genesis as gs  # noqa: F401

        idx = invalid.nonzero().flatten()
        self.invalid_count += len(idx)
        try:
            self.scene.reset(envs_idx=idx)  # restores a valid state and clears the solver's errno
        except Exception:
            pass
        for t in (self.base_pos, self.base_quat, self.base_lin_vel, self.world_lin_vel, self.base_ang_vel,
                  self.projected_gravity, self.base_euler, self.dof_pos, self.dof_vel):
            t[idx] = torch.nan_to_num(t[idx], nan=0.0, posinf=0.0, neginf=0.0)

    def _update_feet(self) -> None:
        """Foot contacts (calf-link contact force) and swing timers, for the ``contacts`` terms."""
        force = self.robot.get_links_net_contact_force()[:, self.foot_links, 2]
        contact = force > 1.0
        contact_filt = contact | self.last_contacts  # contact reports flicker on hard ground
        self.last_contacts = contact
        self.first_contact = (self.feet_air_time > 0.0) & contact_filt
        self.feet_air_time += self.dt
        self.touchdown_air_time = self.feet_air_time * self.first_contact
        self.feet_air_time *= ~contact_filt

    def foot_clearance(self) -> torch.Tensor:
        """(n, 4) height of each foot's collision sphere above the ground plane (~0 on the ground).
        The foot links are merged into the calves: calf pose + the urdf's fixed offset."""
        from genesis.utils.geom import transform_by_quat

        pos = self.robot.get_links_pos(self.foot_links)
        quat = self.robot.get_links_quat(self.foot_links)
        centre = pos + transform_by_quat(self.foot_offset.expand(pos.shape), quat)
        return centre[..., 2] - self.foot_radius

    def trot_schedule(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The gait clock's plan for (FR, FL, RR, RL): stance (bool, n x 4) and swing progress
        in [0, 1) (n x 4). Diagonal pairs FR+RL and FL+RR are half a period apart; each foot is in
        stance for the first half of its own phase."""
        period = max(1, self.cfg.env.gait_period_steps)
        phase = (self.episode_length.float() % period) / period  # (n,)
        leg = torch.remainder(phase[:, None] + self.trot_offsets, 1.0)
        stance = leg < 0.5
        return stance, torch.where(stance, torch.zeros_like(leg), (leg - 0.5) * 2.0)

    def check_termination(self) -> torch.Tensor:
        """Fallen (height, with the grace period) or tilted beyond the roll/pitch limits."""
        t = self.cfg.termination
        z = self.base_pos[:, 2]
        in_grace = self.episode_length <= t.grace_steps
        min_z = torch.where(in_grace, torch.full_like(z, t.grace_min_height), torch.full_like(z, t.min_height))
        fallen = z < min_z
        tilted = (self.base_euler[:, 0].abs() > t.max_roll_deg) | (self.base_euler[:, 1].abs() > t.max_pitch_deg)
        return fallen | tilted

    def weighted_terms(self) -> dict[str, torch.Tensor]:
        """Each term times its weight (without the dt scale), for the current state."""
        return {k: fn(self) * self.reward_weights[k] for k, fn in self.reward_functions.items()}

    # ------------------------------------------------------------------ randomisation ([domain_rand])
    def _init_rand(self) -> None:
        """The simulator's own (nominal) values, read once at build: what an item switched off keeps."""
        dr = self.cfg.domain_rand
        self.batched_dofs, self.batched_links = dr.batched_dofs(), dr.batched_links()
        self.base_link = self.robot.base_link.idx_local
        self.base_lin_dofs = [0, 1]  # the base's free joint: world-frame linear velocity x, y first
        first = lambda t: t[0] if self.batched_dofs and t.dim() > 1 else t  # noqa: E731
        self.nominal = {
            "kp": self.cfg.env.kp, "kd": self.cfg.env.kd,
            "force_lo": first(self.robot.get_dofs_force_range(self.motor_dofs)[0]).clone(),
            "force_hi": first(self.robot.get_dofs_force_range(self.motor_dofs)[1]).clone(),
            "damping": first(self.robot.get_dofs_damping(self.motor_dofs)).clone(),
            "frictionloss": first(self.robot.get_dofs_frictionloss(self.motor_dofs)).clone(),
            "armature": first(self.robot.get_dofs_armature(self.motor_dofs)).clone(),
        }
        links_first = lambda t: t[0] if self.batched_links and t.dim() > 1 else t  # noqa: E731
        self.nominal["mass"] = links_first(self.robot.get_links_mass([self.base_link])).clone()  # (1,)
        com = self.robot.get_links_COM([self.base_link])
        self.nominal["com"] = (com[0] if self.batched_links and com.dim() > 2 else com).clone()  # (1, 3)
        self.geoms_friction = torch.as_tensor(self.rigid.get_geoms_friction(), device=self.device).float()
        self.geoms_all = list(range(self.rigid.n_geoms))

    def _uniform(self, bounds, shape) -> torch.Tensor:
        lo, hi = float(bounds[0]), float(bounds[1])
        if lo == hi:
            return torch.full(shape, lo, device=self.device)
        return lo + (hi - lo) * torch.rand(shape, generator=self.rand_gen, device=self.device)

    def _rand_friction(self, idx: torch.Tensor) -> None:
        """Contact friction mu per robot: Genesis takes max(mu_a, mu_b) of a geom pair, so the robot's and
        the plane's geoms of that robot's world all get mu (friction ratio mu / the geom's friction)."""
        dr = self.cfg.domain_rand
        if not dr.active("friction"):
            return
        mu = self._uniform(dr.friction_range, (len(idx), 1))
        self.friction[idx] = mu
        self.rigid.set_geoms_friction_ratio(mu / self.geoms_friction, self.geoms_all, envs_idx=idx)

    def _rand_base_mass(self, idx: torch.Tensor) -> None:
        """Added base mass (a payload; the inertia is kept) and a shift of the base's centre of mass."""
        if not self.batched_links:
            return
        dr, k = self.cfg.domain_rand, len(idx)
        add = self._uniform(dr.added_mass_range, (k, 1)) if dr.active("mass") else torch.zeros((k, 1), device=self.device)
        self.robot.set_links_mass(self.nominal["mass"] + add, [self.base_link], envs_idx=idx)
        c = dr.com_shift if dr.active("com") else 0.0
        shift = self._uniform([-c, c], (k, 1, 3))
        self.robot.set_links_COM(self.nominal["com"] + shift, [self.base_link], envs_idx=idx)

    def _rand_motors(self, idx: torch.Tensor) -> None:
        """Per robot and joint: motor strength s scales the whole PD torque (Genesis's PD is internal, so
        kp, kd and the torque limit are scaled together); kp and kd multipliers on top."""
        if not self.batched_dofs:
            return
        dr, shape = self.cfg.domain_rand, (len(idx), 12)
        one = [1.0, 1.0]
        s = self._uniform(dr.motor_strength_range if dr.active("motor_strength") else one, shape)
        kp = self.nominal["kp"] * s * self._uniform(dr.kp_range if dr.active("kp") else one, shape)
        kd = self.nominal["kd"] * s * self._uniform(dr.kd_range if dr.active("kd") else one, shape)
        self.robot.set_dofs_kp(kp, self.motor_dofs, envs_idx=idx)
        self.robot.set_dofs_kv(kd, self.motor_dofs, envs_idx=idx)
        self.robot.set_dofs_force_range(self.nominal["force_lo"] * s, self.nominal["force_hi"] * s, self.motor_dofs,
                                        envs_idx=idx)

    def _rand_joints(self, idx: torch.Tensor) -> None:
        """Joint damping and friction loss per robot and joint (absolute values)."""
        if not self.batched_dofs:
            return
        dr, shape = self.cfg.domain_rand, (len(idx), 12)
        for item, key, name, setter in (
            ("damping", "joint_damping_range", "damping", self.robot.set_dofs_damping),
            ("joint_friction", "joint_friction_range", "frictionloss", self.robot.set_dofs_frictionloss),
        ):
            if dr.active(item):
                setter(self._uniform(getattr(dr, key), shape), self.motor_dofs, envs_idx=idx)
            else:
                setter(self.nominal[name].expand(shape), self.motor_dofs, envs_idx=idx)

    def _rand_armature(self, idx: torch.Tensor) -> None:
        """Joint armature per robot and joint (absolute values)."""
        if not self.batched_dofs:
            return
        dr, shape = self.cfg.domain_rand, (len(idx), 12)
        v = self._uniform(dr.armature_range, shape) if dr.active("armature") else self.nominal["armature"].expand(shape)
        self.robot.set_dofs_armature(v, self.motor_dofs, envs_idx=idx)

    def _rand_slow(self, idx: torch.Tensor) -> None:
        """The items whose Genesis write re-solves the inverse weights of every robot (~20 ms a call at
        N = 256 on the CPU, however few robots): base mass and CoM, armature."""
        self._rand_base_mass(idx)
        self._rand_armature(idx)

    def _redraw_pending_slow(self) -> None:
        """Every ``slow_redraw_steps`` steps, one write for every robot that reset since the last one."""
        if self.slow_every <= 1 or self.step_count % self.slow_every:
            return
        idx = self.slow_pending.nonzero().flatten()
        if len(idx):
            self._rand_slow(idx)
            self.slow_pending[idx] = False

    def _rand_latency(self, idx: torch.Tensor) -> None:
        lo, hi = self.cfg.domain_rand.latency_range()
        if lo == hi:
            self.latency[idx] = lo
        else:
            self.latency[idx] = torch.randint(lo, hi + 1, (len(idx),), generator=self.rand_gen, device=self.device)

    def _delayed_actions(self) -> torch.Tensor:
        """The action of ``latency`` steps ago per robot (0 before the episode's first)."""
        if self.action_hist.shape[1] == 1:
            return self.actions
        self.action_hist[:, 1:] = self.action_hist[:, :-1].clone()
        self.action_hist[:, 0] = self.actions
        return self.action_hist[self.env_arange, self.latency]

    def _push_robots(self) -> None:
        """Every ``push_interval_s`` of a robot's episode, add a horizontal kick of ``push_vel`` m/s in a
        random direction to its base velocity (legged_gym's ``_push_robots``, a fixed magnitude)."""
        dr = self.cfg.domain_rand
        if not dr.active("push"):
            return
        every = max(1, round(dr.push_interval_s / self.dt))
        due = (self.episode_length > 0) & (self.episode_length % every == 0)
        self.pushed = due
        idx = due.nonzero().flatten()
        if len(idx) == 0:
            return
        theta = 2 * math.pi * torch.rand((len(idx),), generator=self.rand_gen, device=self.device)
        kick = dr.push_vel * torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
        vel = self.robot.get_dofs_velocity(self.base_lin_dofs, envs_idx=idx)
        self.robot.set_dofs_velocity(vel + kick, self.base_lin_dofs, envs_idx=idx)

    def _noise_levels(self) -> torch.Tensor:
        """Per observed raw quantity (ang vel 3, gravity 3, joint pos 12, joint vel 12): its noise level."""
        dr = self.cfg.domain_rand
        return dr.obs_noise * torch.tensor(
            [dr.noise_ang_vel] * 3 + [dr.noise_gravity] * 3 + [dr.noise_dof_pos] * 12 + [dr.noise_dof_vel] * 12,
            device=self.device, dtype=torch.float32)

    def _obs_noise(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The raw observed quantities, with uniform noise when [domain_rand] obs_noise is on."""
        dr = self.cfg.domain_rand
        raw = (self.base_ang_vel, self.projected_gravity, self.dof_pos, self.dof_vel)
        if not dr.active("obs_noise"):
            return raw
        u = 2 * torch.rand((self.n_envs, 30), generator=self.rand_gen, device=self.device) - 1
        noisy = torch.cat(raw, dim=1) + u * self.noise_levels
        return noisy[:, 0:3], noisy[:, 3:6], noisy[:, 6:18], noisy[:, 18:30]

    # ------------------------------------------------------------------ misc
    def forward_distance(self) -> torch.Tensor:
        """World-x displacement since the episode began (start heading is +x)."""
        return self.base_pos[:, 0] - self.start_xy[:, 0]

    def close(self) -> None:
        pass


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0
