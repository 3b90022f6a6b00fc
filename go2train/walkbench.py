"""`go2train walkbench`: time-to-walk, reproducibly.

Starts a fresh run in a temporary (or given, empty) run directory with the given config, runs the
real supervisor (`go2train daemon run`) for ``--minutes`` of wall time, stops it gracefully, then
evaluates every chunk in one process (`go2train.evaluate.evaluate_many`) and prints, per chunk, the
wall time at which it was finished and its eval figures, and the first chunk that walks:

    forward speed (heading frame) >= 0.9 x command, world displacement speed >= 0.8 x command (it
    walks where it is told, not in circles), survival >= 95 %, base height 0.27 +- 0.03 m,
    tilt <= 5 deg, and no lazy-optimum flag.
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

from go2train.runfiles import RunDir, atomic_write_json, read_json


def walks(r: dict, cmd: float) -> bool:
    p = r["policy"]
    return (
        p["forward_speed"] >= 0.9 * cmd
        and p["displacement_speed"] >= 0.8 * cmd
        and p["survival"] >= 0.95
        and abs(p["base_height_mean"] - 0.27) <= 0.03
        and p["tilt_deg"] <= 5.0
        and not r["lazy_optimum"]
    )


def timesteps_trained(rd: RunDir) -> int:
    """Timesteps of the newest finished chunk (0 before the first): what a timestep budget counts."""
    best = 0
    for path in rd.chunk_logs.glob("chunk_*.json"):
        rec = read_json(path) or {}
        best = max(best, int(rec.get("timesteps_total") or 0))
    return best


def main(config: Path | None, minutes: float, run_dir: Path | None, episodes: int, json_out: bool,
         timesteps: int = 0) -> int:
    from go2train.evaluate import evaluate_many

    rd = RunDir.at(run_dir or tempfile.mkdtemp(prefix="go2walk_"))
    rd.root.mkdir(parents=True, exist_ok=True)
    if any(rd.models.glob("chunk_*.json")):
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
    sup = subprocess.Popen([sys.executable, "-m", "go2train", "daemon", "run", "--run-dir", str(rd.root)],
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
    chunks = sorted(int(p.stem[6:]) for p in rd.models.glob("chunk_*.json"))
    if not chunks:
        print("go2train: walkbench: no chunk finished in the time given", file=sys.stderr)
        return 1
    results = evaluate_many(rd.root, chunks, episodes=episodes)
    rows = []
    first_walk = None
    for r in results:
        m = read_json(rd.chunk_metrics(r["chunk"])) or {}
        wall_min = (m.get("finished", t0) - t0) / 60
        cmd = r.get("cmd_vx", 0.5)
        ok = walks(r, cmd)
        if ok and first_walk is None:
            first_walk = (r["chunk"], wall_min)
        p = r["policy"]
        rows.append({"chunk": r["chunk"], "wall_min": round(wall_min, 1), "timesteps": m.get("timesteps_total"),
                     "forward_speed": round(p["forward_speed"], 3),
                     "displacement_speed": round(p["displacement_speed"], 3), "survival": round(p["survival"], 3),
                     "height": round(p["base_height_mean"], 3), "tilt_deg": round(p["tilt_deg"], 2),
                     "air_time_per_swing_s": p["air_time_per_swing_s"] and round(p["air_time_per_swing_s"], 3),
                     "diagonal_sync": p["diagonal_sync"] and round(p["diagonal_sync"], 2),
                     "reward": round(p["reward"], 2), "baseline_reward": round(r["baseline"]["reward"], 2),
                     "lazy": r["lazy_optimum"], "walks": ok})
    summary = {"run_dir": str(rd.root), "trained_s": round(trained_s), "time_to_walk_min": first_walk and round(first_walk[1], 1),
               "first_walking_chunk": first_walk and first_walk[0], "chunks": rows}
    atomic_write_json(rd.logs / "walkbench.json", summary)
    atomic_write_json(rd.logs / "walkbench_eval.json", results)  # every figure of every chunk
    if json_out:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{'chunk':>6} {'min':>6} {'steps':>10} {'speed':>7} {'disp':>6} {'surv':>6} {'height':>7} {'tilt':>6} "
              f"{'air':>6} {'diag':>6} {'reward':>8} {'still':>8}  lazy walks")
        for x in rows:
            print(f"{x['chunk']:>6} {x['wall_min']:>6} {x['timesteps'] or 0:>10} {x['forward_speed']:>7} "
                  f"{x['displacement_speed']:>6} "
                  f"{x['survival']:>6} {x['height']:>7} {x['tilt_deg']:>6} {x['air_time_per_swing_s']!s:>6} "
                  f"{x['diagonal_sync']!s:>6} {x['reward']:>8} "
                  f"{x['baseline_reward']:>8}  {'YES' if x['lazy'] else 'no':>4} {'YES' if x['walks'] else 'no':>5}")
        ttw = f"{first_walk[1]:.1f} min (chunk {first_walk[0]})" if first_walk else "not reached"
        print(f"time to walk: {ttw}; trained {trained_s / 60:.1f} min in {rd.root}")
    return 0
