"""The worker's GPU memory (issue 12 item 4): NVML's per-process figure, read through a stand-in
``pynvml`` (no GPU needed): present, absent, raising; the heartbeat and the chunk record carry it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types

import pytest

from go2train.train import gpumem
from go2train.train.gpumem import GpuMemProbe

MIB = 2**20


class NVMLError(Exception):
    pass


def fake_nvml(devices: list[dict], init_error: bool = False, raise_in: str | None = None) -> types.ModuleType:
    """A stand-in ``pynvml``: ``devices[i] = {"compute": [(pid, bytes)], "graphics": [(pid, bytes)]}``."""
    m = types.ModuleType("pynvml")
    m.NVMLError = NVMLError
    m.calls = []

    def init():
        m.calls.append("init")
        if init_error:
            raise NVMLError("Driver Not Loaded")

    def procs(kind):
        def get(handle):
            if raise_in == kind:
                raise NVMLError("GPU is lost")
            return [types.SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in devices[handle].get(kind, [])]
        return get

    m.nvmlInit = init
    m.nvmlShutdown = lambda: m.calls.append("shutdown")
    m.nvmlDeviceGetCount = lambda: len(devices)
    m.nvmlDeviceGetHandleByIndex = lambda i: i
    m.nvmlDeviceGetComputeRunningProcesses = procs("compute")
    m.nvmlDeviceGetGraphicsRunningProcesses = procs("graphics")
    return m


@pytest.fixture
def nvml(monkeypatch):
    def install(module):
        monkeypatch.setitem(sys.modules, "pynvml", module)
        return module
    return install


def test_reads_own_pid_summed_over_devices_with_peak(nvml):
    me, other = os.getpid(), os.getpid() + 1
    devices = [
        {"compute": [(other, 9000 * MIB), (me, 1500 * MIB)], "graphics": [(me, 1500 * MIB)]},  # listed twice: once
        {"compute": [(me, 500 * MIB)]},
    ]
    nvml(fake_nvml(devices))
    probe = GpuMemProbe()
    assert probe.read() == 2000.0 and probe.peak_mb == 2000.0  # not 3500 (double count) nor 11000 (other pid)
    devices[0]["compute"][1] = (me, 700 * MIB)
    devices[0]["graphics"] = []
    assert probe.read() == 1200.0 and probe.peak_mb == 2000.0  # the peak stays
    assert sys.modules["pynvml"].calls.count("init") == 1  # NVML is initialised once, not per reading


def test_pid_not_listed_reads_zero(nvml):
    nvml(fake_nvml([{"compute": [(os.getpid() + 1, 5 * MIB)]}]))
    assert GpuMemProbe().read() == 0.0  # NVML works and the process holds no GPU memory


@pytest.mark.parametrize("case", ["no module", "init raises", "list raises", "memory not available"])
def test_unknown_is_none_and_never_raises(nvml, case):
    me = os.getpid()
    if case == "no module":
        nvml(None)  # `import pynvml` raises ImportError
    elif case == "init raises":
        nvml(fake_nvml([], init_error=True))
    elif case == "list raises":
        m = nvml(fake_nvml([{"compute": [(me, MIB)]}]))
        m.nvmlDeviceGetCount = lambda: (_ for _ in ()).throw(NVMLError("Unknown Error"))
    else:
        nvml(fake_nvml([{"compute": [(me, None)]}]))
    probe = GpuMemProbe()
    assert probe.read() is None and probe.peak_mb is None and probe.error
    assert probe.read() is None  # and again, no exception


def test_one_list_unsupported_the_other_counts(nvml):
    nvml(fake_nvml([{"compute": [(os.getpid(), 300 * MIB)]}], raise_in="graphics"))
    assert GpuMemProbe().read() == 300.0


def test_pid_missing_while_cuda_is_in_use_is_unknown(nvml, monkeypatch):
    """In a container NVML lists host pids: a process that does use CUDA but is not found reads None, not 0."""
    nvml(fake_nvml([{"compute": [(1, 100 * MIB)]}]))
    monkeypatch.setattr(gpumem, "_cuda_in_use", lambda: True)
    probe = GpuMemProbe()
    assert probe.read() is None and "not in NVML" in probe.error


FAKE_PYNVML = '''
import os, types
class NVMLError(Exception):
    pass
_MODE = os.environ.get("FAKE_NVML", "ok")
def nvmlInit():
    if _MODE == "nodriver":
        raise NVMLError("NVML Shared Library Not Found")
def nvmlShutdown():
    pass
def nvmlDeviceGetCount():
    return 1
def nvmlDeviceGetHandleByIndex(i):
    return i
def nvmlDeviceGetComputeRunningProcesses(h):
    return [types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=3 * 1024 * 2**20),
            types.SimpleNamespace(pid=1, usedGpuMemory=50 * 1024 * 2**20)]
def nvmlDeviceGetGraphicsRunningProcesses(h):
    return []
'''


@pytest.mark.parametrize("mode,expected", [("ok", 3072.0), ("nodriver", None), ("absent", None)])
def test_worker_heartbeat_and_chunk_record_carry_it(tmp_path, mode, expected):
    """The real Worker's heartbeat in a fresh process, with a stand-in pynvml module on PYTHONPATH
    that lists the process's own pid (3 GiB) beside another one's; or NVML failing; or no module."""
    fake = tmp_path / "fake"
    fake.mkdir()
    if mode != "absent":
        (fake / "pynvml.py").write_text(FAKE_PYNVML)
    else:  # hide the real module too: a package named pynvml that fails to import
        (fake / "pynvml.py").write_text("raise ImportError('no pynvml here')\n")
    run = tmp_path / "run"
    run.mkdir()
    code = textwrap.dedent("""
        import json, sys
        from pathlib import Path
        from go2train.config import load
        from go2train.run.layout import RunDir
        from go2train.train.worker import Worker
        rd = RunDir.at(Path(sys.argv[1])); rd.make()
        w = Worker(rd, load(None, rd.root))
        hb = w.heartbeat()
        print(json.dumps({"hb": hb, "peak": w._peak_gpu_mb(), "file": json.loads(rd.heartbeat.read_text()),
                          "heavy": sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'genesis'))}))
    """)
    env = {**os.environ, "PYTHONPATH": f"{fake}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "FAKE_NVML": mode, "GO2TRAIN_FAKE_GPU": "0"}
    p = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["hb"]["gpu_mem_mb"] == expected and out["file"]["gpu_mem_mb"] == expected
    assert out["hb"]["gpu_mem_peak_mb"] == expected and out["peak"] == expected
    assert out["hb"]["torch_reserved_mb"] is None and out["hb"]["profile"] == "cpu"
    assert out["heavy"] == []  # reading GPU memory imports neither torch nor genesis


def test_status_screen_shows_the_workers_gpu_memory(tmp_path):
    (tmp_path / "logs").mkdir()
    hb = {"pid": os.getpid(), "chunk": 50, "phase": "training", "timesteps": 1, "episodes": 1,
          "chunk_start_episodes": 0, "target_episodes": 100, "steps_per_s": 1.0, "time": __import__("time").time(),
          "started": 0.0, "n_envs": 4096, "backend": "gpu", "device": "cuda", "rss_mb": 900.0,
          "gpu_mem_mb": 3072.0, "gpu_mem_peak_mb": 4096.0, "torch_reserved_mb": 1024.0, "profile": "gpu"}
    (tmp_path / "logs" / "heartbeat.json").write_text(json.dumps(hb))
    p = subprocess.run([sys.executable, "-m", "go2train", "status", "--once", "--run-dir", str(tmp_path)],
                       capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert p.returncode == 0, p.stderr
    line = next(x for x in p.stdout.splitlines() if "memory now" in x)
    assert "worker GPU 3.0 GB (peak 4.0 GB, torch 1.0 GB)" in line, line
    assert "(GPU profile)" in p.stdout
    snap = json.loads(subprocess.run([sys.executable, "-m", "go2train", "status", "--json", "--run-dir", str(tmp_path)],
                                     capture_output=True, text=True).stdout)
    assert snap["memory"]["gpu_mem_mb"] == 3072.0 and snap["memory"]["gpu_mem_peak_mb"] == 4096.0
