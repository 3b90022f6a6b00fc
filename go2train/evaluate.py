"""`go2train eval`: measure what a checkpoint's policy does, and whether it walks.

:func:`evaluate` loads one chunk checkpoint with the exact config stored in its manifest, runs
``K`` robots (one batched scene, ``n_envs = K``) for exactly ONE full-length episode each
(``[env] episode_steps`` steps; a robot that terminates stops counting: it fell), with
deterministic actions and VecNormalize in eval mode, then runs a zero-action (stand-still)
baseline in the same scene and flags a **lazy optimum** (:func:`is_lazy_optimum`) when the policy
earns at least the baseline's reward while moving forward slower than half the command.

Every figure is defined in docs/EVAL.md. Genesis initialises once per process and scenes are
expensive, so scenes are cached per process (:data:`_SCENES`): evaluating several chunks (``--compare``)
rebuilds a scene only when the stored ``[env]`` section differs; the baseline is computed once per
distinct (config, command, K).

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
from pathlib import Path
from typing import Any

from go2train import checkpoint
from go2train.config import Config, ConfigError, DomainRandConfig, from_dict
from go2train.runfiles import RunDir, chunk_name

LEGS = ("FR", "FL", "RR", "RL")
AIR_THRESHOLD_M = 0.03  # a foot is "in the air" when its clearance exceeds this
LAZY_SPEED_FRACTION = 0.5  # lazy optimum: forward speed below this fraction of the command
PUSH_VEL, PUSH_INTERVAL_S, PUSH_COUNT = 0.5, 4.0, 4  # `eval --push`: 4 kicks of 0.5 m/s, 4 s apart
REWARD_TOL = 1e-6  # relative tolerance when comparing the policy's reward with the baseline's
# Runtime-only [env] keys: they do not change the scene, so a cached scene is reused across them.
_RUNTIME_ENV_KEYS = ("command_vx", "command_vx_range", "episode_steps", "command_vy", "command_yaw")


class EvalError(Exception):
    """A request eval cannot serve. ``str(err)`` is one line (bad chunk, damaged checkpoint...)."""


# ---------------------------------------------------------------- resolving (no torch/genesis)
def parse_chunk(value: str, option: str = "--chunk") -> int | str:
    """``"latest"`` or a non-negative integer (``"50"``); anything else raises EvalError."""
    v = str(value).strip()
    if v.lower() == "latest":
        return "latest"
    if v.isdigit():
        return int(v)
    raise EvalError(f"{option} takes integer chunk milestones or 'latest', got {value!r}")


def _available(rd: RunDir) -> list[int]:
    return sorted(checkpoint.chunk_milestones(rd))


def _available_line(rd: RunDir) -> str:
    avail = _available(rd)
    return f"available: {', '.join(map(str, avail))}" if avail else f"no chunk checkpoints in {rd.models}"


def resolve_chunk(run_dir: str | Path, chunk: int | str) -> dict[str, Any]:
    """The verified manifest of ``chunk`` (an int or ``"latest"``), or EvalError (one line).

    ``latest`` is the newest chunk whose files verify; damaged newer ones are skipped (the worker
    moves them aside; eval only reads). An explicit damaged chunk is an error naming it.
    """
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir.at(run_dir)
    if isinstance(chunk, str):
        chunk = parse_chunk(chunk)
    avail = _available(rd)
    if chunk == "latest":
        if not avail:
            raise EvalError(f"no chunk checkpoints in {rd.models}")
        reasons = []
        for m in reversed(avail):
            try:
                manifest = checkpoint.verify(rd, chunk_name(m))
            except checkpoint.DamagedCheckpoint as exc:
                reasons.append(f"{chunk_name(m)}: {exc}")
                continue
            manifest["_skipped_damaged"] = reasons
            _check_config(manifest)
            return manifest
        raise EvalError(f"every chunk checkpoint in {rd.models} is damaged (newest: {reasons[0]})")
    if chunk not in avail:
        raise EvalError(f"chunk {chunk} not found in {rd.models}; {_available_line(rd)}")
    name = chunk_name(chunk)
    try:
        manifest = checkpoint.verify(rd, name)
    except checkpoint.DamagedCheckpoint as exc:
        raise EvalError(f"checkpoint {name} is damaged: {exc}") from None
    manifest["_skipped_damaged"] = []
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

    def figures(self) -> dict[str, float | None]:
        import torch

        ok = self.n >= 25  # at least half a second of samples
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


# ---------------------------------------------------------------- scene cache
_SCENES: dict[str, Any] = {}
_BASELINES: dict[str, dict[str, Any]] = {}


def _eval_config(stored: dict[str, Any], episodes: int) -> Config:
    cfg = from_dict(copy.deepcopy(stored))
    cfg.env.n_envs = int(episodes)
    return cfg


def _scene_key(cfg: Config) -> str:
    env = cfg.env.model_dump(mode="json")
    for k in _RUNTIME_ENV_KEYS:
        env.pop(k, None)
    env["_batched"] = [cfg.domain_rand.batched_dofs(), cfg.domain_rand.batched_links()]  # fixed at build
    return json.dumps(env, sort_keys=True)


def _get_env(cfg: Config):
    """The Go2Env for ``cfg``'s [env] section, built once per process per distinct section."""
    from go2train.env import Go2Env

    key = _scene_key(cfg)
    if key not in _SCENES:
        _SCENES[key] = Go2Env(cfg)
    return _SCENES[key]


