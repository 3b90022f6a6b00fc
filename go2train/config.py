"""The one typed configuration object, loaded from TOML.

Every value has a default, so no file is needed. Loading rules:

* ``--config PATH`` wins; else ``<run_dir>/go2train.toml`` when present; else defaults.
* Unknown keys, wrong types, out-of-range values and unreadable TOML raise
  :class:`ConfigError`, whose message is one line naming the file and the key.
* Backend-aware defaults (:func:`load`): keys the file does not set take their *profile* value.
  The CPU profile is the class defaults below; when the backend resolves to the GPU
  (``[env] backend = "gpu"``, or ``"auto"`` and :func:`detect_gpu` finds one) the keys of
  :data:`GPU_PROFILE` replace them. A run keeps the profile it started with (stored in every
  checkpoint manifest, ``"profile"``), except :data:`MACHINE_KEYS`, which follow the machine the
  process runs on. Keys set in the file always win. ``profile_of(cfg)`` says what was chosen and why.

This module imports neither torch nor genesis nor pynvml: the supervisor and the TUI use it too.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)

from go2train import robot
from go2train.sim.rewards import TERMS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_FILENAME = "go2train.toml"


# ---------------------------------------------------------------- backend-aware profiles
# The GPU profile: "section.key" -> value for keys the config file does not set, when the backend
# resolves to the GPU. Everything not listed keeps its class default (the CPU profile). Values are
# validated like a config file's, so a typo here fails loudly. N = 4096 with 24 steps per env and
# 4 minibatches is rsl_rl's Go2 setting (docs/CHUNKS.md). The reward share: with 98,304 samples per
# update PPO stays in the standing optimum that the CPU defaults' reward leaves at N = 256 (every
# run of docs/TRAINING_LOG.md exp7/exp8); walking has to pay about twice what standing pays
# (velocity tracking 6.0, seed 004's height term kept at weight 1.0) — exp10: walks within 10-15 M
# timesteps at 4096 robots, two seeds.
GPU_PROFILE: dict[str, Any] = {
    "env.n_envs": 4096,
    "ppo.batch_size": 24576,  # n_steps (24) * n_envs (4096) / 4 minibatches
    "ppo.device": "cuda",  # the update beside the simulator's tensors
    "env.random_episode_start": True,  # rsl_rl's init_at_random_ep_len: time-outs out of lockstep
    "reward.tracking_lin_vel": 6.0,  # CPU default 2.0
    "reward.height.weight": 1.0,  # CPU default 2.5
}
# Profile keys that follow the machine a process runs on, not the run: a GPU run resumed on a
# machine without one trains its PPO on the CPU, and a CPU run resumed on a GPU machine uses it.
MACHINE_KEYS = frozenset({"ppo.device"})

FAKE_GPU_ENV = "GO2TRAIN_FAKE_GPU"  # tests: "1" (or a device name) = a GPU is present, "0" = none
NVIDIA_CTL = "/dev/nvidiactl"  # the driver's control device (absent in a container given no GPU)
NVIDIA_PROC_GPUS = "/proc/driver/nvidia/gpus"  # one folder per GPU, with an "information" file


@dataclass(frozen=True)
class GpuProbe:
    """Whether this machine has a usable NVIDIA GPU, and how that was decided (one phrase)."""

    present: bool
    reason: str
    names: tuple[str, ...] = ()


def detect_gpu() -> GpuProbe:
    """Cheap GPU detection without torch, NVML or a subprocess (the supervisor calls it too, and a
    wedged driver must not hang it): the NVIDIA driver's control device and its per-GPU entries in
    ``/proc/driver/nvidia/gpus`` (a container gets only its own GPUs there). ``CUDA_VISIBLE_DEVICES``
    empty or ``-1`` hides them, as it does from torch. ``GO2TRAIN_FAKE_GPU`` overrides everything
    (``1`` or a device name: present; ``0``: absent), for tests."""
    fake = os.environ.get(FAKE_GPU_ENV, "").strip()
    if fake:
        if fake.lower() in ("0", "false", "no", "none"):
            return GpuProbe(False, f"{FAKE_GPU_ENV}={fake}: no GPU (stand-in)")
        name = "stand-in GPU" if fake.lower() in ("1", "true", "yes") else fake
        return GpuProbe(True, f"{FAKE_GPU_ENV}: 1 device, {name}", (name,))
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    if cvd is not None and cvd.strip() in ("", "-1"):
        return GpuProbe(False, f"CUDA_VISIBLE_DEVICES={cvd.strip()!r} hides every GPU")
    if not os.path.exists(NVIDIA_CTL):
        return GpuProbe(False, f"no NVIDIA driver: {NVIDIA_CTL} absent")
    root = Path(NVIDIA_PROC_GPUS)
    try:
        gpus = sorted(root.iterdir())
    except OSError:
        gpus = []
    if not gpus:
        return GpuProbe(False, f"NVIDIA driver loaded but no GPU listed in {root}")
    names = []
    for g in gpus:
        name = "NVIDIA GPU"
        try:
            for line in (g / "information").read_text().splitlines():
                if line.startswith("Model:"):
                    name = line.split(":", 1)[1].strip() or name
                    break
        except OSError:
            pass
        names.append(name)
    count = f"{len(names)} device{'s' if len(names) != 1 else ''}"
    return GpuProbe(True, f"{count}, {names[0]}{' ...' if len(set(names)) > 1 else ''} ({root})", tuple(names))


@dataclass
class ProfileChoice:
    """How :func:`load` resolved the backend-aware defaults (``profile_of(cfg)``)."""

    backend_setting: str  # [env] backend as configured: auto | cpu | gpu
    backend: str  # resolved on this machine: cpu | gpu
    reason: str  # why (the probe's phrase, or "set in <file>")
    profile: str  # the run's profile: cpu | gpu
    run_source: str | None  # manifest the run's profile came from; None = decided now
    applied: dict[str, Any] = field(default_factory=dict)  # GPU-profile keys applied, with values
    explicit: list[str] = field(default_factory=list)  # GPU-profile keys set in the file (they win)
    source: str = "defaults"  # the config file, or "defaults"
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def describe(self) -> str:
        """One line for ``go2train config show``: the choice and why."""
        if self.backend_setting == "auto":
            head = f"backend auto → {self.backend} ({self.reason})"
        else:
            head = f"backend {self.backend} (set in {self.source})"
        if self.run_source and self.profile != self.backend:
            head += f"; this run started with the {self.profile.upper()} profile ({self.run_source}), it keeps it"
        elif self.run_source:
            head += f"; the run's profile ({self.run_source})"
        parts = ", ".join(f"{k}={_fmt(v)}" for k, v in self.applied.items())
        where = "not set in " + (self.source if self.source != "defaults" else "a config file")
        if self.profile == "gpu":
            line = f"{head} → GPU profile: " + (f"{parts} ({where})" if parts else "every key set in the file")
        else:
            line = f"{head} → CPU defaults" + (f"; for this machine's GPU: {parts} ({where})" if parts else "")
        if self.explicit:
            line += f"; set in {self.source}, kept: {', '.join(self.explicit)}"
        return "; ".join([line, *self.notes])


def _fmt(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def get_key(data: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    """``(True, value)`` of ``section.key`` (any depth) in plain config data, ``(False, None)`` if absent."""
    cur: Any = data
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def put_key(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``section.key`` (any depth) in plain config data; a missing or non-table step becomes a
    table (validation then names what is wrong, rather than a crash here)."""
    *path, key = dotted.split(".")
    cur = data
    for part in path:
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            nxt = cur[part] = {}
        cur = nxt
    cur[key] = value


