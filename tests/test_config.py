"""Configuration: defaults, the effective config, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from go2train.config import Config, ConfigError, load, wandb_installed


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "go2train", *args], capture_output=True, text=True, cwd=cwd)


def test_defaults_match_the_issue():
    c = Config()
    assert (c.env.episode_steps, c.env.kp, c.env.kd, c.env.action_scale, c.env.dt, c.env.substeps) == (400, 20.0, 0.5, 0.25, 0.02, 2)
    h = c.reward.height
    assert (h.target, h.floor, h.floor_penalty, h.sharpness, h.weight) == (0.27, 0.15, -10.0, 5.0, 2.5)
    t = c.termination
    assert (t.min_height, t.grace_steps, t.grace_min_height) == (0.12, 20, 0.08)
    assert (c.chunk.episodes, c.chunk.max_episodes) == (50, 0)


def test_log_section_defaults_tensorboard_on_wandb_off():
    c = Config()
    assert (c.log.tensorboard, c.log.wandb, c.log.wandb_project) == (True, False, "go2train")
    # a checkpoint's stored config may say wandb = true: eval and video replay it without wandb
    from go2train.config import from_dict

    assert from_dict({"log": {"wandb": True}}, "manifest", stored=True).log.wandb is True


def test_run_dir_file_is_used_and_config_flag_wins(tmp_path):
    (tmp_path / "go2train.toml").write_text("[env]\nn_envs = 8\n")
    assert load(None, tmp_path).env.n_envs == 8
    other = tmp_path / "other.toml"
    other.write_text("[env]\nn_envs = 16\n[reward.height]\nweight = 3\n")
    cfg = load(other, tmp_path)
    assert cfg.env.n_envs == 16 and cfg.reward.height.weight == 3.0


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[env]\nn_envs = -3\n", "[env] n_envs"),
        ("[env]\nfoo = 1\n", "[env] foo: unknown key"),
        ("[bogus]\nx = 1\n", "bogus: unknown key"),
        ('[env]\nn_envs = "many"\n', "[env] n_envs"),
        ("[reward.height]\nweight = 'x'\n", "[reward.height] weight"),
        ("[reward]\nhieght = 2.5\n", "[reward] hieght: unknown key"),
        ("[env\n", "not valid TOML"),
        ("[ppo]\nbatch_size = 0\n", "[ppo] batch_size"),
        ("[env]\nbackend = 'tpu'\n", "[env] backend"),
        ("[env]\naction_latency = true\n", "[env] action_latency was replaced by [domain_rand] action_latency_steps"),
        ("[domain_rand]\nkp_range = [1.1, 0.9]\n", "[domain_rand] kp_range"),
        # issue 13: the command keys moved to [command]; the error names the new key
        ("[env]\ncommand_vx = 0.5\n", "[env] command_vx was replaced by [command] vx_range"),
        ("[env]\ncommand_vx_range = [0.5, 0.5]\n", "[env] command_vx_range was replaced by [command] vx_range"),
        ("[env]\nheading_command = false\n", "[env] heading_command was replaced by [command] heading"),
        ("[env]\nresample_command_steps = 9\n", "[env] resample_command_steps was replaced by [command] resample_steps"),
        ("[command]\nvx_range = [1.0, -1.0]\n", "vx_range must be [low, high]"),
        ("[command]\nstanding_share = 1.5\n", "[command] standing_share"),
        ("[command]\ncurriculum_vx_start = [0.7, 0.3]\n", "curriculum_vx_start must be [low, high]"),
        ("[command]\ncurriculum_threshold = 0\n", "[command] curriculum_threshold"),
        # issue 15: [log]
        ("[log]\ntensorboard = 'yes'\n", "[log] tensorboard"),
        ("[log]\nwandb = true\ntensorboard = false\n", "[log] wandb = true needs tensorboard = true"),
        pytest.param("[log]\nwandb = true\n", "[log] wandb = true needs the wandb package (pip install wandb)",
                     marks=pytest.mark.skipif(wandb_installed(), reason="wandb is installed here")),
    ],
)
def test_bad_config_is_one_line_exit_2_nothing_written(tmp_path, text, needle):
    bad = tmp_path / "go2train.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(None, tmp_path)
    assert needle in str(err.value) and str(bad) in str(err.value)
    for cmd in (["config", "show"], ["train-chunk"]):
        p = cli(*cmd, "--run-dir", str(tmp_path))
        assert p.returncode == 2, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and str(bad) in lines[0]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["go2train.toml"]  # nothing written


def test_command_section_defaults_and_old_stored_configs_migrate():
    """Issue 13: [command] holds ranges only; a checkpoint's stored config from before it (keys
    in [env]) still loads, as the one fixed command it trained with."""
    from go2train.config import from_dict

    c = Config().command
    assert (c.vx_range, c.vy_range, c.yaw_range, c.standing_share) == ([-1.0, 1.0], [-0.5, 0.5], [-1.0, 1.0], 0.1)
    assert (c.heading, c.heading_gain, c.resample_steps) == (True, 0.5, 200)
    old = {"env": {"n_envs": 8, "command_vx": 0.5, "command_vx_range": [0.5, 0.5], "command_vy": 0.0,
                   "command_yaw": 0.0, "heading_command": False, "heading_gain": 0.3, "resample_command_steps": 50}}
    m = from_dict(old, "chunk_000050.json config", stored=True)
    assert m.env.n_envs == 8
    assert (m.command.vx_range, m.command.vy_range, m.command.yaw_range) == ([0.5, 0.5], [0.0, 0.0], [0.0, 0.0])
    assert (m.command.standing_share, m.command.heading, m.command.heading_gain, m.command.resample_steps) == (0.0, False, 0.3, 50)
    assert not m.command.curriculum and m.command.ranges_at(0.0)[0] == [0.5, 0.5]  # its one command, always
    assert "command_vx" in old["env"]  # the caller's dict is untouched
    with pytest.raises(ConfigError, match=r"^f.toml: \[env\] command_vy was replaced by \[command\] vy_range"):
        from_dict({"env": {"command_vy": 0.1}}, "f.toml")


def test_a_stored_config_without_a_newer_term_trained_without_it():
    """A checkpoint's stored config holds every term of its day: one it lacks (swing_clearance, on
    by default since exp15) did not train it and stays off, so a clock-less run of before it still
    loads; a config file without the key gets today's default."""
    from go2train.config import from_dict

    assert Config().reward.swing_clearance == 1.0
    stored = Config().to_dict()
    stored["env"]["gait_period_steps"] = 0
    stored["reward"].update(gait_contact=0.0, feet_swing_height=0.0)
    del stored["reward"]["swing_clearance"]
    m = from_dict(stored, "chunk_000050.json config", stored=True)
    assert m.reward.swing_clearance == 0.0 and m.reward.height.weight == Config().reward.height.weight
    assert "swing_clearance" not in stored["reward"]  # the caller's dict is untouched
    with pytest.raises(ConfigError, match=r"^go2train.toml: \[reward\] swing_clearance needs a gait clock"):
        from_dict(stored, "go2train.toml")


