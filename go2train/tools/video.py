"""Milestone videos: render the policy of one checkpoint, and stitch a progression video.

``go2train video --chunk 250`` (see docs/VIDEO.md):

1. ``models/chunk_000250`` is verified (sha256 of its files, :func:`go2train.run.checkpoint.verify`).
2. The env config is the one stored in the checkpoint's manifest (``"config"``), not the current
   file; only ``[video]`` comes from the current config. The video env has ONE robot in its own
   small scene (plane + Go2), starting at the origin in the default pose, the command fixed to
   ``--command vx,vy,yaw`` (default :data:`DEFAULT_COMMAND`: the eval grid's reference, forward
   0.6 m/s), episodes never truncated mid-video.
3. Model and VecNormalize are loaded by :func:`go2train.train.ppo.load_policy` (the one loader) in
   eval mode (``training=False``, ``norm_reward=False``, the stored config's ``[ppo]``
   normalisation); actions are deterministic (``model.predict(obs, deterministic=True)``).
4. A Genesis camera follows the robot (its pose is set every frame from the base position, so no
   camera state survives a reset); each frame gets a small label (chunk, sim time, achieved
   vx, vy and yaw rate beside the command, distance, falls). A terminated robot is counted as a fall and starts again at the origin.
5. Frames go to ffmpeg (H.264, yuv420p) in a hidden temp file in the same folder, renamed onto
   ``videos/chunk_000250.mp4`` when complete; the manifest ``videos/chunk_000250.json`` is written
   last, atomically.

No torch or genesis at import time: bad input is reported in a fraction of a second.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from go2train.config import Config, ConfigError, from_dict
from go2train.run import checkpoint, exitcodes
from go2train.run.files import atomic_write_json, read_json
from go2train.run.identity import alive
from go2train.run.layout import RunDir, chunk_name

FORMAT = 1
DEFAULT_COMMAND = (0.6, 0.0, 0.0)  # vx m/s, vy m/s, yaw rate rad/s: the eval grid's reference (forward 0.6)
PROGRESSION = "progression"
# Camera offset from the robot's base (x ahead, y to its right, z up) and the look-at height.
CAM_OFFSET = (1.5, -2.0, 0.9)
CAM_LOOKAT_Z = 0.3
CAM_FOV = 40.0
CAM_SMOOTHING = 0.25  # EMA weight of the newest base position (1 = rigidly attached)
SPEED_SMOOTHING = 0.15  # EMA weight for the speed shown in the label

Progress = Callable[[int, int], None]


class VideoError(Exception):
    """A problem reported as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = exitcodes.CONFIG_ERROR):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------- choosing a checkpoint
def parse_chunk(value: str) -> int | str:
    """``--chunk`` accepts a non-negative integer or ``latest``; anything else is a VideoError."""
    want = checkpoint.parse_chunk_arg(value)
    if want is None:
        raise VideoError(f"--chunk must be an integer milestone or 'latest', got {value!r}")
    return want


def parse_chunks(value: str) -> list[int]:
    out = []
    for part in value.split(","):
        p = part.strip()
        if not re.fullmatch(r"\d+", p):
            raise VideoError(f"--chunks must be comma-separated integer milestones, got {value!r}")
        out.append(int(p))
    if not out:
        raise VideoError(f"--chunks must name at least one milestone, got {value!r}")
    return list(dict.fromkeys(out))


def _available_text(milestones: Sequence[int]) -> str:
    return ", ".join(str(m) for m in sorted(milestones)) if milestones else "none"


def resolve_chunk(rd: RunDir, want: int | str) -> dict[str, Any]:
    """The verified manifest of the wanted checkpoint (``latest``: the newest one that verifies).

    Unknown milestone or no checkpoint: VideoError (exit 2) listing what is available. A damaged
    checkpoint: VideoError (exit 1). Nothing is moved aside here (that is the worker's job).
    (:func:`go2train.run.checkpoint.resolve_chunk` chooses; this words the video's errors.)
    """
    where = rd.models
    try:
        return checkpoint.resolve_chunk(rd, want)[0]
    except checkpoint.NoSuchChunk as exc:
        if exc.damaged:
            raise VideoError(f"no valid checkpoint in {where} (damaged: {'; '.join(exc.damaged)})",
                             exitcodes.FAILURE) from None
        if want == "latest":
            raise VideoError(f"no checkpoint in {where}; available chunks: none") from None
        raise VideoError(f"no checkpoint {chunk_name(int(want))} in {where}; "
                         f"available chunks: {_available_text(exc.available)}") from None
    except checkpoint.DamagedCheckpoint as exc:
        raise VideoError(f"checkpoint {chunk_name(int(want))} is damaged: {exc}", exitcodes.FAILURE) from None


