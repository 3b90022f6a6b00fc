"""Device-resident rollouts for :class:`~go2train.train.ppo.ChunkedPPO` (``[ppo] rollout = "device"``).

SB3's ``collect_rollouts`` round-trips every batched step through numpy: actions to the host,
observations and rewards back, VecNormalize's statistics in numpy, one info dict per robot, and a
numpy ``RolloutBuffer``. This path keeps all of it as torch tensors on the policy's device:

* actions go from the policy to :meth:`Go2Env.step` directly (clipped to the action space as SB3
  does; the buffer keeps the unclipped sample, as SB3 does);
* :class:`DeviceNormalizer` is VecNormalize in torch (float64 statistics like SB3's
  ``RunningMeanStd``; the same update order, clip and epsilon; the running discounted return for
  the reward scale). The SB3 ``VecNormalize`` object stays the persistent store: its statistics
  are read at the start of every rollout and written back at its end (also when the rollout is
  cut short), so ``vn.save()`` (checkpoints), eval and video see the same pickle as before;
* :class:`TorchRolloutBuffer` is a ``RolloutBuffer`` whose arrays are tensors on the device, with
  GAE in torch and ``get()`` yielding ``RolloutBufferSamples`` of device tensors (SB3's
  ``PPO.train()`` is unchanged; minibatch indices come from ``np.random.permutation`` as in SB3);
* truncated episodes are bootstrapped with ``gamma * V(terminal obs)`` in one batched forward;
* episode infos are built only for robots that finished, and only on steps where one did. The
  callback sees ``dones`` (a numpy bool array) and ``infos`` (:class:`SparseInfos`: ``infos[i]``
  is the finished robot's info dict, ``{}`` for the others) exactly as the worker's callback reads
  them; ``terminal_observation`` is not materialised (its value bootstrap happened on the device).

Per batched step the host learns only what :meth:`Go2Env.step` already synchronises on (the
number of finished robots); one small device-to-host copy per rollout refreshes
``model._last_obs`` (numpy, so the model zip keeps its format) and the VecNormalize statistics.
"""

from __future__ import annotations

from typing import Any, Generator, Sequence

import numpy as np
import torch
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.type_aliases import RolloutBufferSamples
from stable_baselines3.common.vec_env import VecNormalize


# ---------------------------------------------------------------- normalisation
class TorchRunningMeanStd:
    """SB3's ``RunningMeanStd`` on a torch device (float64 mean/var; the count stays a host float,
    since the batch size is known on the host)."""

    def __init__(self, mean: np.ndarray, var: np.ndarray, count: float, device: torch.device):
        self.mean = torch.as_tensor(np.asarray(mean, dtype=np.float64), device=device)
        self.var = torch.as_tensor(np.asarray(var, dtype=np.float64), device=device)
        self.count = float(count)

    @classmethod
    def from_sb3(cls, rms, device) -> "TorchRunningMeanStd":
        return cls(rms.mean, rms.var, rms.count, device)

    def to_sb3(self, rms) -> None:
        rms.mean = self.mean.cpu().numpy().astype(np.float64)
        rms.var = self.var.cpu().numpy().astype(np.float64)
        rms.count = float(self.count)

    def update(self, x: torch.Tensor) -> None:
        # np.mean/np.var of SB3's float32 input are float32 moments; float64 from here on
        batch_mean = x.mean(0).double()
        batch_var = x.var(0, correction=0).double()
        n = x.shape[0]
        delta = batch_mean - self.mean
        tot = self.count + n
        self.mean = self.mean + delta * (n / tot)
        m2 = self.var * self.count + batch_var * n + torch.square(delta) * (self.count * n / tot)
        self.var = m2 / tot
        self.count = tot


