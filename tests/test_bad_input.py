"""The bad-input matrix (issue 8): each case gives one clear line on stderr, a non-zero exit, and
writes nothing (a snapshot of the run directory's tree, sizes and mtimes is compared before and after).

Cases already covered elsewhere are not repeated here:
  tests/test_config.py      malformed TOML, unknown key, wrong type, n_envs < 0, batch_size 0 for
                            `config show` and `train-chunk`; missing --config file; missing run dir
                            for `train-chunk`
  tests/test_supervisor.py  wrong type and a malformed GO2TRAIN_WORKER_CMD for `daemon start|run`;
                            missing run dir for `daemon start`; second `daemon start|run` (message);
                            `daemon stop` after a stopped run; stale pid file after kill -9
  tests/test_video.py       `video --chunk` of a missing chunk / non-integer values (message, exit 2)
  tests/test_eval.py        `eval --chunk` of a missing or non-integer chunk

Also here: checkpoints are pickles, so a symlink in models/ is refused and never followed, not even
when it points at a file with the right checksum (README, "Security").
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import helpers
import psutil
import pytest
from helpers import clean_env, procs_mentioning, snapshot, wait_for

from go2train.run import checkpoint
from go2train.run.files import read_json
from go2train.run.layout import RunDir

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
FAKE = str(ROOT / "tests" / "fake_worker.py")

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("no_leftovers")]


# ---------------------------------------------------------------------- helpers
def go2train(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return helpers.go2train(*args, env=env or clean_env(), timeout=timeout)




def one_line_error(p: subprocess.CompletedProcess, needle: str = "") -> str:
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, f"want one line on stderr, got: {p.stderr!r}"
    assert lines[0].startswith("go2train: "), lines[0]
    assert needle in lines[0], (needle, lines[0])
    return lines[0]


def assert_refused(p: subprocess.CompletedProcess, needle: str = "", code: int | None = 2) -> str:
    assert p.returncode != 0, p
    if code is not None:
        assert p.returncode == code, (p.returncode, p.stderr)
    return one_line_error(p, needle)


def fake_checkpoint(rd: RunDir, milestone: int, payloads: dict[str, bytes] | None = None) -> dict:
    """A verifiable checkpoint (manifest + sha256) whose data files hold arbitrary bytes."""
    payloads = payloads or {"model": b"not a real model", "vecnorm": b"not real statistics"}
    writers = {role: (lambda p, b=data: p.write_bytes(b)) for role, data in payloads.items()}
    meta = {"kind": "chunk", "chunk": milestone, "episodes_total": 8 * milestone, "timesteps": 100 * milestone,
            "config": {}, "run": {"t_start": 0.0}}
    return checkpoint.save(rd, f"chunk_{milestone:06d}", writers, meta)


# ---------------------------------------------------------------------- config errors
BAD_CONFIGS = {
    "malformed TOML": ("[env\nn_envs = 4\n", "not valid TOML"),
    "unknown key": ("[chunk]\nepisodez = 5\n", "[chunk] episodez: unknown key"),
    "wrong type": ("[video]\nwidth = 'wide'\n", "[video] width"),
    "negative n_envs": ("[env]\nn_envs = -8\n", "[env] n_envs"),
    "negative episode_steps": ("[env]\nepisode_steps = -40\n", "[env] episode_steps"),
    "negative chunk episodes": ("[chunk]\nepisodes = -1\n", "[chunk] episodes"),
    "negative video height": ("[video]\nheight = -48\n", "[video] height"),
    "negative layer size": ("[ppo]\nnet_arch = [-32, 32]\n", "[ppo] net_arch[0]"),
    "zero layer size": ("[ppo]\nnet_arch = [64, 0]\n", "[ppo] net_arch[1]"),
    "negative n_steps": ("[ppo]\nn_steps = -24\n", "[ppo] n_steps"),
    "negative seed": ("[ppo]\nseed = -1\n", "[ppo] seed"),
}
COMMANDS = {"config show": ["config", "show"], "train-chunk": ["train-chunk"], "daemon start": ["daemon", "start"]}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_config_matrix(tmp_path, case):
    text, needle = BAD_CONFIGS[case]
    run = tmp_path / "run"
    run.mkdir()
    (run / "go2train.toml").write_text(text)
    before = snapshot(run)
    for name, cmd in COMMANDS.items():
        if name != "daemon start" and case in ("malformed TOML", "unknown key", "wrong type", "negative n_envs"):
            continue  # tests/test_config.py covers these for `config show` and `train-chunk`
        p = go2train(*cmd, "--run-dir", str(run))
        line = assert_refused(p, needle)
        assert str(run / "go2train.toml") in line, (name, line)
        assert snapshot(run) == before, f"{name} wrote to the run directory ({case})"


@pytest.mark.parametrize("item, needle", [
    ("ppo.learning_rat=1e-3", "--set ppo.learning_rat=1e-3: [ppo] learning_rat: unknown key"),
    ("env.n_envs=-4", "--set env.n_envs=-4: [env] n_envs"),
    ("chunk=5", "--set chunk=5: expected section.key=value"),
])
def test_bad_set_override_writes_nothing(tmp_path, item, needle):
    """`--set` is validated like the file (issue 15): one line naming the item, exit 2, nothing written."""
    run = tmp_path / "run"
    run.mkdir()
    before = snapshot(run)
    for cmd in (["config", "show"], ["train-chunk"], ["daemon", "start"], ["daemon", "run"]):
        p = go2train(*cmd, "--run-dir", str(run), "--set", "ppo.n_epochs=3", "--set", item)
        assert_refused(p, needle)
        assert snapshot(run) == before, f"{cmd} wrote to the run directory"


# ---------------------------------------------------------------------- run directory
@pytest.mark.parametrize("cmd", [["config", "show"], ["daemon", "run"], ["daemon", "stop"], ["daemon", "status"],
                                 ["status", "--once"], ["video", "--chunk", "1"], ["eval", "--chunk", "1"],
                                 ["export", "--chunk", "1"]])
def test_missing_run_directory(tmp_path, cmd):
    missing = tmp_path / "no" / "such" / "run"
    p = go2train(*cmd, "--run-dir", str(missing))
    assert_refused(p, f"run directory {missing} does not exist")
    assert not (tmp_path / "no").exists()


@pytest.fixture
def unwritable_run(tmp_path):
    """A run directory this process cannot write to (valid config inside).

    chmod 0o500 for a normal user. Root ignores permission bits, so as root the directory is made a
    read-only bind mount of itself; where mounting is not allowed the case is skipped."""
    run = tmp_path / "ro_run"
    run.mkdir()
    (run / "go2train.toml").write_text("[env]\nn_envs = 4\n")
    if os.geteuid() != 0:
        run.chmod(0o500)
        try:
            yield run
        finally:
            run.chmod(0o700)
        return
    mounted = subprocess.run(["mount", "--bind", str(run), str(run)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("running as root (chmod does not stop root's writes) and a read-only bind mount is not "
                    f"allowed here: {mounted.stderr.decode().strip()}")
    try:
        ro = subprocess.run(["mount", "-o", "remount,bind,ro", str(run)], capture_output=True)
        if ro.returncode != 0:
            pytest.skip(f"running as root and cannot remount read-only: {ro.stderr.decode().strip()}")
        yield run
    finally:
        subprocess.run(["umount", str(run)], capture_output=True)


@pytest.mark.parametrize("cmd", [["daemon", "start"], ["daemon", "run"], ["train-chunk"]])
def test_unwritable_run_directory(unwritable_run, cmd):
    before = snapshot(unwritable_run)
    p = go2train(*cmd, "--run-dir", str(unwritable_run))
    assert_refused(p, f"run directory {unwritable_run} is not writable")
    assert snapshot(unwritable_run) == before


# ---------------------------------------------------------------------- video / eval / export of bad chunks
@pytest.mark.parametrize("cmd", ["video", "eval", "export"])
@pytest.mark.parametrize("chunk", ["7", "seven", "3.5", "-20"])
def test_bad_chunk_writes_nothing(tmp_path, cmd, chunk):
    rd = RunDir.at(tmp_path / "run")
    fake_checkpoint(rd, 1)
    before = snapshot(rd.root)
    p = go2train(cmd, "--chunk", chunk, "--run-dir", str(rd.root))
    if chunk == "7":
        needle = "chunk_000007" if cmd == "video" else "chunk 7 not found"
    else:
        needle = repr(chunk) if cmd == "video" else "integer"
    assert_refused(p, needle)
    assert p.stdout == ""
    assert snapshot(rd.root) == before


def test_export_of_a_checkpoint_that_does_not_load_writes_nothing(tmp_path):
    rd = RunDir.at(tmp_path / "run")
    fake_checkpoint(rd, 1)  # its files match their sha256 but hold no model
    before = snapshot(rd.root)
    p = go2train("export", "--chunk", "1", "--run-dir", str(rd.root))
    assert_refused(p, "checkpoint chunk_000001 does not load", code=1)
    assert p.stdout == ""
    assert snapshot(rd.root) == before


# ---------------------------------------------------------------------- daemon control
def fake_run(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    run = tmp_path / "run"
    run.mkdir()
    (run / "go2train.toml").write_text(
        "[chunk]\nepisodes = 50\n[video]\nevery_episodes = 0\n[supervisor]\npoll_s = 0.05\nstop_timeout_s = 2.0\n"
        "hang_timeout_s = 30.0\nstartup_timeout_s = 30.0\n")
    (run / "fake_script.json").write_text(json.dumps({"episodes": 50, "attempts": [], "default": {"do": "long"}}))
    env = clean_env(GO2TRAIN_WORKER_CMD=json.dumps([PY, FAKE, "worker", "{run_dir}"]),
                    GO2TRAIN_RENDER_CMD=json.dumps([PY, FAKE, "render", "{run_dir}", "{chunk}"]),
                    GO2TRAIN_GPU_PROBE_CMD="[]")
    return run, env




def test_daemon_stop_with_no_daemon_writes_nothing(tmp_path):
    run, env = fake_run(tmp_path)
    before = snapshot(run)
    p = go2train("daemon", "stop", "--run-dir", str(run), env=env)
    assert_refused(p, f"no daemon is running for {run}", code=1)
    assert snapshot(run) == before  # no logs/ created
    (run / "logs").mkdir()
    (run / "logs" / "daemon.pid").write_text("garbage, not JSON\n")  # an unlocked, unreadable pid file
    before = snapshot(run)
    p = go2train("daemon", "stop", "--run-dir", str(run), env=env)
    assert_refused(p, "no daemon is running", code=1)
    assert snapshot(run) == before


def test_second_daemon_start_writes_nothing(tmp_path):
    run, env = fake_run(tmp_path)
    p = go2train("daemon", "start", "--run-dir", str(run), env=env)
    assert p.returncode == 0, p.stderr
    sup = json.loads((run / "logs" / "daemon.pid").read_text())["pid"]
    wait_for(lambda: (read_json(run / "logs" / "state.json") or {}).get("state") == "RUNNING", timeout=15.0, what="RUNNING")
    worker = read_json(run / "logs" / "state.json")["worker_pid"]
    # Freeze the daemon and its worker so that only the second start could change the run directory.
    os.killpg(worker, signal.SIGSTOP)
    os.kill(sup, signal.SIGSTOP)
    try:
        time.sleep(0.3)
        before = snapshot(run)
        for cmd in ("start", "run"):
            p = go2train("daemon", cmd, "--run-dir", str(run), env=env)
            assert_refused(p, f"a daemon is already running for {run} (pid {sup})", code=1)
            assert snapshot(run) == before, f"a second `daemon {cmd}` wrote to the run directory"
    finally:
        os.kill(sup, signal.SIGCONT)
        os.killpg(worker, signal.SIGCONT)
    assert go2train("daemon", "stop", "--run-dir", str(run), env=env).returncode == 0
    wait_for(lambda: not procs_mentioning(run), timeout=15.0, what="no process left")


@pytest.mark.parametrize("who", ["sleeper", "pid 1", "this test"])
def test_pid_file_of_an_unrelated_live_process(tmp_path, who):
    run, env = fake_run(tmp_path)
    sleeper = subprocess.Popen(["sleep", "120"])
    try:
        pid = {"sleeper": sleeper.pid, "pid 1": 1, "this test": os.getpid()}[who]
        named = psutil.Process(pid)
        (run / "logs").mkdir()
        (run / "logs" / "daemon.pid").write_text(json.dumps({"pid": pid, "start_time": named.create_time()}) + "\n")
        before = snapshot(run)

        p = go2train("daemon", "status", "--run-dir", str(run), env=env)
        assert p.returncode == 3 and p.stdout.startswith("not running"), (p.stdout, p.stderr)
        p = go2train("daemon", "stop", "--run-dir", str(run), env=env)
        assert_refused(p, "no daemon is running", code=1)
        assert snapshot(run) == before  # status and stop only looked
        assert named.is_running() and named.status() != psutil.STATUS_ZOMBIE  # and signalled nothing

        p = go2train("daemon", "start", "--run-dir", str(run), env=env)
        assert p.returncode == 0, p.stderr
        new = json.loads((run / "logs" / "daemon.pid").read_text())["pid"]
        assert new != pid and p.stdout.strip() == f"go2train daemon started: pid {new}, run dir {run}"
        wait_for(lambda: (read_json(run / "logs" / "state.json") or {}).get("state") == "RUNNING", timeout=15.0, what="RUNNING")
        p = go2train("daemon", "status", "--run-dir", str(run), env=env)
        assert p.returncode == 0 and p.stdout.startswith(f"RUNNING pid {new} ")
        assert go2train("daemon", "stop", "--run-dir", str(run), env=env).returncode == 0
        assert named.is_running() and named.status() != psutil.STATUS_ZOMBIE
    finally:
        sleeper.kill()
        sleeper.wait()


# ---------------------------------------------------------------------- checkpoints are pickles
CANARY = "CANARY_LOADED"


class _Canary:
    """Unpickling this creates RUN_DIR/../CANARY_LOADED: proof that a file was loaded."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_symlinked_checkpoint_is_moved_aside_never_loaded(tmp_path):
    rd = RunDir.at(tmp_path / "run")
    canary = tmp_path / CANARY
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = pickle.dumps(_Canary(str(canary)))
    good = fake_checkpoint(rd, 1)  # an older checkpoint that is fine
    m = fake_checkpoint(rd, 2, {"model": evil, "vecnorm": b"stats"})  # its checksum matches the evil bytes
    # models/chunk_000002.zip becomes a symlink to an identical file outside the run directory
    (outside / "chunk_000002.zip").write_bytes(evil)
    zip2 = rd.models / "chunk_000002.zip"
    zip2.unlink()
    zip2.symlink_to(outside / "chunk_000002.zip")
    assert checkpoint.sha256_file(zip2) == m["files"]["chunk_000002.zip"]["sha256"]  # following it would pass

    loaded = []

    def load(manifest):
        loaded.append(manifest["name"])
        for info in manifest["files"]:
            with open(rd.models / info, "rb") as f:
                try:
                    pickle.load(f)
                except Exception:  # noqa: BLE001 - "stats" is not a pickle
                    pass
        return manifest["name"]

    logs = []
    manifest, got = checkpoint.newest_valid_chunk(rd, load, log=logs.append)
    assert manifest["name"] == "chunk_000001" and got == "chunk_000001" and loaded == ["chunk_000001"]
    assert good["name"] == "chunk_000001"
    assert not canary.exists(), "the symlinked pickle was loaded"
    (dest,) = rd.damaged.iterdir()
    assert dest.name.startswith("chunk_000002.")
    assert (dest / "chunk_000002.zip").is_symlink()  # moved as a link, never followed or copied
    assert "symlink" in json.loads((dest / "REASON.json").read_text())["reason"]
    assert "symlink" in logs[0] and str(dest) in logs[0]
    assert (outside / "chunk_000002.zip").read_bytes() == evil  # the target is untouched
    assert not zip2.exists() and not zip2.is_symlink()


