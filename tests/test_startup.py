"""Start-up cuts (issue 12 item 5, docs/CHUNKS.md): a training scene loads the Go2 without its visual
meshes, and trains exactly as with them."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest
import torch

from go2train.config import Config

pytestmark = pytest.mark.genesis


def test_training_urdf_is_the_asset_without_visuals():
    from genesis.utils.misc import get_assets_dir

    from go2train.sim.env import robot_urdf

    asset = robot_urdf(visual=True)
    full = ET.parse(os.path.join(get_assets_dir(), asset)).getroot()
    bare = ET.fromstring(robot_urdf(visual=False))
    assert full.findall(".//visual") and not bare.findall(".//visual")
    for tag in ("link", "joint", "collision", "inertial", "limit"):
        assert [ET.tostring(e) for e in full.iter(tag) if tag != "link"] == \
               [ET.tostring(e) for e in bare.iter(tag) if tag != "link"]
        assert len(list(full.iter(tag))) == len(list(bare.iter(tag)))
    assert "<mesh" not in robot_urdf(visual=False)  # nothing left to load from disk


def test_rollout_is_bitwise_the_same_without_visual_meshes(monkeypatch):
    from go2train.sim import env as env_mod

    cfg = Config()
    cfg.env.n_envs = 4
    cfg.env.episode_steps = 40

    def rollout(e):
        g = torch.Generator().manual_seed(3)
        e.seed(3)
        out = [e.reset().clone()]
        for _ in range(60):  # past a 40-step episode: resets and terminations too
            r = e.step(torch.randn((4, 12), generator=g) * 0.7)
            out += [r.obs.clone(), r.reward.clone()]
        return out

    bare = env_mod.Go2Env(cfg)
    assert bare.rigid.n_vgeoms < 5  # the plane's only
    a = rollout(bare)
    monkeypatch.setattr(env_mod, "robot_urdf", lambda visual: "urdf/go2/urdf/go2.urdf")
    full = env_mod.Go2Env(cfg)
    assert full.rigid.n_vgeoms > 20 and full.rigid.n_geoms == bare.rigid.n_geoms
    b = rollout(full)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


CHECK_QDFAST = r'''
import json, sys
from quadrants.lang import kernel_impl as ki
orig = ki._inside_class
from go2train.sim import qdfast
assert qdfast.install()
fast = ki._inside_class
assert fast.__wrapped__ is orig
seen = {"calls": 0, "mismatch": 0, "classes": 0}
def both(level_of_class_stackframe):
    a, b = fast(level_of_class_stackframe + 1), orig(level_of_class_stackframe + 1)
    seen["calls"] += 1
    seen["mismatch"] += a != b
    seen["classes"] += b
    return b
ki._inside_class = both
import genesis
print(json.dumps(seen))
'''


def test_fast_quadrants_class_check_agrees_with_the_original():
    """go2train.sim.qdfast's _inside_class gives the original's answer for every kernel Genesis defines."""
    import json
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", CHECK_QDFAST], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    seen = json.loads(p.stdout.strip().splitlines()[-1])
    assert seen["calls"] > 500 and seen["classes"] > 50 and seen["mismatch"] == 0, seen


def test_qdfast_can_be_turned_off():
    import subprocess
    import sys

    code = "from go2train.sim import qdfast; print(qdfast.install())"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "GO2TRAIN_NO_QD_PATCH": "1"})
    assert p.stdout.strip() == "False", p.stderr
