"""A stand-in for `go2train train-chunk` / `go2train video` that honours docs/CONTRACTS.md
(atomic logs/heartbeat.json with phase/timesteps progress, logs/chunks/chunk_NNNNNN.json, exit
codes) in a fraction of a second, steered by RUN_DIR/fake_script.json (else the file $GO2TRAIN_FAKE_SCRIPT names):

    {"episodes": 50,
     "attempts": [{"do": "signal", "sig": "SIGSEGV", "after": 0.2}, {"do": "ok"}, ...],
     "default": {"do": "done"},
     "render": {"50": {"do": "signal", "sig": "SIGSEGV"}, "100": {"do": "hang"},
                "150": {"do": "slow", "frames": 20, "frame_s": 0.05}}}

Usage: fake_worker.py worker RUN_DIR | fake_worker.py render RUN_DIR CHUNK | fake_worker.py gpu RUN_DIR

Worker actions (attempt n uses attempts[n-1], else "default"):
  ok        starting for start_s, train for train_s (timesteps grow), save, write the chunk record, exit 0
  done      like ok without training, exit 3 (run complete)
  exit      train for `after` s, then exit with `code`
  signal    train for `after` s, then kill itself with `sig`
  hang      train for `after` s, then keep writing heartbeats with frozen timesteps (a stuck training
            loop with a live heartbeat thread), with a grandchild `sleep` in its process group
  silent    never write a heartbeat; sleep
  long      train until SIGTERM (then exit 4, like the real worker); "ignore_term": true ignores it
Like the real worker, it honours `--set chunk.max_timesteps=T` on its command line (the supervisor
appends the daemon's --set items): it exits 3 (run complete) without training once the newest chunk
record's timesteps_total reaches T, and 3 instead of 0 after an "ok" chunk that reaches it.
"phases": [["importing", 0.1], ["compiling_kernels", 0.3]] first walks through start-up phases
(heartbeat phase names, frozen timesteps), after start_s.
Config (off unless the script says "config": true): the worker reads RUN_DIR/go2train.toml at its
start and records it like the real one (go2train.train.worker.record_config: logs/worker_config.json,
a config_changed event); an action's "write_config": TEXT then rewrites go2train.toml mid-chunk
(a user's edit, or the chaos campaign's).
Render actions (default "ok"): ok (write the mp4 at once), slow (write `frames` frames of `frame_s`
each into a hidden temp file `.chunk_NNNNNN.<pid>.tmp.mp4`, reporting progress in
$GO2TRAIN_RENDER_PROGRESS like the real renderer, then rename it; default SIGTERM handling, so
a stopped render leaves its temp file to the supervisor), signal, hang, anything else: exit `code`.
Every invocation appends {"n", "pid", "do", "time", ...} to RUN_DIR/fake_log.jsonl.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

HB_S = 0.05
TICK = 0.02


def atomic_write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def log(run: Path, **rec) -> None:
    rec.setdefault("pid", os.getpid())
    rec.setdefault("time", time.time())
    fd = os.open(run / "fake_log.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(rec) + "\n").encode())
    finally:
        os.close(fd)


def load_script(run: Path) -> dict:
    """RUN_DIR/fake_script.json, else the file named by $GO2TRAIN_FAKE_SCRIPT (sweep trials); when
    that names a folder: its RUN_DIR-name.json, else its default.json."""
    path = run / "fake_script.json"
    if not path.exists() and os.environ.get("GO2TRAIN_FAKE_SCRIPT"):
        path = Path(os.environ["GO2TRAIN_FAKE_SCRIPT"])
        if path.is_dir():
            path = path / f"{run.name}.json" if (path / f"{run.name}.json").exists() else path / "default.json"
    return json.loads(path.read_text())


def next_attempt(run: Path) -> int:
    fd = os.open(run / "fake_attempts", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, b".")
    finally:
        os.close(fd)
    return (run / "fake_attempts").stat().st_size


def last_chunk(run: Path) -> int:
    best = 0
    d = run / "logs" / "chunks"
    if d.is_dir():
        for p in d.glob("chunk_*.json"):
            try:
                best = max(best, int(p.stem.split("_")[1]))
            except ValueError:
                pass
    return best


def total_timesteps(run: Path) -> int:
    prev = last_chunk(run)
    if not prev:
        return 0
    try:
        rec = json.loads((run / "logs" / "chunks" / f"chunk_{prev:06d}.json").read_text())
        return int(rec.get("timesteps_total") or 0)
    except (OSError, ValueError):
        return 0


def max_timesteps(argv: list[str]) -> int:
    """``--set chunk.max_timesteps=T`` among the appended worker arguments (0: none)."""
    for flag, item in zip(argv, argv[1:]):
        if flag == "--set" and item.startswith("chunk.max_timesteps="):
            return int(item.split("=", 1)[1])
    return 0


MAX_TIMESTEPS = max_timesteps(sys.argv)


class Worker:
    def __init__(self, run: Path, chunk: int):
        self.run = run
        self.chunk = chunk
        self.phase = "starting"
        self.timesteps = 0
        self.started = time.time()
        self.lock = threading.Lock()
        self.beating = True

    def beat(self) -> None:
        with self.lock:
            atomic_write(self.run / "logs" / "heartbeat.json", {
                "pid": os.getpid(), "chunk": self.chunk, "phase": self.phase,
                "phase_started": self.started,
                "timesteps": self.timesteps, "episodes": 0, "time": time.time(),
                "started": self.started, "backend": "cpu",
            })

    def start_heartbeat(self) -> None:
        def loop():
            while True:
                if self.beating:
                    self.beat()
                time.sleep(HB_S)

        self.beat()
        threading.Thread(target=loop, daemon=True).start()

    def train(self, seconds: float) -> None:
        self.phase = "training"
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.timesteps += 100
            time.sleep(TICK)

    def finish(self, code: int) -> None:
        self.phase = "saving"
        if code == 0:
            prev_total = total_timesteps(self.run)
            if MAX_TIMESTEPS and prev_total + self.timesteps >= MAX_TIMESTEPS:
                code = 3
            atomic_write(self.run / "logs" / "chunks" / f"chunk_{self.chunk:06d}.json", {
                "chunk": self.chunk, "episodes": 1, "timesteps": self.timesteps,
                "timesteps_total": prev_total + self.timesteps,
                "started": self.started, "finished": time.time(),
            })
        self.phase = "exiting"
        self.beat()
        sys.stdout.flush()
        os._exit(code)


def worker(run: Path) -> None:
    script = load_script(run)
    n = next_attempt(run)
    attempts = script.get("attempts", [])
    act = attempts[n - 1] if n <= len(attempts) else script.get("default", {"do": "done"})
    do = act.get("do", "ok")
    if MAX_TIMESTEPS and total_timesteps(run) >= MAX_TIMESTEPS:
        do = "done"  # the run is complete: train nothing
    chunk = last_chunk(run) + int(script.get("episodes", 50))
    log(run, n=n, do=do, chunk=chunk, act=act)
    print(f"fake worker attempt {n} pid {os.getpid()}: {do} chunk {chunk}", file=sys.stderr, flush=True)
    w = Worker(run, chunk)
    if script.get("config"):
        from go2train.config import load
        from go2train.run.layout import RunDir
        from go2train.train.worker import record_config

        record_config(RunDir.at(run), load(None, run))
    if "write_config" in act:
        tmp = run / ".go2train.toml.tmp"
        tmp.write_text(act["write_config"])
        os.replace(tmp, run / "go2train.toml")

    def on_term(signum, frame):
        print(f"fake worker {os.getpid()}: SIGTERM, resume point written", file=sys.stderr, flush=True)
        w.finish(4)

    signal.signal(signal.SIGTERM, signal.SIG_IGN if act.get("ignore_term") else on_term)
    if do == "silent":
        while True:
            time.sleep(1)
    w.start_heartbeat()
    start_s = float(act.get("start_s", 0.0))
    if start_s:
        time.sleep(start_s)  # phase "starting", timesteps 0: a kernel compile
    for name, secs in act.get("phases", []):
        w.phase = name
        w.beat()
        time.sleep(float(secs))
    if do == "ok":
        w.train(float(act.get("train_s", 0.15)))
        w.finish(0)
    if do == "done":
        w.finish(3)
    if do == "exit":
        w.train(float(act.get("after", 0.05)))
        print(f"fake worker: exiting with {act['code']}", file=sys.stderr, flush=True)
        w.finish(int(act["code"]))
    if do == "signal":
        w.train(float(act.get("after", 0.05)))
        sig = getattr(signal, act.get("sig", "SIGSEGV"))
        print(f"fake worker: raising {act.get('sig', 'SIGSEGV')}", file=sys.stderr, flush=True)
        os.kill(os.getpid(), sig)
        time.sleep(10)
    if do == "hang":
        w.train(float(act.get("after", 0.1)))
        kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", str(run)])
        log(run, n=n, grandchild=kid.pid)
        print("fake worker: stuck (heartbeat thread alive, no progress)", file=sys.stderr, flush=True)
        while True:
            time.sleep(1)
    if do == "long":
        while True:
            w.train(1.0)
    raise SystemExit(f"fake worker: unknown action {do!r}")


def render(run: Path, chunk: int) -> None:
    script = load_script(run)
    act = script.get("render", {}).get(str(chunk), {"do": "ok"})
    do = act.get("do", "ok")
    log(run, render=chunk, do=do)
    print(f"fake render chunk {chunk}: {do}", file=sys.stderr, flush=True)
    if do == "ok":
        (run / "videos").mkdir(exist_ok=True)
        (run / "videos" / f"chunk_{chunk:06d}.mp4").write_bytes(b"fake")
        sys.exit(0)
    if do == "slow":
        frames, frame_s = int(act.get("frames", 20)), float(act.get("frame_s", 0.05))
        prog = os.environ.get("GO2TRAIN_RENDER_PROGRESS")
        (run / "videos").mkdir(exist_ok=True)
        final = run / "videos" / f"chunk_{chunk:06d}.mp4"
        tmp = final.with_name(f".{final.stem}.{os.getpid()}.tmp.mp4")
        log(run, render=chunk, tmp=tmp.name, nice=os.nice(0))
        started = time.time()
        with open(tmp, "wb") as f:
            for i in range(frames):
                f.write(b"frame")
                f.flush()
                if prog:
                    atomic_write(Path(prog), {"pid": os.getpid(), "chunk": chunk, "phase": "rendering",
                                              "frames_done": i, "frames_total": frames, "started": started,
                                              "time": time.time()})
                time.sleep(frame_s)
        os.replace(tmp, final)
        sys.exit(0)
    if do == "signal":
        sig = getattr(signal, act.get("sig", "SIGSEGV"))
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    if do == "hang":
        kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", str(run)])
        log(run, render=chunk, grandchild=kid.pid)
        while True:
            time.sleep(1)
    sys.exit(int(act.get("code", 1)))


def gpu(run: Path) -> None:
    """Fake GPU probe: successive values from script["gpu"], then its last value."""
    script = load_script(run)
    vals = script.get("gpu", [None])
    p = run / "fake_gpu_calls"
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, b".")
    os.close(fd)
    n = p.stat().st_size
    print(json.dumps(vals[min(n, len(vals)) - 1]))


if __name__ == "__main__":
    mode, run_dir = sys.argv[1], Path(sys.argv[2])
    if mode == "worker":
        worker(run_dir)
    elif mode == "render":
        render(run_dir, int(sys.argv[3]))
    elif mode == "gpu":
        gpu(run_dir)
    else:
        raise SystemExit(f"unknown mode {mode}")
