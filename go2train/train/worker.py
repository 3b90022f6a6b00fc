"""The chunk worker: one process trains one chunk, saves it untearably, reports, frees, exits.

``go2train train-chunk`` runs :func:`run`. Sequence:

1. Load config (error → exit ``CONFIG_ERROR``; this process's only read of it, so an edit takes
   effect at the next chunk), enable faulthandler into ``logs/worker.log``, record the config
   (``logs/worker_config.json``; a ``config_changed`` event when it differs from the previous
   worker's), start the heartbeat thread (``logs/heartbeat.json``, phase ``starting``).
2. Build the batched Genesis scene; find the newest valid chunk checkpoint (damaged ones are
   moved aside) and a newer resume point of the chunk after it, if any; load model + VecNormalize.
3. Train until the robots have finished ``[chunk] episodes`` more episodes each on average
   (``episodes * n_envs`` in total since the chunk began), stopping at a rollout boundary. A
   rolling resume point is written at most every ``[chunk] resume_point_minutes``.
4. Save ``models/chunk_NNNNNN`` (manifest last), write ``logs/chunks/chunk_NNNNNN.json``, release
   Genesis and CUDA memory, exit ``CHUNK_DONE`` (or ``RUN_COMPLETE`` past ``max_episodes``).

SIGTERM/SIGINT: stop at the next rollout boundary, write a resume point, exit ``STOPPED``.

TensorBoard (``[log]``, :mod:`go2train.train.tblog`): every worker writes its own event file into
``logs/tb/`` (one TB run per run directory), created with ``purge_step`` = the timesteps it resumed
at + 1; per rollout ``go2/*`` (from the episodes that finished in it) beside SB3's ``train/*`` and
``time/fps``, per chunk ``chunk/*`` when the chunk record is written.

Failpoints (:mod:`go2train.train.failpoints`; testing only; off unless set): ``GO2TRAIN_FAILPOINTS``
(comma-separated) or a file ``RUN_DIR/failpoints`` (one per line). Syntax ``KIND@CHUNK:STEPS`` with KIND one of ``segv``
(a real invalid memory access after STEPS batched env steps), ``hang`` (stop making progress),
``save_crash`` (SIGSEGV in the middle of the next checkpoint write, after the data files are
written and before the manifest), ``exit`` (exit 1); CHUNK is a milestone or ``*``. Each spec
fires once per run directory (recorded in ``logs/failpoints.fired``).
"""

from __future__ import annotations

import faulthandler
import fcntl
import logging
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from go2train.config import Config, ConfigError, load, overrides_of, profile_of
from go2train.run import checkpoint, exitcodes
from go2train.run.files import append_jsonl, atomic_write_json, num, read_json
from go2train.run.layout import PHASES, STARTUP_PHASES, RunDir, chunk_name
from go2train.train.failpoints import Failpoints
from go2train.train.gpumem import GpuMemProbe, torch_peak_reserved_mb, torch_reserved_mb

log = logging.getLogger("go2train.train.worker")


def kernel_cache_dir() -> Path:
    """Quadrants' offline kernel cache (Genesis' compiled kernels): the live runtime's setting when
    Genesis is initialised, else ``QD_OFFLINE_CACHE_FILE_PATH`` or its default."""
    try:
        from quadrants.lang import impl

        path = impl.get_runtime().prog.config().offline_cache_file_path
        if path:
            return Path(path)
    except Exception:  # noqa: BLE001
        pass
    return Path(os.environ.get("QD_OFFLINE_CACHE_FILE_PATH") or Path.home() / ".cache" / "quadrants" / "qdcache")


def kernel_cache_files(path: Path | None = None) -> int:
    """Files in the kernel cache (0 when it does not exist): 0 before a scene build means the
    build compiles every kernel (first run on this machine)."""
    n = 0
    for _root, _dirs, files in os.walk(path or kernel_cache_dir()):
        n += len(files)
    return n