def video_config_for(manifest: dict[str, Any], current: Config) -> Config:
    """The checkpoint's stored training config, with ``[video]`` from the current config."""
    stored = manifest.get("config")
    if not isinstance(stored, dict):
        raise VideoError(f"checkpoint {manifest.get('name')} has no stored config", exitcodes.FAILURE)
    try:
        cfg = from_dict(stored, f"{manifest.get('name')}.json (stored config)", stored=True)
    except ConfigError as exc:
        raise VideoError(str(exc), exitcodes.FAILURE) from None
    cfg.video = current.video.model_copy()
    return cfg


# ---------------------------------------------------------------- frame labels
_FONTS: dict[int, Any] = {}


def _font(size: int):
    from PIL import ImageFont

    if size not in _FONTS:
        try:
            _FONTS[size] = ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1: fixed bitmap font
            _FONTS[size] = ImageFont.load_default()
    return _FONTS[size]


def draw_label(frame: np.ndarray, lines: Sequence[str], corner: str = "tl", scale: float = 1.0) -> np.ndarray:
    """Draw ``lines`` of small text on a darkened box in a corner of ``frame`` (in place)."""
    from PIL import Image, ImageDraw

    h, w = frame.shape[:2]
    size = max(8, int(round(h / 34 * scale)))
    font = _font(size)
    pad = max(2, size // 3)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [probe.textlength(t, font=font) for t in lines]
    line_h = size + max(1, size // 4)
    bw = min(w, int(max(widths, default=0)) + 2 * pad)
    bh = min(h, line_h * len(lines) + 2 * pad)
    x0 = 0 if corner in ("tl", "bl") else w - bw
    y0 = 0 if corner in ("tl", "tr") else h - bh
    region = frame[y0 : y0 + bh, x0 : x0 + bw]
    img = Image.fromarray((region.astype(np.uint16) * 2 // 7).astype(np.uint8))
    d = ImageDraw.Draw(img)
    for i, t in enumerate(lines):
        d.text((pad, pad + i * line_h), t, fill=(240, 240, 240), font=font)
    region[...] = np.asarray(img)
    return frame


def parse_command(value: str | None) -> tuple[float, float, float]:
    """``"vx,vy,yaw"`` (m/s, m/s, rad/s; ``"0.5"`` = forward only) -> a command; None: the default.
    The same rule as ``eval --command`` (:func:`go2train.tools.evaluate.parse_command`)."""
    from go2train.tools.evaluate import EvalError
    from go2train.tools.evaluate import parse_command as parse

    if value is None:
        return DEFAULT_COMMAND
    try:
        return parse(value)
    except EvalError as exc:
        raise VideoError(str(exc)) from None


def frame_lines(milestone: int, sim_t: float, vel, cmd, dist: float, falls: int) -> list[str]:
    """The label: achieved (vx, vy m/s, yaw rate rad/s) beside the command (a number: vx only)."""
    def z(x: float) -> float:  # no "-0.00"
        return round(x, 2) + 0.0

    def three(v) -> tuple[float, float, float]:
        return (float(v), 0.0, 0.0) if isinstance(v, (int, float)) else tuple(float(x) for x in v)  # type: ignore[return-value]

    (vx, vy, w), (cx, cy, cw) = three(vel), three(cmd)
    return [
        f"chunk {milestone}  t {sim_t:5.2f} s",
        f"v {z(vx):+.2f} {z(vy):+.2f} m/s (cmd {z(cx):+.2f} {z(cy):+.2f})",
        f"yaw {z(w):+.2f} rad/s (cmd {z(cw):+.2f})",
        f"dist {z(dist):+.2f} m  falls {falls}",
    ]


# ---------------------------------------------------------------- writing
def _even(n: int) -> int:
    return max(2, n - n % 2)


def _tmp_for(final: Path) -> Path:
    return final.with_name(f".{final.stem}.{os.getpid()}.tmp{final.suffix or '.mp4'}")


def clean_stale_tmp(final: Path) -> None:
    """Remove temp files of earlier renders of ``final`` whose process is gone (killed on timeout)."""
    pat = re.compile(rf"^\.{re.escape(final.stem)}\.(\d+)\.tmp")
    if not final.parent.is_dir():
        return
    for p in final.parent.iterdir():
        m = pat.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not alive(int(m.group(1))):
            try:
                p.unlink()
            except OSError:
                pass


@contextmanager
def mp4_writer(final: Path, fps: int) -> Iterator[Any]:
    """An imageio ffmpeg writer on a hidden temp file, renamed onto ``final`` on success only."""
    import imageio.v2 as iio2

    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_tmp(final)
    tmp = _tmp_for(final)
    writer = iio2.get_writer(
        str(tmp), format="FFMPEG", mode="I", fps=fps, codec="libx264", pixelformat="yuv420p",
        macro_block_size=2, ffmpeg_log_level="error", output_params=["-preset", "veryfast", "-crf", "23"],
    )
    ok = False
    try:
        yield writer
        writer.close()
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        ok = True
    finally:
        if not ok:
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass
            try:
                tmp.unlink()
            except OSError:
                pass


def manifest_path(video: Path) -> Path:
    return video.with_suffix(".json")


# ---------------------------------------------------------------- rendering one checkpoint
def msaa_enabled() -> bool:
    """4x MSAA doubles the cost of a 1280x720 frame in Mesa's software rasterizer; off unless asked."""
    return os.environ.get("GO2TRAIN_VIDEO_MSAA", "0").strip().lower() in ("1", "true", "yes", "on")


def _limit_msaa() -> None:
    """Make Genesis's offscreen renderer allocate single-sample framebuffers (this process only).

    Genesis 1.4.5 (``genesis/ext/pyrender/renderer.py``) sizes its multisample buffers with
    ``min(glGetIntegerv(GL_MAX_SAMPLES), 4)``; reporting 0 there gives plain renderbuffers. With a
    Genesis that reads it differently this does nothing (the video is just slower).
    """
    try:
        from genesis.ext.pyrender import renderer as pr
    except Exception:  # noqa: BLE001
        return
    get = getattr(pr, "glGetIntegerv", None)
    max_samples = getattr(pr, "GL_MAX_SAMPLES", None)
    if get is None or max_samples is None or getattr(get, "_go2train_no_msaa", False):
        return

    def no_msaa(name, *args, **kwargs):
        return 0 if name == max_samples else get(name, *args, **kwargs)

    no_msaa._go2train_no_msaa = True
    pr.glGetIntegerv = no_msaa


def _env_flag(name: str, default: bool) -> bool:
    v = os.environ.get(name)
    if v is None or not v.strip():
        return default
    return v.strip().lower() in ("1", "true", "yes", "on")


def aniso_enabled() -> bool:
    """Anisotropic filtering of the floor texture: llvmpipe's anisotropic sampler (any level above 1)
    costs ~100 ms of CPU per 1280x720 frame, ~40 % of the frame. Off unless ``GO2TRAIN_VIDEO_ANISO=1``."""
    return _env_flag("GO2TRAIN_VIDEO_ANISO", False)


def decimate_enabled() -> bool:
    """Simplified Go2 visual meshes (see :func:`_decimated`); ``GO2TRAIN_VIDEO_DECIMATE=0`` draws the originals."""
    return _env_flag("GO2TRAIN_VIDEO_DECIMATE", True)


def _limit_anisotropy() -> None:
    """Sample textures without anisotropic filtering (this process only).

    Genesis 1.4.5 (``genesis/ext/pyrender/texture.py``) sets every texture to the context's maximum
    anisotropy (16 in llvmpipe); at the camera's grazing view of the checker floor, llvmpipe's
    anisotropic path costs more than the rest of the frame's shading. Trilinear mipmapping stays on.
    With a Genesis that does it differently this does nothing (the video is just slower).
    """
    try:
        from genesis.ext.pyrender import texture as tx
    except Exception:  # noqa: BLE001
        return
    setf = getattr(tx, "glTexParameterf", None)
    ext = getattr(tx, "texture_filter_anisotropic", None)
    pname = getattr(ext, "GL_TEXTURE_MAX_ANISOTROPY_EXT", None)
    if setf is None or pname is None or getattr(setf, "_go2train_no_aniso", False):
        return

    def no_aniso(target, name, value, *args, **kwargs):
        return setf(target, name, 1.0 if name == pname else value, *args, **kwargs)

    no_aniso._go2train_no_aniso = True
    tx.glTexParameterf = no_aniso


# Visual meshes above this many faces are simplified for the video; the Go2's 17 Collada meshes hold
# ~400k triangles (a few pixels' worth each at 1280x720), which cost llvmpipe ~30 ms per frame in
# vertex work and triangle setup. Keeping 20 % of the faces (~90k) looks the same in the clip.
DECIMATE_MIN_FACES = 3000
DECIMATE_KEEP = 0.2
DECIMATE_CREASE_DEG = 30.0
_DECIMATED: dict[tuple, Any] = {}


def _decimated(mesh: Any) -> Any:
    """A simplified copy of a trimesh for drawing (quadric decimation), or ``mesh`` itself.

    Only untextured meshes of more than DECIMATE_MIN_FACES faces with one flat colour or one
    material are simplified (that is every Go2 visual mesh); the floor and anything textured are
    left alone. Normals are re-split at creases over DECIMATE_CREASE_DEG so hard edges stay hard.
    Physics never sees these meshes (collision geometry is separate).
    """
    import trimesh

    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) <= DECIMATE_MIN_FACES:
        return mesh
    vis = mesh.visual
    kind = getattr(vis, "kind", None)
    if kind == "vertex":
        colors = np.asarray(vis.vertex_colors)
        if len(colors) == 0 or not (colors == colors[0]).all():
            return mesh
        make_visual = lambda n: trimesh.visual.ColorVisuals(vertex_colors=np.tile(colors[0], (n, 1)))  # noqa: E731
        look: Any = colors[0].tobytes()
    elif kind == "texture":
        mat = getattr(vis, "material", None)
        if mat is None or any(getattr(mat, a, None) is not None for a in (
                "image", "baseColorTexture", "normalTexture", "emissiveTexture", "occlusionTexture",
                "metallicRoughnessTexture")):
            return mesh
        make_visual = lambda n: trimesh.visual.TextureVisuals(uv=np.zeros((n, 2)), material=mat)  # noqa: E731
        look = id(mat)
    elif kind is None:
        make_visual = None
        look = None
    else:
        return mesh
    key = (kind, look, len(mesh.vertices), len(mesh.faces), hash(mesh.vertices.tobytes()), hash(mesh.faces.tobytes()))
    if key not in _DECIMATED:
        try:
            import fast_simplification

            merged = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
            merged.merge_vertices(merge_tex=True, merge_norm=True)
            v, f = fast_simplification.simplify(
                np.asarray(merged.vertices, np.float64), np.asarray(merged.faces), target_reduction=1.0 - DECIMATE_KEEP,
                agg=2,
            )
            if not 4 <= len(f) <= 0.9 * len(mesh.faces):
                raise ValueError("nothing to gain")  # the simplifier stopped early (or left nothing)
            out = trimesh.graph.smooth_shade(
                trimesh.Trimesh(v, f, process=False), angle=np.radians(DECIMATE_CREASE_DEG)
            )
            if make_visual is not None:
                out.visual = make_visual(len(out.vertices))
        except Exception:  # noqa: BLE001 - no simplifier, or a mesh it cannot take: draw the original
            out = mesh
        _DECIMATED[key] = out
    return _DECIMATED[key]


@contextmanager
def _nothing() -> Iterator[None]:
    yield


@contextmanager
def _shared_mesh_files() -> Iterator[None]:
    """While the scene is built, each mesh file is parsed once.

    The Go2 URDF names 17 Collada meshes but only 7 files; Genesis's URDF reader
    (``genesis/ext/urdfpy/urdf.py``) parses a file for every reference (~0.3 s of CPU each). Later
    references get copies of the first parse.
    """
    try:
        from genesis.ext.urdfpy import urdf as ud
    except Exception:  # noqa: BLE001
        yield
        return
    load = getattr(ud, "load_meshes", None)
    if load is None:
        yield
        return
    parsed: dict[tuple, list] = {}

    def load_once(filename, *args, **kwargs):
        try:
            st = os.stat(filename)
            key = (os.path.realpath(filename), st.st_mtime_ns, st.st_size, args, tuple(sorted(kwargs.items())))
        except (OSError, TypeError):
            return load(filename, *args, **kwargs)
        if key not in parsed:
            parsed[key] = load(filename, *args, **kwargs)
        meshes = parsed[key]
        if not isinstance(meshes, list):
            return meshes
        return [m.copy(include_cache=True) for m in meshes]

    ud.load_meshes = load_once
    try:
        yield
    finally:
        ud.load_meshes = load


@contextmanager
def _decimating_visuals() -> Iterator[None]:
    """While the scene is built, Genesis's rasterizer gets simplified copies of large visual meshes."""
    try:
        from genesis.ext.pyrender import mesh as pm
    except Exception:  # noqa: BLE001
        yield
        return
    original = pm.Mesh.__dict__.get("from_trimesh")
    if original is None or not isinstance(original, staticmethod):
        yield
        return
    from_trimesh = original.__func__

    def decimating(mesh, *args, **kwargs):
        return from_trimesh(_decimated(mesh), *args, **kwargs)

    pm.Mesh.from_trimesh = staticmethod(decimating)
    try:
        yield
    finally:
        pm.Mesh.from_trimesh = original


class ChunkRenderer:
    """One robot, one camera; reusable for several checkpoints that share an env config."""

    def __init__(self, cfg: Config, width: int, height: int):
        import torch

        from go2train.sim.env import Go2Env

        if not msaa_enabled():
            _limit_msaa()
        if not aniso_enabled():
            _limit_anisotropy()

        self.env_key = _env_key(cfg)
        e = cfg.env
        # One robot; never truncated mid-video; the stored backend unless it asks for a missing GPU.
        e.n_envs = 1
        e.episode_steps = 10**9
        if hasattr(e, "reset_joint_noise"):
            e.reset_joint_noise = 0.0  # start (and restart after a fall) exactly in the default pose
        if e.backend == "gpu" and not torch.cuda.is_available():
            e.backend = "cpu"
        self.cfg = cfg
        self.width, self.height = _even(width), _even(height)
        with _shared_mesh_files(), _decimating_visuals() if decimate_enabled() else _nothing():
            self.env = Go2Env(cfg, n_envs=1, camera=(self.width, self.height))
        self.camera = self.env.camera
        self.camera.set_pose(pos=CAM_OFFSET, lookat=(0.0, 0.0, CAM_LOOKAT_Z))

    def load_policy(self, rd: RunDir, manifest: dict[str, Any]):
        """(VecNormalize, model) in eval mode by :func:`go2train.train.ppo.load_policy`, with the
        stored config's ``[ppo]`` normalisation, checked against this env's observation size."""
        from go2train.sim.vecenv import Go2VecEnv
        from go2train.train.ppo import load_policy

        model, vn = load_policy(rd, manifest, self.cfg, Go2VecEnv(self.env))
        return vn, model

    def _follow(self, xy: np.ndarray, snap: bool) -> None:
        if snap or self._cam_xy is None:
            self._cam_xy = xy.copy()
        else:
            self._cam_xy += CAM_SMOOTHING * (xy - self._cam_xy)
        x, y = float(self._cam_xy[0]), float(self._cam_xy[1])
        self.camera.set_pose(
            pos=(x + CAM_OFFSET[0], y + CAM_OFFSET[1], CAM_OFFSET[2]), lookat=(x, y, CAM_LOOKAT_Z)
        )

    def render(
        self, rd: RunDir, manifest: dict[str, Any], steps: int, fps: int, out: Path,
        progress: Progress | None = None, command: Sequence[float] = DEFAULT_COMMAND,
    ) -> dict[str, Any]:
        import torch

        t0 = time.perf_counter()
        env = self.env
        milestone = int(manifest.get("chunk", 0))
        vn, model = self.load_policy(rd, manifest)
        cmd = tuple(float(x) for x in command)
        env.set_command(*cmd)
        obs = env.reset().cpu().numpy()
        start = [round(float(x), 4) for x in env.base_pos[0].tolist()]
        self._cam_xy = None
        self._follow(env.base_pos[0, :2].cpu().numpy(), snap=True)

        falls = invalid = 0
        finished_dist = 0.0
        speed_sum = 0.0
        speed_shown = 0.0
        vel_shown = np.zeros(3)
        vel_sum = np.zeros(3)
        min_height = float("inf")
        clock = time.perf_counter
        t_sim = t_render = t_overlay = t_encode = 0.0
        t_policy = clock() - t0
        t_loop0 = clock()
        with mp4_writer(out, fps) as writer:
            for i in range(steps):
                ta = clock()
                action, _ = model.predict(vn.normalize_obs(obs), deterministic=True)
                res = env.step(torch.as_tensor(action, dtype=torch.float32, device=env.device))
                reset = bool(len(res.done_idx))
                if reset:  # terminated (fell, tilted or invalid): count it; the env restarts at the origin
                    falls += int(res.terminated[0])
                    invalid += int(res.invalid[0])
                    finished_dist += float(res.episodes["dist"][0])
                    speed = 0.0
                    vel = np.zeros(3)
                else:
                    speed = float(env.heading_speed[0])
                    v = env.own_velocity()[0]
                    vel = np.array([float(v[0]), float(v[1]), float(env.base_ang_vel[0, 2])])
                    min_height = min(min_height, float(env.base_pos[0, 2]))
                speed_sum += speed
                vel_sum += vel
                speed_shown += SPEED_SMOOTHING * (speed - speed_shown)
                vel_shown += SPEED_SMOOTHING * (vel - vel_shown)
                obs = res.obs.cpu().numpy()
                self._follow(env.base_pos[0, :2].cpu().numpy(), snap=reset)
                tb = clock()
                frame = np.ascontiguousarray(self.camera.render(rgb=True)[0][..., :3])
                tc = clock()
                dist = finished_dist + float(env.forward_distance()[0])
                draw_label(frame, frame_lines(milestone, (i + 1) * env.dt, vel_shown, cmd, dist, falls))
                td = clock()
                writer.append_data(frame)
                te = clock()
                t_sim += tb - ta
                t_render += tc - tb
                t_overlay += td - tc
                t_encode += te - td
                if progress:
                    progress(i + 1, steps)
            t_frames = clock() - t_loop0
        t_loop = clock() - t_loop0  # + closing ffmpeg (the encoder's last frames), fsync and rename
        render_s = time.perf_counter() - t0
        self.last_timing = {
            "policy_load_s": round(t_policy, 3),
            "loop_s": round(t_loop, 3),
            "sim_s": round(t_sim, 3),
            "render_s": round(t_render, 3),
            "overlay_s": round(t_overlay, 3),
            "encode_s": round(t_encode + t_loop - t_frames, 3),
            "render_ms_per_frame": round(1000 * t_render / steps, 2),
        }
        sim_s = steps * env.dt
        distance = finished_dist + float(env.forward_distance()[0])
        files = manifest.get("files", {})
        return {
            "format": FORMAT,
            "kind": "chunk",
            "chunk": milestone,
            "video": out.name,
            "checkpoint": {
                "name": manifest.get("name"),
                "chunk": milestone,
                "timesteps": manifest.get("timesteps"),
                "episodes_total": manifest.get("episodes_total"),
                "sha256": {f: info.get("sha256") for f, info in files.items()},
            },
            "steps": steps,
            "frames": steps,
            "fps": fps,
            "width": self.width,
            "height": self.height,
            "codec": "h264",
            "sim_seconds": round(sim_s, 6),
            "video_seconds": round(steps / fps, 6),
            "command": list(cmd),
            "mean_velocity": [round(float(x) / steps, 4) for x in vel_sum],  # own vx, vy m/s; yaw rate rad/s
            "start_position_m": start,
            "distance_m": round(distance, 4),
            "mean_forward_speed_mps": round(distance / sim_s, 4),
            "mean_heading_speed_mps": round(speed_sum / steps, 4),
            "falls": falls,
            "invalid_resets": invalid,
            "min_base_height_m": None if min_height == float("inf") else round(min_height, 4),
            "render_seconds": round(render_s, 3),
            "backend": env.backend,
        }


def _cpu_seconds() -> tuple[float, float]:
    """(this process's CPU seconds, all threads; CPU seconds of its finished children, i.e. ffmpeg)."""
    import resource

    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def _load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _env_key(cfg: Config) -> str:
    import json

    d = cfg.to_dict()
    return json.dumps({k: d[k] for k in ("env", "command", "reward", "termination")}, sort_keys=True)


def render_chunk(
    rd: RunDir, manifest: dict[str, Any], current: Config, steps: int | None = None, out: Path | None = None,
    progress: Progress | None = None, renderer: ChunkRenderer | None = None,
    command: Sequence[float] = DEFAULT_COMMAND,
) -> tuple[dict[str, Any], ChunkRenderer]:
    """Render one verified checkpoint; write the video, then its manifest. Returns (manifest, renderer).

    ``renderer`` is reused when its env config and size match (progression videos build one scene).
    """
    t0 = time.perf_counter()
    cpu0 = _cpu_seconds()
    cfg = video_config_for(manifest, current)
    v = cfg.video
    steps = int(steps or v.steps)
    out = Path(out) if out is not None else rd.video(int(manifest["chunk"]))
    t_imports = t_build = 0.0
    if renderer is None or renderer.env_key != _env_key(cfg) or (renderer.width, renderer.height) != (
        _even(v.width), _even(v.height)
    ):
        ti = time.perf_counter()
        import genesis  # noqa: F401
        import stable_baselines3  # noqa: F401
        import torch

        from go2train.train import ppo  # noqa: F401

        t_imports = time.perf_counter() - ti
        torch.set_num_threads(1)  # a one-robot MLP; leave the cores to the rasterizer and ffmpeg
        tb = time.perf_counter()
        renderer = ChunkRenderer(cfg, v.width, v.height)
        t_build = time.perf_counter() - tb
    startup = time.perf_counter() - t0
    meta = renderer.render(rd, manifest, steps, v.fps, out, progress, command)
    meta["loop_seconds"] = meta.pop("render_seconds")
    meta["startup_seconds"] = round(startup, 3)
    meta["render_seconds"] = round(time.perf_counter() - t0, 3)
    cpu = _cpu_seconds()
    meta["timing"] = {
        "imports_s": round(t_imports, 3),
        "scene_build_s": round(t_build, 3),
        **getattr(renderer, "last_timing", {}),
        "total_s": meta["render_seconds"],
        "cpu_s": round(cpu[0] - cpu0[0], 3),
        "ffmpeg_cpu_s": round(cpu[1] - cpu0[1], 3),
        "load_avg_1m": _load_avg(),
        "msaa": msaa_enabled(),
        "aniso": aniso_enabled(),
        "decimated_meshes": decimate_enabled(),
    }
    meta["bytes"] = out.stat().st_size
    meta["created"] = time.time()
    atomic_write_json(manifest_path(out), meta)
    return meta, renderer


# ---------------------------------------------------------------- progression
def _spread(items: Sequence[int], k: int) -> list[int]:
    """Up to ``k`` items evenly spaced over the sorted ``items``, first and last included."""
    items = sorted(items)
    if len(items) <= k:
        return list(items)
    idx = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})
    return [items[i] for i in idx]


def video_milestones(rd: RunDir) -> list[int]:
    """Milestones that have a complete video (mp4 + manifest), ascending."""
    return [m for m in rd.video_files() if isinstance(read_json(manifest_path(rd.video(m))), dict)]


def default_progression_chunks(rd: RunDir, k: int = 4) -> list[int]:
    """At least two milestone videos: up to ``k`` of them evenly spaced; else of the checkpoints."""
    vids = video_milestones(rd)
    if len(vids) >= 2:
        return _spread(vids, k)
    return _spread(checkpoint.chunk_milestones(rd), k)


def _grid(n: int, w: int, h: int, cw: int, ch: int) -> tuple[int, int, int, int]:
    """(cols, rows, tile_w, tile_h) for ``n`` clips of cw x ch in a w x h frame, aspect kept."""
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    scale = min(w / cols / cw, h / rows / ch)
    return cols, rows, _even(int(cw * scale)), _even(int(ch * scale))


def _read_frames(path: Path) -> Iterator[np.ndarray]:
    import imageio.v2 as iio2

    reader = iio2.get_reader(str(path), format="FFMPEG")
    try:
        for frame in reader:
            yield np.asarray(frame)[..., :3]
    finally:
        reader.close()


def stitch(
    clips: list[tuple[int, Path]], out: Path, layout: str, width: int, height: int, fps: int,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Stitch labelled clips in sequence or side by side (a grid; shorter clips hold their last frame)."""
    from PIL import Image

    frames_total = 0
    counts = [int((read_json(manifest_path(p)) or {}).get("frames", 0)) for _, p in clips]
    width, height = _even(width), _even(height)
    with mp4_writer(out, fps) as writer:
        if layout == "sequence":
            total = sum(counts) or None
            for milestone, path in clips:
                for frame in _read_frames(path):
                    if frame.shape[:2] != (height, width):
                        frame = np.asarray(Image.fromarray(frame).resize((width, height), Image.BILINEAR))
                    writer.append_data(np.ascontiguousarray(frame))
                    frames_total += 1
                    if progress:
                        progress(frames_total, max(total or frames_total, frames_total))
        else:
            iters = [_read_frames(p) for _, p in clips]
            last: list[np.ndarray | None] = [None] * len(clips)
            grid = None
            total = max(counts) if counts else 0
            while True:
                live = False
                for j, it in enumerate(iters):
                    try:
                        last[j] = next(it)
                        live = True
                    except StopIteration:
                        pass
                if not live or any(f is None for f in last):
                    break
                if grid is None:
                    ch, cw = last[0].shape[:2]
                    grid = _grid(len(clips), width, height, cw, ch)
                cols, rows, tw, th = grid
                canvas = np.zeros((height, width, 3), np.uint8)
                x0 = (width - cols * tw) // 2
                y0 = (height - rows * th) // 2
                for j, f in enumerate(last):
                    tile = np.asarray(Image.fromarray(f).resize((tw, th), Image.BILINEAR)).copy()
                    draw_label(tile, [f"chunk {clips[j][0]}"], corner="br", scale=2.0 * th / height * rows)
                    r, c = divmod(j, cols)
                    canvas[y0 + r * th : y0 + (r + 1) * th, x0 + c * tw : x0 + (c + 1) * tw] = tile
                writer.append_data(canvas)
                frames_total += 1
                if progress:
                    progress(frames_total, max(total, frames_total))
    return {"frames": frames_total, "width": width, "height": height}


def render_progression(
    rd: RunDir, current: Config, chunks: list[int] | None, layout: str = "side-by-side",
    steps: int | None = None, out: Path | None = None, progress: Progress | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Stitch the milestone videos of ``chunks`` (rendering those that are missing) into one video."""
    if layout not in ("side-by-side", "sequence"):
        raise VideoError(f"--layout must be 'side-by-side' or 'sequence', got {layout!r}")
    t0 = time.perf_counter()
    have_videos = set(video_milestones(rd))
    have_ckpts = set(checkpoint.chunk_milestones(rd))
    if chunks is None:
        chunks = default_progression_chunks(rd)
        if not chunks:
            raise VideoError(f"no checkpoint in {rd.models} and no video in {rd.videos}; available chunks: none")
    unknown = [c for c in chunks if c not in have_videos and c not in have_ckpts]
    if unknown:
        raise VideoError(
            f"no checkpoint {chunk_name(unknown[0])} in {rd.models}; available chunks: "
            f"{_available_text(have_ckpts | have_videos)}"
        )
    renderer = None
    clips: list[tuple[int, Path]] = []
    summaries = []
    for c in chunks:
        path = rd.video(c)
        if c not in have_videos:
            log(f"rendering {chunk_name(c)} for the progression video")
            meta, renderer = render_chunk(rd, resolve_chunk(rd, c), current, steps=steps, out=path,
                                          progress=progress, renderer=renderer)
        else:
            meta = read_json(manifest_path(path)) or {}
        clips.append((c, path))
        summaries.append({k: meta.get(k) for k in (
            "chunk", "video", "frames", "distance_m", "mean_forward_speed_mps", "falls")})
    v = current.video
    out = Path(out) if out is not None else rd.videos / f"{PROGRESSION}.mp4"
    info = stitch(clips, out, layout, v.width, v.height, v.fps, progress)
    meta = {
        "format": FORMAT,
        "kind": PROGRESSION,
        "video": out.name,
        "layout": layout,
        "chunks": list(chunks),
        "clips": summaries,
        "fps": v.fps,
        "codec": "h264",
        **info,
        "render_seconds": round(time.perf_counter() - t0, 3),
        "bytes": out.stat().st_size,
        "created": time.time(),
    }
    atomic_write_json(manifest_path(out), meta)
    return meta


# ---------------------------------------------------------------- command entry
@contextmanager
def progress_bar(enabled: bool, description: str) -> Iterator[Progress | None]:
    """A rich progress bar on stderr when ``enabled`` (stderr is a TTY); else no callback."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as RichProgress

    with RichProgress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), console=Console(stderr=True), transient=False,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def main(
    run_dir: Path, current: Config, chunk: str | None, progression: bool, chunks: str | None,
    layout: str, steps: int | None, out: Path | None, command: str | None = None,
) -> int:
    """``go2train video``. Raises VideoError for one-line errors; returns 0 on success."""
    rd = RunDir.at(run_dir)
    cmd = parse_command(command)
    if steps is not None and steps < 1:
        raise VideoError(f"--steps must be >= 1, got {steps}")
    tty = sys.stderr.isatty()
    say = (lambda s: print(f"go2train: {s}", file=sys.stderr)) if tty else (lambda s: None)
    if progression:
        if command is not None:
            raise VideoError("--command goes with --chunk (a progression shows the milestone videos, "
                             f"rendered at the default command {','.join(f'{x:g}' for x in DEFAULT_COMMAND)})")
        if chunk is not None:
            raise VideoError("--chunk and --progression are exclusive (use --chunks with --progression)")
        wanted = parse_chunks(chunks) if chunks is not None else None
        with progress_bar(tty, "progression") as prog:
            meta = render_progression(rd, current, wanted, layout, steps, out, prog, log=say)
        print(f"{(Path(out) if out else rd.videos / (PROGRESSION + '.mp4'))}: chunks "
              f"{', '.join(map(str, meta['chunks']))}, {meta['frames']} frames, {meta['render_seconds']:.1f} s")
        return 0
    if chunks is not None:
        raise VideoError("--chunks goes with --progression (for one checkpoint use --chunk)")
    if chunk is None:
        raise VideoError("say which checkpoint: --chunk N, --chunk latest, or --progression")
    want = parse_chunk(chunk)
    manifest = resolve_chunk(rd, want)
    target = Path(out) if out is not None else rd.video(int(manifest["chunk"]))
    with progress_bar(tty, manifest["name"]) as prog:
        meta, _ = render_chunk(rd, manifest, current, steps=steps, out=target, progress=prog, command=cmd)
    print(f"{target}: {meta['frames']} frames {meta['width']}x{meta['height']} @ {meta['fps']} fps, "
          f"distance {meta['distance_m'] + 0.0:+.2f} m, {meta['mean_forward_speed_mps'] + 0.0:+.2f} m/s, "
          f"falls {meta['falls']}, {meta['render_seconds']:.1f} s")
    return 0
