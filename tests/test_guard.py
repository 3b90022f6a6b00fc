"""The lazy-optimum guard on hand-made chunk metrics (docs/CONTRACTS.md format)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from go2train.guard import lazy_optimum_warning, paying_terms


def chunk(milestone, reward, speed, terms=None, cmd=0.5, **extra):
    """A chunk record (issue 13 fields): commanded speed ``cmd``, achieved ``speed`` along it."""
    d = {
        "chunk": milestone, "episodes": 12800, "episodes_total": milestone * 256,
        "reward_mean": reward, "reward_min": -3.0, "reward_max": 25.0,
        "forward_speed_mean": 0.0, "fall_rate": 0.1,
        "command_speed_mean": cmd, "speed_along_command_mean": speed,
        "tracking_error_lin_mean": 0.4, "tracking_error_yaw_mean": 0.3, "standing_share": 0.1,
        "reward_terms": terms if terms is not None else {
            "height": 6.0, "tracking_lin_vel": 1.0, "alive": 1.0,
            "action_rate": -0.3, "similar_to_default": -0.2,
        },
    }
    d.update(extra)
    return d


# The signature seen here (issue 7) and in seed 002: reward 10 -> 17, speed 0.33 -> 0.01.
SEED_002 = [
    chunk(50, 10.0, 0.33),
    chunk(100, 13.5, 0.12),
    chunk(150, 17.0, 0.01, terms={"height": 12.4, "tracking_lin_vel": 0.9, "alive": 2.0,
                                  "similar_to_default": 0.6, "action_rate": -0.4,
                                  "lin_vel_z": -0.1}),
]


def test_seed_002_signature_fires():
    w = lazy_optimum_warning(SEED_002)
    assert w is not None
    assert w["kind"] == "lazy_optimum"
    assert w["chunks"] == [50, 100, 150]
    assert w["reward"] == [10.0, 17.0] and w["forward_speed"] == [0.33, 0.01]
    # the terms that pay, biggest first, positive only, top 3
    assert [p["term"] for p in w["paying_terms"]] == ["height", "alive", "tracking_lin_vel"]
    assert w["paying_terms"][0]["value"] == pytest.approx(12.4)
    msg = w["message"]
    assert "\n" not in msg
    assert "10.00 → 17.00" in msg and "0.33 → 0.01" in msg and "falls" in msg
    assert "chunks 50–150" in msg and "height +12.40" in msg


def test_healthy_run_is_quiet():
    healthy = [chunk(50, 5.0, 0.10), chunk(100, 9.0, 0.30), chunk(150, 14.0, 0.48)]
    assert lazy_optimum_warning(healthy) is None


def test_reward_flat_or_falling_is_quiet():
    # speed falls but the reward does not rise: a bad run, but not reward hacking
    assert lazy_optimum_warning(
        [chunk(50, 10.0, 0.3), chunk(100, 9.0, 0.2), chunk(150, 10.0, 0.1)], 0.5) is None
    assert lazy_optimum_warning(
        [chunk(50, 12.0, 0.3), chunk(100, 11.0, 0.2), chunk(150, 8.0, 0.1)], 0.5) is None


def test_speed_rising_but_below_half_command_fires():
    slow = [chunk(50, 10.0, 0.05), chunk(100, 12.0, 0.10), chunk(150, 14.0, 0.20)]
    w = lazy_optimum_warning(slow)
    assert w is not None and "stays below half the command (0.25 m/s)" in w["message"]
    # the same speeds are fine for a slow command: each chunk is judged by what it commanded
    assert lazy_optimum_warning([dict(c, command_speed_mean=0.3) for c in slow]) is None


def test_one_chunk_at_half_the_command_is_not_all_below():
    runs = [chunk(50, 10.0, 0.25), chunk(100, 12.0, 0.10), chunk(150, 14.0, 0.26)]
    assert lazy_optimum_warning(runs) is None


def test_only_the_last_window_counts():
    # long ago the robot stood still; the last three chunks are healthy
    history = SEED_002 + [chunk(200, 16.0, 0.2), chunk(250, 18.0, 0.35), chunk(300, 20.0, 0.5)]
    assert lazy_optimum_warning(history, 0.5) is None
    assert lazy_optimum_warning(history[:3], 0.5) is not None
    # a wider window reaches back to the stand-still chunks: speed 0.33 -> 0.20, reward up
    assert lazy_optimum_warning(history[:4], 0.5, window=4) is not None


def test_too_few_chunks_or_no_command():
    assert lazy_optimum_warning([], 0.5) is None
    assert lazy_optimum_warning(SEED_002[:2], 0.5) is None
    assert lazy_optimum_warning(SEED_002[:2], 0.5, window=2) is not None
    assert lazy_optimum_warning([dict(c, command_speed_mean=0.0) for c in SEED_002]) is None
    # records with no command at all (nor a fallback): nothing to judge against
    bare = [{k: v for k, v in c.items() if k not in ("command_speed_mean", "speed_along_command_mean")}
            for c in SEED_002]
    assert lazy_optimum_warning(bare) is None


def test_records_from_before_issue_13_use_command_vx_and_forward_speed():
    old = [{k: v for k, v in c.items() if k not in ("command_speed_mean", "speed_along_command_mean")}
           for c in SEED_002]
    for c, speed in zip(old, (0.33, 0.12, 0.01)):
        c.update(forward_speed_mean=speed, command_vx=0.5)
    w = lazy_optimum_warning(old)
    assert w is not None and w["forward_speed"] == [0.33, 0.01] and w["command_speed"] == 0.5
    for c in old:
        del c["command_vx"]
    assert lazy_optimum_warning(old) is None
    assert lazy_optimum_warning(old, command_vx=0.5) is not None  # the fallback for such records
    assert lazy_optimum_warning(old, command_vx=-0.5) is None


def test_missing_or_bad_figures_never_raise():
    broken = [chunk(50, 10.0, 0.33), chunk(100, None, 0.1), chunk(150, 17.0, 0.01)]
    assert lazy_optimum_warning(broken, 0.5) is None
    nan = [chunk(50, 10.0, 0.33), chunk(100, 12.0, float("nan")), chunk(150, 17.0, 0.01)]
    assert lazy_optimum_warning(nan, 0.5) is None
    no_terms = [dict(c) for c in SEED_002]
    del no_terms[-1]["reward_terms"]
    w = lazy_optimum_warning(no_terms, 0.5)
    assert w is not None and w["paying_terms"] == [] and "paid by" not in w["message"]
    assert lazy_optimum_warning(["junk", *SEED_002], 0.5) is not None


def test_paying_terms_ignores_negative_and_non_numbers():
    c = {"reward_terms": {"a": -1.0, "b": 0.0, "c": 2.0, "d": "x", "e": True, "f": 0.5}}
    assert paying_terms(c) == [{"term": "c", "value": 2.0}, {"term": "f", "value": 0.5}]
    assert paying_terms({}) == []


def test_guard_imports_no_heavy_modules():
    code = ("import sys, go2train.guard; "
            "bad = [m for m in ('torch', 'genesis', 'stable_baselines3') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
