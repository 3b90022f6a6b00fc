"""TensorBoard (and optional W&B) for one run directory: one TB run, ``RUN_DIR/logs/tb/``.

Every process of a run writes its own event file into that one folder (TensorBoard merges the files
of a folder into one run): each chunk worker, each milestone render and each ``go2train eval``. A
sweep trial is a run directory, so a sweep is one TB run per trial (``--logdir SWEEP/trials``).

* **The worker** gives SB3 a logger (:func:`make_logger`, set with ``model.set_logger`` so SB3 does
  not configure its own) whose writer is created with ``purge_step = T + 1``, ``T`` the timesteps
  it resumed at: TensorBoard then hides what a crashed predecessor logged past the resume point
  (steps > T; what was logged at T itself belongs to the kept lineage: the chunk record and eval of
  the checkpoint resumed from). Scalars are at step = ``num_timesteps``: per rollout SB3's own
  ``train/*`` and ``time/fps`` plus :func:`rollout_scalars` (``go2/*``, from the episodes that
  finished in that rollout), per chunk :func:`chunk_scalars` (``chunk/*``, at the record's
  ``timesteps_total``).
* **Eval figures** of a checkpoint, at its ``timesteps`` (:func:`log_checkpoint`): from the
  milestone render (:func:`video_scalars`, ``eval/video/*``) and ``go2train eval``
  (:func:`eval_scalars`, ``eval/*``; ``eval_push/*`` with ``--push``). One event file per kind,
  rewritten in step order at each write (:func:`write_scalars`): the newest eval of a checkpoint
  replaces an earlier one, and chunks evaluated out of order still show. These writers never purge.
* **W&B** (``[log] wandb = true``, off by default; needs the ``wandb`` package): :func:`start_wandb`
  before the worker's writer exists, syncing the TB files, one W&B run per run directory
  (its id kept in ``logs/wandb_id``).

Nothing here imports torch or TensorBoard at module level.
"""

from __future__ import annotations

import logging
import math
import uuid
from pathlib import Path
from typing import Any

from go2train.sim.rewards import TERMS

log = logging.getLogger("go2train.train.tblog")

WANDB_ID_FILE = "wandb_id"  # in logs/: the run directory's one W&B run id


def _num(v: Any) -> float | None:
    """``v`` as a finite float, else None (bools count as 0/1)."""
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(float(v)):
        return float(v)
    return None


def _put(out: dict[str, float], tag: str, v: Any) -> None:
    x = _num(v)
    if x is not None:
        out[tag] = x


# ---------------------------------------------------------------- what is logged
def rollout_scalars(summary: dict[str, Any], episodes: int, episodes_total: int, n_envs: int) -> dict[str, float]:
    """``go2/*`` of one rollout from a :meth:`ChunkStats.summary` of the ``episodes`` that finished
    in it, every reward term of :data:`TERMS` among them (a switched-off one is 0); only
    ``go2/episodes_per_robot`` when none finished."""
    out: dict[str, float] = {}
    _put(out, "go2/episodes_per_robot", episodes_total / max(n_envs, 1))
    if episodes <= 0:
        return out
    _put(out, "go2/episodes", episodes)
    for tag, key in (("forward_speed", "forward_speed_mean"), ("speed_along_command", "speed_along_command_mean"),
                     ("command_speed", "command_speed_mean"), ("fall_rate", "fall_rate"),
                     ("episode_reward", "reward_mean"), ("episode_length", "ep_len_mean"),
                     ("tracking_error_lin", "tracking_error_lin_mean"), ("tracking_error_yaw", "tracking_error_yaw_mean"),
                     ("standing_share", "standing_share")):
        _put(out, f"go2/{tag}", summary.get(key))
    terms = summary.get("reward_terms") or {}
    for name in TERMS:
        _put(out, f"go2/reward/{name}", terms.get(name, 0.0))
    return out


CHUNK_KEYS = ("reward_mean", "reward_min", "reward_max", "ep_len_mean", "forward_speed_mean", "fall_rate",
              "command_speed_mean", "speed_along_command_mean", "tracking_error_lin_mean", "tracking_error_yaw_mean",
              "standing_share", "episodes", "episodes_total", "steps_per_s", "startup_s", "train_s", "save_s",
              "first_step_s", "peak_rss_mb", "peak_gpu_mb", "peak_torch_reserved_mb", "lr", "invalid_resets")


def chunk_scalars(record: dict[str, Any]) -> dict[str, float]:
    """``chunk/*``: the chunk record's main figures (docs/CONTRACTS.md), its reward terms as
    ``chunk/reward/<term>``; keys that are null are left out."""
    out: dict[str, float] = {}
    _put(out, "chunk/milestone", record.get("chunk"))
    for key in CHUNK_KEYS:
        _put(out, f"chunk/{key}", record.get(key))
    for name, v in (record.get("reward_terms") or {}).items():
        _put(out, f"chunk/reward/{name}", v)
    return out


