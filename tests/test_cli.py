"""The command line's surface: version, and what `--help` shows a newcomer."""

from __future__ import annotations

import json
import subprocess
import sys

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


def test_set_overrides_show_in_config_show_and_reach_the_worker_command(tmp_path):
    from supervisor.control import worker_command

    (tmp_path / "go2train.toml").write_text("[ppo]\nlearning_rate = 5e-4\n")
    r = subprocess.run([sys.executable, "-m", "go2train", "config", "show", "--run-dir", str(tmp_path),
                        "--set", "ppo.learning_rate=1e-3", "--set", "env.backend=cpu"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["ppo"]["learning_rate"] == 1e-3 and shown["env"]["backend"] == "cpu"
    assert "--set ppo.learning_rate=1e-3 env.backend=cpu" in r.stderr  # the profile line names the source
    cmd = worker_command(tmp_path, None, ["ppo.learning_rate=1e-3", "env.backend=cpu"])
    assert cmd[-4:] == ["--set", "ppo.learning_rate=1e-3", "--set", "env.backend=cpu"]
