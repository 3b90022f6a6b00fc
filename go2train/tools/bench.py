"""`go2train bench`: env-steps/s of raw ``scene.step()``, ``Go2Env.step``, the VecEnv and SB3 PPO
``learn()`` on both rollout paths (``[ppo] rollout = "numpy"`` and ``"device"``), with the µs per
env-step of each stage and the Python-overhead share (see :func:`measure`).

Each N is measured in its own fresh process (Genesis initialises once per process), and within
that process all three figures share one built scene, so their ratios compare like with like.
Start-up is measured from the process's creation to the first completed env step.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from go2train.config import Config


def _timed(fn):
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            wrapper.seconds += time.perf_counter() - t0

    wrapper.seconds = 0.0
    return wrapper


def _warm_model(cfg: Config, venv, mode: str):
    """A fresh model on rollout path ``mode`` over the shared scene, after one warm-up iteration
    (allocations, first update)."""
    from go2train.train.ppo import make_ppo, normalize

    c = cfg.model_copy(deep=True)
    c.ppo.rollout = mode
    model = make_ppo(c.ppo, normalize(c.ppo, venv), seed=0)
    model.learn(total_timesteps=c.ppo.n_steps * venv.num_envs)
    return model


def _ppo_models(cfg: Config, venv, paths: tuple[str, ...]) -> dict:
    """One warmed-up model per rollout path on the shared scene, with collect_rollouts() and
    train() timed apart."""
    models = {}
    for mode in paths:
        model = _warm_model(cfg, venv, mode)
        model.collect_rollouts = _timed(model.collect_rollouts)
        model.train = _timed(model.train)
        models[mode] = model
    return models


def measure(cfg: Config, n_envs: int, seconds: float, paths: tuple[str, ...] = ("numpy", "device")) -> dict:
    """Env-steps/s and µs per env-step of each stage at ``n_envs`` (one process, one scene).

    * raw: PD targets + ``scene.step()`` only (the simulator);
    * env: :meth:`Go2Env.step` on torch actions (simulator + state reads, reward terms,
      termination, auto-reset: everything in torch);
    * vecenv: the SB3 VecEnv adapter (env + numpy conversion + per-robot info list);
    * ppo_<path>: ``learn()`` with ``[ppo] rollout = path``: rollout collection (policy forward,
      env, normalisation, buffer, GAE) and the PPO update timed apart.

    ``python_overhead_share_<path>`` = (collect − sim) / (collect + update) per env-step, where sim
    is the time spent in PD targets + ``scene.step()`` during that path's own rollouts: the share
    of learn()'s time spent outside the simulator while collecting. It splits into
    ``env_extra_<path>_us`` (Go2Env.step beyond the simulator: state reads, rewards, resets) and
    ``rollout_overhead_<path>_us`` (collect − Go2Env.step: policy forward, numpy conversion,
    normalisation, infos, buffer, GAE). ``python -m go2train.tools.bench --profile N`` splits it further.
    """
    import numpy as np
    import psutil
    import torch

    from go2train.sim.env import Go2Env
    from go2train.sim.vecenv import Go2VecEnv

    proc_start = psutil.Process().create_time()
    if cfg.ppo.torch_threads:
        torch.set_num_threads(cfg.ppo.torch_threads)
    t_build = time.time()
    env = Go2Env(cfg, n_envs=n_envs)
    build_s = time.time() - t_build
    venv = Go2VecEnv(env)
    venv.reset()
    rng = np.random.default_rng(0)
    venv.step(rng.uniform(-1, 1, (n_envs, 12)).astype(np.float32))
    startup_s = time.time() - proc_start

    # raw: PD targets + scene.step(), nothing else
    target = env.default_dof_pos.repeat(n_envs, 1)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.robot.control_dofs_position(target + 0.05 * torch.randn_like(target), env.motor_dofs)
        env.scene.step()
        steps += 1
    raw = steps * n_envs / (time.perf_counter() - t0)
    env.reset()

    # env: Go2Env.step on torch actions (no adapter)
    tacts = torch.as_tensor(rng.uniform(-1, 1, (64, n_envs, 12)).astype(np.float32), device=env.device)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        env.step(tacts[steps % 64])
        steps += 1
    envs = steps * n_envs / (time.perf_counter() - t0)
    env.reset()

    # VecEnv: the full adapter (obs, reward terms, termination, auto-reset, infos)
    acts = rng.uniform(-1, 1, (64, n_envs, 12)).astype(np.float32)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        venv.step(acts[steps % 64])
        steps += 1
    vec = steps * n_envs / (time.perf_counter() - t0)

    out = {
        "n_envs": n_envs,
        "backend": env.backend,
        "startup_s": round(startup_s, 2),
        "build_s": round(build_s, 2),
        "raw_steps_per_s": round(raw),
        "env_steps_per_s": round(envs),
        "vecenv_steps_per_s": round(vec),
        "vecenv_over_raw": round(vec / raw, 3),
        "raw_us": round(1e6 / raw, 2),
        "env_us": round(1e6 / envs, 2),
        "vecenv_us": round(1e6 / vec, 2),
        "ppo_iteration_steps": cfg.ppo.n_steps * n_envs,
        "torch_threads": torch.get_num_threads(),
    }
    # PPO learn() on each path, interleaved (path A, path B, A, B, ...) so that a machine whose
    # load changes hurts both alike. Inside learn() the simulator (PD targets + scene.step) and
    # Go2Env.step are timed too, so the overhead of each path is measured on its own steps.
    models = _ppo_models(cfg, venv, paths)
    sim_fns = {"step": env.scene, "control_dofs_position": env.robot}
    for name, obj in sim_fns.items():
        setattr(obj, name, _timed(getattr(obj, name)))
    env.step = _timed(env.step)
    per_iter = cfg.ppo.n_steps * n_envs
    reps = max(1, int(seconds * vec * 0.6 / per_iter))
    acc = {m: {"wall": 0.0, "collect": 0.0, "update": 0.0, "sim": 0.0, "env": 0.0} for m in paths}
    for _ in range(reps):
        for mode in paths:
            model = models[mode]
            c0, u0 = model.collect_rollouts.seconds, model.train.seconds
            s0 = env.scene.step.seconds + env.robot.control_dofs_position.seconds
            e0 = env.step.seconds
            t0 = time.perf_counter()
            model.learn(total_timesteps=per_iter, reset_num_timesteps=False)
            a = acc[mode]
            a["wall"] += time.perf_counter() - t0
            a["collect"] += model.collect_rollouts.seconds - c0
            a["update"] += model.train.seconds - u0
            a["sim"] += env.scene.step.seconds + env.robot.control_dofs_position.seconds - s0
            a["env"] += env.step.seconds - e0
    for name, obj in sim_fns.items():
        delattr(obj, name)
    del env.step
    steps = reps * per_iter
    for mode in paths:
        us = {k: 1e6 * v / steps for k, v in acc[mode].items()}
        out[f"ppo_{mode}_steps_per_s"] = round(1e6 / us["wall"])
        out[f"ppo_{mode}_over_raw"] = round(1e6 / us["wall"] / raw, 3)
        out[f"collect_{mode}_us"] = round(us["collect"], 2)
        out[f"update_{mode}_us"] = round(us["update"], 2)
        out[f"sim_in_collect_{mode}_us"] = round(us["sim"], 2)
        out[f"env_extra_{mode}_us"] = round(us["env"] - us["sim"], 2)  # Go2Env.step beyond the simulator
        out[f"rollout_overhead_{mode}_us"] = round(us["collect"] - us["env"], 2)  # beyond Go2Env.step
        out[f"python_overhead_share_{mode}"] = round((us["collect"] - us["sim"]) / (us["collect"] + us["update"]), 3)
    out["ppo_iterations_per_path"] = reps
    # the figures of the configured path under the historical names
    mode = cfg.ppo.rollout if cfg.ppo.rollout in paths else paths[-1]
    out["ppo_steps_per_s"] = out[f"ppo_{mode}_steps_per_s"]
    out["ppo_over_raw"] = out[f"ppo_{mode}_over_raw"]
    out["rollout"] = mode
    return out


def main(cfg: Config, ns: list[int], seconds: float, json_out: bool) -> int:
    results = []
    for n in ns:
        cmd = [sys.executable, "-c", "import sys,json; from go2train import config; from go2train.tools import bench; "
               "cfg = config.Config.model_validate_json(sys.stdin.read()); "
               f"print('BENCH ' + json.dumps(bench.measure(cfg, {n}, {seconds})))"]
        out = subprocess.run(cmd, input=cfg.model_dump_json(), capture_output=True, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")), None)
        if out.returncode != 0 or line is None:
            print(f"go2train: bench at n_envs={n} failed (exit {out.returncode}): "
                  f"{(out.stderr.strip().splitlines() or ['?'])[-1]}", file=sys.stderr)
            return 1
        results.append(json.loads(line[6:]))
        if not json_out:
            r = results[-1]
            print(f"N={r['n_envs']:>5}  raw {r['raw_steps_per_s']:>8}/s  env {r['env_steps_per_s']:>8}/s  "
                  f"vecenv {r['vecenv_steps_per_s']:>8}/s ({r['vecenv_over_raw']:.2f}x)  start-up {r['startup_s']:.1f}s  "
                  f"[{r['backend']}]", flush=True)
            print(f"        us/env-step: sim {r['raw_us']:.1f}  env.step {r['env_us']:.1f}  vecenv {r['vecenv_us']:.1f}",
                  flush=True)
            for mode in ("numpy", "device"):
                if f"ppo_{mode}_steps_per_s" in r:
                    print(f"        ppo[{mode:>6}] {r[f'ppo_{mode}_steps_per_s']:>8}/s ({r[f'ppo_{mode}_over_raw']:.2f}x)  "
                          f"us/env-step: collect {r[f'collect_{mode}_us']:.1f} = sim {r[f'sim_in_collect_{mode}_us']:.1f}"
                          f" + env {r[f'env_extra_{mode}_us']:.1f} + rollout {r[f'rollout_overhead_{mode}_us']:.1f};"
                          f" update {r[f'update_{mode}_us']:.1f}  python-overhead share "
                          f"{r[f'python_overhead_share_{mode}']:.1%}", flush=True)
    if json_out:
        print(json.dumps(results, indent=2))
    return 0


# ---------------------------------------------------------------- profile (docs/TRAINING_LOG.md, issue 12)
PROFILE_ROWS = [
    # (row, [(file suffix, function name)], how): cumulative seconds of the matching functions
    ("sim: scene.step + PD targets", [("genesis/engine/scene.py", "step"), ("rigid_entity.py", "control_dofs_position")]),
    ("env: state reads (Genesis getters)", [("go2train/sim/env.py", "_read_state")]),
    ("env: reward terms + feet", [("go2train/sim/env.py", "_compute_reward")]),
    ("env: obs, termination, resets", [("go2train/sim/env.py", "_compute_obs"), ("go2train/sim/env.py", "check_termination"),
                                      ("go2train/sim/env.py", "reset_idx"), ("go2train/sim/env.py", "_error_envs")]),
    ("env: Go2Env.step total", [("go2train/sim/env.py", "step")]),
    ("adapter: numpy conversion", [("go2train/sim/vecenv.py", "_np"), ("go2train/sim/vecenv.py", "step_async")]),
    ("adapter: info dicts (finished robots)", [("go2train/sim/vecenv.py", "finished_infos")]),
    ("normalisation: VecNormalize (numpy)", [("vec_normalize.py", "step_wait")]),
    ("normalisation: DeviceNormalizer (torch)", [("go2train/train/rollout.py", "step"), ("go2train/train/rollout.py", "normalize_obs"),
                                                 ("go2train/train/rollout.py", "pull"), ("go2train/train/rollout.py", "push")]),
    ("policy forward (+ terminal values)", [("stable_baselines3/common/policies.py", "forward"),
                                            ("stable_baselines3/common/policies.py", "predict_values")]),
    ("buffer add", [("buffers.py", "add"), ("go2train/train/rollout.py", "add")]),
    ("GAE", [("buffers.py", "compute_returns_and_advantage"), ("go2train/train/rollout.py", "compute_returns_and_advantage")]),
    ("SB3 info buffer + callback", [("base_class.py", "_update_info_buffer"), ("callbacks.py", "on_step")]),
    ("rollout collection total", [("on_policy_algorithm.py", "collect_rollouts"), ("go2train/train/rollout.py", "collect_rollouts_device")]),
    ("PPO update (train)", [("stable_baselines3/ppo/ppo.py", "train")]),
]


def profile(cfg: Config, n_envs: int, modes: tuple[str, ...] = ("numpy", "device"), iterations: int = 1) -> list[dict]:
    """cProfile ``iterations`` learn() iterations on each rollout path of ``modes`` (one scene);
    µs per env-step of each row of :data:`PROFILE_ROWS` (cumulative time of the matching
    functions; nested matches, e.g. VecNormalize.step_wait containing the VecEnv, are reported as
    measured, not subtracted). cProfile inflates Python-heavy rows; compare paths, not absolutes."""
    import cProfile
    import pstats

    import torch

    from go2train.sim.env import Go2Env
    from go2train.sim.vecenv import Go2VecEnv

    if cfg.ppo.torch_threads:
        torch.set_num_threads(cfg.ppo.torch_threads)
    env = Go2Env(cfg, n_envs=n_envs)
    venv = Go2VecEnv(env)
    out = []
    per_iter = cfg.ppo.n_steps * n_envs
    for mode in modes:
        model = _warm_model(cfg, venv, mode)
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.enable()
        model.learn(total_timesteps=iterations * per_iter, reset_num_timesteps=False)
        prof.disable()
        wall = time.perf_counter() - t0
        steps = iterations * per_iter
        stats = pstats.Stats(prof).stats  # {(file, line, func): (cc, nc, tottime, cumtime, callers)}
        rows = {}
        for row, pats in PROFILE_ROWS:
            total = 0.0
            for (fname, _line, func), (_cc, _nc, _tt, ct, _callers) in stats.items():
                for suffix, name in pats:
                    if fname.endswith(suffix) and (func == name or (name.endswith("_") and func.startswith(name))):
                        total += ct
            rows[row] = round(1e6 * total / steps, 2)
        top = sorted(stats.items(), key=lambda kv: -kv[1][2])[:25]
        out.append({"n_envs": n_envs, "mode": mode, "steps": steps, "batched_steps": steps // n_envs,
                    "profiled_us_per_env_step": round(1e6 * wall / steps, 2), "rows_us_per_env_step": rows,
                    "top_tottime_us": [(f"{k[0].split('site-packages/')[-1]}:{k[1]}:{k[2]}", round(1e6 * v[2] / steps, 3))
                                       for k, v in top]})
    return out


if __name__ == "__main__":  # python -m go2train.tools.bench --profile N [ITERATIONS]
    if len(sys.argv) >= 3 and sys.argv[1] == "--profile":
        from go2train.config import load

        res = profile(load(None, None), int(sys.argv[2]), iterations=int(sys.argv[3]) if len(sys.argv) > 3 else 1)
        print("PROFILE " + json.dumps(res))
