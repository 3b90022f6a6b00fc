"""`go2train eval --sweep DIR`: compare a sweep's trials. This module only aggregates.

* **Eval figures**: each trial's newest checkpoint is evaluated by
  :func:`go2train.tools.evaluate.evaluate_many` (one process: scenes are reused while the trials'
  ``[env]`` sections agree), and judged by :func:`go2train.tools.walkbench.failed_criteria` (the
  walking criteria, docs/EVAL.md). Per group of trials with the same ``--set`` values: the mean ±
  spread (sample standard deviation; 0 for one seed) across seeds of each figure in
  :data:`FIGURES`, and how many of the seeds walk. A trial without a checkpoint has no figures.
* **Time-to-walk** per trial, from its chunk records (``logs/chunks/*.json``): the training wall
  seconds (the chunks' ``startup_s + train_s + save_s``, else ``finished - started``, summed) and the
  timesteps up to the first chunk whose record meets the train-time walking figures
  (:func:`train_misses`, thresholds from go2train.tools.walkbench), or ``None`` ("not yet").

No Ray here; torch and genesis only inside :func:`evaluate_trials`.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from go2train.guard import commanded
from go2train.run.files import num, read_json
from go2train.run.layout import RunDir
from go2train.sweep.plan import SweepDir
from go2train.tools import walkbench

# (name, how to read it from an eval result); docs/EVAL.md defines each.
FIGURES: list[tuple[str, Any]] = [
    ("reference_vx", lambda r: r["summary"].get("reference_vx")),
    ("displacement_speed", lambda r: r["policy"].get("displacement_speed")),
    ("lin_error_moving", lambda r: r["summary"].get("lin_error_moving")),
    ("yaw_error_turning", lambda r: r["summary"].get("yaw_error_turning")),
    ("progress_min", lambda r: r["summary"].get("progress_min")),
    ("survival_min", lambda r: r["summary"].get("survival_min")),
    ("base_height_mean", lambda r: r["policy"].get("base_height_mean")),
    ("tilt_deg", lambda r: r["policy"].get("tilt_deg")),
    ("reward", lambda r: r["policy"].get("reward")),
]


def train_misses(rec: dict[str, Any]) -> list[str]:
    """What a chunk record misses of the train-time walking figures; [] = it walks at train time:
    speed along the command >= walkbench.DISPLACEMENT_FRACTION x the commanded speed, mean linear
    tracking error <= walkbench.LIN_ERROR_MAX, fall rate <= 1 - walkbench.SURVIVAL_MIN."""
    cmd, speed = commanded(rec)
    err, falls = num(rec.get("tracking_error_lin_mean")), num(rec.get("fall_rate"))
    checks = [
        (cmd is not None and speed is not None and cmd > 0 and speed >= walkbench.DISPLACEMENT_FRACTION * cmd,
         f"speed along command {speed} of {cmd} m/s"),
        (err is not None and err <= walkbench.LIN_ERROR_MAX, f"tracking error {err} m/s"),
        (falls is not None and falls <= 1 - walkbench.SURVIVAL_MIN, f"fall rate {falls}"),
    ]
    return [why for ok, why in checks if not ok]


def _chunk_wall(rec: dict[str, Any]) -> float:
    parts = [num(rec.get(k)) for k in ("startup_s", "train_s", "save_s")]
    if any(p is not None for p in parts):
        return sum(p or 0.0 for p in parts)
    a, b = num(rec.get("started")), num(rec.get("finished"))
    return max(0.0, b - a) if a is not None and b is not None else 0.0


def time_to_walk(rd: RunDir) -> dict[str, Any]:
    """``{"chunk", "wall_s", "timesteps"}`` of the first chunk record that walks at train time
    (all None: not yet), with ``"chunks"``: the records read."""
    wall, total = 0.0, 0
    recs = rd.chunk_records()
    for m in recs:
        rec = read_json(rd.chunk_metrics(m))
        if not isinstance(rec, dict):
            continue
        wall += _chunk_wall(rec)
        total = int(num(rec.get("timesteps_total")) or total + int(num(rec.get("timesteps")) or 0))
        if not train_misses(rec):
            return {"chunk": m, "wall_s": round(wall, 1), "timesteps": total, "chunks": len(recs)}
    return {"chunk": None, "wall_s": None, "timesteps": None, "chunks": len(recs)}


def spread(values: list[float]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation) of the finite values; spread 0 for one value."""
    vals = [v for v in (num(x) for x in values) if v is not None]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def aggregate(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Group trial rows (``values``, ``eval``: a figure dict or None, ``walks``) by their ``--set``
    values: per figure ``{"mean", "spread", "n"}``, and ``walks``: seeds that walk / seeds evaluated."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for t in trials:
        groups.setdefault(json.dumps(t["values"], sort_keys=True), []).append(t)
    out = []
    for key, members in groups.items():
        evaluated = [t for t in members if t.get("eval")]
        figs = {}
        for name, _ in FIGURES:
            vals = [t["eval"].get(name) for t in evaluated]
            mean, sd = spread(vals)
            figs[name] = {"mean": mean, "spread": sd, "n": sum(num(v) is not None for v in vals)}
        ttw = [t["time_to_walk"]["wall_s"] for t in members if t["time_to_walk"]["wall_s"] is not None]
        out.append({"values": json.loads(key), "trials": [t["name"] for t in members], "figures": figs,
                    "walks": sum(bool(t.get("walks")) for t in evaluated), "evaluated": len(evaluated),
                    "walk_at_train_time": len(ttw)})
    return out


def evaluate_trials(sd: SweepDir, doc: dict[str, Any], episodes: int) -> list[dict[str, Any]]:
    """One row per trial: its newest checkpoint's figures (None without one) and time-to-walk."""
    rows = []
    for t in doc["trials"]:
        rd = RunDir.at(sd.trial(t["name"]))
        row = {"name": t["name"], "values": t.get("values", {}), "seed": t.get("seed"), "chunk": None,
               "eval": None, "walks": None, "misses": None, "time_to_walk": time_to_walk(rd)}
        if rd.checkpoints():
            from go2train.tools import evaluate as ev

            with ev.stdout_to_stderr():
                (r,) = ev.evaluate_many(rd.root, ["latest"], episodes=episodes)
            row.update(chunk=r["chunk"], eval={name: get(r) for name, get in FIGURES},
                       misses=walkbench.failed_criteria(r))
            row["walks"] = not row["misses"]
        rows.append(row)
    return rows


def _pm(f: dict[str, Any], fmt: str = ".3f") -> str:
    if f["mean"] is None:
        return "—"
    return f"{f['mean']:{fmt}} ± {f['spread']:{fmt}}" if f["n"] > 1 else f"{f['mean']:{fmt}}"


def main(path: str | Path, episodes: int = 8, as_json: bool = False) -> int:
    """Print the comparison (table, or JSON with ``trials`` and ``groups``). Exit 0; 2 when ``path``
    is not a sweep directory; evaluation errors as `go2train eval`."""
    from go2train.tools.evaluate import EvalError

    sd = SweepDir.at(path)
    doc = sd.read()
    if doc is None:
        print(f"go2train: {sd.root} is not a sweep directory (no sweep.json)", file=sys.stderr)
        return 2
    try:
        rows = evaluate_trials(sd, doc, episodes)
    except EvalError as exc:
        print(f"go2train: {exc}", file=sys.stderr)
        return 2
    groups = aggregate(rows)
    if as_json:
        print(json.dumps({"dir": str(sd.root), "grid": doc.get("grid"), "trials": rows, "groups": groups},
                         indent=2, sort_keys=True))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160, highlight=False)
    console.print(f"sweep {sd.root}: each trial's newest checkpoint; time to walk from its chunk records")
    t = Table()
    for col in ("trial", "chunk", "vx @0.6", "lin err", "yaw err", "survival", "walks", "time to walk"):
        t.add_column(col)
    for r in rows:
        e, ttw = r["eval"] or {}, r["time_to_walk"]
        f = lambda k: "—" if e.get(k) is None else f"{e[k]:.3f}"  # noqa: E731
        when = "not yet" if ttw["wall_s"] is None else f"{ttw['wall_s']:.0f} s, {ttw['timesteps']:,} steps"
        walks = "—" if r["walks"] is None else ("YES" if r["walks"] else "no")
        t.add_row(r["name"], str(r["chunk"] or "—"), f("reference_vx"), f("lin_error_moving"),
                  f("yaw_error_turning"), f("survival_min"), walks, when)
    console.print(t)
    console.print("by --set values: mean ± spread across seeds (figures: docs/EVAL.md)")
    g = Table()
    g.add_column("figure")
    for grp in groups:
        g.add_column(", ".join(f"{k}={v}" for k, v in grp["values"].items()) or "base config", justify="right")
    for name, _ in FIGURES:
        g.add_row(name, *[_pm(grp["figures"][name]) for grp in groups])
    g.add_row("seeds that walk", *[f"{grp['walks']}/{grp['evaluated']}" for grp in groups])
    g.add_row("walk at train time", *[f"{grp['walk_at_train_time']}/{len(grp['trials'])}" for grp in groups])
    console.print(g)
    return 0
