"""Configuration: defaults, the effective config, and one-line errors with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from go2train.config import Config, ConfigError, load


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "go2train", *args], capture_output=True, text=True, cwd=cwd)


def test_defaults_match_the_issue():
    c = Config()
    assert (c.env.episode_steps, c.env.kp, c.env.kd, c.env.action_scale, c.env.dt, c.env.substeps) == (400, 20.0, 0.5, 0.25, 0.02, 2)
    h = c.reward.height
    assert (h.target, h.floor, h.floor_penalty, h.sharpness, h.weight) == (0.27, 0.15, -10.0, 5.0, 2.5)
    t = c.termination
    assert (t.min_height, t.grace_steps, t.grace_min_height) == (0.12, 20, 0.08)
    assert (c.chunk.episodes, c.chunk.max_episodes) == (50, 0)


def test_run_dir_file_is_used_and_config_flag_wins(tmp_path):
    (tmp_path / "go2train.toml").write_text("[env]\nn_envs = 8\n")
    assert load(None, tmp_path).env.n_envs == 8
    other = tmp_path / "other.toml"
    other.write_text("[env]\nn_envs = 16\n[reward.height]\nweight = 3\n")
    cfg = load(other, tmp_path)
    assert cfg.env.n_envs == 16 and cfg.reward.height.weight == 3.0


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[env]\nn_envs = -3\n", "[env] n_envs"),
        ("[env]\nfoo = 1\n", "[env] foo: unknown key"),
        ("[bogus]\nx = 1\n", "bogus: unknown key"),
        ('[env]\nn_envs = "many"\n', "[env] n_envs"),
        ("[reward.height]\nweight = 'x'\n", "[reward.height] weight"),
        ("[env\n", "not valid TOML"),
        ("[ppo]\nbatch_size = 0\n", "[ppo] batch_size"),
        ("[env]\nbackend = 'tpu'\n", "[env] backend"),
    ],
)
def test_bad_config_is_one_line_exit_2_nothing_written(tmp_path, text, needle):
    bad = tmp_path / "go2train.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(None, tmp_path)
    assert needle in str(err.value) and str(bad) in str(err.value)
    for cmd in (["config", "show"], ["train-chunk"]):
        p = cli(*cmd, "--run-dir", str(tmp_path))
        assert p.returncode == 2, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and str(bad) in lines[0]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["go2train.toml"]  # nothing written


def test_missing_config_file_and_run_dir(tmp_path):
    p = cli("config", "show", "--config", str(tmp_path / "nope.toml"))
    assert p.returncode == 2 and "nope.toml" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = cli("train-chunk", "--run-dir", str(tmp_path / "missing"))
    assert p.returncode == 2 and "missing" in p.stderr and not (tmp_path / "missing").exists()


def test_config_show_prints_effective_config(tmp_path):
    (tmp_path / "go2train.toml").write_text("[chunk]\nepisodes = 7\n")
    p = cli("config", "show", "--run-dir", str(tmp_path))
    assert p.returncode == 0 and '"episodes": 7' in p.stdout
