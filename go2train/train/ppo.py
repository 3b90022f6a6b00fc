"""SB3 PPO, made resumable across processes.

:class:`ChunkedPPO` is SB3's PPO with two contracts changed so that a run split over many
processes behaves like one long ``learn()``:

* **Global schedules.** Progress (for learning-rate and clip schedules) is
  ``1 - num_timesteps / schedule_timesteps`` of the whole run, not of the current ``learn()``
  call (``learn(reset_num_timesteps=False)`` alone restarts SB3's progress every chunk).
* **Adaptive learning rate** (``[ppo] lr_schedule = "adaptive"``, rsl_rl's rule): after each
  update, ``lr /= 1.5`` when the mean approximate KL exceeds ``2 * desired_kl`` and
  ``lr *= 1.5`` when it is below ``desired_kl / 2``, within ``[lr_min, lr_max]``. The current
  value is saved with the model, so it continues across chunks.
* **Stopping at a safe point.** ``request_stop()`` makes the next ``collect_rollouts`` return
  False: the rollout in progress is collected and trained on, then ``learn()`` returns.
  ``on_safe_point`` (if set) is called at the same place, between rollouts, with a consistent
  model; the worker writes resume points there.
* **Device-resident rollouts** (``[ppo] rollout = "device"``, the default): when the env is a
  :class:`~go2train.sim.vecenv.Go2VecEnv` (optionally under SB3's ``VecNormalize``), rollouts are
  collected by :func:`go2train.train.rollout.collect_rollouts_device` (torch tensors on the device,
  a :class:`~go2train.train.rollout.TorchRolloutBuffer`, normalisation in torch, infos only for the
  robots that finished). ``"numpy"`` is SB3's own loop through the VecEnv, as before. Both feed
  SB3's unchanged ``PPO.train()``; checkpoints are the same files either way.

:func:`load_policy` is the one loader of a checkpoint's model + VecNormalize: the worker (training)
and eval, video and export (eval mode) all load through it. It lives here, beside the class it
loads, so that ``go2train.run`` stays a torch-free leaf that imports nothing from ``go2train.train``.
"""

from __future__ import annotations

from typing import Callable

import torch
from stable_baselines3 import PPO

from go2train.config import PPOConfig

ACTIVATIONS = {"elu": torch.nn.ELU, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}


class ChunkedPPO(PPO):
    schedule_timesteps: int = 50_000_000
    lr_mode: str = "constant"
    lr_initial: float = 1e-3
    lr_current: float = 1e-3
    lr_min: float = 1e-5
    lr_max: float = 1e-2
    desired_kl: float = 0.01
    rollout_mode: str = "device"

    def __init__(self, *args, **kwargs):
        self._stop_requested = False
        self.on_safe_point: Callable[[], None] | None = None
        self._device_rollout = None
        self._numpy_buffer = None
        super().__init__(*args, **kwargs)

    # -- schedules
    def _update_current_progress_remaining(self, num_timesteps: int, total_timesteps: int) -> None:
        self._current_progress_remaining = max(0.0, 1.0 - float(num_timesteps) / float(self.schedule_timesteps))

    def current_lr(self) -> float:
        if self.lr_mode == "adaptive":
            return float(self.lr_current)
        if self.lr_mode == "linear":
            return float(self.lr_initial * self._current_progress_remaining)
        return float(self.lr_initial)

    def _update_learning_rate(self, optimizers) -> None:
        lr = self.current_lr()
        self.logger.record("train/learning_rate", lr)
        if not isinstance(optimizers, list):
            optimizers = [optimizers]
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = lr

    def train(self) -> None:
        super().train()
        if self.lr_mode == "adaptive":
            kl = self.logger.name_to_value.get("train/approx_kl")
            if kl is not None:
                if kl > 2.0 * self.desired_kl:
                    self.lr_current = max(self.lr_min, self.lr_current / 1.5)
                elif kl < self.desired_kl / 2.0:
                    self.lr_current = min(self.lr_max, self.lr_current * 1.5)

    # -- stopping
    def _setup_learn(self, *args, **kwargs):
        # The worker sets its own logger first (go2train.train.tblog: TensorBoard with a purge step).
        if self.tensorboard_log is None and not self._custom_logger:
            # SB3 would otherwise configure a logger whose folder is a new /tmp/SB3-<date> per learn()
            from stable_baselines3.common.logger import Logger

            self.set_logger(Logger(folder=None, output_formats=[]))
        return super()._setup_learn(*args, **kwargs)

    def request_stop(self) -> None:
        self._stop_requested = True

    def collect_rollouts(self, *args, **kwargs) -> bool:
        if self.on_safe_point is not None:
            self.on_safe_point()
        if self._stop_requested:
            return False
        env, callback, rollout_buffer, n_rollout_steps = _rollout_args(*args, **kwargs)
        from go2train.train import rollout

        if self.rollout_mode == "device" and rollout.unwrap(env)[1] is not None:
            if not isinstance(self.rollout_buffer, rollout.TorchRolloutBuffer):
                self._numpy_buffer = self.rollout_buffer
                self.rollout_buffer = rollout.TorchRolloutBuffer(
                    self.n_steps, self.observation_space, self.action_space, device=self.device,
                    gamma=self.gamma, gae_lambda=self.gae_lambda, n_envs=self.n_envs)
            return rollout.collect_rollouts_device(self, env, callback, self.rollout_buffer, n_rollout_steps)
        if isinstance(self.rollout_buffer, rollout.TorchRolloutBuffer):  # switched back to numpy
            self.rollout_buffer = self._numpy_buffer
        self._device_rollout = None  # the numpy path owns the env state now
        return super().collect_rollouts(env, callback, self.rollout_buffer, n_rollout_steps)

    def _excluded_save_params(self) -> list[str]:
        return super()._excluded_save_params() + [
            "_stop_requested", "on_safe_point", "_device_rollout", "_numpy_buffer", "rollout_mode"]


