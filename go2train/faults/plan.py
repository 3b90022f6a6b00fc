"""The campaign's run and its seeded fault plan: what fires when (pure; no processes, no files).

Owns the tiny config the campaign trains (``campaign_toml``), the fault kinds and their weights,
:func:`make_plan` (the faults, in order, with their parameters: a pure function of ``(faults, seed)``)
and :func:`render_failures` (the milestones whose render the hook fails).
"""

from __future__ import annotations

import random
from typing import Any

# ---------------------------------------------------------------- the campaign's run
N_ENVS = 8
EPISODE_STEPS = 40
EPISODES = 50  # per robot per chunk: 6-15 s of training, a few resume points
N_STEPS = 8  # rollout: N_STEPS * N_ENVS timesteps
RESUME_POINT_MINUTES = 0.05  # a resume point every 3 s of training
HEARTBEAT_S = 1.0
HANG_TIMEOUT_S = 20.0
STARTUP_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 45.0
VIDEO_EVERY = 2 * EPISODES  # milestones: the first chunk and every 2nd

WORKER_KINDS = ("segv", "kill", "save_crash", "corrupt", "hang", "stopcont")
WORKER_WEIGHTS = (3.0, 3.0, 1.5, 1.0, 1.0, 1.5)
KINDS = WORKER_KINDS + ("sup_kill", "render_fail")


def campaign_toml(faults: int, max_episodes: int = 0) -> str:
    return f"""# written by go2train chaos
[env]
n_envs = {N_ENVS}
episode_steps = {EPISODE_STEPS}
backend = "cpu"

[ppo]
n_steps = {N_STEPS}
batch_size = 64
n_epochs = 1
net_arch = [32, 32]

[chunk]
episodes = {EPISODES}
max_episodes = {max_episodes}
heartbeat_s = {HEARTBEAT_S}
resume_point_minutes = {RESUME_POINT_MINUTES}

[video]
width = 64
height = 48
steps = 10
every_episodes = {VIDEO_EVERY}
timeout_s = 300.0

[supervisor]
backoff_initial_s = 0.5
backoff_max_s = 2.0
crash_loop_max = {max(50, 4 * faults)}
crash_loop_window_s = 600.0
hang_timeout_s = {HANG_TIMEOUT_S}
startup_timeout_s = {STARTUP_TIMEOUT_S}
stop_timeout_s = {STOP_TIMEOUT_S}
poll_s = 0.25
"""


# ---------------------------------------------------------------- the seeded plan
def _kinds(rng: random.Random, faults: int) -> list[str]:
    """The kinds, shuffled: about one in six a supervisor kill; the worker kinds each once (or, in a
    short campaign, distinct and seeded), the rest shared by weight (largest remainders)."""
    n_sup = round(faults / 6) if faults >= 2 else 0
    n_worker = faults - n_sup
    if n_worker < len(WORKER_KINDS):
        kinds = rng.sample(WORKER_KINDS, k=n_worker)
    else:
        extra = n_worker - len(WORKER_KINDS)
        share = [extra * w / sum(WORKER_WEIGHTS) for w in WORKER_WEIGHTS]
        counts = [1 + int(s) for s in share]
        by_rest = sorted(range(len(share)), key=lambda j: (-(share[j] - int(share[j])), j))
        for j in by_rest[: n_worker - sum(counts)]:
            counts[j] += 1
        kinds = [k for k, n in zip(WORKER_KINDS, counts) for _ in range(n)]
    kinds += ["sup_kill"] * n_sup
    rng.shuffle(kinds)
    return kinds


def _params(rng: random.Random, i: int, kind: str, used: set[str]) -> dict[str, Any]:
    """One fault's seeded parameters (the draws, in this order, are part of the plan's contract)."""
    f: dict[str, Any] = {"i": i, "kind": kind}
    if kind in ("segv", "kill"):
        f["phase"] = rng.choice(["starting", "training"])
        f["delay_s"] = round(rng.uniform(0.5, 12.0) if f["phase"] == "starting" else rng.uniform(0.0, 4.0), 2)
    elif kind == "save_crash":
        f["spec"] = f"save_crash@*:{i}"  # the step count is unused by save_crash: a unique spec
    elif kind == "corrupt":
        f["delay_s"] = round(rng.uniform(0.0, 3.0), 2)
        f["role"] = rng.choice(["model", "vecnorm"])
        f["mode"] = rng.choice(["truncate", "bitflip"])
        f["where"] = round(rng.random(), 4)
    elif kind == "hang":
        f["method"] = rng.choice(["failpoint", "sigstop"])
        if f["method"] == "failpoint":
            k = rng.randint(1, 150)
            while f"hang@*:{k}" in used:  # each spec fires once per run dir
                k += 1
            f["spec"] = f"hang@*:{k}"
            used.add(f["spec"])
        else:
            f["delay_s"] = round(rng.uniform(0.0, 3.0), 2)
    elif kind == "stopcont":
        f["delay_s"] = round(rng.uniform(0.0, 8.0), 2)
        f["stop_s"] = round(rng.uniform(2.0, 8.0), 2)
    elif kind == "sup_kill":  # any state (mostly a worker starting up), or a worker training
        f["phase"] = rng.choice(["any", "training"])
        f["delay_s"] = round(rng.uniform(0.0, 15.0) if f["phase"] == "any" else rng.uniform(0.0, 4.0), 2)
    return f


def make_plan(faults: int, seed: int) -> list[dict[str, Any]]:
    """The faults, in order, with their parameters: a pure function of (faults, seed)."""
    rng = random.Random(seed)
    kinds = _kinds(rng, faults)
    used: set[str] = set()
    return [_params(rng, i, kind, used) for i, kind in enumerate(kinds)]


def render_failures(seed: int, upto: int = 2000) -> list[int]:
    """Milestones whose render the hook fails: the first one, not the second, then a seeded half."""
    rng = random.Random(f"render:{seed}")
    out = [EPISODES]
    for m in range(2 * VIDEO_EVERY, upto * EPISODES + 1, VIDEO_EVERY):
        if rng.random() < 0.5:
            out.append(m)
    return out
