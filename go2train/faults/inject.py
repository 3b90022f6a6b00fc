"""The injectors: one function per fault kind, each aiming at the live run and recording what it did.

``INJECTORS[kind](campaign, fault)`` waits for a fitting target (a worker in the planned phase, a
live supervisor, a chunk checkpoint), applies the fault (a signal, a failpoint appended to
``RUN_DIR/failpoints``, bytes of a checkpoint file damaged in place, a supervisor SIGKILL and a new
``daemon start``), records it (``Campaign.record``) and waits until the run has recovered. A worker
that ends on its own before its fault lands is skipped and the next one is aimed at. The render
failures are not injected here: the render hook (``python -m go2train.faults``) fails them.
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from go2train.faults.plan import HANG_TIMEOUT_S, STARTUP_TIMEOUT_S
from go2train.faults.worklog import parse_worker_log
from go2train.run import checkpoint
from go2train.run.identity import alive
from go2train.run.layout import chunk_name

if TYPE_CHECKING:
    from go2train.faults.campaign import Campaign

Fault = dict[str, Any]
WORKER_WAIT_S = STARTUP_TIMEOUT_S + 120.0


def _workers(c: Campaign, phase: str, delay_s: float, tries: int = 20) -> Iterator[int]:
    """Live workers in ``phase``, each ``delay_s`` after it was found and still the live worker;
    the next one (up to ``tries``) each time the caller asks again. Ends when none comes."""
    for _ in range(tries):
        pid = c.wait_worker(phase, WORKER_WAIT_S)
        if pid is None:
            return
        if c.sleep_on(pid, delay_s) and c.is_worker(pid):
            yield pid


def _await_exit(c: Campaign, pid: int, timeout: float) -> None:
    """Wait for the victim's exit event (noted in the fault's record), then for a new worker."""
    ex = c.wait_exit(pid, timeout)
    c.records[-1]["exit"] = ex and {k: ex.get(k) for k in ("code", "signal", "reason")}
    c.wait_recovered({pid})


def _signal_worker(c: Campaign, f: Fault, sig: int) -> None:
    for pid in _workers(c, f["phase"], f["delay_s"]):
        snap = c.snapshot(pid)
        os.kill(pid, sig)
        c.record(f, **snap, detail=signal.Signals(sig).name)
        _await_exit(c, pid, 60.0)
        return


def segv(c: Campaign, f: Fault) -> None:
    _signal_worker(c, f, signal.SIGSEGV)


def kill(c: Campaign, f: Fault) -> None:
    _signal_worker(c, f, signal.SIGKILL)


def _failpoint(c: Campaign, f: Fault, expect_hang: bool) -> None:
    """Arm ``f["spec"]`` for the next worker (``RUN_DIR/failpoints``) and wait until it fires."""
    with open(c.root / "failpoints", "a") as fh:
        fh.write(f["spec"] + "\n")
    c.say(f"armed failpoint {f['spec']} for the next worker")
    fired = c.wait(lambda: c.fired().get(f["spec"]), STARTUP_TIMEOUT_S + 300.0, f"failpoint {f['spec']}")
    if not fired:
        return
    pid = int(fired["pid"])
    c.injected(f)
    time.sleep(0.3)
    c.record(f, **c.snapshot(pid), detail=f"failpoint {f['spec']} fired")
    _await_exit(c, pid, HANG_TIMEOUT_S + 60.0 if expect_hang else 60.0)


def save_crash(c: Campaign, f: Fault) -> None:
    _failpoint(c, f, expect_hang=False)


def hang(c: Campaign, f: Fault) -> None:
    if f["method"] == "failpoint":
        _failpoint(c, f, expect_hang=True)
        return
    for pid in _workers(c, "training", f["delay_s"]):
        snap = c.snapshot(pid)
        if snap["phase"] != "training":
            continue
        os.kill(pid, signal.SIGSTOP)
        c.record(f, **snap, detail="SIGSTOP, no SIGCONT")
        _await_exit(c, pid, HANG_TIMEOUT_S + 60.0)
        return


def stopcont(c: Campaign, f: Fault) -> None:
    for pid in _workers(c, "any", f["delay_s"]):
        snap = c.snapshot(pid)
        os.kill(pid, signal.SIGSTOP)
        time.sleep(f["stop_s"])
        os.kill(pid, signal.SIGCONT)
        c.record(f, **snap, detail=f"SIGSTOP for {f['stop_s']:.1f} s, then SIGCONT")
        return


# ---------------------------------------------------------------- corrupt
def damage_file(path: Path, mode: str, where: float) -> tuple[bytes, str]:
    """Truncate ``path`` or flip bit 4 of one byte, in place (like a disk error would): the new
    bytes and a description."""
    data = path.read_bytes()
    if mode == "truncate":
        cut = int(len(data) * (0.1 + 0.8 * where))
        new = data[:cut]
        detail = f"truncated {len(data)} -> {cut} bytes"
    else:
        off = min(len(data) - 1, int(len(data) * where))
        new = data[:off] + bytes([data[off] ^ 0x10]) + data[off + 1:]
        detail = f"bit 4 of byte {off} of {len(data)} flipped"
    with open(path, "r+b") as fh:
        fh.write(new)
        fh.truncate(len(new))
        fh.flush()
        os.fsync(fh.fileno())
    return new, detail


def _newest_valid_chunk(c: Campaign) -> str | None:
    """The newest chunk checkpoint's name if it verifies, else None."""
    milestones = c.rd.checkpoints()
    name = chunk_name(milestones[-1]) if milestones else None
    try:
        return name if name and checkpoint.verify(c.rd, name) else None
    except checkpoint.DamagedCheckpoint:
        return None