def _rollout_args(env, callback, rollout_buffer, n_rollout_steps):
    return env, callback, rollout_buffer, n_rollout_steps


def ppo_kwargs(p: PPOConfig, n_envs: int) -> dict:
    batch = min(p.batch_size, p.n_steps * n_envs)
    return dict(
        learning_rate=p.learning_rate,
        n_steps=p.n_steps,
        batch_size=batch,
        n_epochs=p.n_epochs,
        gamma=p.gamma,
        gae_lambda=p.gae_lambda,
        clip_range=p.clip_range,
        ent_coef=p.ent_coef,
        vf_coef=p.vf_coef,
        max_grad_norm=p.max_grad_norm,
        target_kl=p.target_kl or None,
    )


def resolve_device(p: PPOConfig) -> str:
    if p.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return p.device


def normalize(p: PPOConfig, venv):
    """A fresh SB3 ``VecNormalize`` over ``venv`` with the ``[ppo]`` normalisation settings."""
    from stable_baselines3.common.vec_env import VecNormalize

    return VecNormalize(venv, norm_obs=p.normalize_obs, norm_reward=p.normalize_reward, clip_obs=p.clip_obs,
                        gamma=p.gamma)


def make_ppo(p: PPOConfig, venv, seed: int | None = None) -> ChunkedPPO:
    """A fresh ChunkedPPO from the ``[ppo]`` section."""
    policy_kwargs = dict(
        net_arch=dict(pi=list(p.net_arch), vf=list(p.net_arch)),
        activation_fn=ACTIVATIONS[p.activation],
        log_std_init=p.log_std_init,
        ortho_init=p.ortho_init,
    )
    model = ChunkedPPO(
        "MlpPolicy",
        venv,
        policy_kwargs=policy_kwargs,
        seed=seed,
        device=resolve_device(p),
        verbose=0,
        **ppo_kwargs(p, venv.num_envs),
    )
    apply_schedule(model, p)
    model.lr_current = p.learning_rate
    return model


def apply_schedule(model: ChunkedPPO, p: PPOConfig) -> None:
    """(Re)apply the schedule settings of ``[ppo]`` (the adaptive lr value itself continues)."""
    model.schedule_timesteps = p.schedule_timesteps
    model.lr_mode = p.lr_schedule
    model.lr_initial = p.learning_rate
    model.lr_min = p.lr_min
    model.lr_max = p.lr_max
    model.desired_kl = p.desired_kl
    model.rollout_mode = getattr(p, "rollout", "device")


# ---------------------------------------------------------------- loading a checkpoint
class ObservationMismatch(ValueError):
    """The policy's observation size differs from the env's (or the expected) one."""

    def __init__(self, policy: int, expected: int):
        super().__init__(f"policy expects {policy} observations, the env gives {expected}")
        self.policy, self.expected = policy, expected