def run_profile(run_dir: str | Path | None) -> tuple[str, str] | None:
    """The profile a run started with, from its newest readable checkpoint manifest
    (``models/*.json``), with that file's name; None for a run with no checkpoint yet. A manifest
    without ``"profile"`` predates profiles: everything then trained with the CPU defaults."""
    if run_dir is None:
        return None
    models = Path(run_dir) / "models"
    try:
        files = sorted((p for p in models.glob("*.json") if p.is_file()), key=lambda p: p.name, reverse=True)
    except OSError:
        return None
    for p in files:  # chunk_NNNNNN.json newest first, then resume.json: any of the run's says the same
        try:
            m = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(m, dict) and isinstance(m.get("config"), dict):
            prof = m.get("profile")
            prof = prof.get("profile") if isinstance(prof, dict) else prof
            return (prof if prof in ("cpu", "gpu") else "cpu"), f"models/{p.name}"
    return None


class ConfigError(Exception):
    """A configuration problem. ``str(err)`` is one line naming the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class EnvConfig(_Section):
    n_envs: int = Field(256, ge=1, le=65536)
    episode_steps: int = Field(400, ge=2)
    # Training only: at the start of every chunk each robot's episode clock starts at a random step
    # in [0, episode_steps) (rsl_rl's init_at_random_ep_len), so time-outs are not in lockstep.
    random_episode_start: bool = False
    backend: Literal["auto", "cpu", "gpu"] = "auto"
    dt: float = Field(0.02, gt=0, le=0.1)
    substeps: int = Field(2, ge=1, le=32)
    kp: float = Field(robot.KP, gt=0)
    kd: float = Field(robot.KD, ge=0)
    action_scale: float = Field(0.25, gt=0)
    # The one action bound: the policy's action space is [-clip_actions, clip_actions] (SB3 and the
    # rollout clip samples there) and the env clips to it, so a joint target may sit up to
    # clip_actions x action_scale rad from the default pose. 100 = Genesis's and legged_gym's (no
    # bound in practice; the joint limits and torque limits bound the motion). Before issue 13's
    # exp15 the action space was [-1, 1] whatever this said: +-0.25 rad, which capped the gait.
    clip_actions: float = Field(100.0, gt=0)
    base_init_height: float = Field(robot.BASE_INIT_HEIGHT, gt=0)
    default_hip: float = robot.DEFAULT_HIP
    default_front_thigh: float = robot.DEFAULT_FRONT_THIGH
    default_rear_thigh: float = robot.DEFAULT_REAR_THIGH
    default_calf: float = robot.DEFAULT_CALF
    reset_joint_noise: float = Field(0.05, ge=0, le=0.5)  # rad, uniform, added to the default pose at reset
    gait_period_steps: int = Field(25, ge=0, le=1000)  # trot clock period (steps); 0 = no clock
    obs_scale_ang_vel: float = 0.25
    obs_scale_lin_vel: float = 2.0
    obs_scale_dof_pos: float = 1.0
    obs_scale_dof_vel: float = 0.05
    seed: int = Field(0, ge=0, le=2**31 - 1)  # numpy seeds must be >= 0

    def default_dof_pos(self) -> list[float]:
        """The default pose in :data:`go2train.robot.JOINT_NAMES` order."""
        return robot.joint_pose(self.default_hip, self.default_front_thigh, self.default_rear_thigh, self.default_calf)



def _range(default: list[float]):
    return Field(default_factory=lambda: list(default))


class DomainRandConfig(_Section):
    """Domain randomisation (docs/ENV.md, "Randomisation"). Each item is switched off by its neutral
    value: a multiplier range of [1, 1], an offset range of [0, 0], an absolute range equal to the
    simulator's own value (joint damping and friction loss 0, armature 0.1), a scale or interval of 0.
    ``enabled = false`` switches every item off at once; the action latency is then fixed at the low
    end of ``action_latency_steps``. Physical properties are drawn per robot at every reset."""

    enabled: bool = True
    # Ground contact friction coefficient (Genesis's own: 1.0 for the robot and the plane), per robot.
    friction_range: list[float] = _range([0.4, 1.25])
    added_mass_range: list[float] = _range([-1.0, 2.0])  # kg added to the base (6.9 kg in go2.urdf)
    com_shift: float = Field(0.03, ge=0, le=0.1)  # m, uniform +- on each axis of the base's centre of mass
    # Per robot and joint: motor strength scales the PD torque (kp, kd and the torque limit together),
    # kp_range / kd_range scale the gains on their own.
    motor_strength_range: list[float] = _range([0.9, 1.1])
    kp_range: list[float] = _range([0.9, 1.1])
    kd_range: list[float] = _range([0.9, 1.1])
    # Joint viscous damping (N m s/rad), dry friction loss (N m) and armature (reflected rotor inertia,
    # kg m^2), absolute values per robot and joint. Genesis gives go2.urdf's joints damping 0,
    # friction loss 0, armature 0.1; MuJoCo Menagerie's / unitree_mujoco's Go2: damping 0.1 (2 in the
    # newest Menagerie file), friction loss 0.2, armature 0.01.
    joint_damping_range: list[float] = _range([0.0, 1.0])
    joint_friction_range: list[float] = _range([0.0, 0.3])
    armature_range: list[float] = _range([0.01, 0.1])
    # Base mass, CoM and armature: each Genesis write re-solves the inverse weights of every robot
    # (~20 ms at N = 256 on the CPU however few robots reset), so the robots a step's auto-reset
    # restarts get theirs together every slow_redraw_steps steps (until then: the previous draw).
    # 1 = at each reset.
    slow_redraw_steps: int = Field(50, ge=1, le=100_000)
    # Observation noise: uniform +-(level x obs_noise) added to the raw quantity before its obs scale
    # (legged_gym's noise_scales). obs_noise = 0 switches it off.
    obs_noise: float = Field(1.0, ge=0, le=10)
    noise_ang_vel: float = Field(0.2, ge=0)  # rad/s
    noise_gravity: float = Field(0.05, ge=0)  # projected gravity (unit vector)
    noise_dof_pos: float = Field(0.01, ge=0)  # rad
    noise_dof_vel: float = Field(1.5, ge=0)  # rad/s
    # Pushes: every push_interval_s of a robot's episode, a horizontal velocity kick of push_vel m/s
    # in a random direction is added to its base. 0 = off.
    push_interval_s: float = Field(4.0, ge=0)
    push_vel: float = Field(0.5, ge=0, le=5)
    # Action latency: per robot and episode, the PD target is the action of k steps ago, k uniform in
    # [low, high] (integers). [0, 0] = no latency, [1, 1] = one step (the old [env] action_latency).
    action_latency_steps: list[Annotated[int, Field(ge=0, le=10)]] = Field(default_factory=lambda: [0, 2])

    @field_validator("friction_range", "added_mass_range", "motor_strength_range", "kp_range", "kd_range",
                     "joint_damping_range", "joint_friction_range", "armature_range", "action_latency_steps")
    @classmethod
    def _check_range(cls, r: list, info: ValidationInfo) -> list:
        k = info.field_name
        if len(r) != 2 or r[0] > r[1]:
            raise ValueError("must be [low, high] with low <= high")
        if k in ("motor_strength_range", "kp_range", "kd_range", "armature_range") and r[0] <= 0:
            raise ValueError("must be > 0")
        if k == "friction_range" and not (0.01 <= r[0] and r[1] <= 5.0):
            raise ValueError("must lie in [0.01, 5] (Genesis's stable range)")
        if k in ("joint_damping_range", "joint_friction_range") and r[0] < 0:
            raise ValueError("must be >= 0")
        if k == "added_mass_range" and r[0] <= -5.0:
            raise ValueError("must be > -5 kg (the base weighs 6.9 kg)")
        return r

    # -- which items are on (no torch here: the evaluator and tests use these too)
    def active(self, item: str) -> bool:
        """Whether randomisation ``item`` is on: friction, mass, com, motor_strength, kp, kd, damping,
        joint_friction, armature, obs_noise, push, latency (latency: its low and high ends differ)."""
        if item == "latency":
            return self.enabled and self.action_latency_steps[0] != self.action_latency_steps[1]
        if not self.enabled:
            return False
        neutral = {
            "friction": ("friction_range", 1.0), "mass": ("added_mass_range", 0.0),
            "motor_strength": ("motor_strength_range", 1.0), "kp": ("kp_range", 1.0), "kd": ("kd_range", 1.0),
            "damping": ("joint_damping_range", 0.0), "joint_friction": ("joint_friction_range", 0.0),
            "armature": ("armature_range", robot.GENESIS_ARMATURE),
        }
        if item in neutral:
            key, v = neutral[item]
            return list(getattr(self, key)) != [v, v]
        if item == "com":
            return self.com_shift > 0
        if item == "obs_noise":
            return self.obs_noise > 0 and any(
                x > 0 for x in (self.noise_ang_vel, self.noise_gravity, self.noise_dof_pos, self.noise_dof_vel))
        if item == "push":
            return self.push_interval_s > 0 and self.push_vel > 0
        raise KeyError(item)

    def latency_range(self) -> tuple[int, int]:
        lo, hi = self.action_latency_steps
        return (lo, hi) if self.enabled else (lo, lo)

    def batched_links(self) -> bool:
        """Per-robot link properties (Genesis ``RigidOptions.batch_links_info``), fixed at scene build."""
        return self.active("mass") or self.active("com")

    def batched_dofs(self) -> bool:
        """Per-robot joint properties (Genesis ``RigidOptions.batch_dofs_info``), fixed at scene build."""
        return any(self.active(k) for k in ("motor_strength", "kp", "kd", "damping", "joint_friction", "armature"))

    @classmethod
    def off(cls, latency_steps: int = 0) -> "DomainRandConfig":
        """No randomisation at all; a fixed action latency of ``latency_steps``."""
        return cls(enabled=False, action_latency_steps=[latency_steps, latency_steps])




def _check_pair(name: str, r: list[float]) -> None:
    if len(r) != 2 or r[0] > r[1]:
        raise ValueError(f"{name} must be [low, high] with low <= high")


class CommandConfig(_Section):
    """The velocity command (issue 13): one source of truth for training, eval, video, guard and
    status. Ranges only; the observation keeps its three command slots (vx, vy, yaw rate).

    Every ``resample_steps`` steps and at every episode start each robot draws a new command:
    with probability ``standing_share`` it is told to stand still (0, 0, 0), else vx, vy and the
    yaw rate are drawn uniformly from their ranges. With ``heading = true`` (legged_gym's heading
    command, the default before issue 13 too) the yaw-rate slot is recomputed every step as
    ``clip(yaw + heading_gain * heading error, +-max(1, |yaw_range|))``, where the commanded
    heading starts at the start heading and turns at the drawn yaw rate: a robot that drifts off
    course sees it in its observation and is asked to steer back. Eval uses a fixed grid
    (go2train/tools/evaluate.py, docs/EVAL.md), never these ranges."""

    vx_range: list[float] = Field(default_factory=lambda: [-1.0, 1.0])  # m/s, forward (+) / backward
    vy_range: list[float] = Field(default_factory=lambda: [-0.5, 0.5])  # m/s, left (+) / right
    yaw_range: list[float] = Field(default_factory=lambda: [-1.0, 1.0])  # rad/s, counter-clockwise (+)
    standing_share: float = Field(0.1, ge=0.0, le=1.0)  # share of draws that command standing still
    heading: bool = True
    heading_gain: float = Field(0.5, ge=0)
    resample_steps: int = Field(200, ge=1)
    # Command curriculum (training only; docs/ENV.md "Command curriculum"). The ranges drawn from
    # start at the curriculum_*_start ones (forward walking) and widen linearly towards the *_range
    # ones: at level L in [0, 1] each end is start + L * (full - start). Every
    # curriculum_window_steps env steps the level rises by curriculum_step when the robots told to
    # move made at least curriculum_threshold of their commanded speed along the command in that
    # window (all robots, stochastic policy). The level is kept in every checkpoint manifest and
    # chunk record. false = the full ranges from the first step.
    curriculum: bool = True
    curriculum_vx_start: list[float] = Field(default_factory=lambda: [0.3, 0.7])
    curriculum_vy_start: list[float] = Field(default_factory=lambda: [0.0, 0.0])
    curriculum_yaw_start: list[float] = Field(default_factory=lambda: [0.0, 0.0])
    curriculum_threshold: float = Field(0.4, gt=0.0, le=1.0)
    curriculum_step: float = Field(0.05, gt=0.0, le=1.0)
    curriculum_window_steps: int = Field(400, ge=1)

    # every range key and the largest magnitude it may hold (m/s, m/s, rad/s)
    LIMITS: ClassVar[dict[str, float]] = {"vx_range": 3.0, "vy_range": 3.0, "yaw_range": 6.0,
               "curriculum_vx_start": 3.0, "curriculum_vy_start": 3.0, "curriculum_yaw_start": 6.0}

    @model_validator(mode="after")
    def _check_ranges(self) -> "CommandConfig":
        for name in self.LIMITS:
            _check_pair(name, getattr(self, name))
        for name, lim in self.LIMITS.items():
            if max(abs(x) for x in getattr(self, name)) > lim:
                raise ValueError(f"{name} must lie within +-{lim:g}")
        return self

    def start_level(self) -> float:
        """The curriculum level of a fresh run: 0 (the start ranges), or 1 without a curriculum."""
        return 0.0 if self.curriculum else 1.0

    def ranges_at(self, level: float) -> tuple[list[float], list[float], list[float]]:
        """(vx, vy, yaw) ranges drawn from at curriculum ``level`` (clipped to [0, 1]; always the
        full ranges without a curriculum)."""
        lv = 1.0 if not self.curriculum else min(1.0, max(0.0, float(level)))
        pairs = ((self.curriculum_vx_start, self.vx_range), (self.curriculum_vy_start, self.vy_range),
                 (self.curriculum_yaw_start, self.yaw_range))
        return tuple([round(s + lv * (f - s), 6) for s, f in zip(start, full)] for start, full in pairs)  # type: ignore[return-value]


# [env] keys replaced by [command] (issue 13): a config file naming one gets a one-line error
# naming its replacement; a checkpoint manifest's stored config is migrated (see _migrate_legacy).
LEGACY_ENV_KEYS: dict[str, str] = {
    "command_vx": "[command] vx_range",
    "command_vx_range": "[command] vx_range",
    "command_vy": "[command] vy_range",
    "command_yaw": "[command] yaw_range",
    "heading_command": "[command] heading",
    "heading_gain": "[command] heading_gain",
    "resample_command_steps": "[command] resample_steps",
}


def _migrate_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """A stored config from before issue 13 (a checkpoint manifest) in today's keys: the old fixed
    command becomes a one-point range, no standing share. Returns a new dict; ``data`` is untouched."""
    env = data.get("env") if isinstance(data, dict) else None
    if not isinstance(env, dict) or not (set(env) & set(LEGACY_ENV_KEYS)):
        return data
    out = json.loads(json.dumps(data))
    env = out["env"]
    cmd = out.setdefault("command", {})
    if isinstance(cmd, dict):
        vx = env.get("command_vx_range") or [env.get("command_vx", 0.5)] * 2
        cmd.setdefault("vx_range", [float(x) for x in vx])
        cmd.setdefault("vy_range", [float(env.get("command_vy", 0.0))] * 2)
        cmd.setdefault("yaw_range", [float(env.get("command_yaw", 0.0))] * 2)
        cmd.setdefault("standing_share", 0.0)
        cmd.setdefault("curriculum", False)  # it trained on that one command from the first step
        for old, new in (("heading_command", "heading"), ("heading_gain", "heading_gain"),
                         ("resample_command_steps", "resample_steps")):
            if old in env:
                cmd.setdefault(new, env[old])
    for key in LEGACY_ENV_KEYS:
        env.pop(key, None)
    return out


# Renamed or moved keys: (section, key) -> the one line that says what replaced it. A config file
# naming one is refused with that line; a stored config (a checkpoint manifest) is migrated instead.
RENAMED_KEYS: dict[tuple[str, str], str] = {
    ("env", "action_latency"): "[env] action_latency was replaced by [domain_rand] action_latency_steps = [low, high] "
                               "(steps; [1, 1] = the old true, [0, 0] = false)",
    **{("env", old): f"[env] {old} was replaced by {new} (issue 13; docs/ENV.md)" for old, new in LEGACY_ENV_KEYS.items()},
}


class _RewardParams(_Section):
    """[reward]'s keys besides the terms' own (below, from go2train/sim/rewards.py TERMS)."""

    scale_by_dt: bool = True
    tracking_sigma: float = Field(0.25, gt=0)
    # "base": track the command in the robot's own frame (Genesis example); "heading": in the frame
    # of the start heading, so walking in circles at the commanded speed is not paid; "both": the
    # smaller of the heading-frame term and the yaw-frame term (velocity along the robot's own
    # facing), so neither circles nor crab or backward walking along the start heading are paid.
    tracking_frame: Literal["base", "heading", "both"] = "both"

    def term_weights(self) -> dict[str, float]:
        """Weights of all terms, by name, in TERMS (summation) order; a section term's is its section's."""
        return {n: float(getattr(self, n).weight if t.section else getattr(self, n)) for n, t in TERMS.items()}


def _reward_fields() -> dict[str, Any]:
    """[reward]'s term keys from TERMS, in its order: each term's weight, then its params; a section
    term (``[reward.<name>]``) is a sub-model of its params and then its weight."""
    fields: dict[str, Any] = {}
    for name, t in TERMS.items():
        if t.section:
            cls_name = name.title().replace("_", "") + "Reward"
            sub = create_model(cls_name, __base__=_Section, __module__=__name__, __doc__=t.fn.__doc__,
                               **t.params, weight=(float, t.weight))
            globals()[cls_name] = sub  # importable (and picklable) by name, e.g. HeightReward
            fields[name] = (sub, Field(default_factory=sub))
        else:
            fields[name] = (float, t.weight)
            fields.update(t.params)
    return fields


RewardConfig = create_model("RewardConfig", __base__=_RewardParams, __module__=__name__,
                            __doc__="One weight per reward term (go2train/sim/rewards.py TERMS); 0 disables a term.",
                            **_reward_fields())


class TerminationConfig(_Section):
    min_height: float = Field(0.12, ge=0)
    grace_steps: int = Field(20, ge=0)
    grace_min_height: float = Field(0.08, ge=0)
    max_roll_deg: float = Field(10.0, gt=0, le=180)
    max_pitch_deg: float = Field(10.0, gt=0, le=180)


class PPOConfig(_Section):
    learning_rate: float = Field(1e-3, gt=0)
    lr_schedule: Literal["constant", "linear", "adaptive"] = "adaptive"
    lr_min: float = Field(1e-5, gt=0)
    lr_max: float = Field(1e-2, gt=0)
    desired_kl: float = Field(0.01, gt=0)
    schedule_timesteps: int = Field(50_000_000, ge=1)  # horizon of the global linear schedules
    n_steps: int = Field(24, ge=1)
    batch_size: int = Field(1536, ge=1)
    n_epochs: int = Field(5, ge=1)
    gamma: float = Field(0.99, gt=0, le=1)
    gae_lambda: float = Field(0.95, ge=0, le=1)
    clip_range: float = Field(0.2, gt=0)
    ent_coef: float = Field(0.002, ge=0)
    vf_coef: float = Field(1.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    target_kl: float = Field(0.0, ge=0)  # 0 = off (SB3 early stop)
    net_arch: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [128, 128])
    activation: Literal["elu", "relu", "tanh"] = "elu"
    log_std_init: float = 0.0
    # SB3's orthogonal initialisation (output layer gain 0.01: the fresh policy outputs ~0, i.e.
    # stands in the default pose). False = PyTorch's default init, as rsl_rl does.
    ortho_init: bool = True
    normalize_obs: bool = True
    normalize_reward: bool = True
    clip_obs: float = Field(10.0, gt=0)
    # "device": rollouts stay torch tensors on the device (go2train/train/rollout.py); "numpy": SB3's
    # own loop through the VecEnv and VecNormalize (the path before issue 12). Same checkpoints.
    rollout: Literal["device", "numpy"] = "device"
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    # torch intra-op threads for PPO updates. 1 by default: on a small CPU machine the simulator,
    # a renderer or an eval share the cores, and oversubscribed OpenMP threads made updates 10-40x
    # slower in our measurements (docs/TRAINING_LOG.md). 0 = torch's default.
    torch_threads: int = Field(1, ge=0)
    seed: int = Field(0, ge=0, le=2**31 - 1)  # numpy seeds must be >= 0


class ChunkConfig(_Section):
    episodes: int = Field(50, ge=1)
    max_episodes: int = Field(0, ge=0)  # 0 = until stopped
    max_timesteps: int = Field(0, ge=0)  # 0 = no limit; else the run is done after the chunk reaching it
    resume_point_minutes: float = Field(5.0, gt=0)
    heartbeat_s: float = Field(5.0, gt=0, le=10)


class VideoConfig(_Section):
    width: int = Field(1280, ge=16, le=7680)
    height: int = Field(720, ge=16, le=4320)
    fps: int = Field(30, ge=1, le=240)
    steps: int = Field(400, ge=1)
    every_episodes: int = Field(250, ge=0)  # 0 = only the first chunk's video (docs/SUPERVISOR.md)
    timeout_s: float = Field(900.0, gt=0)


class SupervisorConfig(_Section):
    backoff_initial_s: float = Field(2.0, ge=0)
    backoff_max_s: float = Field(300.0, ge=0)
    crash_loop_max: int = Field(5, ge=1)
    crash_loop_window_s: float = Field(600.0, gt=0)
    hang_timeout_s: float = Field(300.0, gt=0)
    startup_timeout_s: float = Field(900.0, gt=0)
    stop_timeout_s: float = Field(60.0, gt=0)
    poll_s: float = Field(0.5, gt=0, le=10)


class LogConfig(_Section):
    """What a run logs beside its run-directory files (go2train/train/tblog.py)."""

    tensorboard: bool = True  # RUN_DIR/logs/tb/: one TensorBoard run per run directory
    wandb: bool = False  # also W&B (needs the wandb package), syncing the TensorBoard files
    wandb_project: str = Field("go2train", min_length=1)


def wandb_installed() -> bool:
    """Whether the ``wandb`` package can be imported (looked up, not imported)."""
    import importlib.util

    return importlib.util.find_spec("wandb") is not None


class Config(_Section):
    _profile: ProfileChoice | None = PrivateAttr(default=None)
    _overrides: tuple[str, ...] = PrivateAttr(default=())
    env: EnvConfig = Field(default_factory=EnvConfig)
    command: CommandConfig = Field(default_factory=CommandConfig)
    reward: RewardConfig = Field(default_factory=RewardConfig)
    termination: TerminationConfig = Field(default_factory=TerminationConfig)
    domain_rand: DomainRandConfig = Field(default_factory=DomainRandConfig)
    ppo: PPOConfig = Field(default_factory=PPOConfig)
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    video: VideoConfig = Field(default_factory=VideoConfig)
    supervisor: SupervisorConfig = Field(default_factory=SupervisorConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    @model_validator(mode="after")
    def _gait_terms_need_a_clock(self) -> "Config":
        if self.env.gait_period_steps == 0:
            for k in (n for n, t in TERMS.items() if t.clock):
                if self.reward.term_weights()[k] != 0.0:
                    raise ValueError(f"[reward] {k} needs a gait clock: set [env] gait_period_steps > 0")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _loc(loc: tuple) -> str:
    parts = [str(p) for p in loc if not isinstance(p, int)]
    idx = [str(p) for p in loc if isinstance(p, int)]
    if not parts:
        return "(top level)"
    key = parts[-1]
    section = ".".join(parts[:-1])
    out = f"[{section}] {key}" if section else key
    if idx:
        out += f"[{idx[0]}]"
    return out


def _absent_terms_off(data: Any) -> Any:
    """A stored config holds every term of its day (``Config.to_dict``): a term it lacks did not
    exist then and did not train it, so its weight is 0 (not today's default)."""
    if not isinstance(data, dict) or not isinstance(data.get("reward"), dict):
        return data
    reward = dict(data["reward"])
    for name, t in TERMS.items():
        if name not in reward:
            reward[name] = {"weight": 0.0} if t.section else 0.0
    return {**data, "reward": reward}


def migrate_stored(data: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint manifest's stored config in today's keys: the [env] command keys of before issue
    13 become ``[command]`` (:func:`_migrate_legacy`); a config stored before ``[domain_rand]`` existed
    trained without randomisation, with ``[env] action_latency`` (default true) = one step; a reward
    term it lacks is off (:func:`_absent_terms_off`)."""
    data = _migrate_legacy(data)
    data = _absent_terms_off(data)
    if not isinstance(data, dict) or not isinstance(data.get("env", {}), dict) or "domain_rand" in data:
        return data
    out = dict(data)
    env = dict(out.get("env", {}))
    latency = env.pop("action_latency", True)
    out["env"] = env
    out["domain_rand"] = DomainRandConfig.off(1 if latency is True else 0).model_dump(mode="json")
    return out


def from_dict(data: dict[str, Any], source: str = "<config>", *, stored: bool = False) -> Config:
    """Validate a plain dict into a :class:`Config`. ``stored``: a checkpoint manifest's config,
    which may predate renamed keys (:func:`migrate_stored`); a config file may not."""
    if stored:
        data = migrate_stored(data)
    for (section, key), line in RENAMED_KEYS.items():
        sec = data.get(section) if isinstance(data, dict) else None
        if isinstance(sec, dict) and key in sec:
            raise ConfigError(f"{source}: {line}")
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "extra_forbidden":
            msg = "unknown key"
        else:
            msg = err.get("msg", "invalid value")
            if "input" in err and not isinstance(err["input"], dict):
                msg += f" (got {err['input']!r})"
        if not [x for x in loc if not isinstance(x, int)]:  # a check across sections names its keys
            raise ConfigError(f"{source}: {msg.removeprefix('Value error, ')}") from None
        raise ConfigError(f"{source}: {_loc(loc)}: {msg}") from None
    if cfg.log.wandb and not cfg.log.tensorboard:
        raise ConfigError(f"{source}: [log] wandb = true needs tensorboard = true (W&B syncs the TensorBoard files)")
    if cfg.log.wandb and not stored and not wandb_installed():  # a stored config only replays a chunk
        raise ConfigError(f"{source}: [log] wandb = true needs the wandb package (pip install wandb)")
    return cfg


def read_toml(path: str | Path | None, run_dir: str | Path | None) -> tuple[dict[str, Any], str]:
    """The plain data of ``path`` (else ``run_dir``'s go2train.toml, else none) and its source name
    ("defaults" when there is no file); one-line :class:`ConfigError` for unreadable or bad TOML."""
    if path is None and run_dir is not None:
        candidate = Path(run_dir) / CONFIG_FILENAME
        if candidate.exists():
            path = candidate
    if path is None:
        return {}, "defaults"
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file ({exc.strerror or exc})") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: not valid TOML ({str(exc).splitlines()[0]})") from None
    return data, str(p)


def resolve(data: dict[str, Any], source: str = "defaults", run_dir: str | Path | None = None,
            gpu: GpuProbe | None = None) -> Config:
    """Validate ``data`` (a config file's contents) and fill the keys it does not set from the
    profile: the run's (``run_dir``'s checkpoints), else this machine's resolved backend."""
    explicit_cfg = from_dict(data, source)  # the file's own errors first, naming the file
    setting = explicit_cfg.env.backend
    if setting == "auto":
        gpu = gpu or detect_gpu()
        backend, reason = ("gpu" if gpu.present else "cpu"), gpu.reason
    else:
        backend, reason = setting, f"set in {source}"
    run = run_profile(run_dir)
    profile = run[0] if run else backend
    merged = json.loads(json.dumps(data))  # deep copy of plain TOML data
    applied: dict[str, Any] = {}
    explicit: list[str] = []
    for key, value in GPU_PROFILE.items():
        if get_key(data, key)[0]:
            explicit.append(key)
            continue
        if (backend if key in MACHINE_KEYS else profile) == "gpu":
            put_key(merged, key, value)
            applied[key] = value
    cfg = (from_dict(merged, f"{source} with the GPU profile ({', '.join(applied)})")
           if applied else explicit_cfg)
    notes = []
    rollout = cfg.ppo.n_steps * cfg.env.n_envs
    if "ppo.batch_size" in applied and cfg.ppo.batch_size * 2 > rollout:
        notes.append(f"note: ppo.batch_size {cfg.ppo.batch_size} gives {max(1, rollout // cfg.ppo.batch_size)} "
                     f"minibatch(es) of a {rollout}-step rollout; set [ppo] batch_size with n_envs")
    cfg._profile = ProfileChoice(setting, backend, reason, profile, run[1] if run else None, applied,
                                 explicit, source, notes)
    return cfg


def profile_of(cfg: Config) -> ProfileChoice | None:
    """How ``cfg``'s backend-aware defaults were chosen; None for a config not made by :func:`load`
    (``Config()``, a manifest's stored config)."""
    return cfg._profile


def _override_value(raw: str) -> Any:
    """A ``--set`` value is a TOML value (``3e-4``, ``true``, ``[0.5, 1.0]``, ``"cpu"``); a bare
    word that is not one is a string (``env.backend=cpu``)."""
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], source: str = "<config>") -> dict[str, Any]:
    """``data`` (a config file's contents) with ``--set section.key=value`` items applied in order,
    each validated like the file (:func:`from_dict`): the first bad one raises a one-line
    :class:`ConfigError` that names it, e.g. ``--set ppo.lr=3e-4: [ppo] lr: unknown key``. The
    file's own errors come first, naming the file. ``data`` is not changed."""
    out = json.loads(json.dumps(data))  # deep copy of plain TOML data
    if overrides:
        from_dict(out, source)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or len(parts) < 2 or not all(p.strip() for p in parts):
            raise ConfigError(f"--set {item}: expected section.key=value, e.g. ppo.learning_rate=3e-4")
        found, parent = get_key(out, ".".join(parts[:-1]))
        if found and not isinstance(parent, dict):
            raise ConfigError(f"--set {item}: {'.'.join(parts[:-1])} is a key, not a section")
        put_key(out, key, _override_value(raw.strip()))
        from_dict(out, f"--set {item}")
    return out


def load(path: str | Path | None = None, run_dir: str | Path | None = None, *, gpu: GpuProbe | None = None,
         overrides: Sequence[str] = ()) -> Config:
    """Load the effective config: ``path``, else ``run_dir/go2train.toml``, else defaults, then the
    ``--set`` ``overrides`` (:func:`apply_overrides`; they count as set explicitly); keys still not
    set take the profile's value (:func:`resolve`)."""
    data, source = read_toml(path, run_dir)
    if overrides:
        data = apply_overrides(data, overrides, source)
        source = f"{source} + --set {' '.join(overrides)}"
    cfg = resolve(data, source, run_dir, gpu)
    cfg._overrides = tuple(overrides)
    return cfg


def overrides_of(cfg: Config) -> tuple[str, ...]:
    """The ``--set`` items :func:`load` applied to ``cfg`` (empty for a config from a file alone)."""
    return cfg._overrides