def corrupt(c: Campaign, f: Fault) -> None:
    """Freeze a training worker, damage one file of the newest chunk checkpoint, SIGKILL it; wait
    until the next worker has moved that checkpoint to ``models/damaged/``."""
    if not c.wait(c.rd.checkpoints, STARTUP_TIMEOUT_S + 300.0, "a chunk checkpoint"):
        return
    for pid in _workers(c, "training", f["delay_s"], tries=40):
        os.kill(pid, signal.SIGSTOP)  # frozen: nothing is written while we look and corrupt
        time.sleep(0.2)
        hb = c.heartbeat()
        name = _newest_valid_chunk(c)
        if hb.get("pid") != pid or hb.get("phase") != "training" or name is None:
            os.kill(pid, signal.SIGCONT)
            time.sleep(1.0)
            continue
        fname = checkpoint.data_files(name)[f["role"]]
        new, detail = damage_file(c.rd.models / fname, f["mode"], f["where"])
        snap = c.snapshot(pid)
        os.kill(pid, signal.SIGKILL)
        c.record(f, **snap, detail=f"{fname} {detail}; worker SIGKILLed",
                 corrupted={"name": name, "file": fname, "sha256": hashlib.sha256(new).hexdigest(),
                            "bytes": len(new)})
        _await_moved(c, pid, name)
        return


def _await_moved(c: Campaign, pid: int, name: str) -> None:
    """After a corruption: the victim's exit, the next worker's 'moved to damaged/' line, a new worker."""
    ex = c.wait_exit(pid, 60.0)
    c.records[-1]["exit"] = ex and {k: ex.get(k) for k in ("code", "signal", "reason")}
    since = c.records[-1]["wall"] - 1.0

    def moved() -> bool:
        return any(m["name"] == name and m["t"] >= since
                   for s in parse_worker_log(c.rd.worker_log).values() for m in s["moved"])

    c.wait(moved, STARTUP_TIMEOUT_S + 120.0, f"{name} moved to models/damaged/")
    c.wait_recovered({pid})


# ---------------------------------------------------------------- sup_kill
def _aim_supervisor(c: Campaign, f: Fault) -> Iterator[int]:
    """Live supervisors, each ``delay_s`` after it (and, for phase "training", a training worker
    that is still the live worker) was found; the next one each time the caller asks again."""
    for _ in range(20):
        w = None
        if f.get("phase") == "training":  # its orphan must write a resume point when stopped
            w = c.wait_worker("training", WORKER_WAIT_S)
            if w is None:
                return
        sp = c.wait(c.supervisor_pid, 60.0, "a live supervisor")
        if sp is None:
            return
        if w is not None:
            if not c.sleep_on(w, f["delay_s"]):
                continue
        else:
            time.sleep(f["delay_s"])
        if c.supervisor_pid() == sp:
            yield sp


def sup_kill(c: Campaign, f: Fault) -> None:
    """SIGKILL the supervisor, then ``daemon start``: the new one must stop the orphans."""
    for sp in _aim_supervisor(c, f):
        st = c.state()
        worker = st.get("worker_pid") if c.is_worker(st.get("worker_pid")) else None
        render = st.get("render_pid") if alive(st.get("render_pid")) else None
        snap = c.snapshot(worker)
        os.kill(sp, signal.SIGKILL)
        c.sup_kills.add(sp)
        c.injected(f)
        c.wait(lambda pid=sp: not alive(pid), 10.0, f"supervisor {sp} to die")
        new = c.start_daemon()
        c.record(f, **snap, supervisor=sp, worker=worker, render=render, new_supervisor=new,
                 sup_state=st.get("state"),
                 detail=f"supervisor {sp} SIGKILLed in {st.get('state')}; daemon start -> pid {new}")
        if new is not None:
            c.wait_recovered({worker} if worker else set())
        return


INJECTORS: dict[str, Callable[[Campaign, Fault], None]] = {
    "segv": segv, "kill": kill, "save_crash": save_crash, "corrupt": corrupt, "hang": hang,
    "stopcont": stopcont, "sup_kill": sup_kill,
}