def _check_action_bound(model_path: str, venv, manifest: dict, cfg) -> None:
    """A ``ConfigError`` when the checkpoint's action space is not ``venv``'s (``[env] clip_actions``
    sets the bound; checkpoints of before exp15 were trained in [-1, 1]): SB3 would refuse the load
    and the worker would take the checkpoint for damaged."""
    import numpy as np
    from stable_baselines3.common.save_util import load_from_zip_file

    from go2train.config import ConfigError

    data, _, _ = load_from_zip_file(model_path, device="cpu", load_data=True, print_system_info=False)
    space, want = (data or {}).get("action_space"), venv.action_space
    if space is None or (space.shape == want.shape and np.array_equal(space.low, want.low)
                         and np.array_equal(space.high, want.high)):
        return
    bound = float(np.max(space.high))
    raise ConfigError(
        f"checkpoint {manifest.get('name')} was trained with actions in [-{bound:g}, {bound:g}] but [env] "
        f"clip_actions = {cfg.env.clip_actions:g}: set [env] clip_actions = {bound:g} to resume it, or start a "
        "new run directory"
    )


def load_policy(rd, manifest: dict, cfg, venv=None, *, training: bool = False, n_obs: int | None = None):
    """(ChunkedPPO, VecNormalize) of a verified checkpoint: the one loader of model + statistics.

    ``cfg``'s ``[ppo]`` normalisation is re-applied to the statistics (``norm_obs``, ``clip_obs``,
    ``gamma``). ``training``: the worker's way (``venv`` required; statistics keep updating,
    ``norm_reward`` from ``[ppo]``; model on ``[ppo] device`` with ``[ppo]``'s hyperparameters and
    schedule, attached to the statistics). Otherwise eval mode (statistics frozen, rewards raw;
    model on the CPU, no env, schedules zeroed); ``venv`` None loads the statistics without an env
    (`go2train export`). The policy's observation size is checked against ``n_obs`` (default: the
    ``venv``'s): :class:`ObservationMismatch`. A stored config whose gait-clock setting differs from
    ``cfg``'s (another observation layout) is a ``ConfigError``, and so is (``training``) a checkpoint
    whose action space is not the ``venv``'s (``[env] clip_actions``). Other load failures propagate as
    they are (the worker counts them as a damaged checkpoint; the tools word them in one line).
    """
    import pickle

    from stable_baselines3.common.vec_env import VecNormalize

    from go2train.config import ConfigError
    from go2train.run import checkpoint

    p = cfg.ppo
    stored_obs = ((manifest.get("config") or {}).get("env") or {}).get("gait_period_steps", 0) > 0
    if stored_obs != (cfg.env.gait_period_steps > 0):
        raise ConfigError(
            f"[env] gait_period_steps changes the observation layout of checkpoint {manifest.get('name')}; "
            "start a new run directory"
        )
    vn_path = str(checkpoint.model_path(rd, manifest, "vecnorm"))
    if venv is None:  # VecNormalize.load without set_venv (it needs an env)
        with open(vn_path, "rb") as f:
            vn = pickle.load(f)
        if not isinstance(vn, VecNormalize):
            raise TypeError(f"holds a {type(vn).__name__}, not a VecNormalize")
    else:
        vn = VecNormalize.load(vn_path, venv)
    vn.training = training
    vn.norm_reward = p.normalize_reward if training else False
    vn.norm_obs, vn.clip_obs, vn.gamma = p.normalize_obs, p.clip_obs, p.gamma
    model_path = str(checkpoint.model_path(rd, manifest, "model"))
    if training:
        _check_action_bound(model_path, venv, manifest, cfg)
        model = ChunkedPPO.load(model_path, env=vn, device=resolve_device(p), tensorboard_log=None,
                                **ppo_kwargs(p, venv.num_envs))
        apply_schedule(model, p)
    else:
        model = ChunkedPPO.load(model_path, device="cpu", custom_objects={
            "learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0})
    if n_obs is None and venv is not None:
        n_obs = venv.observation_space.shape[0]
    if n_obs is not None and model.observation_space.shape != (n_obs,):
        raise ObservationMismatch(model.observation_space.shape[0], n_obs)
    return model, vn