def _prepare(env, cfg: Config, cmd_vx: float) -> Any:
    """Bind ``cfg`` (reward, termination, runtime env keys) to a cached scene and start every robot
    from the scene's initial state: each pass begins identically, whatever ran before."""
    env.cfg = cfg
    env._setup_rewards()
    env._alloc_buffers()
    env.invalid_count = 0
    env.scene.reset()
    env.set_command(cmd_vx)
    return env.reset()


# ---------------------------------------------------------------- one pass
def _run_pass(env, cfg: Config, steps: int, cmd_vx: float, act=None) -> dict[str, Any]:
    """Run every robot for ``steps`` steps; ``act(obs_tensor) -> actions`` (None: zero actions)."""
    import torch

    n, dev, f = env.n_envs, env.device, torch.float32
    obs = _prepare(env, cfg, cmd_vx)
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

    s = {k: torch.zeros((), device=dev, dtype=torch.float64) for k in
         ("speed", "track", "h", "h2", "tilt", "smooth", "smooth_n", "swing_c", "swing_n", "max_c")}
    air_steps = torch.zeros((n, 4), device=dev)  # in-air samples after the foot first landed
    foot_steps = torch.zeros((n, 4), device=dev)  # samples after the foot first landed
    landed = torch.zeros((n, 4), dtype=torch.bool, device=dev)
    streak = torch.zeros((n, 4), device=dev)  # current air streak (steps)
    swing_steps = torch.zeros((n, 4), device=dev)  # steps of completed swings
    touchdowns = torch.zeros((n, 4), device=dev)
    swing_peak = torch.zeros((n, 4), device=dev)  # highest clearance of the current swing
    swing_peaks = []  # peak of every completed swing
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
        cnt = m.sum()
        alive_steps += alive.to(torch.int64)
        hs = env.heading_speed
        z = env.base_pos[:, 2]
        tilt = torch.sqrt(env.base_euler[:, 0] ** 2 + env.base_euler[:, 1] ** 2)
        s["speed"] += (hs * m).sum()
        s["track"] += ((hs - cmd_vx).abs() * m).sum()
        s["h"] += (z * m).sum()
        s["h2"] += (z.double() ** 2 * m).sum()
        s["tilt"] += (tilt * m).sum()
        cur = env.actions.clone()
        if prev_act is not None:
            s["smooth"] += (((cur - prev_act) ** 2).mean(1) * m).sum()
            s["smooth_n"] += cnt
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
        s["swing_c"] += (c * (track & in_air)).sum()
        s["swing_n"] += (track & in_air).sum()
        s["max_c"] = torch.maximum(s["max_c"], (c * track).max().double())
        touch = track & ~in_air & (streak > 0)
        touchdowns += touch.float()
        swing_steps += torch.where(touch, streak, torch.zeros_like(streak))
        swing_peaks.append(swing_peak[touch])
        swing_peak = torch.where(track & in_air, torch.maximum(swing_peak, c), torch.zeros_like(swing_peak))
        streak = torch.where(track & in_air, streak + 1, torch.zeros_like(streak))

    # Survivors: their episode sums are the env's running totals (no truncation was reached).
    surv = ~fell
    ep_ret[surv] = env.episode_return[surv]
    for k, name in enumerate(names):
        ep_terms[surv, k] = env.episode_terms[name][surv]

    dt = env.dt
    total = float(alive_steps.sum())
    tot = max(total, 1.0)
    mean_h = float(s["h"]) / tot
    var_h = max(float(s["h2"]) / tot - mean_h**2, 0.0)
    fs = foot_steps.sum(0)
    air_frac = {leg: float(air_steps[:, i].sum() / fs[i]) if fs[i] > 0 else None for i, leg in enumerate(LEGS)}
    fracs = [v for v in air_frac.values() if v is not None]
    n_td = float(touchdowns.sum())
    alive_time = ep_len.to(f) * dt
    figs = {
        "forward_speed": float(s["speed"]) / tot,
        "displacement_speed": float((disp[:, 0] / alive_time).mean()),
        "tracking_error": float(s["track"]) / tot,
        "survival": float(surv.to(f).mean()),
        "time_alive_s": float(alive_time.mean()),
        "base_height_mean": mean_h,
        "base_height_std": math.sqrt(var_h),
        "tilt_deg": float(s["tilt"]) / tot,
        "distance_m": float(disp[:, 0].mean()),
        "lateral_drift_m": float(disp[:, 1].abs().mean()),
        "foot_air_fraction": sum(fracs) / len(fracs) if fracs else None,
        "foot_air_fraction_per_foot": air_frac,
        "foot_clearance_swing_m": float(s["swing_c"] / s["swing_n"]) if float(s["swing_n"]) > 0 else 0.0,
        "foot_clearance_max_m": float(s["max_c"]),
        "swing_clearance_m": float(torch.cat(swing_peaks).median()) if n_td > 0 else None,
        "air_time_per_swing_s": float(swing_steps.sum()) * dt / n_td if n_td > 0 else None,
        "touchdowns_per_s": n_td / (float(foot_steps.sum()) * dt / 4.0) if float(foot_steps.sum()) > 0 else 0.0,
        "action_smoothness": float(s["smooth"] / s["smooth_n"]) if float(s["smooth_n"]) > 0 else 0.0,
        **gait.figures(),
        "reward": float(ep_ret.mean()),
        "reward_terms": {name: float(ep_terms[:, k].mean()) for k, name in enumerate(names)},
        "invalid_resets": int(env.invalid_count),
    }
    return figs


