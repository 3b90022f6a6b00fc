"""`go2train export`: a chunk's policy as ONNX + TorchScript + JSON, runnable without go2train.

``go2train export --chunk N|latest [--run-dir D] [--out DIR]`` writes three files into ``DIR``
(default ``RUN_DIR/exports/chunk_NNNNNN/``):

* ``policy.onnx`` (opset :data:`OPSET`) and ``policy.pt`` (TorchScript): the same network.
  Input ``obs``: float32 ``(batch, num_obs)``, the RAW observation exactly as
  ``Go2Env._compute_obs`` builds it (before VecNormalize). Output ``action``: float32
  ``(batch, 12)``, the deterministic action (the Gaussian policy's mean) clipped to
  the checkpoint's action space (SB3's ``predict`` clips there; ``±clip_actions`` since exp15,
  ``[-1, 1]`` before) and to ``±clip_actions`` (the env's clip): the ``action`` the env stores
  and observes. Joint position targets are
  ``default_dof_pos + action_scale * action`` (joint order :data:`~go2train.robot.JOINT_NAMES`).
  The VecNormalize observation statistics are baked in, computed in float64 as SB3 does:
  ``clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs)``, then float32.
* ``policy.json``: everything else needed to run the policy: observation layout
  (:func:`obs_layout`, the one place that describes it), joints, default pose, PD gains, action
  scale and clip, timing, gait clock, action latency, commands, the source checkpoint's sha256.
  Written last, with the sha256 of the two networks: no valid ``policy.json``, no export.

Loading an export runs no pickle: ONNX (protobuf), TorchScript (``torch.jit.load``'s own loader)
and JSON. Export itself loads the checkpoint's SB3 zip and VecNormalize pickle from the run
directory's ``models/`` (verified against their manifest first), like eval does.

Bad input (unknown chunk, missing run dir, an ``--out`` that cannot be written) is one line naming
the value at fault, exit 2, and nothing is written: the networks are built in memory and checked
against SB3's deterministic policy (``policy.json`` ``check``) before the first file is written;
each file is written atomically (temp file, fsync, rename), and a write that fails removes what
the export made. See docs/EXPORT.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from go2train import __version__
from go2train.config import Config
from go2train.robot import GENESIS_ARMATURE, JOINT_NAMES, LEGS, TROT_OFFSETS
from go2train.run import exitcodes
from go2train.run.files import atomic_write_bytes
from go2train.run.layout import RunDir, chunk_name

FORMAT = 1
OPSET = 17
FILES = ("policy.onnx", "policy.pt", "policy.json")
INPUT_NAME, OUTPUT_NAME = "obs", "action"


class ExportError(Exception):
    """A request export cannot serve: one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = exitcodes.CONFIG_ERROR):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- what the observation holds
def obs_layout(cfg: Config) -> list[dict[str, Any]]:
    """The observation vector of ``Go2Env._compute_obs`` for ``cfg``, part by part, in order.

    Each part: ``name``, ``start``/``stop`` (the slice), ``size``, ``components`` (one name per
    float), ``scale`` and ``offset`` (per float: ``obs[start:stop] = (quantity - offset) * scale``),
    ``unit`` of the quantity, and ``description``. tests/test_export.py checks this against a real
    env's observations, so a change of the env's layout that is not made here fails there.
    """
    e = cfg.env
    joints = [n.removesuffix("_joint") for n in JOINT_NAMES]
    parts: list[tuple[str, list[str], list[float], list[float], str, str]] = [
        ("base_ang_vel", ["x", "y", "z"], [e.obs_scale_ang_vel] * 3, [0.0] * 3, "rad/s",
         "base angular velocity in the base frame (IMU gyro)"),
        ("projected_gravity", ["x", "y", "z"], [1.0] * 3, [0.0] * 3, "1",
         "unit gravity vector (0, 0, -1) rotated into the base frame; (0, 0, -1) when level"),
        ("commands", ["vx", "vy", "yaw_rate"], [e.obs_scale_lin_vel, e.obs_scale_lin_vel, e.obs_scale_ang_vel],
         [0.0] * 3, "m/s, m/s, rad/s", "velocity command: forward, left (base frame), yaw rate"),
        ("dof_pos", joints, [e.obs_scale_dof_pos] * 12, e.default_dof_pos(), "rad",
         "joint positions minus the default pose, in joint order"),
        ("dof_vel", joints, [e.obs_scale_dof_vel] * 12, [0.0] * 12, "rad/s", "joint velocities, in joint order"),
        ("last_action", joints, [1.0] * 12, [0.0] * 12, "1",
         "the policy's previous output as the env clipped it (the exported output; 0 at the episode start)"),
    ]
    if e.gait_period_steps > 0:
        parts.append(("gait_clock", ["sin", "cos"], [1.0, 1.0], [0.0, 0.0], "1",
                      ("sin and cos of the gait phase 2*pi*(k mod gait_period_steps)/gait_period_steps, "
                       "k = control steps since the episode start")))
    out, start = [], 0
    for name, comps, scale, offset, unit, desc in parts:
        out.append({"name": name, "start": start, "stop": start + len(comps), "size": len(comps),
                    "components": comps, "scale": [float(s) for s in scale], "offset": [float(o) for o in offset],
                    "unit": unit, "description": desc})
        start += len(comps)
    return out


