"""`go2train bench`: env-steps/s of raw ``scene.step()``, the VecEnv and SB3 PPO ``learn()``.

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


def measure(cfg: Config, n_envs: int, seconds: float) -> dict:
    import numpy as np
    import psutil
    import torch
    from stable_baselines3.common.vec_env import VecNormalize

    from go2train.env import Go2Env
    from go2train.ppo import make_ppo
    from go2train.vecenv import Go2VecEnv

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

    # VecEnv: the full adapter (obs, reward terms, termination, auto-reset, infos)
    acts = rng.uniform(-1, 1, (64, n_envs, 12)).astype(np.float32)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        venv.step(acts[steps % 64])
        steps += 1
    vec = steps * n_envs / (time.perf_counter() - t0)

    # PPO learn(): rollouts + updates with the configured hyperparameters
    vn = VecNormalize(venv, gamma=cfg.ppo.gamma)
    model = make_ppo(cfg.ppo, vn, seed=0)
    per_iter = cfg.ppo.n_steps * n_envs
    model.learn(total_timesteps=per_iter)  # warm-up iteration (allocations, first update)
    iters = max(1, int(seconds * vec * 0.6 / per_iter))
    t0 = time.perf_counter()
    model.learn(total_timesteps=iters * per_iter, reset_num_timesteps=False)
    ppo = iters * per_iter / (time.perf_counter() - t0)
    return {
        "n_envs": n_envs,
        "backend": env.backend,
        "startup_s": round(startup_s, 2),
        "build_s": round(build_s, 2),
        "raw_steps_per_s": round(raw),
        "vecenv_steps_per_s": round(vec),
        "ppo_steps_per_s": round(ppo),
        "vecenv_over_raw": round(vec / raw, 3),
        "ppo_over_raw": round(ppo / raw, 3),
        "ppo_iteration_steps": per_iter,
        "torch_threads": torch.get_num_threads(),
    }


def main(cfg: Config, ns: list[int], seconds: float, json_out: bool) -> int:
    results = []
    for n in ns:
        cmd = [sys.executable, "-c", "import sys,json; from go2train import bench, config; "
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
            print(f"N={r['n_envs']:>5}  raw {r['raw_steps_per_s']:>8}/s  vecenv {r['vecenv_steps_per_s']:>8}/s "
                  f"({r['vecenv_over_raw']:.2f}x)  ppo {r['ppo_steps_per_s']:>8}/s ({r['ppo_over_raw']:.2f}x)  "
                  f"start-up {r['startup_s']:.1f}s  [{r['backend']}]", flush=True)
    if json_out:
        print(json.dumps(results, indent=2))
    return 0