# ---------------------------------------------------------------- loading the policy
def load_checkpoint(rd: RunDir, manifest: dict[str, Any], cfg: Config, venv=None):
    """(SB3 model on the CPU, VecNormalize in eval mode with ``cfg``'s ``[ppo]`` normalisation) of a
    verified checkpoint. ``venv`` is attached to the VecNormalize; None: statistics only, no env
    (`go2train export`). EvalError (one line) when a file does not load."""
    import pickle

    from stable_baselines3.common.vec_env import VecNormalize

    from go2train.ppo import ChunkedPPO

    name = manifest.get("name", "?")
    p = cfg.ppo
    try:
        vn_path = str(checkpoint.model_path(rd, manifest, "vecnorm"))
        if venv is None:  # VecNormalize.load without set_venv (it needs an env)
            with open(vn_path, "rb") as f:
                vn = pickle.load(f)
            if not isinstance(vn, VecNormalize):
                raise TypeError(f"holds a {type(vn).__name__}, not a VecNormalize")
        else:
            vn = VecNormalize.load(vn_path, venv)
        vn.training = False
        vn.norm_reward = False
        vn.norm_obs, vn.clip_obs, vn.gamma = p.normalize_obs, p.clip_obs, p.gamma
        model = ChunkedPPO.load(
            str(checkpoint.model_path(rd, manifest, "model")),
            device="cpu",
            custom_objects={"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0},
        )
    except Exception as exc:  # noqa: BLE001 - a checkpoint that does not load is damaged
        raise EvalError(f"checkpoint {name} does not load: {type(exc).__name__}: {exc}") from None
    return model, vn


def _load_policy(rd: RunDir, manifest: dict[str, Any], cfg: Config, env):
    """SB3 model + VecNormalize (eval mode) exactly as the worker loads them; returns act(obs)."""
    import torch

    from go2train.vecenv import Go2VecEnv

    name = manifest.get("name", "?")
    model, vn = load_checkpoint(rd, manifest, cfg, Go2VecEnv(env))
    if model.observation_space.shape != (env.num_obs,):
        raise EvalError(
            f"checkpoint {name}: policy expects {model.observation_space.shape[0]} observations, "
            f"the stored config gives {env.num_obs}"
        )

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
    cmd_vx: float | None = None,
    manifest: dict[str, Any] | None = None,
    push: bool = False,
) -> dict[str, Any]:
    """Evaluate chunk ``chunk`` (int or ``"latest"``) of ``run_dir``; see docs/EVAL.md.

    Returns ``{"chunk", "name", "cmd_vx", "episodes", "episode_steps", "dt", "timesteps",
    "episodes_total", "policy": figs, "baseline": figs, "lazy_optimum": bool, "seconds",
    "scene_reused", "push"}``. ``push``: the push test (docs/EVAL.md). Raises EvalError (one line) for a bad chunk or a damaged checkpoint.
    """
    from go2train.env import init_genesis

    if int(episodes) < 1:
        raise EvalError(f"--episodes must be >= 1, got {episodes}")
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir.at(run_dir)
    t0 = time.perf_counter()
    if manifest is None:
        manifest = resolve_chunk(rd, chunk)
    stored = _check_config(manifest)
    cfg = _eval_config(stored.to_dict(), episodes)
    if push:  # the default randomisation, a PUSH_VEL kick every PUSH_INTERVAL_S, PUSH_COUNT kicks + 2 s
        cfg.domain_rand = DomainRandConfig(push_interval_s=PUSH_INTERVAL_S, push_vel=PUSH_VEL)
        cfg.env.episode_steps = round((PUSH_COUNT * PUSH_INTERVAL_S + 2.0) / cfg.env.dt)
    steps = cfg.env.episode_steps
    cmd = float(stored.env.command_vx if cmd_vx is None else cmd_vx)
    # One step more than the episode, so no robot is truncated (and auto-reset) before we read its
    # final state: every robot runs exactly `steps` steps and we stop.
    cfg.env.episode_steps = steps + 1

    init_genesis(cfg.env.backend, seed=cfg.env.seed)
    reused = _scene_key(cfg) in _SCENES
    env = _get_env(cfg)
    act = _load_policy(rd, manifest, cfg, env)
    policy = _run_pass(env, _eval_config(cfg.to_dict(), episodes), steps, cmd, act)

    bkey = json.dumps([_scene_key(cfg), cfg.reward.model_dump(mode="json"),
                       cfg.termination.model_dump(mode="json"), cfg.domain_rand.model_dump(mode="json"), steps, cmd],
                      sort_keys=True)
    baseline = _BASELINES.get(bkey)
    if baseline is None:
        baseline = _run_pass(env, _eval_config(cfg.to_dict(), episodes), steps, cmd, None)
        _BASELINES[bkey] = baseline
    return {
        "chunk": manifest.get("chunk"),
        "name": manifest.get("name"),
        "run_dir": str(rd.root),
        "cmd_vx": cmd,
        "episodes": int(episodes),
        "episode_steps": steps,
        "dt": cfg.env.dt,
        "timesteps": manifest.get("timesteps"),
        "episodes_total": manifest.get("episodes_total"),
        "skipped_damaged": manifest.get("_skipped_damaged", []),
        "policy": policy,
        "baseline": baseline,
        "lazy_optimum": is_lazy_optimum(policy, baseline, cmd),
        "seconds": time.perf_counter() - t0,
        "scene_reused": reused,
        "push": {"vel": PUSH_VEL, "interval_s": PUSH_INTERVAL_S, "pushes": PUSH_COUNT} if push else None,
    }


