"""Stable-Baselines3 VecEnv adapter over the batched :class:`~go2train.sim.env.Go2Env`.

Contract (SB3 ``VecEnv``), per robot ``i``:

* ``step`` auto-resets finished robots: the returned ``obs[i]`` is the new episode's first;
  ``infos[i]["terminal_observation"]`` holds the last observation of the finished episode.
* ``infos[i]["TimeLimit.truncated"]`` is True when the episode hit ``[env] episode_steps`` (SB3 then
  bootstraps the value of the terminal observation).
* ``infos[i]["episode"] = {"r", "l", "t"}`` (undiscounted return, length, seconds since
  ``t_start``) as SB3's Monitor writes it, plus ``"terms"`` (per-term reward sums),
  ``"dist"`` (forward distance, m), ``"speed"`` (dist / duration, m/s), ``"fell"``, ``"cmd_vx"`` (the vx
  command at the episode's end) and ``"track"`` (sums over the episode's steps, ``TRACK_KEYS``:
  steps told to move, commanded speed and speed along the command on those steps, linear and
  yaw-rate tracking error, steps told to stand still; go2train/train/worker.py ``ChunkStats``).

Tensors stay batched; the only per-robot Python work is one small dict per finished robot.
Observations and rewards are float32 numpy views of the simulator's tensors (copied on GPU).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from go2train.sim.env import TRACK_KEYS, Go2Env


class Go2VecEnv(VecEnv):
    render_mode = None

    def __init__(self, env: Go2Env, t_start: float | None = None, random_start: bool = False):
        self.env = env
        self.random_start = random_start  # reset() desynchronises the robots' episode clocks
        obs_space = gym.spaces.Box(-np.inf, np.inf, shape=(env.num_obs,), dtype=np.float32)
        bound = float(env.cfg.env.clip_actions)  # the one action bound: SB3 clips its samples to the space
        act_space = gym.spaces.Box(-bound, bound, shape=(env.num_actions,), dtype=np.float32)
        super().__init__(env.n_envs, obs_space, act_space)
        self.t_start = time.time() if t_start is None else t_start
        self._actions: torch.Tensor | None = None
        self.invalid_resets = 0

    # -- helpers
    def _np(self, t: torch.Tensor) -> np.ndarray:
        return t.detach().to("cpu").numpy().copy()

    # -- VecEnv API
    def reset(self) -> np.ndarray:
        seed = self._seeds[0]
        if seed is not None:
            self.env.seed(seed)
            torch.manual_seed(seed)
        self._reset_seeds()
        self._reset_options()
        obs = self.env.reset()
        if self.random_start:
            obs = self.env.randomize_episode_lengths()
        return self._np(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = torch.as_tensor(actions, dtype=torch.float32, device=self.env.device)

    def step_wait(self):
        res = self.env.step(self._actions)
        obs = self._np(res.obs)
        rewards = self._np(res.reward)
        dones = np.zeros(self.num_envs, dtype=bool)
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if res.done_idx.shape[0]:
            done_idx, finished = self.finished_infos(res, self._np(res.terminal_obs))
            dones[done_idx] = True
            for i, info in zip(done_idx, finished):
                infos[i] = info
        return obs, rewards, dones, infos

    def finished_infos(self, res, terminal_obs: np.ndarray | None) -> tuple[list[int], list[dict[str, Any]]]:
        """(indices, info dicts) of the robots that finished in step result ``res`` (host work only
        for those robots); counts invalid resets. ``terminal_obs`` (rows of ``res.done_idx``) is
        added as ``terminal_observation`` unless None (the device rollout path bootstraps on the
        device and needs no host copy)."""
        k = int(res.done_idx.shape[0])
        if not k:
            return [], []
        # one device-to-host copy for everything (each .tolist() is a sync on the GPU); the
        # float32 columns hold indices, lengths and flags exactly (all < 2**24)
        ep = res.episodes
        names = list(ep["terms"])
        cols = [res.done_idx.float(), ep["r"].float(), ep["l"].float(), ep["dist"].float(),
                res.truncated[res.done_idx].float(), res.invalid[res.done_idx].float(),
                self.env.commands[res.done_idx, 0].float(), *ep["track"].float().unbind(1),
                *[ep["terms"][n].float() for n in names]]
        rows = torch.stack(cols, 1).tolist()
        done_idx = [int(row[0]) for row in rows]
        r, l, dist = [row[1] for row in rows], [int(row[2]) for row in rows], [row[3] for row in rows]
        truncated = [row[4] > 0.5 for row in rows]
        self.invalid_resets += int(sum(row[5] for row in rows))
        cmd = [row[6] for row in rows]
        k = 7 + len(TRACK_KEYS)  # the columns after the fixed seven: tracking sums, then reward terms
        track = [row[7:k] for row in rows]
        terms = [row[k:] for row in rows]
        t = round(time.time() - self.t_start, 6)
        dt = self.env.dt
        out = []
        for j in range(len(done_idx)):
            info: dict[str, Any] = {}
            if terminal_obs is not None:
                info["terminal_observation"] = terminal_obs[j]
            info["TimeLimit.truncated"] = bool(truncated[j])
            info["episode"] = {
                "r": round(r[j], 6),
                "l": int(l[j]),
                "t": t,
                "dist": dist[j],
                "speed": dist[j] / (l[j] * dt),
                "fell": not truncated[j],
                "cmd_vx": cmd[j],
                # tracking sums over the episode's steps (Go2Env._track_step; ChunkStats averages them)
                "track": dict(zip(TRACK_KEYS, track[j])),
                "terms": dict(zip(names, terms[j])),
            }
            out.append(info)
        return done_idx, out

    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        seeds = super().seed(seed)
        return seeds

    def close(self) -> None:
        self.env.close()

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        n = len(self._get_indices(indices))
        return [getattr(self, attr_name)] * n

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        n = len(self._get_indices(indices))
        return [getattr(self.env, method_name)(*method_args, **method_kwargs)] * n

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._get_indices(indices))

    def _get_indices(self, indices):
        if indices is None:
            return range(self.num_envs)
        if isinstance(indices, int):
            return [indices]
        return indices
