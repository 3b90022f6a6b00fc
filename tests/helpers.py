"""Helpers shared by the tests: run the real CLI, find a test's processes."""

from __future__ import annotations

import os
import subprocess
import sys
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