def evaluate_many(
    run_dir: str | Path, chunks: list[int | str], episodes: int = 8, cmd_vx: float | None = None
) -> list[dict[str, Any]]:
    """Evaluate several chunks sequentially in this process (scenes and baselines are reused).
    Every chunk is resolved and verified before any simulation starts."""
    manifests = resolve_chunks(run_dir, chunks)
    return [evaluate(run_dir, m["chunk"], episodes, cmd_vx, manifest=m) for m in manifests]


# ---------------------------------------------------------------- rendering
ROWS: list[tuple[str, str, str]] = [
    # (key, label, format)
    ("forward_speed", "forward speed, heading frame (m/s)", "{:+.3f}"),
    ("displacement_speed", "world x displacement / time (m/s)", "{:+.3f}"),
    ("tracking_error", "tracking error |vx - cmd| (m/s)", "{:.3f}"),
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


def table(results: list[dict[str, Any]], console=None):
    """Rich table: one column per evaluated chunk, then the baseline column(s)."""
    from rich.table import Table

    multi = len(results) > 1
    title = (f"go2train eval · cmd {results[0]['cmd_vx']:+.2f} m/s · {results[0]['episodes']} robots × "
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
def _stdout_to_stderr():
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


def main(
    run_dir: str | Path, manifests: list[dict[str, Any]], episodes: int, cmd_vx: float | None, json_out: bool,
    push: bool = False,
) -> int:
    """Evaluate resolved ``manifests`` in this process and print a table (or JSON). Exit code."""
    from go2train import exitcodes

    for m in manifests:
        for line in m.get("_skipped_damaged", []):
            print(f"go2train: skipped damaged checkpoint {line}", file=sys.stderr)
    try:
        with _stdout_to_stderr():
            results = [evaluate(run_dir, m["chunk"], episodes, cmd_vx, manifest=m, push=push) for m in manifests]
    except EvalError as exc:
        print(f"go2train: {exc}", file=sys.stderr)
        return exitcodes.CONFIG_ERROR
    if json_out:
        print(to_json(results))
    else:
        from rich.console import Console

        console = Console()
        console.print(table(results))
        for r in results:
            if r["lazy_optimum"]:
                console.print(
                    f"[bold red]lazy optimum[/]: chunk {r['chunk']} earns {r['policy']['reward']:+.3f} "
                    f"(stand-still baseline {r['baseline']['reward']:+.3f}) while moving at "
                    f"{r['policy']['forward_speed']:+.3f} m/s, below half the command ({r['cmd_vx']:+.2f} m/s)"
                )
    return 0
