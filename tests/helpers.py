"""Helpers shared by the tests: run the real CLI, find a test's processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

PY = sys.executable


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without GO2TRAIN_* variables (failpoints, render hooks), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GO2TRAIN_")}
    env.update(extra)
    return env


def go2train(*args: str, env: dict | None = None, timeout: float = 60, cwd: Path | None = None,
             new_session: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m go2train ARGS`` as a real process (own session: signals stay inside)."""
    return subprocess.run([PY, "-m", "go2train", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, start_new_session=new_session)


def procs_mentioning(path: Path) -> list[psutil.Process]:
    """Live processes (other than this one) whose command line mentions ``path``."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != os.getpid() and str(path) in " ".join(p.info["cmdline"] or []):
                out.append(p)
        except psutil.Error:
            pass
    return out


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` (and root itself) with its type, size and mtime; symlinks not followed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            p = Path(dirpath) / name
            st = os.lstat(p)
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


# The tiny real run of the session fixture ``tiny_trained_run`` (tests/conftest.py): 2 robots,
# 30-step episodes, one episode per chunk.
TINY_RUN_TOML = """\
[env]
n_envs = 2
episode_steps = 30
backend = "cpu"

[chunk]
episodes = 1

[ppo]
n_steps = 8
batch_size = 16
n_epochs = 1
net_arch = [32, 32]
"""


def copy_run(src: Path, dst: Path, toml: str | None = None) -> Path:
    """A copy of run directory ``src`` at ``dst`` (its go2train.toml replaced by ``toml`` if given)."""
    shutil.copytree(src, dst, symlinks=True)
    if toml is not None:
        (dst / "go2train.toml").write_text(toml)
    return dst


def wait_for(pred, timeout: float = 10.0, what: str = "condition", every: float = 0.05):
    """Poll ``pred()`` until it is truthy (return it) or ``timeout`` s pass (AssertionError naming ``what``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        val = pred()
        if val:
            return val
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# The scene and PPO of the tiny real daemon runs (4 robots, 20-step episodes); each test adds its
# own [chunk], [video] and [supervisor].
TINY_DAEMON_HEAD = """
[env]
n_envs = 4
episode_steps = 20
backend = "cpu"

[ppo]
n_steps = 8
batch_size = 32
n_epochs = 1
net_arch = [32, 32]
"""