def test_missing_config_file_and_run_dir(tmp_path):
    p = cli("config", "show", "--config", str(tmp_path / "nope.toml"))
    assert p.returncode == 2 and "nope.toml" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = cli("train-chunk", "--run-dir", str(tmp_path / "missing"))
    assert p.returncode == 2 and "missing" in p.stderr and not (tmp_path / "missing").exists()


def test_config_show_prints_effective_config(tmp_path):
    (tmp_path / "go2train.toml").write_text("[chunk]\nepisodes = 7\n")
    p = cli("config", "show", "--run-dir", str(tmp_path))
    assert p.returncode == 0 and '"episodes": 7' in p.stdout


# ---------------------------------------------------------------- backend-aware defaults (issue 12 item 2)
from go2train import config as config_mod  # noqa: E402
from go2train.config import (  # noqa: E402
    CONFIG_FILENAME,
    GPU_PROFILE,
    GpuProbe,
    detect_gpu,
    profile_of,
)

GPU = GpuProbe(True, "stand-in: 1 device, NVIDIA H100", ("NVIDIA H100",))
NO_GPU = GpuProbe(False, "stand-in: no NVIDIA driver")
CPU_DEFAULTS = {"env.n_envs": 256, "ppo.batch_size": 1536, "ppo.device": "cpu"}


