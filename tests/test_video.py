"""`go2train video` on a REAL tiny checkpoint (real worker, real Genesis on the CPU, real ffmpeg).

Genesis processes (each loads the kernel cache, 10-30 s): the worker that trains the tiny chunk,
`go2train video --chunk 1`, and `go2train video --progression` (which renders the chunk that has
no video yet). Everything else runs `go2train video` in subprocesses that stop before importing
torch or genesis, or calls pure helpers.

Checkpoints in the run:
* chunk_000001: trained by `go2train train-chunk` (2 robots, 30-step episodes, one chunk; the session's tiny_trained_run, copied).
* chunk_000002: the same files saved again through checkpoint.save (a valid manifest of its own).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_RUN_TOML, copy_run, go2train

from go2train.run import checkpoint
from go2train.run.files import read_json
from go2train.run.layout import RunDir, chunk_name

W, H, FPS, STEPS = 160, 120, 24, 10
TOML = TINY_RUN_TOML + f"""
[video]
width = {W}
height = {H}
fps = {FPS}
steps = {STEPS}
"""


def _go2train(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return go2train(*args, timeout=timeout, new_session=False)


def _probe(path: Path) -> tuple[int, tuple[int, int], float, str]:
    """(frames, (width, height), fps, codec) as imageio's ffmpeg reader sees the file."""
    import imageio.v2 as iio2

    reader = iio2.get_reader(str(path), format="FFMPEG")
    try:
        meta = reader.get_meta_data()
        n = 0
        for frame in reader:
            assert frame.shape == (meta["size"][1], meta["size"][0], 3)
            n += 1
        return n, tuple(meta["size"]), float(meta["fps"]), meta["codec"]
    finally:
        reader.close()


def _one_line_error(p: subprocess.CompletedProcess) -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("go2train: "), p.stderr
    return lines[0]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_trained_run) -> Path:
    d = copy_run(tiny_trained_run, tmp_path_factory.mktemp("videorun") / "run", TOML)
    rd = RunDir.at(d)
    assert checkpoint.chunk_milestones(rd) == [1]
    m = checkpoint.verify(rd, chunk_name(1))
    meta = {k: m[k] for k in ("timesteps", "episodes_total", "config", "run")}
    checkpoint.save(
        rd, chunk_name(2),
        {role: (lambda p, src=checkpoint.model_path(rd, m, role): shutil.copyfile(src, p))
         for role in ("model", "vecnorm")},
        {"kind": "chunk", "chunk": 2, **meta},
    )
    checkpoint.verify(rd, chunk_name(2))
    return d


@pytest.fixture(scope="module")
def chunk1_video(run_dir) -> subprocess.CompletedProcess:
    return _go2train("video", "--chunk", "1", "--run-dir", str(run_dir), timeout=300)


