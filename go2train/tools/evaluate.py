"""`go2train eval`: measure what a checkpoint's policy does, and whether it walks.

:func:`evaluate` loads one chunk checkpoint with the exact config stored in its manifest and runs
it on a fixed **command grid** (:data:`GRID`: forward 0.3/0.6/1.0, backward 0.5, sideways +-0.3,
turn +-0.8 rad/s, stand still): ``K`` robots per grid command, all in one batched scene
(``n_envs = 9 K``), each for exactly ONE full-length episode (``[env] episode_steps`` steps; a
robot that terminates stops counting: it fell), with its command fixed (``Go2Env.set_commands``),
deterministic actions and VecNormalize in eval mode. Per command it reports the achieved vx, vy,
yaw rate, the tracking errors, survival and tilt, and a summary; the detailed figures (height,
tilt, feet, gait) are those of the reference command (forward 0.6). A zero-action (stand-still)
baseline runs the same grid in the same scene; a **lazy optimum** (:func:`is_lazy_optimum`) is
flagged when the policy earns at least the baseline's reward on the reference command while
moving forward slower than half of it (per command: :func:`is_lazy_command`).

Every figure is defined in docs/EVAL.md; ``go2train eval`` also writes them into the run's
TensorBoard (``eval/*`` at the checkpoint's timesteps, go2train/train/tblog.py). Genesis initialises once per process and scenes are
expensive, so scenes are cached per process (:data:`_SCENES`): evaluating several chunks (``--compare``)
rebuilds a scene only when the stored ``[env]`` section differs; the baseline is computed once per
distinct (config, K).

:func:`resolve_chunk` / :func:`resolve_chunks` check the request (chunk exists, files match their
checksums, config loads) without importing torch or genesis, so bad input fails fast with one line.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from go2train.config import Config, ConfigError, DomainRandConfig, from_dict
from go2train.robot import LEGS
from go2train.run import checkpoint
from go2train.run.layout import RunDir, chunk_name

AIR_THRESHOLD_M = 0.03  # a foot is "in the air" when its clearance exceeds this
LAZY_SPEED_FRACTION = 0.5  # lazy optimum: forward speed below this fraction of the command
PUSH_VEL, PUSH_INTERVAL_S, PUSH_COUNT = 0.5, 4.0, 4  # `eval --push`: 4 kicks of 0.5 m/s, 4 s apart
REWARD_TOL = 1e-6  # relative tolerance when comparing the policy's reward with the baseline's
# Runtime-only [env] keys: they do not change the scene, so a cached scene is reused across them.
_RUNTIME_ENV_KEYS = ("episode_steps",)


class EvalError(Exception):
    """A request eval cannot serve. ``str(err)`` is one line (bad chunk, damaged checkpoint...)."""


# ---------------------------------------------------------------- resolving (no torch/genesis)
def parse_chunk(value: str, option: str = "--chunk") -> int | str:
    """``"latest"`` or a non-negative integer (``"50"``); anything else raises EvalError."""
    want = checkpoint.parse_chunk_arg(value)
    if want is None:
        raise EvalError(f"{option} takes integer chunk milestones or 'latest', got {value!r}")
    return want


def resolve_chunk(run_dir: str | Path, chunk: int | str) -> dict[str, Any]:
    """The verified manifest of ``chunk`` (an int or ``"latest"``), or EvalError (one line).

    ``latest`` is the newest chunk whose files verify; damaged newer ones are skipped (the worker
    moves them aside; eval only reads). An explicit damaged chunk is an error naming it.
    (:func:`go2train.run.checkpoint.resolve_chunk` chooses; this words eval's errors.)
    """
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir.at(run_dir)
    if isinstance(chunk, str):
        chunk = parse_chunk(chunk)
    try:
        manifest, skipped = checkpoint.resolve_chunk(rd, chunk)
    except checkpoint.NoSuchChunk as exc:
        avail = (f"available: {', '.join(map(str, exc.available))}" if exc.available
                 else f"no chunk checkpoints in {rd.models}")
        if chunk != "latest":
            raise EvalError(f"chunk {chunk} not found in {rd.models}; {avail}") from None
        if not exc.available:
            raise EvalError(f"no chunk checkpoints in {rd.models}") from None
        raise EvalError(f"every chunk checkpoint in {rd.models} is damaged (newest: {exc.damaged[0]})") from None
    except checkpoint.DamagedCheckpoint as exc:
        raise EvalError(f"checkpoint {chunk_name(int(chunk))} is damaged: {exc}") from None
    manifest["_skipped_damaged"] = skipped
    _check_config(manifest)
    return manifest


def resolve_chunks(run_dir: str | Path, chunks: list[int | str]) -> list[dict[str, Any]]:
    return [resolve_chunk(run_dir, c) for c in chunks]


def _check_config(manifest: dict[str, Any]) -> Config:
    name = manifest.get("name", "?")
    if not isinstance(manifest.get("config"), dict):
        raise EvalError(f"checkpoint {name} is damaged: its manifest stores no config")
    try:
        return from_dict(manifest["config"], f"{name}.json config", stored=True)
    except ConfigError as exc:
        raise EvalError(f"checkpoint {name}: stored config does not load: {exc}") from None


# ---------------------------------------------------------------- the lazy-optimum rule
def is_lazy_optimum(policy_figs: dict[str, Any], baseline_figs: dict[str, Any], cmd: float) -> bool:
    """The seeds' reward hack: the policy earns at least the stand-still baseline's reward while its
    forward speed (heading frame, in the command's direction) is below half the command.

    ``cmd == 0`` (nothing to walk towards) or a missing figure: False. The reward comparison
    tolerates float noise (``REWARD_TOL``, relative), so a policy that *is* the baseline fires.
    """
    try:
        cmd = float(cmd)
        r_pol, r_base = float(policy_figs["reward"]), float(baseline_figs["reward"])
        speed = float(policy_figs["forward_speed"])
    except (KeyError, TypeError, ValueError):
        return False
    if not all(math.isfinite(x) for x in (cmd, r_pol, r_base, speed)) or cmd == 0.0:
        return False
    earns_as_much = r_pol >= r_base - REWARD_TOL * max(1.0, abs(r_base))
    progress = speed * math.copysign(1.0, cmd)
    slow = progress < LAZY_SPEED_FRACTION * abs(cmd)
    return bool(earns_as_much and slow)


# ---------------------------------------------------------------- gait pattern
class _GaitSync:
    """Which feet move together: the Pearson correlation of two feet's clearance over an episode,
    per robot, averaged over robots (alive steps only). A trot lifts diagonal feet together and
    alternates the two feet of a pair: ``diagonal_sync`` near +1, ``pair_sync`` (front pair and
    rear pair) near -1. A shuffle or a vibration has no such structure (both near 0); a pronk or
    bound has a positive pair correlation."""

    DIAGONAL = ((0, 3), (1, 2))  # FR-RL, FL-RR
    PAIRS = ((0, 1), (2, 3))  # FR-FL, RR-RL
    MIN_STD = 0.005  # m: a foot whose clearance varies less than this does not step (counts 0)

    def __init__(self, n: int, dev) -> None:
        import torch

        z = lambda *shape: torch.zeros(shape, device=dev, dtype=torch.float64)  # noqa: E731
        self.n, self.s1, self.s2, self.sxy = z(n), z(n, 4), z(n, 4), z(n, 4)

    def add(self, c, m) -> None:
        c, m = c.double(), m.double()
        self.n += m
        self.s1 += c * m[:, None]
        self.s2 += c * c * m[:, None]
        for k, (i, j) in enumerate(self.DIAGONAL + self.PAIRS):
            self.sxy[:, k] += c[:, i] * c[:, j] * m

    def figures(self, mask=None) -> dict[str, float | None]:
        import torch

        ok = self.n >= 25  # at least half a second of samples
        if mask is not None:
            ok = ok & mask
        if not bool(ok.any()):
            return {"diagonal_sync": None, "pair_sync": None}
        n = self.n[ok][:, None]
        mean, sxy = self.s1[ok] / n, self.sxy[ok] / n
        var = (self.s2[ok] / n - mean**2).clamp_min(0.0)
        corr = []
        for k, (i, j) in enumerate(self.DIAGONAL + self.PAIRS):
            den = torch.sqrt(var[:, i] * var[:, j])
            cov = sxy[:, k] - mean[:, i] * mean[:, j]
            moves = (var[:, i] > self.MIN_STD**2) & (var[:, j] > self.MIN_STD**2)
            corr.append(torch.where(moves, cov / den.clamp_min(1e-12), torch.zeros_like(den)))
        corr = torch.stack(corr, 1)  # (robots, 4)
        return {"diagonal_sync": float(corr[:, :2].mean()), "pair_sync": float(corr[:, 2:].mean())}


# ---------------------------------------------------------------- the command grid
# Issue 13: eval runs every checkpoint on one fixed grid of commands (vx m/s, vy m/s, yaw rate
# rad/s), whatever [command] ranges it trained with (docs/EVAL.md). The reference command carries
# the detailed figures (height, tilt, feet, gait) and the classic lazy-optimum check.
GRID: tuple[tuple[str, tuple[float, float, float]], ...] = (
    ("forward 0.3", (0.3, 0.0, 0.0)),
    ("forward 0.6", (0.6, 0.0, 0.0)),
    ("forward 1.0", (1.0, 0.0, 0.0)),
    ("backward 0.5", (-0.5, 0.0, 0.0)),
    ("left 0.3", (0.0, 0.3, 0.0)),
    ("right 0.3", (0.0, -0.3, 0.0)),
    ("turn left 0.8", (0.0, 0.0, 0.8)),
    ("turn right 0.8", (0.0, 0.0, -0.8)),
    ("stand still", (0.0, 0.0, 0.0)),
)
REFERENCE = "forward 0.6"
MOVE_EPS = 0.1  # a command component smaller than this asks for nothing (as Go2Env.MOVE_EPS)


Grid = Sequence[tuple[str, tuple[float, float, float]]]


def command_grid(commands: Sequence[Sequence[float]] | None) -> tuple[Grid, str]:
    """The grid and its reference command: :data:`GRID` and :data:`REFERENCE`, or (``eval
    --command``) the given commands, named by their values, the first one the reference."""
    if not commands:
        return GRID, REFERENCE
    grid = tuple((f"command {c[0]:+.2f},{c[1]:+.2f},{c[2]:+.2f}", (float(c[0]), float(c[1]), float(c[2])))
                 for c in commands)
    return tuple(dict(grid).items()), grid[0][0]


def parse_command(value: str) -> tuple[float, float, float]:
    """``--command "vx,vy,yaw"`` (m/s, m/s, rad/s; ``"0.5"`` = forward only); EvalError (one line) otherwise."""
    try:
        parts = [float(x) for x in str(value).split(",")]
    except ValueError:
        parts = []
    if not 1 <= len(parts) <= 3 or not all(math.isfinite(x) and abs(x) <= 6.0 for x in parts):
        raise EvalError(f"--command takes vx,vy,yaw (m/s, m/s, rad/s; each within +-6), got {value!r}")
    return tuple(parts + [0.0] * (3 - len(parts)))  # type: ignore[return-value]


def grid_commands(per_command: int, grid: Grid = GRID) -> list[tuple[float, float, float]]:
    """One command per robot: ``per_command`` robots for each grid command, in grid order."""
    return [cmd for _, cmd in grid for _ in range(per_command)]


def grid_summary(rows: list[dict[str, Any]], reference: str = REFERENCE) -> dict[str, Any]:
    """The grid in a few figures: mean linear tracking error over the moving commands (all but
    stand still), mean yaw-rate error over the turns, the command with the largest linear error,
    the least progress along any moving command (:func:`command_progress`) and which, the lowest
    survival, the reference command's achieved vx and the commands flagged lazy."""
    moving = [r for r in rows if r["name"] != "stand still"]
    turns = [r for r in rows if abs(r["command"][2]) > MOVE_EPS]
    worst = max(moving, key=lambda r: r["lin_error"]) if moving else None
    ref = next((r for r in rows if r["name"] == reference), None)
    prog = [(p, r["name"]) for r in moving if (p := command_progress(r)) is not None]
    least = min(prog) if prog else (None, None)
    return {
        "progress_min": least[0],
        "progress_min_command": least[1],
        "lin_error_moving": sum(r["lin_error"] for r in moving) / len(moving) if moving else None,
        "yaw_error_turning": sum(r["yaw_error"] for r in turns) / len(turns) if turns else None,
        "worst_command": worst and worst["name"],
        "worst_lin_error": worst and worst["lin_error"],
        "survival_min": min(r["survival"] for r in rows) if rows else None,
        "reference_vx": ref and ref["vx"],
        "lazy_commands": [r["name"] for r in rows if r.get("lazy")],
    }


def command_progress(row: dict[str, Any]) -> float | None:
    """How much of a grid command a row achieved, as a fraction: the speed along cmd_xy over
    |cmd_xy| for a translation, the yaw rate in the turn's direction over |yaw| for a turn; None
    for stand still or a missing figure."""
    try:
        vx, vy, yaw = (float(x) for x in row["command"])
        speed = math.hypot(vx, vy)
        if speed > MOVE_EPS:
            out = (row["vx"] * vx + row["vy"] * vy) / speed / speed
        elif abs(yaw) > MOVE_EPS:
            out = row["yaw_rate"] * math.copysign(1.0, yaw) / abs(yaw)
        else:
            return None
    except (KeyError, TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def is_lazy_command(row: dict[str, Any], base: dict[str, Any]) -> bool:
    """The lazy-optimum rule for one grid command: the policy earns at least the stand-still
    baseline's reward on it while its progress along the command (:func:`command_progress`) is
    below half of it. Stand still: never."""
    progress = command_progress(row)
    try:
        r_pol, r_base = float(row["reward"]), float(base["reward"])
    except (KeyError, TypeError, ValueError):
        return False
    if progress is None or not all(math.isfinite(x) for x in (r_pol, r_base)):
        return False
    return bool(r_pol >= r_base - REWARD_TOL * max(1.0, abs(r_base)) and progress < LAZY_SPEED_FRACTION)


# ---------------------------------------------------------------- scene cache
_SCENES: dict[str, Any] = {}
_BASELINES: dict[str, dict[str, Any]] = {}


def _eval_config(stored: dict[str, Any], episodes: int, n_commands: int = len(GRID)) -> Config:
    """The stored config with one robot per (grid command, episode)."""
    cfg = from_dict(copy.deepcopy(stored))
    cfg.env.n_envs = int(episodes) * n_commands
    return cfg


def _scene_key(cfg: Config) -> str:
    env = cfg.env.model_dump(mode="json")
    for k in _RUNTIME_ENV_KEYS:
        env.pop(k, None)
    env["_batched"] = [cfg.domain_rand.batched_dofs(), cfg.domain_rand.batched_links()]  # fixed at build
    return json.dumps(env, sort_keys=True)


def _get_env(cfg: Config):
    """The Go2Env for ``cfg``'s [env] section, built once per process per distinct section."""
    from go2train.sim.env import Go2Env

    key = _scene_key(cfg)
    if key not in _SCENES:
        _SCENES[key] = Go2Env(cfg)
    return _SCENES[key]


def _prepare(env, cfg: Config, commands) -> Any:
    """Bind ``cfg`` (reward, termination, command mode, runtime env keys) to a cached scene, fix
    each robot's command (``commands``: one (vx, vy, yaw) per robot, or one for all) and start every
    robot from the scene's initial state: each pass begins identically, whatever ran before."""
    env.cfg = cfg
    env._setup_rewards()
    env._alloc_buffers()
    env.invalid_count = 0
    env.scene.reset()
    env.set_commands(commands)
    return env.reset()


# ---------------------------------------------------------------- one pass
def _run_pass(env, cfg: Config, steps: int, commands, act=None) -> dict[str, Any]:
    """Run every robot for ``steps`` steps with its fixed command (``commands``: (vx, vy, yaw) per
    robot, or one for all); ``act(obs_tensor) -> actions`` (None: zero actions). Returns per-robot
    sums (:func:`_figures` and :func:`_grid_rows` turn them into figures)."""
    import torch

    n, dev, f = env.n_envs, env.device, torch.float32
    obs = _prepare(env, cfg, commands)
    cmd = env.fixed_commands.clone()  # (n, 3)
    zeros = torch.zeros((n, env.num_actions), device=dev, dtype=f)
    alive = torch.ones(n, dtype=torch.bool, device=dev)
    fell = torch.zeros(n, dtype=torch.bool, device=dev)
    alive_steps = torch.zeros(n, device=dev, dtype=torch.int64)
    ep_len = torch.full((n,), steps, device=dev, dtype=torch.int64)
    ep_ret = torch.zeros(n, device=dev, dtype=f)
    names = list(env.episode_terms)
    ep_terms = torch.zeros((n, len(names)), device=dev, dtype=f)
    disp = torch.zeros((n, 2), device=dev, dtype=f)  # last alive (x, y) displacement
    start_xy = env.base_pos[:, :2].clone()

    s = {k: torch.zeros((n,), device=dev, dtype=torch.float64) for k in
         ("speed", "vy", "yaw", "lin_err", "yaw_err", "h", "h2", "tilt", "smooth", "smooth_n",
          "swing_c", "swing_n", "max_c")}
    air_steps = torch.zeros((n, 4), device=dev)  # in-air samples after the foot first landed
    foot_steps = torch.zeros((n, 4), device=dev)  # samples after the foot first landed
    landed = torch.zeros((n, 4), dtype=torch.bool, device=dev)
    streak = torch.zeros((n, 4), device=dev)  # current air streak (steps)
    swing_steps = torch.zeros((n, 4), device=dev)  # steps of completed swings
    touchdowns = torch.zeros((n, 4), device=dev)
    swing_peak = torch.zeros((n, 4), device=dev)  # highest clearance of the current swing
    swing_peaks, swing_rob = [], []  # peak of every completed swing, and its robot
    gait = _GaitSync(n, dev)
    prev_act = None

    for t in range(steps):
        a = zeros if act is None else act(obs)
        res = env.step(a)
        obs = res.obs  # the policy acts on each step's observation
        term = res.terminated.to(dev)
        new_dead = alive & term
        if bool(new_dead.any()):
            # Their state was reset by the env; the episode's sums come from its report.
            done = res.done_idx.tolist()
            pos = {int(i): j for j, i in enumerate(done)}
            for i in new_dead.nonzero().flatten().tolist():
                j = pos[i]
                ep_ret[i] = res.episodes["r"][j]
                ep_len[i] = res.episodes["l"][j]
                disp[i, 0] = res.episodes["dist"][j]
                for k, name in enumerate(names):
                    ep_terms[i, k] = res.episodes["terms"][name][j]
            fell |= new_dead
        alive = alive & ~term
        if not bool(alive.any()):
            break
        m = alive.to(f)
        alive_steps += alive.to(torch.int64)
        v = env.own_velocity()  # along the robot's own facing: what vx, vy ask for
        w = env.base_ang_vel[:, 2]
        z = env.base_pos[:, 2]
        tilt = torch.sqrt(env.base_euler[:, 0] ** 2 + env.base_euler[:, 1] ** 2)
        s["speed"] += env.heading_speed * m
        s["vy"] += v[:, 1] * m
        s["yaw"] += w * m
        s["lin_err"] += torch.norm(cmd[:, :2] - v, dim=1) * m
        s["yaw_err"] += (cmd[:, 2] - w).abs() * m
        s["h"] += z * m
        s["h2"] += z.double() ** 2 * m
        s["tilt"] += tilt * m
        cur = env.actions.clone()
        if prev_act is not None:
            s["smooth"] += ((cur - prev_act) ** 2).mean(1) * m
            s["smooth_n"] += m
        prev_act = cur
        d = env.base_pos[:, :2] - start_xy
        disp[alive] = d[alive]

        c = env.foot_clearance()
        in_air = c > AIR_THRESHOLD_M
        am = alive[:, None].expand_as(in_air)
        landed |= (~in_air) & am
        gait.add(c, m * landed.all(1).to(f))  # from the moment all four feet are down (not the spawn drop)
        track = landed & am  # count a foot once it has touched down (skips the spawn drop)
        foot_steps += track.float()
        air_steps += (track & in_air).float()
        s["swing_c"] += (c * (track & in_air)).sum(1)
        s["swing_n"] += (track & in_air).sum(1)
        s["max_c"] = torch.maximum(s["max_c"], (c * track).max(1).values.double())
        touch = track & ~in_air & (streak > 0)
        touchdowns += touch.float()
        swing_steps += torch.where(touch, streak, torch.zeros_like(streak))
        swing_peaks.append(swing_peak[touch])
        swing_rob.append(touch.nonzero()[:, 0])  # the robot of each peak (same row-major order)
        swing_peak = torch.where(track & in_air, torch.maximum(swing_peak, c), torch.zeros_like(swing_peak))
        streak = torch.where(track & in_air, streak + 1, torch.zeros_like(streak))

    # Survivors: their episode sums are the env's running totals (no truncation was reached).
    surv = ~fell
    ep_ret[surv] = env.episode_return[surv]
    for k, name in enumerate(names):
        ep_terms[surv, k] = env.episode_terms[name][surv]
    return {"s": s, "cmd": cmd, "alive_steps": alive_steps, "ep_len": ep_len, "ep_ret": ep_ret, "names": names,
            "ep_terms": ep_terms, "disp": disp, "surv": surv, "air_steps": air_steps, "foot_steps": foot_steps,
            "touchdowns": touchdowns, "swing_steps": swing_steps, "gait": gait, "dt": env.dt,
            "swing_peaks": torch.cat(swing_peaks) if swing_peaks else torch.zeros(0, device=dev),
            "swing_rob": torch.cat(swing_rob) if swing_rob else torch.zeros(0, dtype=torch.long, device=dev),
            "invalid": int(env.invalid_count)}


def _swing_clearance(P: dict[str, Any], mask) -> float | None:
    """Median over the completed swings of the robots in ``mask`` of each swing's peak foot height (m)."""
    peaks = P["swing_peaks"][mask[P["swing_rob"]]]
    return float(peaks.median()) if peaks.numel() else None


def _figures(P: dict[str, Any], mask) -> dict[str, Any]:
    """The detailed figures (docs/EVAL.md) over the robots in ``mask``."""
    import torch

    s = {k: v[mask] for k, v in P["s"].items()}
    f = torch.float32
    dt = P["dt"]
    total = float(P["alive_steps"][mask].sum())
    tot = max(total, 1.0)
    mean_h = float(s["h"].sum()) / tot
    var_h = max(float(s["h2"].sum()) / tot - mean_h**2, 0.0)
    fs = P["foot_steps"][mask].sum(0)
    air = P["air_steps"][mask]
    air_frac = {leg: float(air[:, i].sum() / fs[i]) if fs[i] > 0 else None for i, leg in enumerate(LEGS)}
    fracs = [v for v in air_frac.values() if v is not None]
    n_td = float(P["touchdowns"][mask].sum())
    foot_total = float(P["foot_steps"][mask].sum())
    alive_time = P["ep_len"][mask].to(f) * dt
    disp = P["disp"][mask]
    ep_terms = P["ep_terms"][mask]
    swing_n, smooth_n = float(s["swing_n"].sum()), float(s["smooth_n"].sum())
    return {
        "forward_speed": float(s["speed"].sum()) / tot,
        "displacement_speed": float((disp[:, 0] / alive_time).mean()),
        "tracking_error": float(s["lin_err"].sum()) / tot,
        "survival": float(P["surv"][mask].to(f).mean()),
        "time_alive_s": float(alive_time.mean()),
        "base_height_mean": mean_h,
        "base_height_std": math.sqrt(var_h),
        "tilt_deg": float(s["tilt"].sum()) / tot,
        "distance_m": float(disp[:, 0].mean()),
        "lateral_drift_m": float(disp[:, 1].abs().mean()),
        "foot_air_fraction": sum(fracs) / len(fracs) if fracs else None,
        "foot_air_fraction_per_foot": air_frac,
        "foot_clearance_swing_m": float(s["swing_c"].sum()) / swing_n if swing_n > 0 else 0.0,
        "foot_clearance_max_m": float(s["max_c"].max()),
        "swing_clearance_m": _swing_clearance(P, mask),
        "air_time_per_swing_s": float(P["swing_steps"][mask].sum()) * dt / n_td if n_td > 0 else None,
        "touchdowns_per_s": n_td / (foot_total * dt / 4.0) if foot_total > 0 else 0.0,
        "action_smoothness": float(s["smooth"].sum()) / smooth_n if smooth_n > 0 else 0.0,
        **P["gait"].figures(mask),
        "reward": float(P["ep_ret"][mask].mean()),
        "reward_terms": {name: float(ep_terms[:, k].mean()) for k, name in enumerate(P["names"])},
        "invalid_resets": P["invalid"],
    }


def _grid_rows(P: dict[str, Any], per_command: int, grid: Grid = GRID) -> list[dict[str, Any]]:
    """One row per grid command: achieved vx, vy (own frame, m/s), yaw rate (rad/s), the tracking
    errors |cmd_xy - v_xy| and |cmd_yaw - w_z| (means over alive samples), survival, tilt, reward."""
    rows = []
    s = P["s"]
    for g, (name, cmd) in enumerate(grid):
        sl = slice(g * per_command, (g + 1) * per_command)
        tot = max(float(P["alive_steps"][sl].sum()), 1.0)
        mean = lambda k: float(s[k][sl].sum()) / tot  # noqa: E731
        rows.append({
            "name": name, "command": list(cmd),
            "vx": mean("speed"), "vy": mean("vy"), "yaw_rate": mean("yaw"),
            "lin_error": mean("lin_err"), "yaw_error": mean("yaw_err"),
            "survival": float(P["surv"][sl].float().mean()), "tilt_deg": mean("tilt"),
            "reward": float(P["ep_ret"][sl].mean()),
        })
    return rows


def _group_mask(P: dict[str, Any], name: str, per_command: int, grid: Grid = GRID):
    import torch

    g = [n for n, _ in grid].index(name)
    mask = torch.zeros(P["surv"].shape[0], dtype=torch.bool, device=P["surv"].device)
    mask[g * per_command : (g + 1) * per_command] = True
    return mask


# ---------------------------------------------------------------- loading the policy
def _load_policy(rd: RunDir, manifest: dict[str, Any], cfg: Config, env):
    """SB3 model + VecNormalize (eval mode) by :func:`go2train.train.ppo.load_policy`, the loader
    the worker uses too; returns act(obs). EvalError (one line) when the checkpoint does not load."""
    import torch

    from go2train.sim.vecenv import Go2VecEnv
    from go2train.train.ppo import ObservationMismatch, load_policy

    name = manifest.get("name", "?")
    try:
        model, vn = load_policy(rd, manifest, cfg, Go2VecEnv(env))
    except ObservationMismatch as exc:
        raise EvalError(f"checkpoint {name}: policy expects {exc.policy} observations, "
                        f"the stored config gives {exc.expected}") from None
    except Exception as exc:  # noqa: BLE001 - a checkpoint that does not load is damaged
        raise EvalError(f"checkpoint {name} does not load: {type(exc).__name__}: {exc}") from None

    def act(obs):
        o = vn.normalize_obs(obs.detach().to("cpu").numpy())
        a, _ = model.predict(o, deterministic=True)
        return torch.as_tensor(a, dtype=torch.float32, device=env.device)

    return act


# ---------------------------------------------------------------- public API
def evaluate(
    run_dir: str | Path,
    chunk: int | str = "latest",
    episodes: int = 8,
    manifest: dict[str, Any] | None = None,
    push: bool = False,
    commands: Sequence[Sequence[float]] | None = None,
) -> dict[str, Any]:
    """Evaluate chunk ``chunk`` (int or ``"latest"``) of ``run_dir`` on the command grid; see
    docs/EVAL.md. ``episodes`` robots per grid command, all in one scene.

    Returns ``{"chunk", "name", "run_dir", "reference", "cmd_vx", "episodes", "robots",
    "episode_steps", "dt", "timesteps", "episodes_total", "skipped_damaged", "grid": [rows],
    "baseline_grid": [rows], "summary", "policy": figs, "baseline": figs (both on the reference
    command), "lazy_optimum": bool, "seconds", "scene_reused", "push"}``. ``push``: the push test
    (docs/EVAL.md). ``commands``: (vx, vy, yaw) triples evaluated instead of the grid (``eval
    --command``; the first is the reference). Raises EvalError (one line) for a bad chunk or a
    damaged checkpoint.
    """
    from go2train.sim.env import init_genesis

    if int(episodes) < 1:
        raise EvalError(f"--episodes must be >= 1, got {episodes}")
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir.at(run_dir)
    t0 = time.perf_counter()
    if manifest is None:
        manifest = resolve_chunk(rd, chunk)
    stored = _check_config(manifest)
    grid, reference = command_grid(commands)
    cfg = _eval_config(stored.to_dict(), episodes, len(grid))
    if push:  # the default randomisation, a PUSH_VEL kick every PUSH_INTERVAL_S, PUSH_COUNT kicks + 2 s
        cfg.domain_rand = DomainRandConfig(push_interval_s=PUSH_INTERVAL_S, push_vel=PUSH_VEL)
        cfg.env.episode_steps = round((PUSH_COUNT * PUSH_INTERVAL_S + 2.0) / cfg.env.dt)
    steps = cfg.env.episode_steps
    k = int(episodes)
    robot_cmds = grid_commands(k, grid)
    ref_cmd = dict(grid)[reference]
    # One step more than the episode, so no robot is truncated (and auto-reset) before we read its
    # final state: every robot runs exactly `steps` steps and we stop.
    cfg.env.episode_steps = steps + 1

    init_genesis(cfg.env.backend, seed=cfg.env.seed)
    reused = _scene_key(cfg) in _SCENES
    env = _get_env(cfg)
    act = _load_policy(rd, manifest, cfg, env)
    P = _run_pass(env, _eval_config(cfg.to_dict(), episodes, len(grid)), steps, robot_cmds, act)
    ref = _group_mask(P, reference, k, grid)
    policy, rows = _figures(P, ref), _grid_rows(P, k, grid)

    bkey = json.dumps([_scene_key(cfg), cfg.reward.model_dump(mode="json"), cfg.command.model_dump(mode="json"),
                       cfg.termination.model_dump(mode="json"), cfg.domain_rand.model_dump(mode="json"), steps, k,
                       grid], sort_keys=True)
    if bkey not in _BASELINES:
        B = _run_pass(env, _eval_config(cfg.to_dict(), episodes, len(grid)), steps, robot_cmds, None)
        _BASELINES[bkey] = {"figures": _figures(B, ref), "grid": _grid_rows(B, k, grid)}
    baseline, baseline_grid = _BASELINES[bkey]["figures"], _BASELINES[bkey]["grid"]
    for row, base in zip(rows, baseline_grid):
        row["baseline_reward"] = base["reward"]
        row["lazy"] = is_lazy_command(row, base)
    return {
        "chunk": manifest.get("chunk"),
        "name": manifest.get("name"),
        "run_dir": str(rd.root),
        "reference": reference,
        "cmd_vx": ref_cmd[0],
        "episodes": k,
        "robots": len(robot_cmds),
        "episode_steps": steps,
        "dt": cfg.env.dt,
        "timesteps": manifest.get("timesteps"),
        "episodes_total": manifest.get("episodes_total"),
        "skipped_damaged": manifest.get("_skipped_damaged", []),
        "grid": rows,
        "baseline_grid": baseline_grid,
        "summary": grid_summary(rows, reference),
        "policy": policy,
        "baseline": baseline,
        "lazy_optimum": is_lazy_optimum(policy, baseline, ref_cmd[0]),
        "seconds": time.perf_counter() - t0,
        "scene_reused": reused,
        "push": {"vel": PUSH_VEL, "interval_s": PUSH_INTERVAL_S, "pushes": PUSH_COUNT} if push else None,
    }


def evaluate_many(run_dir: str | Path, chunks: list[int | str], episodes: int = 8) -> list[dict[str, Any]]:
    """Evaluate several chunks sequentially in this process (scenes and baselines are reused).
    Every chunk is resolved and verified before any simulation starts."""
    manifests = resolve_chunks(run_dir, chunks)
    return [evaluate(run_dir, m["chunk"], episodes, manifest=m) for m in manifests]


# ---------------------------------------------------------------- rendering
ROWS: list[tuple[str, str, str]] = [
    # (key, label, format)
    ("forward_speed", "forward speed, own heading (m/s)", "{:+.3f}"),
    ("displacement_speed", "world x displacement / time (m/s)", "{:+.3f}"),
    ("tracking_error", "tracking error |cmd_xy - v_xy| (m/s)", "{:.3f}"),
    ("survival", "survival (reached the end)", "{:.0%}"),
    ("time_alive_s", "time alive (s)", "{:.2f}"),
    ("base_height_mean", "base height mean (m)", "{:.3f}"),
    ("base_height_std", "base height std (m)", "{:.3f}"),
    ("tilt_deg", "tilt sqrt(roll²+pitch²) (deg)", "{:.2f}"),
    ("distance_m", "x displacement (m)", "{:+.3f}"),
    ("lateral_drift_m", "lateral drift |y| (m)", "{:.3f}"),
    ("foot_air_fraction", "feet in the air (fraction)", "{:.2f}"),
    ("foot_air_fraction_per_foot", "  per foot FR/FL/RR/RL", ""),
    ("foot_clearance_swing_m", "swing-foot clearance (m)", "{:.3f}"),
    ("foot_clearance_max_m", "max foot clearance (m)", "{:.3f}"),
    ("swing_clearance_m", "swing clearance, median swing peak (m)", "{:.3f}"),
    ("air_time_per_swing_s", "air time per swing (s)", "{:.3f}"),
    ("touchdowns_per_s", "touchdowns per foot per s", "{:.2f}"),
    ("diagonal_sync", "diagonal feet together (corr)", "{:+.2f}"),
    ("pair_sync", "front/rear pair together (corr)", "{:+.2f}"),
    ("action_smoothness", "action smoothness mean Δa²", "{:.3g}"),
    ("reward", "episode reward", "{:+.3f}"),
]


def _fmt(key: str, fmt: str, figs: dict[str, Any]) -> str:
    v = figs.get(key)
    if v is None:
        return "–"
    if key == "foot_air_fraction_per_foot":
        return "/".join("–" if v.get(leg) is None else f"{v[leg]:.2f}" for leg in LEGS)
    return fmt.format(v)


def grid_table(results: list[dict[str, Any]]):
    """Rich table of the command grid: one row per command; per chunk the achieved vx, vy, yaw
    rate, the linear / yaw-rate tracking errors and survival (lazy commands marked), then the
    summary rows."""
    from rich.table import Table

    r0 = results[0]
    t = Table(title=f"command grid · {r0['episodes']} robots per command × {r0['episode_steps']} steps "
                    f"({r0['episode_steps'] * r0['dt']:.1f} s), {r0.get('robots', '?')} robots in one scene",
              title_justify="left")
    t.add_column("command (vx, vy m/s, yaw rad/s)", style="bold")
    for r in results:
        head = f"chunk {r['chunk']}: " if len(results) > 1 else ""
        t.add_column(f"{head}achieved vx vy yaw", justify="right")
        t.add_column("err lin/yaw", justify="right")
        t.add_column("surv", justify="right")
    for i, row0 in enumerate(r0["grid"]):
        name, cmd = row0["name"], row0["command"]
        cells = []
        for r in results:
            row = r["grid"][i]
            lazy = " [bold red]lazy[/]" if row.get("lazy") else ""
            cells += [f"{row['vx']:+.2f} {row['vy']:+.2f} {row['yaw_rate']:+.2f}",
                      f"{row['lin_error']:.2f}/{row['yaw_error']:.2f}{lazy}", f"{row['survival']:.0%}"]
        t.add_row(f"{name} ({cmd[0]:+.1f}, {cmd[1]:+.1f}, {cmd[2]:+.1f})", *cells)
    fmt = lambda v, f: "–" if v is None else f.format(v)  # noqa: E731
    for label, key, f in (("mean lin error, moving (m/s)", "lin_error_moving", "{:.3f}"),
                          ("mean yaw error, turning (rad/s)", "yaw_error_turning", "{:.3f}"),
                          ("worst lin error (m/s)", "worst_lin_error", "{:.3f}"),
                          ("least progress along a command", "progress_min", "{:.0%}"),
                          ("lowest survival", "survival_min", "{:.0%}")):
        cells = []
        for r in results:
            sm = r["summary"]
            extra = f" ({sm['worst_command']})" if key == "worst_lin_error" and sm.get("worst_command") else ""
            if key == "progress_min" and sm.get("progress_min_command"):
                extra = f" ({sm['progress_min_command']})"
            cells += [fmt(sm.get(key), f) + extra, "", ""]
        t.add_row(label, *cells)
    return t


def table(results: list[dict[str, Any]], console=None):
    """Rich table of the reference command's figures: one column per evaluated chunk, then the
    baseline column(s)."""
    from rich.table import Table

    multi = len(results) > 1
    title = (f"go2train eval · {results[0].get('reference', 'cmd')} ({results[0]['cmd_vx']:+.2f} m/s) · "
             f"{results[0]['episodes']} robots × "
             f"{results[0]['episode_steps']} steps ({results[0]['episode_steps'] * results[0]['dt']:.1f} s)")
    if results[0].get("push"):
        title += f" · push test: {PUSH_VEL} m/s kicks every {PUSH_INTERVAL_S:g} s, randomisation on"
    t = Table(title=title, title_justify="left")
    t.add_column("figure", style="bold")
    cols: list[tuple[str, dict[str, Any]]] = []
    for r in results:
        cols.append((f"chunk {r['chunk']}" if multi else f"policy (chunk {r['chunk']})", r["policy"]))
    bases: list[dict[str, Any]] = []  # one baseline column per distinct baseline
    for r in results:
        if not any(r["baseline"] == b["baseline"] for b in bases):
            bases.append(r)
    for r in bases:
        label = "baseline (zero action)" if len(bases) == 1 else f"baseline @{r['chunk']}"
        cols.append((label, r["baseline"]))
    for label, _ in cols:
        t.add_column(label, justify="right")
    for key, label, fmt in ROWS:
        t.add_row(label, *[_fmt(key, fmt, f) for _, f in cols])
    terms = sorted({k for _, f in cols for k in f.get("reward_terms", {})})
    for name in terms:
        t.add_row(f"  term {name}", *["–" if name not in f.get("reward_terms", {}) else
                                      f"{f['reward_terms'][name]:+.3f}" for _, f in cols])
    lazy = ["[bold red]YES[/]" if r["lazy_optimum"] else "[green]no[/]" for r in results]
    t.add_row("lazy optimum", *lazy, *[""] * len(bases))
    return t


def to_json(results: list[dict[str, Any]]) -> str:
    return json.dumps(results[0] if len(results) == 1 else results, indent=2, sort_keys=True)


# ---------------------------------------------------------------- the command
@contextlib.contextmanager
def stdout_to_stderr():
    """Simulator chatter (Genesis logs to stdout, compilers print to fd 1) goes to stderr while we
    evaluate, so stdout carries only the table or the JSON."""
    sys.stdout.flush()
    saved = None
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:
        saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def _log_tensorboard(run_dir: str | Path, manifests: list[dict[str, Any]], results: list[dict[str, Any]],
                     push: bool) -> None:
    """Each result's figures into the run's TensorBoard (``eval/*``, ``eval_push/*`` with ``--push``) at
    its checkpoint's timesteps (go2train/train/tblog.py); never fails the eval."""
    from go2train.train import tblog

    rd = run_dir if isinstance(run_dir, RunDir) else RunDir.at(run_dir)
    kind = "eval_push" if push else "eval"
    for m, r in zip(manifests, results):
        tblog.log_checkpoint(rd, m, tblog.eval_scalars(r, kind), kind)


def main(run_dir: str | Path, manifests: list[dict[str, Any]], episodes: int, json_out: bool, push: bool = False,
         commands: Sequence[Sequence[float]] | None = None) -> int:
    """Evaluate resolved ``manifests`` in this process and print a table (or JSON). Exit code."""
    from go2train.run import exitcodes

    for m in manifests:
        for line in m.get("_skipped_damaged", []):
            print(f"go2train: skipped damaged checkpoint {line}", file=sys.stderr)
    try:
        with stdout_to_stderr():
            results = [evaluate(run_dir, m["chunk"], episodes, manifest=m, push=push, commands=commands)
                       for m in manifests]
            if not commands:  # eval/* in TensorBoard is the grid's (a chosen command is a one-off)
                _log_tensorboard(run_dir, manifests, results, push)
    except EvalError as exc:
        print(f"go2train: {exc}", file=sys.stderr)
        return exitcodes.CONFIG_ERROR
    if json_out:
        print(to_json(results))
    else:
        from rich.console import Console

        console = Console()
        console.print(grid_table(results))
        console.print(table(results))
        for r in results:
            if r["lazy_optimum"]:
                console.print(
                    f"[bold red]lazy optimum[/]: chunk {r['chunk']} earns {r['policy']['reward']:+.3f} "
                    f"(stand-still baseline {r['baseline']['reward']:+.3f}) while moving at "
                    f"{r['policy']['forward_speed']:+.3f} m/s, below half the command ({r['cmd_vx']:+.2f} m/s)"
                )
            lazy = [c for c in r["summary"]["lazy_commands"] if c != r.get("reference")]
            if lazy:
                console.print(f"[yellow]lazy on[/] {', '.join(lazy)}: chunk {r['chunk']} earns at least the "
                              "stand-still baseline there while making less than half the commanded progress")
    return 0