def value(cfg: Config, dotted: str):
    cur = cfg
    for part in dotted.split("."):
        cur = getattr(cur, part)
    return cur


def test_cpu_machine_gets_todays_defaults(tmp_path):
    cfg = load(None, tmp_path, gpu=NO_GPU)
    assert {k: value(cfg, k) for k in CPU_DEFAULTS} == CPU_DEFAULTS
    assert cfg.to_dict() == Config().to_dict()  # the CPU profile is exactly the class defaults
    prof = profile_of(cfg)
    assert (prof.backend, prof.profile, prof.applied) == ("cpu", "cpu", {})


def test_gpu_machine_gets_the_gpu_profile_without_a_config_file(tmp_path):
    cfg = load(None, tmp_path, gpu=GPU)
    assert GPU_PROFILE["env.n_envs"] == 4096 and GPU_PROFILE["ppo.batch_size"] == 24576
    # exp10 (docs/TRAINING_LOG.md): the reward share that walks at 4096 robots; seed 004's term kept
    assert (cfg.reward.tracking_lin_vel, cfg.reward.height.weight, cfg.env.random_episode_start) == (6.0, 1.0, True)
    assert (Config().reward.tracking_lin_vel, Config().reward.height.weight) == (2.0, 2.5)  # CPU: unchanged
    assert {k: value(cfg, k) for k in GPU_PROFILE} == GPU_PROFILE
    assert cfg.ppo.batch_size == cfg.ppo.n_steps * cfg.env.n_envs // 4  # 4 minibatches, as rsl_rl
    assert cfg.to_dict()["env"]["n_envs"] == 4096  # the stored (manifest) config is the resolved one
    prof = profile_of(cfg)
    assert (prof.backend, prof.profile, prof.applied) == ("gpu", "gpu", GPU_PROFILE)
    assert cfg.env.backend == "auto"  # the setting itself stays: eval/video may run elsewhere


def test_explicit_keys_win_over_the_gpu_profile(tmp_path):
    (tmp_path / CONFIG_FILENAME).write_text('[env]\nn_envs = 512\n[ppo]\ndevice = "cpu"\n')
    cfg = load(None, tmp_path, gpu=GPU)
    assert (cfg.env.n_envs, cfg.ppo.device, cfg.ppo.batch_size) == (512, "cpu", 24576)
    prof = profile_of(cfg)
    assert prof.explicit == ["env.n_envs", "ppo.device"]
    assert prof.applied == {k: v for k, v in GPU_PROFILE.items() if k not in prof.explicit}
    # an explicit key equal to the CPU default still wins (set, not "left at the default")
    (tmp_path / CONFIG_FILENAME).write_text("[env]\nn_envs = 256\n")
    assert load(None, tmp_path, gpu=GPU).env.n_envs == 256


def test_explicit_backend_decides_the_profile(tmp_path):
    (tmp_path / CONFIG_FILENAME).write_text('[env]\nbackend = "cpu"\n')
    assert load(None, tmp_path, gpu=GPU).env.n_envs == 256
    (tmp_path / CONFIG_FILENAME).write_text('[env]\nbackend = "gpu"\n')
    cfg = load(None, tmp_path, gpu=NO_GPU)
    assert cfg.env.n_envs == 4096 and "set in" in profile_of(cfg).describe()