class DeviceNormalizer:
    """VecNormalize's ``step_wait`` arithmetic in torch, bound to one SB3 ``VecNormalize``
    (``vn=None``: no normalisation, raw float32 observations and rewards)."""

    def __init__(self, vn: VecNormalize | None, n_envs: int, device: torch.device):
        self.vn, self.n_envs, self.device = vn, n_envs, device
        self.pull()

    def pull(self) -> None:
        """Read the statistics (and the running returns) from the VecNormalize."""
        vn = self.vn
        if vn is None:
            return
        # SB3 has no obs_rms when norm_obs is off
        self.obs_rms = TorchRunningMeanStd.from_sb3(vn.obs_rms, self.device) if vn.norm_obs else None
        self.ret_rms = TorchRunningMeanStd.from_sb3(vn.ret_rms, self.device)
        ret = getattr(vn, "returns", None)
        if ret is None or np.shape(ret) != (self.n_envs,):
            ret = np.zeros(self.n_envs)
        self.returns = torch.as_tensor(np.asarray(ret, dtype=np.float64), device=self.device)

    def push(self) -> None:
        """Write the statistics back into the VecNormalize (its pickle is the checkpoint format)."""
        vn = self.vn
        if vn is None:
            return
        if self.obs_rms is not None:
            self.obs_rms.to_sb3(vn.obs_rms)
        self.ret_rms.to_sb3(vn.ret_rms)
        vn.returns = self.returns.cpu().numpy()

    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        vn = self.vn
        if vn is None or not vn.norm_obs:
            return obs.float().clone()
        out = (obs.double() - self.obs_rms.mean) / torch.sqrt(self.obs_rms.var + vn.epsilon)
        return out.clamp_(-vn.clip_obs, vn.clip_obs).float()

    def step(self, obs: torch.Tensor, reward: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Update the statistics with one batched step, return normalised (obs, reward), float32."""
        vn = self.vn
        if vn is None:
            return obs.float().clone(), reward.float().clone()
        if vn.training and vn.norm_obs:
            self.obs_rms.update(obs)
        obs_n = self.normalize_obs(obs)
        r = reward.double()
        if vn.training:
            self.returns = self.returns * vn.gamma + r
            self.ret_rms.update(self.returns)  # shape (): a scalar mean/var, as in SB3
        if vn.norm_reward:
            r = (r / torch.sqrt(self.ret_rms.var + vn.epsilon)).clamp_(-vn.clip_reward, vn.clip_reward)
        return obs_n, r.float().reshape(-1)

    def episodes_done(self, done_idx: torch.Tensor) -> None:
        if self.vn is not None:
            self.returns[done_idx] = 0.0


# ---------------------------------------------------------------- buffer
class TorchRolloutBuffer(RolloutBuffer):
    """``RolloutBuffer`` with torch storage on ``device``; same ``get()`` contract and sample order.

    ``values`` and ``returns`` read as numpy (PPO.train() passes them to numpy's
    ``explained_variance`` once per update); the tensors are ``values_t`` and ``returns_t``.
    """

    def reset(self) -> None:
        n, e, dev, f = self.buffer_size, self.n_envs, self.device, torch.float32
        if getattr(self, "observations", None) is None or not isinstance(self.observations, torch.Tensor):
            self.observations = torch.zeros((n, e, *self.obs_shape), dtype=f, device=dev)
            self.actions = torch.zeros((n, e, self.action_dim), dtype=f, device=dev)
            self.rewards = torch.zeros((n, e), dtype=f, device=dev)
            self.episode_starts = torch.zeros((n, e), dtype=f, device=dev)
            self.values_t = torch.zeros((n, e), dtype=f, device=dev)
            self.log_probs = torch.zeros((n, e), dtype=f, device=dev)
            self.advantages = torch.zeros((n, e), dtype=f, device=dev)
            self.returns_t = torch.zeros((n, e), dtype=f, device=dev)
        self._flat: dict[str, torch.Tensor] | None = None
        self.generator_ready = False
        self.pos = 0
        self.full = False

    @property
    def values(self) -> np.ndarray:
        return self.values_t.cpu().numpy()

    @property
    def returns(self) -> np.ndarray:
        return self.returns_t.cpu().numpy()

    def add(self, obs, action, reward, episode_start, value, log_prob) -> None:  # type: ignore[override]
        p = self.pos
        self.observations[p].copy_(obs)
        self.actions[p].copy_(action.reshape(self.n_envs, self.action_dim))
        self.rewards[p].copy_(reward)
        self.episode_starts[p].copy_(episode_start)
        self.values_t[p].copy_(value.reshape(-1))
        self.log_probs[p].copy_(log_prob.reshape(-1))
        self.pos += 1
        self._flat = None
        if self.pos == self.buffer_size:
            self.full = True

    def compute_returns_and_advantage(self, last_values: torch.Tensor, dones: torch.Tensor) -> None:  # type: ignore[override]
        last_values = last_values.reshape(-1).float()
        last_gae = torch.zeros(self.n_envs, dtype=torch.float32, device=self.device)
        for step in reversed(range(self.buffer_size)):
            if step == self.buffer_size - 1:
                next_non_terminal = 1.0 - dones.float()
                next_values = last_values
            else:
                next_non_terminal = 1.0 - self.episode_starts[step + 1]
                next_values = self.values_t[step + 1]
            delta = self.rewards[step] + self.gamma * next_values * next_non_terminal - self.values_t[step]
            last_gae = delta + self.gamma * self.gae_lambda * next_non_terminal * last_gae
            self.advantages[step] = last_gae
        self.returns_t = self.advantages + self.values_t

    def flat(self) -> dict[str, torch.Tensor]:
        """Env-major flattening, SB3's ``swap_and_flatten`` order (index = env * n_steps + step)."""
        if self._flat is None:
            def sf(t: torch.Tensor) -> torch.Tensor:
                return t.transpose(0, 1).reshape(self.buffer_size * self.n_envs, *t.shape[2:])

            self._flat = {
                "observations": sf(self.observations),
                "actions": sf(self.actions),
                "values": sf(self.values_t),
                "log_probs": sf(self.log_probs),
                "advantages": sf(self.advantages),
                "returns": sf(self.returns_t),
            }
        return self._flat

    def get(self, batch_size: int | None = None) -> Generator[RolloutBufferSamples, None, None]:
        assert self.full, ""
        indices = np.random.permutation(self.buffer_size * self.n_envs)  # SB3's RNG use, unchanged
        self.flat()
        self.generator_ready = True
        idx = torch.as_tensor(indices, device=self.device)
        if batch_size is None:
            batch_size = self.buffer_size * self.n_envs
        start = 0
        while start < self.buffer_size * self.n_envs:
            yield self._get_samples(idx[start : start + batch_size])
            start += batch_size

    def _get_samples(self, batch_inds, env=None) -> RolloutBufferSamples:  # type: ignore[override]
        f = self.flat()
        b = torch.as_tensor(batch_inds, device=self.device)
        pick = lambda t: torch.index_select(t, 0, b)  # noqa: E731 - 4x faster than t[b] on the CPU
        return RolloutBufferSamples(pick(f["observations"]), pick(f["actions"]), pick(f["values"]),
                                    pick(f["log_probs"]), pick(f["advantages"]), pick(f["returns"]))


# ---------------------------------------------------------------- infos
class SparseInfos(Sequence):
    """``infos`` of one batched step, length ``n_envs``: ``infos[i]`` is robot ``i``'s info dict if
    it finished this step, else an empty dict. Built in O(finished), not O(n_envs)."""

    __slots__ = ("n", "by_idx")

    def __init__(self, n: int, by_idx: dict[int, dict[str, Any]] | None = None):
        self.n = n
        self.by_idx = by_idx or {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        i = int(i)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.by_idx.get(i, {})

    def finished(self) -> list[dict[str, Any]]:
        return list(self.by_idx.values())


# ---------------------------------------------------------------- the rollout loop
def unwrap(env) -> tuple[VecNormalize | None, Any]:
    """(VecNormalize or None, Go2VecEnv) of the model's env, or (None, None) if it is neither."""
    from go2train.sim.vecenv import Go2VecEnv

    vn = env if isinstance(env, VecNormalize) else None
    inner = env.venv if vn is not None else env
    return (vn, inner) if isinstance(inner, Go2VecEnv) else (None, None)


class DeviceRollout:
    """Per-model state of the device path (never pickled with the model)."""

    def __init__(self, model, env):
        self.vn, self.venv = unwrap(env)
        self.env_ref = env
        self.device = model.device
        n = self.venv.num_envs
        self.norm = DeviceNormalizer(self.vn, n, self.device)
        self.obs: torch.Tensor | None = None
        self.starts: torch.Tensor | None = None
        self.mirror_obs = None  # the numpy _last_obs this state last wrote into the model
        space = model.action_space
        self.low = torch.as_tensor(space.low, device=self.device)
        self.high = torch.as_tensor(space.high, device=self.device)


def collect_rollouts_device(model, env, callback, rollout_buffer: TorchRolloutBuffer, n_rollout_steps: int) -> bool:
    """SB3's ``OnPolicyAlgorithm.collect_rollouts`` with device tensors throughout (see module doc)."""
    st: DeviceRollout | None = getattr(model, "_device_rollout", None)
    if st is None or st.env_ref is not env or st.device != model.device:
        st = model._device_rollout = DeviceRollout(model, env)
    st.norm.pull()
    venv, genv, dev, n = st.venv, st.venv.env, st.device, st.venv.num_envs
    if st.obs is None or model._last_obs is not st.mirror_obs:  # a new learn() reset the env
        assert model._last_obs is not None, "No previous observation was provided"
        st.obs = torch.as_tensor(np.asarray(model._last_obs), dtype=torch.float32, device=dev)
        st.starts = torch.as_tensor(np.asarray(model._last_episode_starts), dtype=torch.float32, device=dev)

    model.policy.set_training_mode(False)
    rollout_buffer.reset()
    callback.on_rollout_start()
    obs, starts = st.obs, st.starts
    dones_t = torch.zeros(n, dtype=torch.bool, device=dev)
    dones = np.zeros(n, dtype=bool)
    gamma = model.gamma
    n_steps = 0
    try:
        with torch.no_grad():
            while n_steps < n_rollout_steps:
                actions, values, log_probs = model.policy(obs)
                clipped = torch.maximum(torch.minimum(actions, st.high), st.low)
                res = genv.step(clipped.to(genv.device))
                new_obs, rewards = st.norm.step(res.obs.to(dev), res.reward.to(dev))
                n_done = int(res.done_idx.shape[0])  # a host shape: Go2Env.step already synchronised
                model.num_timesteps += n
                dones = np.zeros(n, dtype=bool)
                if n_done:
                    done_idx = res.done_idx.to(dev)
                    dones_t = torch.zeros(n, dtype=torch.bool, device=dev)
                    dones_t[done_idx] = True
                    # bootstrap truncated episodes: r += gamma * V(normalised terminal obs)
                    term_v = model.policy.predict_values(st.norm.normalize_obs(res.terminal_obs.to(dev))).reshape(-1)
                    trunc = res.truncated.to(dev)[done_idx]
                    rewards.index_add_(0, done_idx, torch.where(trunc, gamma * term_v, torch.zeros_like(term_v)))
                    st.norm.episodes_done(done_idx)
                    idx_list, finished = venv.finished_infos(res, terminal_obs=None)
                    dones[idx_list] = True
                    infos = SparseInfos(n, dict(zip(idx_list, finished)))
                    model.ep_info_buffer.extend([f["episode"] for f in finished])
                else:
                    dones_t = torch.zeros(n, dtype=torch.bool, device=dev)
                    infos = SparseInfos(n)

                callback.update_locals(locals())
                if not callback.on_step():
                    return False
                n_steps += 1
                rollout_buffer.add(obs, actions, rewards, starts, values, log_probs)
                obs = new_obs
                starts = dones_t.float()

            values = model.policy.predict_values(obs)
            rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones_t)
    finally:
        st.obs, st.starts = obs, starts
        st.norm.push()
        model._last_obs = obs.cpu().numpy()  # numpy, as SB3 keeps (and pickles) it
        model._last_episode_starts = starts.cpu().numpy().astype(bool)
        st.mirror_obs = model._last_obs
    callback.update_locals(locals())
    callback.on_rollout_end()
    return True