# ---------------------------------------------------------------- real renders
@pytest.mark.genesis
def test_video_of_a_real_checkpoint(run_dir, chunk1_video):
    p = chunk1_video
    assert p.returncode == 0, p.stderr[-3000:]
    rd = RunDir.at(run_dir)
    mp4 = rd.video(1)
    assert mp4.exists()
    frames, size, fps, codec = _probe(mp4)
    assert (frames, size, fps, codec) == (STEPS, (W, H), FPS, "h264")

    man = read_json(mp4.with_suffix(".json"))
    assert man["kind"] == "chunk" and man["chunk"] == 1 and man["video"] == mp4.name
    assert (man["frames"], man["steps"], man["fps"], man["width"], man["height"]) == (STEPS, STEPS, FPS, W, H)
    ck = checkpoint.verify(rd, chunk_name(1))
    assert man["checkpoint"]["name"] == "chunk_000001"
    assert man["checkpoint"]["sha256"] == {f: i["sha256"] for f, i in ck["files"].items()}
    # One robot at the origin (the seed's robot started at [-2.08, 0.06, 0.34]).
    x, y, z = man["start_position_m"]
    assert abs(x) < 1e-6 and abs(y) < 1e-6
    assert z == pytest.approx(ck["config"]["env"]["base_init_height"], abs=1e-4)
    assert man["command"] == [0.6, 0.0, 0.0]  # issue 13: the eval grid's forward 0.6 by default
    assert len(man["mean_velocity"]) == 3 and all(np.isfinite(man["mean_velocity"]))
    assert isinstance(man["falls"], int) and man["falls"] >= 0
    for key in ("distance_m", "mean_forward_speed_mps", "render_seconds", "sim_seconds"):
        assert np.isfinite(man[key]), key
    assert man["sim_seconds"] == pytest.approx(STEPS * ck["config"]["env"]["dt"])
    assert man["render_seconds"] > 0
    # Where the time went (docs/VIDEO.md "Render time"): every stage, the loop's parts within the loop.
    t = man["timing"]
    stages = ("imports_s", "scene_build_s", "policy_load_s", "loop_s", "sim_s", "render_s", "overlay_s", "encode_s")
    for key in (*stages, "cpu_s", "ffmpeg_cpu_s", "render_ms_per_frame", "total_s"):
        assert np.isfinite(t[key]) and t[key] >= 0, key
    assert t["scene_build_s"] > 0 and t["render_s"] > 0 and t["cpu_s"] > 0
    assert t["sim_s"] + t["render_s"] + t["overlay_s"] + t["encode_s"] <= t["loop_s"] + 0.01
    assert t["imports_s"] + t["scene_build_s"] + t["policy_load_s"] + t["loop_s"] <= man["render_seconds"] + 0.01
    assert t["total_s"] == man["render_seconds"]
    assert (t["msaa"], t["aniso"], t["decimated_meshes"]) == (False, False, True)
    # Atomic: no temp file is left beside the video.
    assert sorted(f.name for f in rd.videos.iterdir()) == ["chunk_000001.json", "chunk_000001.mp4"]
    # Not a TTY: no progress bar; the summary is the last line on stdout (Genesis logs there too).
    assert p.stdout.strip().splitlines()[-1].startswith(f"{mp4}: {STEPS} frames {W}x{H} @ {FPS} fps")
    assert "━" not in p.stderr


