"""The reward terms: one function per term, each registered with its default weight in :data:`TERMS`.

A term is a function of the env returning one value per robot (a tensor of size ``n_envs``), as
Genesis's ``examples/locomotion/go2_env.py`` ``_reward_<name>`` methods. The env multiplies it by
its weight (``[reward] <name>``; 0 switches it off: it is not even computed) and by ``dt`` when
``[reward] scale_by_dt``, and sums the terms in :data:`TERMS` order.

Adding a term is one edit, here::

    @term(weight=-0.5)
    def base_roll(env):
        \"\"\"Squared roll angle (deg).\"\"\"
        return env.base_euler[:, 0].square()

go2train/config.py builds ``[reward]`` from :data:`TERMS`: a float key per term with its default
weight, plus the keys a term declares in ``params`` (pydantic field specs); ``section=True`` puts
the weight and the params in a sub-table ``[reward.<name>]`` (the height term). ``clock=True``: the
term needs the gait clock (a weight without ``[env] gait_period_steps`` is a config error);
``contacts=True``: the env updates foot contacts and air times before the terms run.

This module imports no torch (config.py, which the supervisor imports, reads the table): the terms
use tensor methods; a term that needs a torch function imports torch inside itself. Append new
terms at the end: the table's order is the summation order, and reordering it changes the rewards
in the last bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from pydantic import Field

if TYPE_CHECKING:
    import torch

    from go2train.sim.env import Go2Env


@dataclass(frozen=True)
class Term:
    """A registered reward term."""

    name: str
    fn: Callable[[Go2Env], torch.Tensor]
    weight: float  # default weight
    params: dict[str, Any] = field(default_factory=dict)  # its own [reward] keys: name -> (type, default | Field)
    section: bool = False  # weight and params in [reward.<name>]
    clock: bool = False  # needs the gait clock
    contacts: bool = False  # reads env.last_contacts / first_contact / touchdown_air_time


TERMS: dict[str, Term] = {}


def term(weight: float, *, params: dict[str, Any] | None = None, section: bool = False, clock: bool = False,
         contacts: bool = False) -> Callable:
    """Register the decorated function as the reward term of its name, with its default ``weight``."""

    def register(fn: Callable) -> Callable:
        if not (fn.__doc__ or "").strip():
            raise TypeError(f"reward term {fn.__name__} needs a docstring (docs/ENV.md's table)")
        if fn.__name__ in TERMS:
            raise ValueError(f"reward term {fn.__name__} registered twice")
        TERMS[fn.__name__] = Term(fn.__name__, fn, float(weight), dict(params or {}), section, clock, contacts)
        return fn

    return register


# ---------------------------------------------------------------- helpers (not terms)
def moving(env: Go2Env) -> torch.Tensor:
    """Robots told to move: |cmd_xy| or the drawn yaw rate above MOVE_EPS (a turn on the spot steps;
    the heading correction alone does not). The gait terms pay and cost nothing to the others."""
    return (env.commands[:, :2].norm(dim=1) > env.MOVE_EPS) | (env.yaw_command.abs() > env.MOVE_EPS)


def _track(env: Go2Env, vel: torch.Tensor) -> torch.Tensor:
    err = (env.commands[:, :2] - vel[:, :2]).square().sum(dim=1)
    return (-err / env.cfg.reward.tracking_sigma).exp()


# ---------------------------------------------------------------- terms, in summation order
@term(weight=2.0)
def tracking_lin_vel(env: Go2Env) -> torch.Tensor:
    """exp(-|cmd_xy - v_xy|^2 / sigma), v in the frame [reward] tracking_frame: base, heading or both (the smaller)."""
    frame = env.cfg.reward.tracking_frame
    if frame == "base":
        return _track(env, env.base_lin_vel)
    heading = _track(env, env.heading_velocity())
    if frame == "heading":
        return heading
    return heading.minimum(_track(env, env.own_velocity()))


@term(weight=0.2)
def tracking_ang_vel(env: Go2Env) -> torch.Tensor:
    """exp(-(yaw slot - w_z)^2 / sigma): the observed yaw-rate command, heading correction included."""
    err = (env.commands[:, 2] - env.base_ang_vel[:, 2]).square()
    return (-err / env.cfg.reward.tracking_sigma).exp()


@term(weight=-1.0)
def lin_vel_z(env: Go2Env) -> torch.Tensor:
    """Squared vertical base velocity."""
    return env.base_lin_vel[:, 2].square()


@term(weight=-0.005)
def action_rate(env: Go2Env) -> torch.Tensor:
    """Squared change of the action since the last step."""
    return (env.last_actions - env.actions).square().sum(dim=1)


@term(weight=-0.1)
def similar_to_default(env: Go2Env) -> torch.Tensor:
    """Sum of |joint position - default pose|."""
    return (env.dof_pos - env.default_dof_pos).abs().sum(dim=1)


@term(weight=0.0)
def forward_progress(env: Go2Env) -> torch.Tensor:
    """Speed along the command (commanded-heading frame), capped at the commanded speed; 0 standing."""
    cmd = env.commands[:, :2]
    speed = cmd.norm(dim=1)
    along = (env.heading_velocity() * cmd).sum(1) / speed.clamp_min(1e-6)
    return along.minimum(speed)


@term(weight=0.0, contacts=True,
      params={"feet_air_time_target": (float, Field(0.5, ge=0))})  # s; swings shorter than this are penalised
def feet_air_time(env: Go2Env) -> torch.Tensor:
    """legged_gym's swing reward: at each touchdown, air time - feet_air_time_target; only while moving."""
    air = env.touchdown_air_time - env.cfg.reward.feet_air_time_target
    return (air * env.first_contact).sum(dim=1) * moving(env)