EVAL_KEYS = ("forward_speed", "displacement_speed", "tracking_error", "survival", "time_alive_s", "base_height_mean",
             "base_height_std", "tilt_deg", "distance_m", "lateral_drift_m", "foot_air_fraction",
             "foot_clearance_swing_m", "swing_clearance_m", "air_time_per_swing_s", "touchdowns_per_s",
             "diagonal_sync", "pair_sync", "action_smoothness", "reward")


def eval_scalars(result: dict[str, Any], prefix: str = "eval") -> dict[str, float]:
    """``eval/*`` of one :func:`go2train.tools.evaluate.evaluate` result: the reference command's
    figures (``eval/forward_speed``, ``eval/survival``, ``eval/fall_rate`` = 1 - survival,
    ``eval/tilt_deg``, ...; its reward terms as ``eval/reward/<term>``), the grid summary
    (``eval/grid/*``), per grid command ``eval/cmd/<name>/{vx,vy,yaw_rate,lin_error,yaw_error,survival}``
    (``forward_0.6``, ``turn_left_0.8``, ...) and
    ``eval/lazy_optimum`` (0/1)."""
    out: dict[str, float] = {}
    pol = result.get("policy") or {}
    for key in EVAL_KEYS:
        _put(out, f"{prefix}/{key}", pol.get(key))
    if _num(pol.get("survival")) is not None:
        out[f"{prefix}/fall_rate"] = 1.0 - float(pol["survival"])
    for name, v in (pol.get("reward_terms") or {}).items():
        _put(out, f"{prefix}/reward/{name}", v)
    for key, v in (result.get("summary") or {}).items():
        _put(out, f"{prefix}/grid/{key}", v)
    for row in result.get("grid") or []:
        for key in ("vx", "vy", "yaw_rate", "lin_error", "yaw_error", "survival"):
            _put(out, f"{prefix}/cmd/{str(row.get('name')).replace(' ', '_')}/{key}", row.get(key))
    _put(out, f"{prefix}/lazy_optimum", result.get("lazy_optimum"))
    return out


def video_scalars(meta: dict[str, Any]) -> dict[str, float]:
    """``eval/video/*`` of a milestone video's manifest (docs/VIDEO.md): one robot at the video's
    command; speed along the command is the mean own-frame velocity projected on it."""
    out: dict[str, float] = {}
    p = "eval/video"
    for tag, key in (("forward_speed", "mean_forward_speed_mps"), ("heading_speed", "mean_heading_speed_mps"),
                     ("distance_m", "distance_m"), ("falls", "falls"), ("min_base_height_m", "min_base_height_m"),
                     ("invalid_resets", "invalid_resets"), ("render_seconds", "render_seconds")):
        _put(out, f"{p}/{tag}", meta.get(key))
    cmd, vel = meta.get("command") or [], meta.get("mean_velocity") or []
    if len(cmd) >= 3 and len(vel) >= 3:
        speed = math.hypot(cmd[0], cmd[1])
        if speed > 1e-9:
            _put(out, f"{p}/speed_along_command", (vel[0] * cmd[0] + vel[1] * cmd[1]) / speed)
        _put(out, f"{p}/command_speed", speed)
        _put(out, f"{p}/yaw_rate", vel[2])
    sim_s = _num(meta.get("sim_seconds"))
    if sim_s and _num(meta.get("falls")) is not None:
        out[f"{p}/falls_per_min"] = float(meta["falls"]) * 60.0 / sim_s
    return out


# ---------------------------------------------------------------- writing
def make_logger(log_dir: Path | None, purge_step: int | None = None):
    """An SB3 ``Logger`` writing only TensorBoard into ``log_dir`` (its writer created with
    ``purge_step``), or writing nothing when ``log_dir`` is None. Returns (logger, the TB output
    format or None); set it with ``model.set_logger`` before ``learn()``."""
    from stable_baselines3.common.logger import Logger

    if log_dir is None:
        return Logger(folder=None, output_formats=[]), None
    fmt = purging_tb_format(log_dir, purge_step)
    return Logger(folder=None, output_formats=[fmt]), fmt


def purging_tb_format(log_dir: Path, purge_step: int | None = None):
    """SB3's ``TensorBoardOutputFormat`` whose ``SummaryWriter`` is created with ``purge_step``
    (TensorBoard hides the events of earlier files at steps >= it), plus ``scalars(values, step)``
    for values written outside SB3's ``dump`` (the chunk record)."""
    from stable_baselines3.common.logger import TensorBoardOutputFormat
    from torch.utils.tensorboard import SummaryWriter

    class PurgingTensorBoardFormat(TensorBoardOutputFormat):
        def __init__(self) -> None:  # not super().__init__: that would open a writer without purge_step
            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
            self.writer.flush()  # the purge marker is on disk before anything else is logged
            self._is_closed = False

        def scalars(self, values: dict[str, float], step: int) -> None:
            for tag, v in values.items():
                self.writer.add_scalar(tag, v, int(step))
            self.writer.flush()

    return PurgingTensorBoardFormat()


