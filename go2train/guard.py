"""The reward-hacking guard: spot the seeds' "lazy optimum" in chunk metrics.

Every seed tells the same story: reward rises while the robot stands still, crawls or
vibrates (seed 002: reward up, "PERFECT BALANCE but standing still"; a run here: reward
10 -> 17 while forward speed fell 0.33 -> 0.01 m/s). :func:`lazy_optimum_warning` looks
for that signature, judged against what was commanded (issue 13: the chunk records' commanded
speed and speed along the command), across the last few chunks' metrics (``logs/chunks/*.json``, see
docs/CONTRACTS.md). The supervisor calls it after each chunk and writes a ``warning``
event; ``go2train status`` shows it.

Pure Python: no torch, no genesis.
"""

from __future__ import annotations

from typing import Any

from go2train.run.files import num

KIND = "lazy_optimum"


def paying_terms(chunk: dict, top: int = 3) -> list[dict[str, float]]:
    """The ``top`` reward terms with the largest positive mean contribution in ``chunk``."""
    terms = chunk.get("reward_terms") if isinstance(chunk, dict) else None
    if not isinstance(terms, dict):
        return []
    pos = [(name, v) for name, v in ((str(k), num(v)) for k, v in terms.items()) if v and v > 0]
    pos.sort(key=lambda kv: (-kv[1], kv[0]))
    return [{"term": name, "value": round(v, 4)} for name, v in pos[:top]]


def commanded(c: dict, fallback: float | None = None) -> tuple[float | None, float | None]:
    """(commanded speed, achieved speed along the command) of one chunk record: the record's
    ``command_speed_mean`` / ``speed_along_command_mean`` (issue 13); a record from before them:
    ``command_vx`` (else ``fallback``) / ``forward_speed_mean``."""
    if "command_speed_mean" in c or "speed_along_command_mean" in c:
        return num(c.get("command_speed_mean")), num(c.get("speed_along_command_mean"))
    cmd = num(c.get("command_vx"))
    return (cmd if cmd is not None else num(fallback)), num(c.get("forward_speed_mean"))


def lazy_optimum_warning(
    chunks: list[dict], command_vx: float | None = None, window: int = 3
) -> dict[str, Any] | None:
    """Warn when reward rises while the robot does not walk where it is told.

    ``chunks`` are chunk-metric dicts, oldest first. Each says what was commanded and achieved
    (:func:`commanded`): the mean commanded speed over the steps a robot was told to move and the
    mean speed along the commanded direction on those steps. Across the last ``window`` chunks the
    guard fires when ``reward_mean`` rises (last > first) while the achieved speed either falls
    (last < first) or stays below half the commanded speed in every one of them. ``command_vx`` is
    only the fallback for records that name no command (written before issue 13).

    Returns ``{"kind": "lazy_optimum", "message": str (one line), "paying_terms": [{"term",
    "value"}, ...] (top 3 positive terms of the last chunk), "chunks": [milestones],
    "reward": [first, last], "forward_speed": [first, last] (achieved speed along the command),
    "command_speed": float (the last chunk's commanded speed)}``, or None: also when there are
    fewer than ``window`` chunks, a commanded speed is missing or <= 0 (nothing to walk towards)
    or a figure is missing.
    """
    if window < 2 or not isinstance(chunks, list):
        return None
    recent = [c for c in chunks if isinstance(c, dict)][-window:]
    if len(recent) < window:
        return None
    rewards = [num(c.get("reward_mean")) for c in recent]
    pairs = [commanded(c, command_vx) for c in recent]
    cmds = [p[0] for p in pairs]
    speeds = [p[1] for p in pairs]
    if any(r is None for r in rewards) or any(s is None for s in speeds):
        return None
    if any(c is None or c <= 0 for c in cmds):
        return None

    reward_rises = rewards[-1] > rewards[0]
    speed_falls = speeds[-1] < speeds[0]
    speed_low = all(s < 0.5 * c for s, c in zip(speeds, cmds))
    if not (reward_rises and (speed_falls or speed_low)):
        return None

    cmd = cmds[-1]
    half = 0.5 * cmd
    milestones = [c.get("chunk") for c in recent]
    pay = paying_terms(recent[-1])
    if speed_falls:
        why = "falls"
    else:
        why = f"stays below half the command ({half:.2f} m/s)"
    span = (
        f"chunks {milestones[0]}–{milestones[-1]}"
        if all(isinstance(m, int) for m in milestones)
        else f"the last {window} chunks"
    )
    message = (
        f"lazy optimum? reward {rewards[0]:.2f} → {rewards[-1]:.2f} over {span} while the speed "
        f"along the command {why}: {speeds[0]:.2f} → {speeds[-1]:.2f} m/s at commanded {cmd:.2f} m/s"
    )
    if pay:
        message += "; paid by " + ", ".join(f"{p['term']} {p['value']:+.2f}" for p in pay)
    return {
        "kind": KIND,
        "message": message,
        "paying_terms": pay,
        "chunks": milestones,
        "reward": [rewards[0], rewards[-1]],
        "forward_speed": [speeds[0], speeds[-1]],
        "command_speed": cmd,
    }