@pytest.mark.genesis
def test_progression_renders_missing_clips_and_stitches(run_dir, chunk1_video):
    assert chunk1_video.returncode == 0
    rd = RunDir.at(run_dir)
    before = rd.video(1).stat().st_mtime_ns
    # Default chunks: fewer than two videos exist, so the checkpoints (1 and 2); chunk 2 is rendered
    # here with fewer steps, chunk 1's video is reused as it is.
    p = _go2train("video", "--progression", "--steps", "6", "--run-dir", str(run_dir), timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert rd.video(1).stat().st_mtime_ns == before
    assert _probe(rd.video(2))[:2] == (6, (W, H))
    out = rd.videos / "progression.mp4"
    frames, size, fps, _ = _probe(out)
    assert (frames, size, fps) == (STEPS, (W, H), FPS)  # side by side: as long as the longest clip
    man = read_json(out.with_suffix(".json"))
    assert man["kind"] == "progression" and man["chunks"] == [1, 2] and man["layout"] == "side-by-side"
    assert [c["chunk"] for c in man["clips"]] == [1, 2] and man["frames"] == STEPS

    # In sequence, from the existing videos only (no Genesis): the clips one after the other.
    seq = run_dir / "seq.mp4"
    p = _go2train("video", "--progression", "--chunks", "2,1", "--layout", "sequence", "--out", str(seq),
                  "--run-dir", str(run_dir))
    assert p.returncode == 0, p.stderr[-3000:]
    assert _probe(seq)[:3] == (6 + STEPS, (W, H), FPS)
    assert read_json(seq.with_suffix(".json"))["chunks"] == [2, 1]


# ---------------------------------------------------------------- bad input (no Genesis)
@pytest.mark.genesis
def test_unknown_chunk_lists_available(run_dir):
    p = _go2train("video", "--chunk", "999", "--run-dir", str(run_dir))
    assert p.returncode == 2
    line = _one_line_error(p)
    assert "chunk_000999" in line and "available chunks: 1, 2" in line
    p = _go2train("video", "--progression", "--chunks", "1,7", "--run-dir", str(run_dir))
    assert p.returncode == 2
    assert "available chunks: 1, 2" in _one_line_error(p)


@pytest.mark.parametrize("value", ["abc", "2.5", "-3", "", "latest2", "1e3"])
def test_chunk_must_be_an_integer_or_latest(tmp_path, value):
    p = _go2train("video", "--chunk", value, "--run-dir", str(tmp_path))
    assert p.returncode == 2
    assert repr(value) in _one_line_error(p)


def test_no_checkpoint_at_all(tmp_path):
    p = _go2train("video", "--chunk", "latest", "--run-dir", str(tmp_path))
    assert p.returncode == 2
    assert "available chunks: none" in _one_line_error(p)


def test_usage_errors_are_one_line(tmp_path):
    for args in (["video"], ["video", "--chunks", "1,2"], ["video", "--progression", "--chunk", "1"],
                 ["video", "--progression", "--chunks", "1,x"], ["video", "--progression", "--layout", "diagonal"],
                 ["video", "--chunk", "1", "--steps", "0"]):
        p = _go2train(*args, "--run-dir", str(tmp_path))
        assert p.returncode == 2, (args, p.stderr)
        _one_line_error(p)


@pytest.mark.genesis
def test_damaged_checkpoint_is_refused_not_moved(run_dir, tmp_path):
    d = tmp_path / "run"
    shutil.copytree(run_dir / "models", d / "models")
    zip_path = d / "models" / "chunk_000002.zip"
    data = bytearray(zip_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    zip_path.write_bytes(bytes(data))
    p = _go2train("video", "--chunk", "2", "--run-dir", str(d))
    assert p.returncode == 1
    assert "damaged" in _one_line_error(p) and "sha256" in p.stderr
    assert zip_path.exists()  # the renderer never moves checkpoints aside


# ---------------------------------------------------------------- helpers
def test_parse_and_spread():
    from go2train.tools import video

    assert video.parse_chunk("250") == 250 and video.parse_chunk(" latest ") == "latest"
    assert video.parse_chunks("50, 250,500,250") == [50, 250, 500]
    assert video._spread([50, 100, 150, 200, 250, 300, 350], 4) == [50, 150, 250, 350]
    assert video._spread([1, 2], 4) == [1, 2]
    cols, rows, tw, th = video._grid(3, 1280, 720, 1280, 720)
    assert (cols, rows, tw, th) == (2, 2, 640, 360)
    cols, rows, tw, th = video._grid(2, 1280, 720, 1280, 720)
    assert (cols, rows) == (2, 1) and tw <= 640 and th <= 720 and tw % 2 == 0 and th % 2 == 0


def test_eval_and_video_accept_the_same_chunk_values():
    """One parser (checkpoint.parse_chunk_arg) behind both tools' --chunk; each words its own error."""
    from go2train.run.checkpoint import parse_chunk_arg
    from go2train.tools import evaluate, video

    for value in ("latest", " LATEST ", "0", "250", " 7 ", "abc", "2.5", "-3", "", "latest2", "1e3", "\u00b2"):
        want = parse_chunk_arg(value)
        for parse, err in ((video.parse_chunk, video.VideoError), (evaluate.parse_chunk, evaluate.EvalError)):
            if want is None:
                with pytest.raises(err, match="--chunk"):
                    parse(value)
            else:
                assert parse(value) == want


def test_label_darkens_a_corner_and_draws_text():
    from go2train.tools import video

    frame = np.full((120, 160, 3), 200, np.uint8)
    video.draw_label(frame, video.frame_lines(250, 1.5, -0.0001, 0.5, 0.25, 2))
    corner = frame[:20, :60]
    assert corner.min() < 100 and corner.max() > 200  # dark box, light text
    assert (frame[-10:, -10:] == 200).all()  # the rest untouched
    assert "-0.00" not in " ".join(video.frame_lines(250, 1.5, -0.0001, 0.5, -0.001, 0))
    lines = video.frame_lines(250, 1.5, (0.55, -0.01, 0.02), (0.6, 0.0, -0.8), 1.0, 0)
    assert "v +0.55 -0.01 m/s (cmd +0.60 +0.00)" in lines and "yaw +0.02 rad/s (cmd -0.80)" in lines


def test_command_option_parses_and_rejects_in_one_line():
    from go2train.tools import video

    assert video.parse_command(None) == video.DEFAULT_COMMAND == (0.6, 0.0, 0.0)
    assert video.parse_command("0.5") == (0.5, 0.0, 0.0)
    assert video.parse_command("0,0.3,-0.8") == (0.0, 0.3, -0.8)
    for bad in ("x", "1,2,3,4", "nan", "9"):
        with pytest.raises(video.VideoError, match="--command takes vx,vy,yaw"):
            video.parse_command(bad)


def test_stale_temp_files_are_cleaned(tmp_path):
    from go2train.tools import video

    final = tmp_path / "chunk_000050.mp4"
    dead = tmp_path / ".chunk_000050.999999999.tmp.mp4"
    dead.write_bytes(b"x")
    other = tmp_path / ".chunk_000100.999999999.tmp.mp4"
    other.write_bytes(b"x")
    video.clean_stale_tmp(final)
    assert not dead.exists() and other.exists()


# ---------------------------------------------------------------- render-cost cuts (docs/VIDEO.md "Render time")
def _sphere(colors=None, subdivisions=4):
    import trimesh

    m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.05)  # a Go2 part's size
    if colors is not None:
        m.visual = trimesh.visual.ColorVisuals(mesh=m, vertex_colors=colors)
    return m


def test_large_untextured_meshes_are_decimated_for_drawing():
    import trimesh

    from go2train.tools import video

    video._DECIMATED.clear()
    grey = np.array([171, 177, 197, 255], np.uint8)
    m = _sphere(np.tile(grey, (2562, 1)))
    assert len(m.faces) == 5120 > video.DECIMATE_MIN_FACES
    d = video._decimated(m)
    assert d is not m and len(d.faces) <= 0.25 * len(m.faces)
    assert np.allclose(d.bounds, m.bounds, atol=0.002)  # same shape, fewer triangles
    assert d.visual.kind == "vertex" and (d.visual.vertex_colors == grey).all()
    assert video._decimated(m) is d  # the four hips share one simplification

    # One material, no texture image (how the Go2's Collada meshes come): decimated, material kept.
    mat = trimesh.visual.material.PBRMaterial(baseColorFactor=[171, 177, 197, 255])
    t = _sphere()
    t.visual = trimesh.visual.TextureVisuals(uv=np.zeros((len(t.vertices), 2)), material=mat)
    dt = video._decimated(t)
    assert len(dt.faces) < len(t.faces) and dt.visual.material is mat

    # Left alone: small meshes, several colours, textured meshes.
    small = _sphere(np.tile(grey, (642, 1)), subdivisions=3)
    assert video._decimated(small) is small
    rng = np.random.default_rng(0)
    speckled = _sphere(rng.integers(0, 255, (2562, 4), dtype=np.uint8))
    assert video._decimated(speckled) is speckled
    from PIL import Image

    tex = _sphere()
    tex.visual = trimesh.visual.TextureVisuals(
        uv=np.zeros((len(tex.vertices), 2)),
        material=trimesh.visual.material.PBRMaterial(baseColorTexture=Image.new("RGB", (4, 4))),
    )
    assert video._decimated(tex) is tex


@pytest.mark.genesis
def test_render_patches_are_scoped_and_idempotent(monkeypatch, tmp_path):
    from genesis.ext.pyrender import mesh as pm
    from genesis.ext.pyrender import texture as tx
    from genesis.ext.urdfpy import urdf as ud

    from go2train.tools import video

    # Anisotropic filtering is asked for at level 1; other parameters pass through; wrapping twice is a no-op.
    calls = []
    monkeypatch.setattr(tx, "glTexParameterf", lambda target, name, value: calls.append((name, value)))
    aniso = tx.texture_filter_anisotropic.GL_TEXTURE_MAX_ANISOTROPY_EXT
    video._limit_anisotropy()
    wrapped = tx.glTexParameterf
    video._limit_anisotropy()
    assert tx.glTexParameterf is wrapped
    tx.glTexParameterf(0x0DE1, aniso, 16.0)
    tx.glTexParameterf(0x0DE1, 0x1234, 3.0)
    assert calls == [(aniso, 1.0), (0x1234, 3.0)]

    # Each mesh file is parsed once while the scene is built; the originals come back afterwards.
    parsed = []
    f = tmp_path / "part.dae"
    f.write_text("x")
    monkeypatch.setattr(ud, "load_meshes", lambda fn: parsed.append(fn) or [_sphere(subdivisions=1)])
    plain = ud.load_meshes
    original = pm.Mesh.__dict__["from_trimesh"]
    with video._shared_mesh_files(), video._decimating_visuals():
        a, b = ud.load_meshes(str(f)), ud.load_meshes(str(f))
        assert pm.Mesh.__dict__["from_trimesh"] is not original
    assert len(parsed) == 1 and a[0] is not b[0] and np.array_equal(a[0].faces, b[0].faces)
    assert ud.load_meshes is plain and pm.Mesh.__dict__["from_trimesh"] is original