# ---------------------------------------------------------------- metrics
class ChunkStats:
    """Per-episode accumulators for one chunk (persisted in resume points)."""

    def __init__(self, d: dict[str, Any] | None = None):
        d = d or {}
        self.n = int(d.get("n", 0))
        self.r_sum = float(d.get("r_sum", 0.0))
        self.r_min = d.get("r_min")
        self.r_max = d.get("r_max")
        self.l_sum = float(d.get("l_sum", 0.0))
        self.speed_sum = float(d.get("speed_sum", 0.0))
        self.falls = int(d.get("falls", 0))
        self.terms = dict(d.get("terms", {}))
        self.steps = float(d.get("steps", 0.0))  # episode steps with tracking sums (below)
        self.track = dict(d.get("track", {}))  # sums over steps: move_steps, cmd_speed, speed_along, ...

    def add(self, ep: dict[str, Any]) -> None:
        r = float(ep["r"])
        self.n += 1
        self.r_sum += r
        self.r_min = r if self.r_min is None else min(self.r_min, r)
        self.r_max = r if self.r_max is None else max(self.r_max, r)
        self.l_sum += ep["l"]
        self.speed_sum += ep["speed"]
        self.falls += bool(ep["fell"])
        for k, v in ep["terms"].items():
            self.terms[k] = self.terms.get(k, 0.0) + v
        if isinstance(ep.get("track"), dict):
            self.steps += ep["l"]
            for k, v in ep["track"].items():
                self.track[k] = self.track.get(k, 0.0) + float(v)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def summary(self) -> dict[str, Any]:
        n = max(self.n, 1)
        return {
            "reward_mean": self.r_sum / n,
            "reward_min": self.r_min,
            "reward_max": self.r_max,
            "ep_len_mean": self.l_sum / n,
            "forward_speed_mean": self.speed_sum / n,
            "fall_rate": self.falls / n,
            "reward_terms": {k: v / n for k, v in sorted(self.terms.items())},
            **self.tracking(),
        }

    def tracking(self) -> dict[str, Any]:
        """Tracking by what was commanded (docs/CONTRACTS.md): over the steps a robot was told to
        move (|cmd_xy| > 0.1 m/s), the mean commanded speed and the mean speed along the
        commanded direction (own frame); over all steps the mean linear (|cmd_xy - v_xy|, m/s) and
        yaw-rate (|yaw - w_z|, rad/s) tracking errors and the share told to stand still. None
        when no episode carried the sums."""
        t, steps = self.track, self.steps
        mv = t.get("move_steps", 0.0)
        per = lambda k: t[k] / steps if steps > 0 and k in t else None  # noqa: E731
        return {
            "command_speed_mean": t["cmd_speed"] / mv if mv > 0 else None,
            "speed_along_command_mean": t["speed_along"] / mv if mv > 0 else None,
            "tracking_error_lin_mean": per("lin_err"),
            "tracking_error_yaw_mean": per("yaw_err"),
            "standing_share": per("stand_steps"),
        }


