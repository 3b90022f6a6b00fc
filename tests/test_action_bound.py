"""`[env] clip_actions` is the one action bound (a REAL tiny checkpoint, a REAL worker).

The policy's action space is [-clip_actions, clip_actions]: SB3 and the rollout clip samples to
the space, so before exp15 a hard-coded [-1, 1] space capped every joint within action_scale
(0.25 rad) of the default pose whatever the config said. A checkpoint trained with another bound
cannot be resumed (SB3 refuses the load); the worker says so in one line naming the key instead of
taking the checkpoint for damaged and moving it aside.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_RUN_TOML, copy_run, go2train, snapshot

from go2train.config import Config
from go2train.run import exitcodes

pytestmark = pytest.mark.genesis


def _action_space(run: Path):
    from stable_baselines3.common.save_util import load_from_zip_file

    data, _, _ = load_from_zip_file(str(run / "models" / "chunk_000001.zip"), device="cpu", print_system_info=False)
    return data["action_space"]


def test_the_trained_policy_acts_in_plus_minus_clip_actions(tiny_trained_run):
    space = _action_space(tiny_trained_run)
    bound = Config().env.clip_actions
    assert bound == 100.0  # Genesis's and legged_gym's: no bound in practice
    assert space.shape == (12,) and np.all(space.low == -bound) and np.all(space.high == bound)


def test_resuming_with_another_bound_is_one_line_and_moves_nothing(tiny_trained_run, tmp_path, no_leftovers):
    toml = TINY_RUN_TOML.replace("[env]\n", "[env]\nclip_actions = 1.0\n", 1)
    run = copy_run(tiny_trained_run, tmp_path / "run", toml)
    models = snapshot(run / "models")
    p = go2train("train-chunk", "--run-dir", str(run), timeout=300)
    assert p.returncode == exitcodes.CONFIG_ERROR, p.stderr[-2000:]
    log = (run / "logs" / "worker.log").read_text()
    line = ("checkpoint chunk_000001 was trained with actions in [-100, 100] but [env] clip_actions = 1: "
            "set [env] clip_actions = 100 to resume it, or start a new run directory")
    assert line in log
    assert "damaged" not in log
    assert snapshot(run / "models") == models  # the checkpoint was neither moved aside nor replaced