def test_symlinked_manifest_or_models_entry_is_refused(tmp_path):
    rd = RunDir.at(tmp_path / "run")
    other = RunDir.at(tmp_path / "other")
    fake_checkpoint(other, 3)
    rd.models.mkdir(parents=True)
    (rd.models / "chunk_000003.json").symlink_to(other.models / "chunk_000003.json")
    with pytest.raises(checkpoint.DamagedCheckpoint, match="symlink"):
        checkpoint.verify(rd, "chunk_000003")
    # the data files named by a (real) manifest must be real files inside models/, too
    m = fake_checkpoint(rd, 4)
    (rd.models / "chunk_000004.vecnorm.pkl").unlink()
    (rd.models / "chunk_000004.vecnorm.pkl").symlink_to(other.models / "chunk_000003.vecnorm.pkl")
    with pytest.raises(checkpoint.DamagedCheckpoint, match="symlink"):
        checkpoint.verify(rd, "chunk_000004")
    assert m["name"] == "chunk_000004"


def test_readme_security_section_says_so():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Security", 1)[1].split("\n## ", 1)[0]
    assert "pickles" in section and "never follows a symlink" in section and "models/" in section
    assert "sha256" in section


@pytest.mark.genesis
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_worker_refuses_a_symlinked_checkpoint(tmp_path):
    """The real worker: a symlinked pickle (checksum matching) is moved aside, never unpickled."""
    rd = RunDir.at(tmp_path / "run")
    rd.root.mkdir()
    (rd.root / "go2train.toml").write_text(
        "[env]\nn_envs = 4\nepisode_steps = 20\nbackend = 'cpu'\n[chunk]\nepisodes = 1\nheartbeat_s = 0.5\n"
        "[ppo]\nn_steps = 8\nbatch_size = 16\nnet_arch = [32, 32]\n")
    canary = tmp_path / CANARY
    evil = pickle.dumps(_Canary(str(canary)))
    (tmp_path / "evil.pkl").write_bytes(evil)
    fake_checkpoint(rd, 1, {"model": b"zip", "vecnorm": evil})
    pkl = rd.models / "chunk_000001.vecnorm.pkl"
    pkl.unlink()
    pkl.symlink_to(tmp_path / "evil.pkl")
    p = subprocess.run([PY, "-m", "go2train", "train-chunk", "--run-dir", str(rd.root)], capture_output=True,
                       text=True, timeout=360, env=clean_env())
    assert p.returncode == 0, p.stderr[-2000:]
    assert not canary.exists(), "the worker unpickled a symlinked checkpoint"
    log = rd.worker_log.read_text()
    assert "checkpoint chunk_000001 is damaged" in log and "symlink" in log and "no checkpoint: fresh start" in log
    (dest,) = rd.damaged.iterdir()
    assert (dest / "chunk_000001.vecnorm.pkl").is_symlink()
    assert (tmp_path / "evil.pkl").read_bytes() == evil
    checkpoint.verify(rd, "chunk_000001")  # the fresh chunk 1 the worker trained instead
