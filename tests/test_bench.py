"""`go2train bench` and the profile behind docs/TRAINING_LOG.md's table, on a real tiny Genesis scene.

Smoke tests, not timings (speed is reported by the command, never asserted): the command runs
end to end in its own processes and every figure is there and positive; every profile row that
names our own code still finds it (a moved file or renamed function would read 0 µs).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import go2train

pytestmark = [pytest.mark.genesis, pytest.mark.timeout(600)]


def test_bench_prints_every_figure(tmp_path):
    p = go2train("bench", "--run-dir", str(tmp_path), "--n-envs", "4", "--seconds", "1", "--json", timeout=500)
    assert p.returncode == 0, p.stderr[-2000:]
    (r,) = json.loads(p.stdout)
    assert r["n_envs"] == 4 and r["backend"] == "cpu"
    for key in ("raw_steps_per_s", "env_steps_per_s", "vecenv_steps_per_s", "ppo_steps_per_s",
                "ppo_numpy_steps_per_s", "ppo_device_steps_per_s", "startup_s"):
        assert r[key] > 0, key
    assert 0 < r["vecenv_over_raw"] < 2 and 0 < r["ppo_over_raw"] < 2
    assert 0 <= r["python_overhead_share_numpy"] <= 1 and 0 <= r["python_overhead_share_device"] <= 1


def test_profile_rows_find_our_code():
    p = subprocess.run([sys.executable, "-m", "go2train.tools.bench", "--profile", "4", "1"],
                       capture_output=True, text=True, timeout=500)
    assert p.returncode == 0, p.stderr[-2000:]
    line = next(ln for ln in p.stdout.splitlines() if ln.startswith("PROFILE "))
    by_mode = {r["mode"]: r["rows_us_per_env_step"] for r in json.loads(line[len("PROFILE "):])}
    assert set(by_mode) == {"numpy", "device"}
    for mode, rows in by_mode.items():
        for row in ("sim: scene.step + PD targets", "env: state reads (Genesis getters)", "env: reward terms + feet",
                    "env: obs, termination, resets", "env: Go2Env.step total", "policy forward (+ terminal values)",
                    "PPO update (train)"):
            assert rows[row] > 0, (mode, row)
    assert by_mode["numpy"]["adapter: numpy conversion"] > 0 and by_mode["device"]["normalisation: DeviceNormalizer (torch)"] > 0