def _read_points(path: Path) -> dict[tuple[str, int], float]:
    """{(tag, step): value} of the scalars in one event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(path), size_guidance={"scalars": 0}, purge_orphaned_data=False)
    ea.Reload()
    return {(tag, e.step): e.value for tag in ea.Tags()["scalars"] for e in ea.Scalars(tag)}


def write_scalars(log_dir: Path, values: dict[str, float], step: int, kind: str,
                  keep_steps: set[int] | None = None) -> bool:
    """Put ``values`` at ``step`` into ``log_dir``'s one event file of ``kind`` (``eval``,
    ``eval_push``, ``render``): the kind's earlier points are read back, the new ones replace those
    at the same step, and one new file is written in step order before the old ones are
    removed. So every tag's steps only grow within its file (TensorBoard's fast loader drops a tag's
    points at steps >= a step that comes again: an eval of chunk 50 written after chunk 250's would
    otherwise hide 250's) and an eval run twice leaves one point. ``keep_steps``: keep earlier points
    only at these steps (the run's checkpoints: a discarded lineage's evals go). No purge. Writers of
    one kind take turns (``flock`` on ``tb.lock`` beside ``log_dir``). Never raises: False (and a
    warning) when it could not be written."""
    import fcntl

    log_dir = Path(log_dir)
    try:
        from torch.utils.tensorboard import SummaryWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        with open(log_dir.parent / "tb.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            old = sorted(log_dir.glob(f"events.out.tfevents.*.{kind}"))
            points: dict[tuple[str, int], float] = {}
            for f in old:
                try:
                    points.update(_read_points(f))
                except Exception as exc:  # noqa: BLE001 - a damaged file: its points are lost, not the new ones
                    log.warning("TensorBoard: %s unreadable (%s)", f, exc)
            points = {k: v for k, v in points.items()  # the new values replace this step's old ones
                      if k[1] != step and (keep_steps is None or k[1] in keep_steps)}
            points.update({(tag, int(step)): float(v) for tag, v in values.items()})
            w = SummaryWriter(log_dir=str(log_dir), filename_suffix=f".{kind}")
            try:
                for (tag, st), v in sorted(points.items(), key=lambda kv: (kv[0][1], kv[0][0])):
                    w.add_scalar(tag, v, st)
            finally:
                w.close()
            for f in old:  # the new file has another name (another pid, or this process's next uid)
                f.unlink(missing_ok=True)
        return True
    except Exception as exc:  # noqa: BLE001 - TensorBoard is a courtesy: never fail a render or an eval
        log.warning("TensorBoard scalars not written to %s: %s", log_dir, exc)
        return False


def log_checkpoint(rd, manifest: dict[str, Any], values: dict[str, float], kind: str) -> bool:
    """Put ``values`` at the checkpoint's ``timesteps`` into the run's TensorBoard folder
    (``rd.tensorboard``; :func:`write_scalars`, keeping the kind's points of the run's current
    checkpoints), unless the checkpoint trained with ``[log] tensorboard = false``. Never raises."""
    from go2train.run.files import read_json
    from go2train.run.layout import chunk_name

    stored = (manifest.get("config") or {}).get("log") or {}
    step = manifest.get("timesteps")
    if stored.get("tensorboard", True) is False or not isinstance(step, int) or not values:
        return False
    keep = set()
    for m in rd.checkpoints():
        t = read_json(rd.models / f"{chunk_name(m)}.json")
        if isinstance(t, dict) and isinstance(t.get("timesteps"), int):
            keep.add(t["timesteps"])
    return write_scalars(rd.tensorboard, values, step, kind, keep_steps=keep)


# ---------------------------------------------------------------- W&B (optional)
def wandb_run_id(logs: Path) -> str:
    """The run directory's one W&B run id: ``logs/wandb_id``, created on first use."""
    path = Path(logs) / WANDB_ID_FILE
    try:
        rid = path.read_text().strip()
        if rid:
            return rid
    except OSError:
        pass
    rid = uuid.uuid4().hex[:16]
    from go2train.run.files import atomic_write_bytes

    atomic_write_bytes(path, (rid + "\n").encode())
    return rid


def start_wandb(logs: Path, project: str, config: dict[str, Any]):
    """``wandb.init`` for this worker: the run directory's W&B run (resumed), syncing the TensorBoard
    files; call before the TB writer is created. Not tested here (wandb is not installed)."""
    import wandb

    return wandb.init(project=project, id=wandb_run_id(logs), resume="allow", sync_tensorboard=True,
                      dir=str(logs), config=config)
