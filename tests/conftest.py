"""Fixtures shared across test files (pytest puts tests/ on sys.path, so ``helpers`` imports)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import TINY_RUN_TOML, go2train


@pytest.fixture(scope="session")
def tiny_trained_run(tmp_path_factory) -> Path:
    """One real chunk, trained once per session by `go2train train-chunk` (helpers.TINY_RUN_TOML),
    shared by the eval and video tests: a pristine run directory holding chunk_000001. Do not
    write into it: copy it (helpers.copy_run)."""
    d = tmp_path_factory.mktemp("tiny_trained_run")
    (d / "go2train.toml").write_text(TINY_RUN_TOML)
    p = go2train("train-chunk", "--run-dir", str(d), timeout=400, new_session=False)
    assert p.returncode == 0, p.stderr[-3000:]
    return d