def test_fake_gpu_env_var_and_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("GO2TRAIN_FAKE_GPU", "1")
    assert detect_gpu().present and load().env.n_envs == 4096
    monkeypatch.setenv("GO2TRAIN_FAKE_GPU", "NVIDIA H200")
    assert detect_gpu().names == ("NVIDIA H200",)
    monkeypatch.setenv("GO2TRAIN_FAKE_GPU", "0")
    assert not detect_gpu().present and load().env.n_envs == 256
    monkeypatch.delenv("GO2TRAIN_FAKE_GPU")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not detect_gpu().present and "CUDA_VISIBLE_DEVICES" in detect_gpu().reason


def test_detect_gpu_reads_the_driver_files(tmp_path, monkeypatch):
    monkeypatch.delenv("GO2TRAIN_FAKE_GPU", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    ctl, gpus = tmp_path / "nvidiactl", tmp_path / "gpus"
    monkeypatch.setattr(config_mod, "NVIDIA_CTL", str(ctl))
    monkeypatch.setattr(config_mod, "NVIDIA_PROC_GPUS", str(gpus))
    assert not detect_gpu().present and "no NVIDIA driver" in detect_gpu().reason
    ctl.write_text("")
    assert not detect_gpu().present and "no GPU listed" in detect_gpu().reason
    for bus in ("0000:18:00.0", "0000:2a:00.0"):
        (gpus / bus).mkdir(parents=True)
        (gpus / bus / "information").write_text("Model: \t\t NVIDIA H100 80GB HBM3\nIRQ:   \t\t 123\n")
    g = detect_gpu()
    assert g.present and g.names == ("NVIDIA H100 80GB HBM3",) * 2 and g.reason.startswith("2 devices, NVIDIA H100")


def _manifest(run: Path, name: str, profile: str | None, n_envs: int) -> None:
    m = {"format": 1, "kind": "chunk", "chunk": 50, "config": {"env": {"n_envs": n_envs}}, "created": 1.0}
    if profile is not None:
        m["profile"] = profile
    (run / "models").mkdir(exist_ok=True)
    (run / "models" / f"{name}.json").write_text(json.dumps(m))


def test_a_run_keeps_the_profile_it_started_with(tmp_path):
    """A CPU-profile run resumed on a GPU machine keeps n_envs and batch size (the observation
    batch, VecNormalize, the episode accounting); only the machine keys (ppo.device) follow the
    machine. A GPU-profile run resumed without a GPU keeps N = 4096 and trains PPO on the CPU."""
    cpu_run, gpu_run, legacy = tmp_path / "cpu", tmp_path / "gpu", tmp_path / "legacy"
    for d in (cpu_run, gpu_run, legacy):
        d.mkdir()
    _manifest(cpu_run, "chunk_000050", "cpu", 256)
    _manifest(gpu_run, "chunk_000050", "gpu", 4096)
    _manifest(legacy, "chunk_000050", None, 256)  # written before profiles: CPU defaults
    for run in (cpu_run, legacy):
        cfg = load(None, run, gpu=GPU)
        assert (cfg.env.n_envs, cfg.ppo.batch_size, cfg.ppo.device) == (256, 1536, "cuda")
        text = profile_of(cfg).describe()
        assert "started with the CPU profile (models/chunk_000050.json)" in text, text
    cfg = load(None, gpu_run, gpu=NO_GPU)
    assert (cfg.env.n_envs, cfg.ppo.batch_size, cfg.ppo.device) == (4096, 24576, "cpu")
    assert "started with the GPU profile" in profile_of(cfg).describe()
    cfg = load(None, gpu_run, gpu=GPU)
    assert {k: value(cfg, k) for k in GPU_PROFILE} == GPU_PROFILE
    (gpu_run / CONFIG_FILENAME).write_text("[env]\nn_envs = 64\n")  # explicit keys still win
    assert load(None, gpu_run, gpu=NO_GPU).env.n_envs == 64


@pytest.mark.parametrize("fake,needles", [
    ("0", ["backend auto → cpu", "GO2TRAIN_FAKE_GPU=0", "→ CPU defaults"]),
    ("NVIDIA H100 80GB HBM3", ["backend auto → gpu (GO2TRAIN_FAKE_GPU: 1 device, NVIDIA H100 80GB HBM3)",
                               "→ GPU profile: env.n_envs=4096, ppo.batch_size=24576, ppo.device=cuda",
                               "(not set in a config file)"]),
])
def test_config_show_names_the_choice_and_the_reason(tmp_path, fake, needles):
    import os

    env = {**os.environ, "GO2TRAIN_FAKE_GPU": fake}
    p = subprocess.run([sys.executable, "-m", "go2train", "config", "show", "--run-dir", str(tmp_path)],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    line = p.stderr.strip()
    assert line.startswith("profile: ") and len(line.splitlines()) == 1
    for n in needles:
        assert n in line, line
    shown = json.loads(p.stdout)  # stdout stays pure JSON
    assert shown["env"]["n_envs"] == (256 if fake == "0" else 4096)


def test_profile_table_is_valid_and_config_stays_light():
    """Every GPU_PROFILE key is a real key with a valid value; loading imports no torch/pynvml."""
    load(gpu=GPU)  # a typo in the table would raise ConfigError here
    code = ("import sys; from go2train.config import load; load(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'genesis', 'pynvml')))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "GO2TRAIN_FAKE_GPU": "1"})
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stderr


def test_worker_refuses_the_gpu_profile_when_torch_has_no_cuda(tmp_path):
    """The driver says GPU (stand-in) but torch is a CPU build: exit CONFIG_ERROR, one clear line."""
    import os

    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("torch sees CUDA here")
    env = {**os.environ, "GO2TRAIN_FAKE_GPU": "1"}
    p = subprocess.run([sys.executable, "-m", "go2train", "train-chunk", "--run-dir", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "backend auto chose the GPU" in p.stderr and "sees no CUDA" in p.stderr, p.stderr[-2000:]
    assert not list((tmp_path / "models").glob("*.json"))  # nothing trained, nothing saved


def test_reward_table_config_defaults_and_functions_agree():
    """go2train/sim/rewards.py TERMS is the one list of reward terms: [reward] has exactly its terms'
    weights (default = the table's) and params, every term is a documented function of that module
    under its own name, every public function there is a term (or the `moving` helper), and
    docs/ENV.md's table states the table's weights."""
    import inspect
    import re

    from go2train.config import RewardConfig
    from go2train.sim import rewards
    from go2train.sim.rewards import TERMS

    r = Config().reward
    assert r.term_weights() == {n: t.weight for n, t in TERMS.items()}
    assert list(r.term_weights()) == list(TERMS)  # the summation order
    keys = {"scale_by_dt", "tracking_sigma", "tracking_frame"}
    for n, t in TERMS.items():
        keys |= {n} if t.section else {n, *t.params}
        if t.section:
            assert set(getattr(r, n).model_dump()) == {"weight", *t.params}
    assert set(RewardConfig.model_fields) == keys
    public = {n for n, f in inspect.getmembers(rewards, inspect.isfunction)
              if f.__module__ == rewards.__name__ and not n.startswith("_")}
    assert public - {"term", "moving"} == set(TERMS)
    for n, t in TERMS.items():
        assert getattr(rewards, n) is t.fn
        assert len(t.fn.__doc__.strip().splitlines()) == 1, n  # one line: what the term is
    assert [n for n, t in TERMS.items() if t.clock] == ["gait_contact", "feet_swing_height", "swing_clearance"]
    doc = (Path(__file__).parents[1] / "docs" / "ENV.md").read_text()
    rows = dict(re.findall(r"^\| `(\w+)` \|.*\| ([−-]?[\d.]+)[^|]*\|$", doc, re.M))
    assert rows and set(rows) <= set(TERMS)  # a documented term exists (a new one: add its row)
    for n, w in rows.items():
        assert float(w.replace("−", "-")) == TERMS[n].weight, n


# ------------------------------------------------------------------ --set overrides (issue 15)
def test_set_overrides_apply_in_order_typed_like_toml_and_count_as_explicit(tmp_path):
    from go2train.config import load, overrides_of

    (tmp_path / "go2train.toml").write_text("[ppo]\nlearning_rate = 5e-4\n[env]\nn_envs = 8\n")
    sets = ["ppo.learning_rate=1e-3", "env.backend=cpu", "command.vx_range=[0.3, 0.6]",
            "reward.height.weight=2", "ppo.learning_rate=2e-3"]
    cfg = load(None, tmp_path, overrides=sets)
    assert cfg.ppo.learning_rate == 2e-3  # the later item wins
    assert cfg.env.backend == "cpu" and cfg.env.n_envs == 8  # the file's other keys stay
    assert cfg.command.vx_range == [0.3, 0.6] and cfg.reward.height.weight == 2.0
    assert overrides_of(cfg) == tuple(sets)
    assert overrides_of(load(None, tmp_path)) == ()


@pytest.mark.parametrize("item, line", [
    ("ppo.learning_rat=1", "--set ppo.learning_rat=1: [ppo] learning_rat: unknown key"),
    ("ppo.learning_rate=abc", "--set ppo.learning_rate=abc: [ppo] learning_rate: Input should be a valid number"),
    ("nodot=1", "--set nodot=1: expected section.key=value"),
    ("ppo.n_steps", "--set ppo.n_steps: expected section.key=value"),
    ("env.command_vx=1", "--set env.command_vx=1: [env] command_vx was replaced by [command] vx_range"),
    ("ppo.n_epochs.x.y=1", "--set ppo.n_epochs.x.y=1: [ppo] n_epochs: Input should be a valid integer"),
])
def test_a_bad_set_item_is_one_line_naming_it(tmp_path, item, line):
    from go2train.config import ConfigError, load

    with pytest.raises(ConfigError) as exc:
        load(None, tmp_path, overrides=["ppo.n_epochs=3", item])
    assert str(exc.value).startswith(line) and "\n" not in str(exc.value)


def test_the_files_own_error_comes_before_the_set_items(tmp_path):
    from go2train.config import ConfigError, load

    (tmp_path / "go2train.toml").write_text("[ppo]\nbogus = 1\n")
    with pytest.raises(ConfigError, match=r"go2train.toml: \[ppo\] bogus: unknown key"):
        load(None, tmp_path, overrides=["ppo.learning_rate=1e-3"])


def test_command_curriculum_ranges_widen_linearly_from_the_start_ranges():
    """[command] curriculum: level 0 draws forward walking only, level 1 the full ranges, each end
    linear in between; without a curriculum the full ranges at any level."""
    from go2train.config import from_dict

    c = Config().command
    assert c.curriculum and c.start_level() == 0.0
    assert c.ranges_at(0.0) == ([0.3, 0.7], [0.0, 0.0], [0.0, 0.0])
    assert c.ranges_at(0.5) == ([-0.35, 0.85], [-0.25, 0.25], [-0.5, 0.5])
    assert c.ranges_at(1.0) == ([-1.0, 1.0], [-0.5, 0.5], [-1.0, 1.0]) == c.ranges_at(7.0)
    assert c.ranges_at(-1.0) == c.ranges_at(0.0)
    off = from_dict({"command": {"curriculum": False}}).command
    assert off.start_level() == 1.0 and off.ranges_at(0.0) == ([-1.0, 1.0], [-0.5, 0.5], [-1.0, 1.0])