def _f3(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# GPU memory: NVML's per-process figure for this worker (go2train.train.gpumem: includes Genesis's own
# CUDA buffers, which torch's allocator does not see), read at every heartbeat; torch's reserved
# figure is reported beside it.


# ---------------------------------------------------------------- the worker
class Worker:
    """One chunk's training in this process; :meth:`run` is the sequence in the module docstring.

    **Which chunk.** The worker alone decides which chunk it trains: ``chunk`` is the newest valid
    chunk checkpoint's milestone + ``[chunk] episodes`` (:meth:`_decide_chunk`), announced in every
    heartbeat. Until the checkpoint has verified and loaded, the newest manifest stands in for it
    (so the minutes of start-up show a chunk); ``chunk`` is None when the run is already complete
    (``prev_milestone >= [chunk] max_episodes``: nothing to train, exit ``RUN_COMPLETE``). The
    supervisor never works it out: it shows the heartbeat's, and after an exit looks for the chunk
    record that appeared.

    **Stopping.** One request: the module's ``_STOP`` event, set only by the SIGTERM/SIGINT handler
    that :func:`run` installs (:attr:`stop_requested`). It is read in two places: before training
    starts (a stop during the start-up exits ``STOPPED``, nothing trained, nothing saved) and at
    every safe point between rollouts (:meth:`on_safe_point`: write a resume point). ``learn()`` ends
    only through ``ChunkedPPO.request_stop()``, which :meth:`on_safe_point` calls when the chunk's
    episodes are done or a stop was requested. ``_hb_done`` only ends the heartbeat thread.
    """

    def __init__(self, rd: RunDir, cfg: Config):
        self.rd = rd
        self.cfg = cfg
        self.t0 = time.time()
        self.phase = "starting"
        self.phase_started = self.t0
        self.startup_phases: dict[str, float] = {}  # start-up phase -> seconds (this process)
        self.kernel_cache_files_before: int | None = None
        self.first_step_s: float | None = None
        self.chunk: int | None = None  # the milestone being trained towards (class docstring)
        self.prev_milestone = 0  # the chunk it builds on (0: none)
        self.episodes = 0  # run total of finished episodes
        self.chunk_start_episodes = 0
        self.timesteps = 0
        self.steps_in_process = 0
        self.sps = 0.0
        self.n_envs = cfg.env.n_envs
        self.backend = "?"
        self.device = "?"
        self._hb_done = threading.Event()  # ends the heartbeat thread (not a stop request: _STOP)
        self.stats = ChunkStats()
        self.chunk_started = time.time()
        self.startup_s = 0.0
        self.train_s_before = 0.0  # train seconds of this chunk in earlier processes
        self.t_start = time.time()
        self.model = None
        self.env = None  # the batched Go2Env
        self.base: dict[str, Any] | None = None  # manifest of the chunk checkpoint built on
        self.src: dict[str, Any] | None = None  # what was loaded: a resume point of this chunk, else base
        self.train_t0 = time.time()
        self.last_resume_save = time.time()
        self.failpoints: Failpoints | None = None
        self._monitor = None
        self.rollout_stats = ChunkStats()  # the episodes finished in the rollout in progress (TensorBoard)
        self._tb = None  # the TensorBoard writer (go2train.train.tblog), None when [log] tensorboard = false
        self._wandb = None
        self.gpu = GpuMemProbe()
        prof = profile_of(cfg)
        self.profile = prof.profile if prof else None  # the run's backend profile (config.py)

    def _backend(self) -> str:
        """The backend the config resolved (config.detect_gpu, no torch), checked against torch:
        the GPU profile without a CUDA torch would train 4096 robots on the CPU, or fail later."""
        prof = profile_of(self.cfg)
        if prof is None:
            return self.cfg.env.backend
        if prof.backend == "gpu" and prof.backend_setting == "auto":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(
                    f"[env] backend auto chose the GPU ({prof.reason}) but torch {torch.__version__} sees no CUDA "
                    f"device (built for CUDA {torch.version.cuda}); set [env] backend = \"cpu\" or install a CUDA torch")
        return prof.backend

    # -- heartbeat
    def _peak_gpu_mb(self) -> float | None:
        """NVML peak of this process's GPU memory over its heartbeat readings and one now."""
        self.gpu.read()
        return self.gpu.peak_mb

    def heartbeat(self) -> dict[str, Any]:
        hb = {
            "pid": os.getpid(),
            "chunk": self.chunk,
            "phase": self.phase,
            "phase_started": self.phase_started,
            "phase_s": round(time.time() - self.phase_started, 1),
            "timesteps": self.timesteps,
            "episodes": self.episodes,
            "episodes_per_robot": self.episodes / max(self.n_envs, 1),
            "chunk_start_episodes": self.chunk_start_episodes,
            "target_episodes": self.target_episodes,
            "steps_per_s": round(self.sps, 1),
            "time": time.time(),
            "started": self.t0,
            "n_envs": self.n_envs,
            "backend": self.backend,
            "device": self.device,
            "rss_mb": round(peak_rss_mb(), 1),
            "gpu_mem_mb": self.gpu.read(),
            "gpu_mem_peak_mb": self.gpu.peak_mb,
            "torch_reserved_mb": torch_reserved_mb(),
            "profile": self.profile,
        }
        atomic_write_json(self.rd.heartbeat, hb)
        return hb

    def set_phase(self, phase: str, beat: bool = True) -> None:
        """Enter ``phase``: the time spent in a start-up phase is kept for the chunk record, and a
        heartbeat goes out at once so the supervisor and `go2train status` see the change."""
        assert phase in PHASES, phase
        now = time.time()
        if self.phase in STARTUP_PHASES:
            self.startup_phases[self.phase] = round(
                self.startup_phases.get(self.phase, 0.0) + now - self.phase_started, 3)
        self.phase, self.phase_started = phase, now
        if beat:
            try:
                self.heartbeat()
            except OSError as exc:
                log.warning("heartbeat not written: %s", exc)

    def _heartbeat_loop(self) -> None:
        last_t, last_steps = time.time(), self.timesteps
        while not self._hb_done.wait(self.cfg.chunk.heartbeat_s):
            now, steps = time.time(), self.timesteps
            if now > last_t and self.phase == "training":
                self.sps = (steps - last_steps) / (now - last_t)
            last_t, last_steps = now, steps
            try:
                self.heartbeat()
            except OSError as exc:  # a full disk must not kill training
                log.warning("heartbeat not written: %s", exc)

    @property
    def target_episodes(self) -> int:
        return self.chunk_start_episodes + self.cfg.chunk.episodes * self.n_envs

    # -- model I/O
    def save(self, name: str, kind: str) -> dict[str, Any]:
        model, vn = self.model, self.model.get_env()
        if self._monitor is not None:
            self._monitor.file_handler.flush()
            os.fsync(self._monitor.file_handler.fileno())
        meta = {
            "kind": kind,
            "chunk": self.chunk if kind == "chunk" else self.prev_milestone,
            "target_chunk": self.chunk,
            "episodes_total": self.episodes,
            "chunk_start_episodes": self.chunk_start_episodes,
            "timesteps": int(model.num_timesteps),
            "n_envs": self.n_envs,
            "lr": model.current_lr(),
            "monitor_bytes": self.rd.monitor_csv.stat().st_size if self.rd.monitor_csv.exists() else 0,
            "chunk_stats": self.stats.to_dict(),
            "command_level": self.env.command_level,  # [command] curriculum: resumed from here
            "chunk_started": self.chunk_started,
            "wall": {
                "startup_s": self.startup_s,
                "train_s": self.train_s_before + (time.time() - self.train_t0),
            },
            "config": self.cfg.to_dict(),
            "config_overrides": list(overrides_of(self.cfg)),  # `--set` items of this run
            "profile": self.profile,
            "run": {"t_start": self.t_start, "run_name": "go2train"},
        }
        writers = {
            "model": lambda p: _write_with(p, model.save),
            "vecnorm": lambda p: vn.save(str(p)),
        }
        return checkpoint.save(self.rd, name, writers, meta, before_manifest=self.failpoints.in_save)

    # -- callbacks from ChunkedPPO
    def on_step(self, locals_: dict[str, Any]) -> bool:
        if self.first_step_s is None:  # the first batched step compiles the step kernels
            self.first_step_s = round(time.time() - self.train_t0, 3)
        self.steps_in_process += 1
        self.timesteps = int(self.model.num_timesteps)
        infos = locals_["infos"]
        for i in locals_["dones"].nonzero()[0]:
            ep = infos[i]["episode"]
            self.episodes += 1
            self.stats.add(ep)
            self.rollout_stats.add(ep)
            if self._monitor is not None:
                self._monitor.write_row({"r": ep["r"], "l": ep["l"], "t": ep["t"], "dist": round(ep["dist"], 4),
                                         "fell": int(ep["fell"])})
        self.failpoints.on_step(self.steps_in_process)
        return True

    def on_rollout_end(self) -> None:
        """After each rollout: record ``go2/*`` of the episodes that finished in it into SB3's logger,
        which writes them with its own ``train/*`` and ``time/fps`` at step ``num_timesteps``."""
        from go2train.train.tblog import rollout_scalars

        r = self.rollout_stats
        for tag, v in rollout_scalars(r.summary(), r.n, self.episodes, self.n_envs).items():
            self.model.logger.record(tag, v)
        self.model.logger.record("go2/command_level", self.env.command_level)
        self.rollout_stats = ChunkStats()

    def on_safe_point(self) -> None:
        """Between rollouts: stop when the chunk is done or a stop was asked; roll the resume point."""
        self.timesteps = int(self.model.num_timesteps)
        if self.episodes >= self.target_episodes:
            self.model.request_stop()
            return
        if self.stop_requested:
            self.set_phase("saving")
            self.save(checkpoint.RESUME, "resume")
            log.info("stop requested: resume point written at %d timesteps", self.timesteps)
            self.model.request_stop()
            return
        if time.time() - self.last_resume_save >= self.cfg.chunk.resume_point_minutes * 60:
            self.save(checkpoint.RESUME, "resume")
            self.last_resume_save = time.time()
            log.info("resume point written at %d timesteps", self.timesteps)

    # -- main: run() and its steps
    @property
    def stop_requested(self) -> bool:
        """A stop was asked (SIGTERM/SIGINT): the one stop request (class docstring)."""
        return _STOP.is_set()

    def run(self) -> int:
        """Start up, resume, train, save the chunk; the exit code (docs/CONTRACTS.md)."""
        newest = checkpoint.chunk_milestones(self.rd)
        self._decide_chunk(newest[0] if newest else 0)  # an estimate until a checkpoint has loaded
        threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
        venv = self._start_up()
        model = self._resume(venv)
        if self.chunk is None:
            log.info("run complete: chunk %d reached %s", self.prev_milestone,
                     self._limit_reached(self.prev_milestone, int(self.base["timesteps"])))
            return self._exit(exitcodes.RUN_COMPLETE)
        self._prepare(model, venv)
        train_s = self._train()
        if self.stop_requested and self.episodes < self.target_episodes:
            return self._exit(exitcodes.STOPPED)
        self._finish_chunk(venv, train_s)
        if self._limit_reached(self.chunk, int(self.model.num_timesteps)):
            return self._exit(exitcodes.RUN_COMPLETE)
        return self._exit(exitcodes.CHUNK_DONE)

    def _limit_reached(self, milestone: int, timesteps: int) -> str:
        """The limit a run whose newest chunk is ``milestone`` (``timesteps`` trained) has reached
        — ``[chunk] max_episodes`` or ``max_timesteps``, as the log names it — else "" (0 = off)."""
        c = self.cfg.chunk
        if c.max_episodes and milestone >= c.max_episodes:
            return f"max_episodes {c.max_episodes}"
        if c.max_timesteps and timesteps >= c.max_timesteps:
            return f"max_timesteps {c.max_timesteps:,} ({timesteps:,} trained)"
        return ""

    def _decide_chunk(self, prev_milestone: int, prev_timesteps: int = 0) -> None:
        """Build on chunk ``prev_milestone`` (0: none; ``prev_timesteps`` trained): train towards
        the next milestone, or nothing (``chunk`` None) when the run is already complete."""
        self.prev_milestone = prev_milestone
        done = prev_milestone > 0 and bool(self._limit_reached(prev_milestone, prev_timesteps))
        self.chunk = None if done else prev_milestone + self.cfg.chunk.episodes

    def _start_up(self):
        """Import the stack, initialise Genesis, build the batched scene; returns the VecEnv."""
        cfg = self.cfg
        self.set_phase("importing")
        from go2train.sim.env import Go2Env, init_genesis
        from go2train.sim.vecenv import Go2VecEnv
        from go2train.train.ppo import resolve_device

        self.backend = init_genesis(self._backend(), seed=cfg.env.seed)
        self.device = resolve_device(cfg.ppo)
        if cfg.ppo.torch_threads:
            import torch

            torch.set_num_threads(cfg.ppo.torch_threads)
        self.set_phase("building_scene")
        self.env = self._build_env(Go2Env)
        return Go2VecEnv(self.env, random_start=cfg.env.random_episode_start)

    def _load(self, manifest: dict[str, Any], venv):
        from go2train.train.ppo import load_policy

        return load_policy(self.rd, manifest, self.cfg, venv, training=True)[0]  # the logger: _start_logging

    def _resume(self, venv):
        """Load the newest valid chunk (damaged ones moved aside), then a newer resume point of the
        chunk after it (a damaged one moved aside); decide the chunk. Returns the loaded model
        (None: a fresh start). Sets ``base`` and ``src``."""
        rd = self.rd
        self.set_phase("loading_checkpoint")
        manifest, model = checkpoint.newest_valid_chunk(
            rd, lambda m: self._load(m, venv), log=log.warning, fatal=(ConfigError,)
        )
        self._decide_chunk(manifest["chunk"] if manifest else 0, int(manifest["timesteps"]) if manifest else 0)
        self.base = self.src = manifest
        path = rd.models / f"{checkpoint.RESUME}.json"
        rm = (read_json(path, {}) or {}) if path.exists() else {}
        if rm and resume_point_applies(rm, manifest, self.prev_milestone):
            try:
                checkpoint.verify(rd, checkpoint.RESUME)
                model = self._load(rm, venv)
                self.src = rm
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001
                dest = checkpoint.move_aside(rd, checkpoint.RESUME, f"damaged resume point: {exc}")
                log.warning("resume point damaged (%s); moved to %s", exc, dest)
        return model

    def _prepare(self, model, venv) -> None:
        """Continue the counters of what was loaded (or make a fresh model), reopen monitor.csv where
        the checkpoint left it, seed, arm the failpoints and hook the model's safe points."""
        from stable_baselines3.common.monitor import ResultsWriter

        from go2train.train.ppo import make_ppo, normalize

        cfg, rd, src = self.cfg, self.rd, self.src
        if src is None:
            log.info("no checkpoint: fresh start")
            model = make_ppo(cfg.ppo, normalize(cfg.ppo, venv), seed=cfg.ppo.seed)
        else:
            self.episodes = int(src["episodes_total"])
            self.t_start = float(src.get("run", {}).get("t_start", self.t_start))
            log.info("resuming from %s (%d timesteps, %d episodes)", src["name"], src["timesteps"], self.episodes)
        venv.t_start = self.t_start
        if src is not self.base:  # a resume point was loaded: this chunk continues
            self.chunk_start_episodes = int(src["chunk_start_episodes"])
            self.stats = ChunkStats(src.get("chunk_stats"))
            self.train_s_before = float(src.get("wall", {}).get("train_s", 0.0))
            self.chunk_started = float(src.get("chunk_started", time.time()))
        else:
            self.chunk_start_episodes = self.episodes
        self.failpoints = Failpoints(rd, self.chunk)

        # monitor.csv continues exactly where the checkpoint left it (no duplicated rows).
        offset = int(src.get("monitor_bytes", 0)) if src else 0
        if rd.monitor_csv.exists() and rd.monitor_csv.stat().st_size > offset:
            with open(rd.monitor_csv, "r+b") as f:
                f.truncate(offset)
        fresh_csv = not rd.monitor_csv.exists() or offset == 0
        self._monitor = ResultsWriter(str(rd.monitor_csv), header={"t_start": self.t_start, "env_id": "go2train"},
                                      extra_keys=("dist", "fell"), override_existing=fresh_csv)

        seed = cfg.ppo.seed + self.chunk
        model.set_random_seed(seed)
        self.env.seed(seed)
        self.env.set_command_level(command_level_of(src, cfg))
        model._last_obs = None  # start fresh episodes in this process
        self.model = model
        model.on_safe_point = self.on_safe_point
        self.timesteps = int(model.num_timesteps)
        self._start_logging(model)
        self.startup_s = time.time() - self.t0
        log.info("chunk %s: target %d episodes (%d robots), start-up %.1f s (%s)",
                 chunk_name(self.chunk), self.target_episodes, self.n_envs, self.startup_s,
                 ", ".join(f"{k} {v:.1f} s" for k, v in self.startup_phases_now().items()))

    def _start_logging(self, model) -> None:
        """Give SB3 this run's logger (go2train/train/tblog.py): TensorBoard into ``logs/tb/`` with
        ``purge_step = timesteps + 1``, so what a crashed predecessor logged past the point this
        worker resumed from is hidden; W&B first when ``[log] wandb``. Nothing (a silent logger)
        with ``[log] tensorboard = false``. A TensorBoard that cannot be opened never stops training."""
        from go2train.train import tblog

        lc = self.cfg.log
        if lc.wandb:  # [log] wandb = true without the package is a config error (go2train.config)
            try:
                self._wandb = tblog.start_wandb(self.rd.logs, lc.wandb_project, self.cfg.to_dict())
            except Exception as exc:  # noqa: BLE001 - e.g. offline: train anyway, TensorBoard has it all
                log.warning("W&B not started: %s", exc)
        try:
            logger, self._tb = tblog.make_logger(self.rd.tensorboard if lc.tensorboard else None,
                                                 purge_step=self.timesteps + 1)
        except Exception as exc:  # noqa: BLE001 - e.g. a full disk
            log.warning("TensorBoard not written: %s", exc)
            logger, self._tb = tblog.make_logger(None)
        model.set_logger(logger)

    def _train(self) -> float:
        """``learn()`` until a safe point ends it (chunk done or stop requested); its seconds."""
        from stable_baselines3.common.callbacks import BaseCallback

        worker = self

        class _Cb(BaseCallback):
            def _on_step(self) -> bool:
                return worker.on_step(self.locals)

            def _on_rollout_end(self) -> None:
                worker.on_rollout_end()

        self.train_t0 = time.time()
        self.last_resume_save = time.time()
        if not self.stop_requested:  # stopped during start-up: nothing trained, nothing to save
            self.set_phase("training")
            self.model.learn(total_timesteps=10**15, callback=_Cb(), tb_log_name="go2train",
                             reset_num_timesteps=False)
        return time.time() - self.train_t0

    def _finish_chunk(self, venv, train_s: float) -> None:
        """Save ``models/chunk_N`` (manifest last), then write its record ``logs/chunks/chunk_N.json``."""
        self.set_phase("saving")
        t_save = time.time()
        manifest = self.save(chunk_name(self.chunk), "chunk")
        save_s = time.time() - t_save
        metrics = self._chunk_record(manifest, venv, train_s, save_s)
        atomic_write_json(self.rd.chunk_metrics(self.chunk), metrics)
        if self._tb is not None:  # chunk/* beside the rollouts' scalars, at the chunk's last step
            from go2train.train.tblog import chunk_scalars

            try:
                self._tb.scalars(chunk_scalars(metrics), metrics["timesteps_total"])
            except Exception as exc:  # noqa: BLE001
                log.warning("TensorBoard: chunk scalars not written: %s", exc)
        log.info("chunk %s done: %d episodes, reward %.2f, speed along command %s of %s m/s, "
                 "%.0f steps/s, save %.2f s", chunk_name(self.chunk), metrics["episodes"],
                 metrics["reward_mean"], _f3(metrics["speed_along_command_mean"]),
                 _f3(metrics["command_speed_mean"]), metrics["steps_per_s"], save_s)

    def _chunk_record(self, manifest: dict[str, Any], venv, train_s: float, save_s: float) -> dict[str, Any]:
        """The chunk record (docs/CONTRACTS.md) of the chunk just saved as ``manifest``."""
        cmd = self.cfg.command
        base, src = self.base or {}, self.src or {}
        return {
            "chunk": self.chunk,
            "episodes": self.episodes - self.chunk_start_episodes,
            "episodes_total": self.episodes,
            "timesteps": manifest["timesteps"] - int(base.get("timesteps", 0)),
            "timesteps_total": manifest["timesteps"],
            **self.stats.summary(),
            "steps_per_s": (manifest["timesteps"] - int(src.get("timesteps", 0))) / max(train_s, 1e-9),
            "startup_s": self.startup_s,
            "startup_phases": self.startup_phases_now(),
            "first_step_s": self.first_step_s,
            "kernel_cache_files_before": self.kernel_cache_files_before,
            "train_s": self.train_s_before + train_s,
            "save_s": save_s,
            "peak_rss_mb": peak_rss_mb(),
            "peak_gpu_mb": self._peak_gpu_mb(),
            "peak_torch_reserved_mb": torch_peak_reserved_mb(),
            "profile": self.profile,
            "command": command_record(cmd, self.env.command_level),
            "n_envs": self.n_envs,
            "invalid_resets": venv.invalid_resets,
            "lr": self.model.current_lr(),
            "started": self.chunk_started,
            "finished": time.time(),
            "backend": self.backend,
            "resumed_from": src.get("name"),
        }

    def _exit(self, code: int) -> int:
        """End the heartbeat (a last one says ``exiting``), close monitor.csv, free Genesis and CUDA."""
        from go2train.sim.env import release_genesis

        self._hb_done.set()
        self.set_phase("exiting")
        if self._monitor is not None:
            self._monitor.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            try:
                self._wandb.finish()
            except Exception as exc:  # noqa: BLE001
                log.warning("W&B not finished: %s", exc)
        release_genesis()
        return code


    def startup_phases_now(self) -> dict[str, float]:
        """Seconds per start-up phase in this process (``starting``: interpreter and CLI start
        before this Worker existed are not counted; the phases sum to ``startup_s``)."""
        out = dict(self.startup_phases)
        if self.phase in STARTUP_PHASES:  # the one in progress
            out[self.phase] = out.get(self.phase, 0.0) + time.time() - self.phase_started
        return {k: round(v, 2) for k, v in out.items() if k != "starting" or v >= 0.01}

    def _build_env(self, go2env_cls):
        """Construct the env, naming the Genesis ``scene.build`` phase: ``compiling_kernels`` when
        the kernel cache is empty (first run on this machine), else ``loading_kernels`` (kernels
        whose source or settings changed still compile then; so may the first steps: the chunk
        record's ``first_step_s``)."""
        import genesis as gs

        orig = gs.Scene.build
        worker = self

        def build(scene, *args, **kwargs):
            try:
                worker.kernel_cache_files_before = kernel_cache_files()
            except OSError:
                worker.kernel_cache_files_before = None
            worker.set_phase("loading_kernels" if worker.kernel_cache_files_before else "compiling_kernels")
            return orig(scene, *args, **kwargs)

        gs.Scene.build = build
        try:
            return go2env_cls(self.cfg)
        finally:
            gs.Scene.build = orig


def command_level_of(manifest: dict[str, Any] | None, cfg: Config) -> float:
    """The curriculum level to train on: a fresh run's start level, else the checkpoint's
    ``command_level`` (a checkpoint from before the curriculum trained on the full ranges: 1)."""
    if manifest is None:
        return cfg.command.start_level()
    level = num(manifest.get("command_level"))
    return 1.0 if level is None else level


def command_record(cmd, level: float) -> dict[str, Any]:
    """The chunk record's ``command``: the configured ranges, the curriculum level at the chunk's
    end and the ranges drawn from at that level (``drawn``)."""
    vx, vy, yaw = cmd.ranges_at(level)
    return {"vx_range": cmd.vx_range, "vy_range": cmd.vy_range, "yaw_range": cmd.yaw_range,
            "standing_share": cmd.standing_share, "curriculum": cmd.curriculum, "level": level,
            "drawn": {"vx_range": vx, "vy_range": vy, "yaw_range": yaw}}


def resume_point_applies(rm: dict[str, Any], base: dict[str, Any] | None, prev_milestone: int) -> bool:
    """Whether resume point ``rm`` continues checkpoint ``base`` (None: a fresh start): same chunk, more
    timesteps, and written after ``base``. A damaged chunk redone within one resume interval leaves
    the discarded lineage's resume point behind, with the same chunk number: it must not be loaded."""
    base = base or {}
    return (rm.get("chunk") == prev_milestone and rm.get("timesteps", -1) > base.get("timesteps", -1)
            and rm.get("created", 0) > base.get("created", 0))


def _write_with(path: Path, save) -> None:
    """Call ``save(file)`` on an open binary file (SB3 would otherwise append '.zip' to the name)."""
    with open(path, "wb") as f:
        save(f)


def setup_logging(rd: RunDir) -> Any:
    rd.make()
    fh = open(rd.worker_log, "a", buffering=1)
    faulthandler.enable(file=fh, all_threads=True)
    handler = logging.StreamHandler(fh)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(message)s"))
    err = logging.StreamHandler(sys.stderr)
    err.setFormatter(logging.Formatter("go2train worker: %(levelname)s %(message)s"))
    root = logging.getLogger("go2train")
    root.handlers[:] = [handler, err]
    root.setLevel(logging.INFO)
    return fh


_STOP = threading.Event()


def _on_signal(signum, _frame) -> None:
    log.info("received %s: stopping at the next safe point", signal.Signals(signum).name)
    _STOP.set()


WORKER_CONFIG = "worker_config.json"  # in logs/: the effective config the newest worker started with


def config_changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> dict[str, list[Any]]:
    """The dotted keys whose values differ between two ``Config.to_dict()``s: ``{key: [old, new]}``
    (a key missing on one side reads as None)."""
    out: dict[str, list[Any]] = {}
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(config_changes(a, b, f"{prefix}{key}."))
        elif a != b:
            out[f"{prefix}{key}"] = [a, b]
    return out


def record_config(rd: RunDir, cfg: Config) -> dict[str, list[Any]]:
    """Keep the effective config this worker starts with in ``logs/worker_config.json``; if the
    previous worker's differs (the config file was edited mid-run), append one ``config_changed``
    event to ``logs/events.jsonl`` naming the changed keys, old and new. Returns the changes."""
    path = rd.logs / WORKER_CONFIG
    previous, current = read_json(path), cfg.to_dict()
    changed = config_changes(previous, current) if isinstance(previous, dict) else {}
    prof = profile_of(cfg)
    try:
        if changed:
            append_jsonl(rd.events, {"time": time.time(), "event": "config_changed", "pid": os.getpid(),
                                     "source": prof.source if prof else None, "changed": changed})
        if previous != current:
            atomic_write_json(path, current)
    except OSError as exc:  # disk full etc.: train anyway
        log.warning("cannot record the config in %s: %s", path, exc)
    if changed:
        log.info("config changed since the previous worker: %s",
                 ", ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in changed.items()))
    return changed


def run(run_dir: Path, config_path: Path | None, overrides: Sequence[str] = ()) -> int:
    """``go2train train-chunk``: read the config (the one read of this worker; a bad one exits
    ``CONFIG_ERROR`` with one line, nothing written), take the run's worker lock, record the
    config (:func:`record_config`), train one chunk."""
    # First thing: a SIGTERM from now on means "stop at the next safe point", never a kill.
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    rd = RunDir.at(run_dir)
    try:
        cfg = load(config_path, rd.root, overrides=overrides)
    except ConfigError as exc:
        print(f"go2train: {exc}", file=sys.stderr)
        return exitcodes.CONFIG_ERROR
    setup_logging(rd)
    lock = open(rd.logs / "worker.lock", "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        print(f"go2train: another worker is already training in {rd.root}", file=sys.stderr)
        return exitcodes.CONFIG_ERROR
    log.info("worker %d starting in %s", os.getpid(), rd.root)
    record_config(rd, cfg)
    removed = checkpoint.clean_temp_files(rd)
    if removed:
        log.warning("removed temp files of an interrupted save: %s", ", ".join(removed))
    try:
        return Worker(rd, cfg).run()
    except ConfigError as exc:
        log.error("%s", exc)
        return exitcodes.CONFIG_ERROR