def obs_size(cfg: Config) -> int:
    return obs_layout(cfg)[-1]["stop"]


# ---------------------------------------------------------------- policy.json


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _urdf_joint_limits() -> dict[str, Any] | None:
    """Position, torque and speed limits of the motor joints from Genesis's go2.urdf (no genesis
    import: the asset is found on disk); None when the asset is not there."""
    import importlib.util
    import xml.etree.ElementTree as ET

    try:
        spec = importlib.util.find_spec("genesis")
        base = next(iter(spec.submodule_search_locations or []))  # type: ignore[union-attr]
        root = ET.parse(os.path.join(base, "assets", "urdf", "go2", "urdf", "go2.urdf")).getroot()
    except Exception:  # noqa: BLE001 - limits are informative; the export does not depend on them
        return None
    out: dict[str, list[float]] = {"lower": [], "upper": [], "effort": [], "velocity": []}
    for name in JOINT_NAMES:
        lim = root.find(f"joint[@name='{name}']/limit")
        if lim is None:
            return None
        for k, values in out.items():
            values.append(float(lim.get(k, "nan")))
    return {"lower_rad": out["lower"], "upper_rad": out["upper"], "effort_nm": out["effort"],
            "velocity_rad_s": out["velocity"], "source": "genesis assets urdf/go2/urdf/go2.urdf"}


