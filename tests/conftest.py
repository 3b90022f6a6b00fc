"""Fixtures shared across test files (pytest puts tests/ on sys.path, so ``helpers`` imports)."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest
from helpers import TINY_RUN_TOML, go2train, procs_mentioning

# pytest-xdist's workers (`make test` runs two) export COLUMNS=80 and LINES=24 for their own output;
# the CLIs the tests start must see what a plain pipe gives them, as in a run without -n.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)


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


@pytest.fixture
def no_leftovers(tmp_path):
    """After the test: kill any process still naming its tmp_path (a failed test leaves no daemon behind)."""
    yield
    for p in procs_mentioning(tmp_path):
        try:
            p.kill()
        except psutil.Error:
            pass
