"""The command line's surface: version, and what `--help` shows a newcomer."""

from __future__ import annotations

from helpers import clean_env
from helpers import go2train as run

import go2train


def test_version_prints_the_package_version():
    r = run("--version", env=clean_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"go2train {go2train.__version__}"


def test_help_lists_user_commands_but_not_the_internal_worker():
    r = run("--help", env=clean_env(COLUMNS="200"))
    assert r.returncode == 0, r.stderr
    for cmd in ("daemon", "status", "eval", "video", "export", "bench", "config"):
        assert cmd in r.stdout
    assert "train-chunk" not in r.stdout  # run by the supervisor only
    r = run("train-chunk", "--help", env=clean_env())  # still callable
    assert r.returncode == 0 and "--run-dir" in r.stdout