@term(weight=0.5, clock=True, contacts=True)
def gait_contact(env: Go2Env) -> torch.Tensor:
    """Fraction of feet whose contact agrees with the trot clock's stance/swing; only while moving."""
    stance, _ = env.trot_schedule()
    return (env.last_contacts == stance).float().mean(dim=1) * moving(env)


@term(weight=-20.0, clock=True,
      params={"swing_height": (float, Field(0.08, gt=0, le=0.3))})  # m, peak foot clearance of a swing
def feet_swing_height(env: Go2Env) -> torch.Tensor:
    """Sum over feet of (clearance - swing_height * sin(pi * swing progress))^2; only while moving."""
    _, swing = env.trot_schedule()
    target = env.cfg.reward.swing_height * (math.pi * swing).sin()
    return (env.foot_clearance() - target).square().sum(dim=1) * moving(env)


@term(weight=0.0)
def alive(env: Go2Env) -> torch.Tensor:
    """1 per step."""
    return env.rew_buf.new_ones(env.rew_buf.shape)


@term(weight=2.5, section=True, params={
    "target": (float, Field(0.27, gt=0)),
    "floor": (float, Field(0.15, ge=0)),
    "floor_penalty": (float, -10.0),
    "sharpness": (float, Field(5.0, gt=0)),
})
def height(env: Go2Env) -> torch.Tensor:
    """Seed 004: floor_penalty below floor, else exp(-sharpness * |z - target|) ([reward.height])."""
    h = env.cfg.reward.height
    z = env.base_pos[:, 2]
    return (-h.sharpness * (z - h.target).abs()).exp().masked_fill(z < h.floor, h.floor_penalty)


@term(weight=1.0, clock=True)
def swing_clearance(env: Go2Env) -> torch.Tensor:
    """Mean over the clock's swing feet of min(clearance / swing_height, 1): pays foot height in swing, capped; only while moving."""
    stance, _ = env.trot_schedule()
    swing = (~stance).float()
    paid = (env.foot_clearance() / env.cfg.reward.swing_height).clamp(0.0, 1.0)
    return (paid * swing).sum(dim=1) / swing.sum(dim=1).clamp_min(1.0) * moving(env)
