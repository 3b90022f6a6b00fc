"""`go2train walkbench`: time-to-walk, reproducibly.

Starts a fresh run in a temporary (or given, empty) run directory with the given config, runs the
real supervisor (`go2train daemon run`) for ``--minutes`` of wall time, stops it gracefully, then
evaluates every chunk in one process on the command grid (`go2train.tools.evaluate.evaluate_many`) and
prints, per chunk, the wall time at which it was finished and its eval figures, and the first chunk
that walks (:func:`walks`, docs/EVAL.md "Walking criteria"):

    on the reference command (forward 0.6 m/s): achieved vx within 0.6 +- 0.15 m/s, world
    displacement speed >= 0.8 x 0.6 (it walks where it is told, not in circles), base height
    0.27 +- 0.03 m, tilt <= 5 deg; over the grid: mean linear tracking error over the moving
    commands <= 0.25 m/s, mean yaw-rate error over the turns <= 0.4 rad/s, at least half of every
    moving command achieved, survival >= 95 % on every command; and no lazy-optimum flag.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from go2train.run.files import atomic_write_json, read_json
from go2train.run.layout import RunDir

# The walking criteria (docs/EVAL.md): one place, so eval, walkbench and the docs agree.
REF_VX_TOL = 0.15  # m/s: achieved vx on the reference command (forward 0.6)
DISPLACEMENT_FRACTION = 0.8  # world displacement speed >= this x the reference command
LIN_ERROR_MAX = 0.25  # m/s: mean |cmd_xy - v_xy| over the grid's moving commands
YAW_ERROR_MAX = 0.4  # rad/s: mean |cmd_yaw - w_z| over the grid's turns
SURVIVAL_MIN = 0.95  # on every grid command
PROGRESS_MIN = 0.5  # every moving grid command: at least half of it achieved (evaluate.command_progress)
HEIGHT, HEIGHT_TOL, TILT_MAX = 0.27, 0.03, 5.0


def failed_criteria(r: dict) -> list[str]:
    """The walking criteria an eval result (``go2train eval --json``) misses; [] = it walks."""
    p, sm, cmd = r["policy"], r["summary"], float(r["cmd_vx"])
    ref = next(row for row in r["grid"] if row["name"] == r["reference"])
    checks = [
        (abs(ref["vx"] - cmd) <= REF_VX_TOL, f"{r['reference']}: vx {ref['vx']:+.2f} not within {cmd:.2f} ± {REF_VX_TOL}"),
        (p["displacement_speed"] >= DISPLACEMENT_FRACTION * cmd, f"displacement speed {p['displacement_speed']:+.2f} m/s"),
        (abs(p["base_height_mean"] - HEIGHT) <= HEIGHT_TOL, f"height {p['base_height_mean']:.3f} m"),
        (p["tilt_deg"] <= TILT_MAX, f"tilt {p['tilt_deg']:.1f}°"),
        (sm["lin_error_moving"] is not None and sm["lin_error_moving"] <= LIN_ERROR_MAX,
         f"mean lin error {sm['lin_error_moving']} m/s"),
        (sm["yaw_error_turning"] is not None and sm["yaw_error_turning"] <= YAW_ERROR_MAX,
         f"mean yaw error {sm['yaw_error_turning']} rad/s"),
        (sm["survival_min"] is not None and sm["survival_min"] >= SURVIVAL_MIN, f"lowest survival {sm['survival_min']}"),
        (sm.get("progress_min") is not None and sm["progress_min"] >= PROGRESS_MIN,
         f"progress {sm.get('progress_min')} on {sm.get('progress_min_command')}"),
        (not r["lazy_optimum"], "lazy optimum"),
    ]
    return [why for ok, why in checks if not ok]


def walks(r: dict) -> bool:
    """Whether an eval result meets every walking criterion (:func:`failed_criteria`)."""
    return not failed_criteria(r)


def timesteps_trained(rd: RunDir) -> int:
    """Timesteps of the newest finished chunk (0 before the first): what a timestep budget counts."""
    best = 0
    for m in rd.chunk_records():
        rec = read_json(rd.chunk_metrics(m)) or {}
        best = max(best, int(rec.get("timesteps_total") or 0))
    return best


def main(config: Path | None, minutes: float, run_dir: Path | None, episodes: int, json_out: bool,
         timesteps: int = 0) -> int:
    from go2train.tools.evaluate import evaluate_many

    rd = RunDir.at(run_dir or tempfile.mkdtemp(prefix="go2walk_"))
    rd.root.mkdir(parents=True, exist_ok=True)
    if rd.checkpoints():
        print(f"go2train: walkbench needs a fresh run directory; {rd.root} already has checkpoints", file=sys.stderr)
        return 2
    if config is not None:
        (rd.root / "go2train.toml").write_text(Path(config).read_text())
    t0 = time.time()
    budget = f"{minutes:g} min" + (f" or {timesteps:,} timesteps" if timesteps else "")
    print(f"walkbench: training in {rd.root} for {budget}", file=sys.stderr, flush=True)

    def _interrupted(signum, _frame):  # SIGTERM/SIGHUP: stop the daemon below, do not orphan it
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupted)
    limit = ["--set", f"chunk.max_timesteps={timesteps}"] if timesteps else []  # the run ends itself there
    sup = subprocess.Popen([sys.executable, "-m", "go2train", "daemon", "run", "--run-dir", str(rd.root), *limit],
                           stdout=subprocess.DEVNULL, stderr=open(rd.root / "walkbench.log", "ab"),
                           start_new_session=True)
    try:
        while time.time() - t0 < minutes * 60 and sup.poll() is None:
            if timesteps and timesteps_trained(rd) >= timesteps:
                break  # the budget is spent: stop the daemon (its running worker saves a resume point)
            time.sleep(2)
    finally:
        if sup.poll() is None:
            sup.send_signal(signal.SIGTERM)
            try:
                sup.wait(timeout=180)
            except subprocess.TimeoutExpired:
                os.killpg(sup.pid, signal.SIGKILL)
                sup.wait()
    trained_s = time.time() - t0
    chunks = rd.checkpoints()
    if not chunks:
        print("go2train: walkbench: no chunk finished in the time given", file=sys.stderr)
        return 1
    results = evaluate_many(rd.root, chunks, episodes=episodes)
    rows = []
    first_walk = None
    for r in results:
        m = read_json(rd.chunk_metrics(r["chunk"])) or {}
        wall_min = (m.get("finished", t0) - t0) / 60
        ok = walks(r)
        if ok and first_walk is None:
            first_walk = (r["chunk"], wall_min)
        p, sm = r["policy"], r["summary"]
        rnd = lambda v, n=3: None if v is None else round(v, n)  # noqa: E731
        rows.append({"chunk": r["chunk"], "wall_min": round(wall_min, 1), "timesteps": m.get("timesteps_total"),
                     "forward_speed": round(p["forward_speed"], 3),
                     "lin_error": rnd(sm["lin_error_moving"]), "yaw_error": rnd(sm["yaw_error_turning"]),
                     "worst": sm["worst_command"], "survival_min": rnd(sm["survival_min"]),
                     "displacement_speed": round(p["displacement_speed"], 3), "survival": round(p["survival"], 3),
                     "height": round(p["base_height_mean"], 3), "tilt_deg": round(p["tilt_deg"], 2),
                     "air_time_per_swing_s": p["air_time_per_swing_s"] and round(p["air_time_per_swing_s"], 3),
                     "diagonal_sync": p["diagonal_sync"] and round(p["diagonal_sync"], 2),
                     "reward": round(p["reward"], 2), "baseline_reward": round(r["baseline"]["reward"], 2),
                     "lazy": r["lazy_optimum"], "walks": ok, "misses": failed_criteria(r)})
    summary = {"run_dir": str(rd.root), "trained_s": round(trained_s), "time_to_walk_min": first_walk and round(first_walk[1], 1),
               "first_walking_chunk": first_walk and first_walk[0], "chunks": rows}
    atomic_write_json(rd.logs / "walkbench.json", summary)
    atomic_write_json(rd.logs / "walkbench_eval.json", results)  # every figure of every chunk
    if json_out:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{'chunk':>6} {'min':>6} {'steps':>10} {'speed':>7} {'disp':>6} {'surv':>6} {'height':>7} {'tilt':>6} "
              f"{'air':>6} {'diag':>6} {'linerr':>6} {'yawerr':>6} {'reward':>8} {'still':>8}  lazy walks")
        for x in rows:
            print(f"{x['chunk']:>6} {x['wall_min']:>6} {x['timesteps'] or 0:>10} {x['forward_speed']:>7} "
                  f"{x['displacement_speed']:>6} "
                  f"{x['survival']:>6} {x['height']:>7} {x['tilt_deg']:>6} {x['air_time_per_swing_s']!s:>6} "
                  f"{x['diagonal_sync']!s:>6} {x['lin_error']!s:>6} {x['yaw_error']!s:>6} {x['reward']:>8} "
                  f"{x['baseline_reward']:>8}  {'YES' if x['lazy'] else 'no':>4} {'YES' if x['walks'] else 'no':>5}")
        ttw = f"{first_walk[1]:.1f} min (chunk {first_walk[0]})" if first_walk else "not reached"
        print(f"time to walk: {ttw}; trained {trained_s / 60:.1f} min in {rd.root}")
    return 0