def describe(cfg: Config, manifest: dict[str, Any], norm: dict[str, Any], action_bounds: tuple[float, float],
             net: dict[str, Any]) -> dict[str, Any]:
    """policy.json without its ``files`` entry: the contract of the exported networks (docs/EXPORT.md)."""
    e, c = cfg.env, cfg.command
    layout = obs_layout(cfg)
    period = e.gait_period_steps
    n_obs = layout[-1]["stop"]
    src_files = {f: {"sha256": i.get("sha256"), "bytes": i.get("bytes"), "role": i.get("role")}
                 for f, i in (manifest.get("files") or {}).items()}
    return {
        "format": FORMAT,
        "go2train_version": __version__,
        "created": time.time(),
        "source": {"checkpoint": manifest.get("name"), "chunk": manifest.get("chunk"),
                   "timesteps": manifest.get("timesteps"), "episodes_total": manifest.get("episodes_total"),
                   "files": src_files},
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", n_obs],
                  "meaning": "raw observation as Go2Env._compute_obs builds it (before normalisation); "
                             "layout in observation.layout"},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["batch", 12],
                   "meaning": "deterministic action (policy mean) clipped to [low, high]: the checkpoint's "
                              "action space and +-clip_actions; joint position targets = default_dof_pos + "
                              "action_scale * action, in joint order",
                   "low": action_bounds[0], "high": action_bounds[1],
                   "joint_targets": "default_dof_pos + action_scale * action"},
        "observation": {"size": n_obs, "layout": layout, "normalization": norm},
        "joints": {"names": list(JOINT_NAMES), "default_pos_rad": e.default_dof_pos(),
                   "kp": e.kp, "kd": e.kd, "action_scale": e.action_scale, "clip_actions": e.clip_actions,
                   "limits": _urdf_joint_limits()},
        "control": {
            "dt_s": e.dt, "frequency_hz": 1.0 / e.dt, "substeps": e.substeps, "physics_dt_s": e.dt / e.substeps,
            "pd": "each physics substep: torque = kp * (target - q) - kd * dq, clipped to the URDF effort "
                  "limit; the target is held for the whole control step (decimation = substeps)",
            "action_latency_steps": list(cfg.domain_rand.latency_range()),
            "latency": ("k control steps, k drawn per episode in action_latency_steps: the target applied "
                        "during step t comes from the action computed at step t-k (the robot starts with "
                        "target = default pose); k = 0: applied in the same control step"),
        },
        "simulation": {
            "simulator": f"genesis-world {_version('genesis-world')}", "solver": "rigid, Newton constraint solver",
            "joint_armature_kg_m2": GENESIS_ARMATURE, "joint_damping": 0.0, "joint_friction": 0.0,
            "note": "Genesis gives every URDF joint armature 0.1 (its default_armature) and the Go2 URDF "
                    "has no damping or friction; a real Go2's motors have both (docs/EXPORT.md, sim2sim)",
        },
        "gait_clock": {
            "enabled": period > 0, "period_steps": period, "period_s": period * e.dt,
            "phase": "phase = 2*pi*(k mod period_steps)/period_steps, k = control steps since the episode "
                     "start (k = 0 in the first observation, +1 per step); obs gets sin(phase), cos(phase)",
            "trot_offsets": dict(zip(LEGS, TROT_OFFSETS)),
        },
        "commands": {
            "components": ["vx", "vy", "yaw_rate"], "units": ["m/s", "m/s", "rad/s"],
            "obs_scale": [e.obs_scale_lin_vel, e.obs_scale_lin_vel, e.obs_scale_ang_vel],
            "trained": {"vx_range": list(c.vx_range), "vy_range": list(c.vy_range), "yaw_rate_range": list(c.yaw_range),
                        "standing_share": c.standing_share,
                        "yaw_rate": (f"heading mode: the yaw slot is clip(yaw + {c.heading_gain} * wrap(heading target "
                                     "- yaw), +-max(1, |yaw_range|)) rad/s, the heading target turning at the drawn "
                                     "yaw rate" if c.heading else "the drawn yaw rate"),
                        "resample_steps": c.resample_steps},
        },
        "network": net,
        "config": cfg.to_dict(),
    }


# ---------------------------------------------------------------- the exported network
def _checked_dir(out: Path) -> Path:
    """``out`` absolute, or ExportError when it cannot become a writable directory. Nothing is
    created here (folders are made when the files are written; :func:`_write_all`)."""
    out = out.absolute()
    p = out
    while not p.exists() and not p.is_symlink() and p.parent != p:
        p = p.parent
    if p == out and not out.is_dir():
        raise ExportError(f"--out {out} exists and is not a directory")
    if not p.is_dir():
        raise ExportError(f"--out {out}: {p} is not a directory")
    if not os.access(p, os.W_OK | os.X_OK):
        raise ExportError(f"--out {out} is not writable" if p == out else f"--out {out}: {p} is not writable")
    return out


def _write_all(dest: Path, files: list[tuple[str, bytes]]) -> None:
    """Write ``files`` into ``dest`` in order, each atomically. On an OSError (a read-only file
    system, /proc, a full disk) the files and folders this call made are removed and ExportError
    names ``dest``."""
    made, p = [], dest
    while not p.exists() and p.parent != p:
        made.append(p)
        p = p.parent
    written: list[Path] = []
    try:
        for name, data in files:
            atomic_write_bytes(dest / name, data)
            written.append(dest / name)
    except OSError as exc:
        for f in written:
            f.unlink(missing_ok=True)
        for d in made:  # deepest first
            try:
                d.rmdir()
            except OSError:
                pass
        raise ExportError(f"--out {dest} cannot be written: {exc.strerror or exc}") from None


