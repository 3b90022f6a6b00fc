#!/usr/bin/env bash
# Issue 12 items 2, 4, 5 on a real GPU (they are proven on CPU with stand-ins in the tests):
#   1. `config show` with no config file picks the GPU profile, and says why (NVIDIA driver files);
#   2. a short chunk on the default (GPU-profile) config: start-up phases, save time, steps/s;
#   3. the worker's NVML GPU memory (heartbeat, chunk record) beside torch's reserved figure.
# Usage: scripts/gpu-check.sh [EPISODES]   (default 2: ~3.3 M steps at N = 4096; a few minutes)
# Prints one JSON summary line at the end; the run directory is left in $RUN (default a temp dir).
set -eu
EPISODES=${1:-2}
PY=${PY:-.venv/bin/python}
RUN=${RUN:-$(mktemp -d /tmp/go2train-gpu-check.XXXXXX)}
printf '[chunk]\nepisodes = %s\n' "$EPISODES" > "$RUN/go2train.toml"
$PY -m go2train config show --run-dir "$RUN" 2>&1 >/dev/null | tee "$RUN/profile.txt"
nvidia-smi -L || true
# heartbeat sampler: the worker's NVML figure and torch's, every 5 s, beside nvidia-smi's view
( while sleep 5; do
    [ -f "$RUN/logs/heartbeat.json" ] && $PY -c "import json,sys; h=json.load(open(sys.argv[1])); print(h['phase'], h.get('gpu_mem_mb'), h.get('gpu_mem_peak_mb'), h.get('torch_reserved_mb'))" "$RUN/logs/heartbeat.json"
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader 2>/dev/null | head -3
  done ) > "$RUN/samples.txt" 2>&1 &
SAMPLER=$!
TIME=""; [ -x /usr/bin/time ] && TIME="/usr/bin/time -v"
for i in 1 2; do  # the first chunk starts fresh, the second resumes from it (checkpoint load)
  $TIME $PY -m go2train train-chunk --run-dir "$RUN" 2> "$RUN/time$i.txt" || { tail -20 "$RUN/time$i.txt"; kill $SAMPLER; exit 1; }
done
kill $SAMPLER 2>/dev/null || true
$PY - "$RUN" <<'EOF'
import json, sys, glob
run = sys.argv[1]
recs = [json.load(open(p)) for p in sorted(glob.glob(f"{run}/logs/chunks/chunk_*.json"))]
keys = ("chunk", "profile", "backend", "n_envs", "timesteps", "startup_s", "startup_phases", "first_step_s",
        "train_s", "save_s", "steps_per_s", "peak_gpu_mb", "peak_torch_reserved_mb", "peak_rss_mb")
out = {"run": run, "profile": open(f"{run}/profile.txt").read().strip(),
       "chunks": [{k: r.get(k) for k in keys} for r in recs]}
for c in out["chunks"]:
    tot = (c["startup_s"] or 0) + (c["train_s"] or 0) + (c["save_s"] or 0)
    c["overhead_pct"] = round(100 * ((c["startup_s"] or 0) + (c["save_s"] or 0)) / tot, 2) if tot else None
print(json.dumps(out))
EOF
tail -6 "$RUN/samples.txt"