def build_module(model, vn, cfg: Config):
    """The torch module ``raw obs -> clipped deterministic action`` (normalisation baked in), with
    its normalisation record for policy.json and the action bounds."""
    import copy

    import numpy as np
    import torch

    policy = model.policy
    low = float(max(np.max(model.action_space.low), -cfg.env.clip_actions))
    high = float(min(np.min(model.action_space.high), cfg.env.clip_actions))
    if not (np.all(model.action_space.low == model.action_space.low.flat[0])
            and np.all(model.action_space.high == model.action_space.high.flat[0])):
        raise ExportError("the policy's action space bounds differ per joint; export expects one bound",
                          exitcodes.FAILURE)
    normalize = bool(vn.norm_obs)
    mean, var = _obs_stats(vn, model.observation_space.shape[0])
    eps, clip_obs = float(vn.epsilon), float(vn.clip_obs)
    norm = {"baked_in": True, "enabled": normalize,
            "formula": "clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs), in float64" if normalize
                       else "none (normalize_obs = false)",
            "mean": mean.tolist(), "var": var.tolist(), "epsilon": eps, "clip_obs": clip_obs}

    class ExportedPolicy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pi = copy.deepcopy(policy.mlp_extractor.policy_net).float().cpu()
            self.action_net = copy.deepcopy(policy.action_net).float().cpu()
            self.register_buffer("mean", torch.as_tensor(mean if normalize else np.zeros_like(mean)))
            self.register_buffer("std", torch.as_tensor(np.sqrt(var + eps) if normalize else np.ones_like(var)))
            self.clip_obs = clip_obs if normalize else math.inf
            self.low, self.high = low, high

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            x = ((obs.to(torch.float64) - self.mean) / self.std).clamp(-self.clip_obs, self.clip_obs)
            return self.action_net(self.pi(x.to(torch.float32))).clamp(self.low, self.high)

    net = {"activation": type(policy.mlp_extractor.policy_net[1]).__name__ if len(policy.mlp_extractor.policy_net) > 1
           else None, "hidden": [m.out_features for m in policy.mlp_extractor.policy_net
                                 if isinstance(m, torch.nn.Linear)], "onnx_opset": OPSET}
    return ExportedPolicy().eval(), norm, (low, high), net


def _obs_stats(vn, n_obs: int):
    """(mean, var) float64 of the VecNormalize's observation statistics; (0, 1) when
    ``normalize_obs = false`` (SB3 keeps no ``obs_rms`` then)."""
    import numpy as np

    if not vn.norm_obs or getattr(vn, "obs_rms", None) is None:
        return np.zeros(n_obs), np.ones(n_obs)
    return np.asarray(vn.obs_rms.mean, dtype=np.float64), np.asarray(vn.obs_rms.var, dtype=np.float64)


@contextlib.contextmanager
def _quiet():
    """The exporters' warnings (deprecations, tracer notes) and prints stay off the terminal."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stdout(io.StringIO()):
            yield


def to_bytes(module, n_obs: int) -> tuple[bytes, bytes]:
    """(ONNX, TorchScript) serialisations of ``module``, batch axis dynamic."""
    import torch

    example = torch.zeros((2, n_obs), dtype=torch.float32)
    with _quiet(), torch.no_grad():
        buf = io.BytesIO()
        torch.onnx.export(module, (example,), buf, dynamo=False, opset_version=OPSET,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
        onnx_bytes = buf.getvalue()
        scripted = torch.jit.script(module)
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
    return onnx_bytes, buf.getvalue()


def check_against_sb3(model, vn, onnx_bytes: bytes, ts_bytes: bytes, n_obs: int, tol: float = 1e-5) -> dict[str, Any]:
    """Run both serialisations on raw observations (around the VecNormalize statistics, some beyond
    ``clip_obs``) against SB3's deterministic policy, ``model.predict(vn.normalize_obs(obs))``;
    ExportError when either differs by more than ``tol``. Returns the max abs differences."""
    import numpy as np
    import onnxruntime as ort
    import torch

    rng = np.random.default_rng(0)
    mean, var = _obs_stats(vn, n_obs)
    std = np.sqrt(var + vn.epsilon)
    x = np.concatenate([mean + std * rng.normal(0.0, 3.0, (96, n_obs)),
                        rng.normal(0.0, 2.0, (32, n_obs))]).astype(np.float32)
    want, _ = model.predict(vn.normalize_obs(x), deterministic=True)
    with torch.no_grad():
        ts = torch.jit.load(io.BytesIO(ts_bytes))(torch.from_numpy(x)).numpy()
    onx = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"]).run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    diffs = {"onnx": float(np.abs(onx - want).max()), "torchscript": float(np.abs(ts - want).max())}
    if not all(d <= tol for d in diffs.values()):
        raise ExportError(f"exported networks disagree with the SB3 policy: max abs diff {diffs}", exitcodes.FAILURE)
    return {"observations": len(x), "tolerance": tol, "max_abs_diff": diffs,
            "reference": "SB3 model.predict(VecNormalize.normalize_obs(obs), deterministic=True)"}


# ---------------------------------------------------------------- the command
def default_out(rd: RunDir, manifest: dict[str, Any]) -> Path:
    return rd.root / "exports" / str(manifest.get("name") or chunk_name(int(manifest["chunk"])))


def export(run_dir: str | Path, chunk: int | str = "latest", out: str | Path | None = None) -> dict[str, Any]:
    """Export chunk ``chunk`` of ``run_dir`` into ``out`` (default RUN_DIR/exports/chunk_NNNNNN).
    Returns policy.json's content plus ``out`` and ``seconds``; ExportError (one line) on bad input."""
    from go2train.tools import evaluate as ev
    from go2train.train.ppo import ObservationMismatch, load_policy

    t0 = time.perf_counter()
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir.at(run_dir)
    if not rd.root.is_dir():
        raise ExportError(f"run directory {rd.root} does not exist")
    try:
        manifest = ev.resolve_chunk(rd, ev.parse_chunk(str(chunk)))
        cfg = ev._check_config(manifest)
    except ev.EvalError as exc:
        raise ExportError(str(exc)) from None
    dest = _checked_dir(Path(out) if out is not None else default_out(rd, manifest))
    n_obs = obs_size(cfg)
    try:
        model, vn = load_policy(rd, manifest, cfg, n_obs=n_obs)  # eval mode, statistics without an env
    except ObservationMismatch as exc:
        raise ExportError(f"checkpoint {manifest.get('name')}: policy expects {exc.policy} "
                          f"observations, obs_layout of its stored config gives {n_obs}", exitcodes.FAILURE) from None
    except Exception as exc:  # noqa: BLE001 - a checkpoint that does not load is damaged
        raise ExportError(f"checkpoint {manifest.get('name', '?')} does not load: {type(exc).__name__}: {exc}",
                          exitcodes.FAILURE) from None
    module, norm, bounds, net = build_module(model, vn, cfg)
    try:
        onnx_bytes, ts_bytes = to_bytes(module, n_obs)
    except Exception as exc:  # noqa: BLE001 - one line, not a traceback
        raise ExportError(f"export of {manifest.get('name')} failed: {type(exc).__name__}: {exc}",
                          exitcodes.FAILURE) from None
    check = check_against_sb3(model, vn, onnx_bytes, ts_bytes, n_obs)
    doc = describe(cfg, manifest, norm, bounds, net)
    doc["check"] = check
    doc["files"] = {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                    for name, data in (("policy.onnx", onnx_bytes), ("policy.pt", ts_bytes))}
    _write_all(dest, [("policy.onnx", onnx_bytes), ("policy.pt", ts_bytes),
                      ("policy.json", (json.dumps(doc, indent=2) + "\n").encode())])  # policy.json last
    return {**doc, "out": str(dest), "seconds": time.perf_counter() - t0}


def main(run_dir: str | Path, chunk: str, out: str | Path | None) -> int:
    """`go2train export`: export, print one line (the output folder), return the exit code."""
    res = export(run_dir, chunk, out)
    sizes = ", ".join(f"{n} {res['files'][n]['bytes'] / 1024:.0f} KiB" for n in ("policy.onnx", "policy.pt"))
    print(f"exported {res['source']['checkpoint']} to {res['out']} (policy.onnx, policy.pt, policy.json; {sizes}; "
          f"{res['seconds']:.1f} s)")
    sys.stdout.flush()
    return 0
