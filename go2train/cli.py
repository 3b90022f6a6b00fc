"""The `go2train` command line (typer).

Each command is a thin shell over a module that owns it; heavy imports (torch, genesis)
happen inside the command so `go2train status` and `go2train daemon` start fast.
Bad input: one line on stderr naming the file/key/value at fault, exit code 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from go2train.config import ConfigError, load
from go2train.run import exitcodes

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Train a Unitree Go2 to walk in Genesis, in isolated chunks, under a supervisor daemon.")
config_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Show the configuration.")
daemon_app = typer.Typer(add_completion=False, no_args_is_help=True, help="The supervisor daemon.")
app.add_typer(config_app, name="config")
app.add_typer(daemon_app, name="daemon")

RunDirOpt = typer.Option(Path("."), "--run-dir", help="Run directory (holds models/ videos/ logs/).")
ConfigOpt = typer.Option(None, "--config", help="Config TOML (default: RUN_DIR/go2train.toml).")
SetOpt = typer.Option(None, "--set", metavar="SECTION.KEY=VALUE",
                      help="Override one config key (repeatable; a TOML value; validated like the file).")


def _print_version(value: bool) -> None:
    if value:
        from go2train import __version__

        typer.echo(f"go2train {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Train a Unitree Go2 to walk in Genesis, in isolated chunks, under a supervisor daemon."""


def fail(message: str, code: int = exitcodes.CONFIG_ERROR) -> "typer.Exit":
    """Print one line to stderr and exit with ``code``."""
    typer.echo(f"go2train: {message}", err=True)
    raise typer.Exit(code)


def load_config(config: Optional[Path], run_dir: Path, overrides: Optional[list[str]] = None):
    try:
        return load(config, run_dir, overrides=overrides or ())
    except ConfigError as exc:
        fail(str(exc))


def check_run_dir(run_dir: Path, must_exist: bool = True, writable: bool = False) -> Path:
    """Resolve and check a run directory: one clear line and exit 2 when unusable."""
    run_dir = run_dir.absolute()
    if must_exist and not run_dir.is_dir():
        fail(f"run directory {run_dir} does not exist")
    if writable:  # commands that write: say so now, not with a traceback from the first mkdir
        for d in (run_dir, run_dir / "models", run_dir / "videos", run_dir / "logs", run_dir / "logs" / "chunks"):
            if d.is_dir() and not os.access(d, os.W_OK | os.X_OK):
                fail(f"{'run directory ' if d == run_dir else ''}{d} is not writable")
    return run_dir


# --- daemon (the supervisor package; no torch/genesis on this path) --------------------------
@daemon_app.command("start")
def daemon_start(run_dir: Path = RunDirOpt, config: Optional[Path] = ConfigOpt,
                 overrides: Optional[list[str]] = SetOpt) -> None:
    """Start the supervisor detached (own session, output in logs/daemon.log); print its pid."""
    from supervisor import control

    run_dir = check_run_dir(run_dir, writable=True)
    # Validated here only to give one line (exit 2, nothing written) before forking; the daemon
    # reads it once more when it starts (docs/CONTRACTS.md, "The config file: who reads it when").
    load_config(config, run_dir, overrides)
    raise typer.Exit(control.start(run_dir, config, overrides or []))


@daemon_app.command("run")
def daemon_run(run_dir: Path = RunDirOpt, config: Optional[Path] = ConfigOpt,
               overrides: Optional[list[str]] = SetOpt) -> None:
    """Run the supervisor in the foreground (systemd, containers, tmux)."""
    from supervisor import control

    run_dir = check_run_dir(run_dir, writable=True)
    cfg = load_config(config, run_dir, overrides)  # the supervisor's one read, kept for its whole life
    raise typer.Exit(control.run_foreground(run_dir, config, cfg, overrides or []))


@daemon_app.command("stop")
def daemon_stop(
    run_dir: Path = RunDirOpt,
    timeout: Optional[float] = typer.Option(
        None, "--timeout", min=0, help="Seconds to wait before killing (default: stop_timeout_s + 10)."
    ),
) -> None:
    """Stop the daemon gracefully (worker writes its resume point); kill after the timeout."""
    from supervisor import control

    run_dir = check_run_dir(run_dir)
    if timeout is None:
        try:  # a broken config must not prevent stopping
            timeout = load(None, run_dir).supervisor.stop_timeout_s + 10.0
        except ConfigError:
            timeout = 70.0
    raise typer.Exit(control.stop(run_dir, timeout))


@daemon_app.command("status")
def daemon_status(run_dir: Path = RunDirOpt) -> None:
    """One line: state, pid, chunk, restarts. Exit 0 running, 3 not running, 1 FATAL."""
    from supervisor import control

    raise typer.Exit(control.status(check_run_dir(run_dir)))


@config_app.command("show")
def config_show(run_dir: Path = RunDirOpt, config: Optional[Path] = ConfigOpt,
                overrides: Optional[list[str]] = SetOpt) -> None:
    """Print the effective configuration as JSON (stdout) and its backend profile and why (stderr)."""
    from go2train.config import profile_of

    cfg = load_config(config, check_run_dir(run_dir), overrides)
    prof = profile_of(cfg)
    if prof is not None:
        typer.echo(f"profile: {prof.describe()}", err=True)
    typer.echo(cfg.to_json())


# --- worker and benchmark (import torch/genesis inside) ---------------------------------------
@app.command("train-chunk", hidden=True)  # the supervisor runs it; docs/CONTRACTS.md
def train_chunk(run_dir: Path = RunDirOpt, config: Optional[Path] = ConfigOpt,
                overrides: Optional[list[str]] = SetOpt) -> None:
    """Train one chunk in this process (the supervisor runs this; exit codes: docs/CONTRACTS.md)."""
    from go2train.train import worker

    run_dir = check_run_dir(run_dir, writable=True)
    raise typer.Exit(worker.run(run_dir, config, overrides or []))  # the worker reads the config (once, at its start)


@app.command("bench")
def bench(
    run_dir: Path = RunDirOpt,
    config: Optional[Path] = ConfigOpt,
    n_envs: Optional[str] = typer.Option(None, "--n-envs", help="Comma-separated N values (default: [env] n_envs)."),
    seconds: float = typer.Option(10.0, "--seconds", min=1.0, help="Seconds per measurement."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Measure env-steps/s: raw scene.step, the VecEnv, and SB3 PPO learn(); plus start-up time."""
    from go2train.tools import bench as bench_mod

    cfg = load_config(config, check_run_dir(run_dir))
    try:
        ns = [int(x) for x in n_envs.split(",")] if n_envs else [cfg.env.n_envs]
    except ValueError:
        fail(f"--n-envs must be comma-separated integers, got {n_envs!r}")
    if any(n < 1 for n in ns):
        fail(f"--n-envs values must be >= 1, got {n_envs!r}")
    raise typer.Exit(bench_mod.main(cfg, ns, seconds, json_out))


@app.command("walkbench")
def walkbench(
    minutes: float = typer.Option(45.0, "--minutes", min=0.1, help="Wall-clock minutes of training."),
    config: Optional[Path] = ConfigOpt,
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="A fresh run directory (default: a temp dir)."),
    episodes: int = typer.Option(8, "--episodes", min=1, help="Robots (episodes) per grid command in each chunk's evaluation."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    timesteps: int = typer.Option(0, "--timesteps", min=0,
                                  help="Also stop once a finished chunk reaches this many timesteps (0 = off)."),
) -> None:
    """Time-to-walk: train a fresh run for MINUTES with the real daemon, then evaluate every chunk."""
    from go2train.tools import walkbench as wb

    if config is not None:
        load_config(config, Path("."))
    raise typer.Exit(wb.main(config, minutes, run_dir, episodes, json_out, timesteps))


@app.command("chaos")
def chaos_cmd(
    faults: int = typer.Option(60, "--faults", help="Worker and supervisor faults to inject (about 1 in 6 kills the supervisor)."),
    minutes: float = typer.Option(45.0, "--minutes", help="Time budget; the run must reach DONE within it."),
    seed: int = typer.Option(1, "--seed", help="Seed of the fault plan (kinds, parameters, delays, failing renders)."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="A new or empty directory (default: a temp dir)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of the table."),
) -> None:
    """Reliability campaign: a real daemon on a tiny config, seeded faults, then checks (docs/RELIABILITY.md)."""
    from go2train.faults import campaign as chaos

    try:
        code = chaos.main(faults, minutes, seed, run_dir, json_out)
    except chaos.ChaosError as exc:
        fail(str(exc))
    raise typer.Exit(code)


@app.command("status")
def status(
    run_dir: Path = RunDirOpt,
    once: bool = typer.Option(False, "--once", help="Print the screen once and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print the machine-readable state and exit."),
) -> None:
    """Live dashboard of a run, read from its files (q or Ctrl-C quits)."""
    from go2train import tui
    from go2train.sweep import plan as sweep_plan
    from go2train.sweep import status as sweep_status

    run_dir = check_run_dir(run_dir)
    if sweep_plan.is_sweep(run_dir):  # a sweep directory: its trials' table
        raise typer.Exit(sweep_status.main(run_dir, as_json, once))
    if tui.has_run(run_dir):
        cfg = load_config(None, run_dir)
    else:
        cfg = None  # no run: say so, whatever the config file holds
    raise typer.Exit(tui.run_status(run_dir, cfg, once=once, as_json=as_json))


@app.command("eval")
def eval_cmd(
    chunk: Optional[str] = typer.Option(None, "--chunk", help="Chunk milestone (an integer) or 'latest' (default)."),
    episodes: int = typer.Option(8, "--episodes", min=1, help="Robots per grid command (one full episode each); "
                                 "all grid commands' robots are batched in one scene."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    run_dir: Path = RunDirOpt,
    compare: Optional[str] = typer.Option(None, "--compare", help="Comma-separated chunks side by side, e.g. 50,250,500."),
    push: bool = typer.Option(False, "--push", help="Push test: 0.5 m/s kicks every 4 s, randomisation on (docs/EVAL.md)."),
    sweep: Optional[Path] = typer.Option(None, "--sweep", help="Compare the trials of a sweep directory (docs/SWEEP.md)."),
    command: Optional[list[str]] = typer.Option(
        None, "--command", help="Evaluate this command 'vx,vy,yaw' (m/s, m/s, rad/s) instead of the grid; "
        "repeatable, the first is the reference."),
) -> None:
    """Measure a checkpoint's policy on the fixed command grid (tracking error per command) against a
    stand-still baseline; flag a lazy optimum (docs/EVAL.md)."""
    from go2train.tools import evaluate as ev

    if sweep is not None:
        from go2train.sweep import compare

        raise typer.Exit(compare.main(sweep, episodes, json_out))
    run_dir = check_run_dir(run_dir)
    try:
        wanted = [ev.parse_chunk(c, "--compare") for c in compare.split(",") if c.strip()] if compare is not None else []
        if compare is not None and not wanted:
            fail(f"--compare must list chunks, e.g. 50,250,500; got {compare!r}")
        if chunk is not None or not wanted:
            wanted.append(ev.parse_chunk(chunk if chunk is not None else "latest"))
        manifests = ev.resolve_chunks(run_dir, list(dict.fromkeys(wanted)))  # checked before any simulation
        commands = [ev.parse_command(c) for c in command or []]
    except ev.EvalError as exc:
        fail(str(exc))
    raise typer.Exit(ev.main(run_dir, manifests, episodes, json_out, push, commands))


@app.command("video")
def video_cmd(
    chunk: Optional[str] = typer.Option(None, "--chunk", help="Chunk milestone (an integer) or 'latest'."),
    progression: bool = typer.Option(False, "--progression", help="Stitch several chunks into videos/progression.mp4."),
    chunks: Optional[str] = typer.Option(None, "--chunks", help="With --progression: comma-separated milestones."),
    layout: str = typer.Option("side-by-side", "--layout", help="With --progression: side-by-side or sequence."),
    run_dir: Path = RunDirOpt,
    config: Optional[Path] = ConfigOpt,
    steps: Optional[int] = typer.Option(None, "--steps", help="Steps (= frames) per clip (default: [video] steps)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output MP4 (default: videos/chunk_NNNNNN.mp4)."),
    command: Optional[str] = typer.Option(
        None, "--command", help="With --chunk: the command 'vx,vy,yaw' (m/s, m/s, rad/s; default 0.6,0,0: "
        "the eval grid's forward 0.6).",
    ),
    progress_file: Optional[Path] = typer.Option(
        None, "--progress-file", envvar="GO2TRAIN_RENDER_PROGRESS",
        help="With --chunk: write frames done/total to this JSON file (the supervisor sets it).",
    ),
) -> None:
    """Render a checkpoint's policy to an H.264 MP4 with its manifest (docs/VIDEO.md)."""
    from go2train.tools import video

    run_dir = check_run_dir(run_dir)
    cfg = load_config(config, run_dir)
    try:
        if progress_file is not None and chunk is not None and not progression and chunks is None:
            from go2train.tools import milestone_render

            code = milestone_render.main(run_dir, cfg, chunk, steps, out, progress_file)
        else:
            code = video.main(run_dir, cfg, chunk, progression, chunks, layout, steps, out, command)
    except video.VideoError as exc:
        fail(str(exc), exc.code)
    raise typer.Exit(code)


@app.command("export")
def export_cmd(
    chunk: str = typer.Option("latest", "--chunk", help="Chunk milestone (an integer) or 'latest'."),
    run_dir: Path = RunDirOpt,
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: RUN_DIR/exports/chunk_NNNNNN/)."),
) -> None:
    """Export a checkpoint's policy: policy.onnx, TorchScript policy.pt, policy.json (docs/EXPORT.md)."""
    from go2train.tools import export as ex

    run_dir = check_run_dir(run_dir)
    try:
        code = ex.main(run_dir, chunk, out)
    except ex.ExportError as exc:
        fail(str(exc), exc.code)
    raise typer.Exit(code)


# --- sweep (go2train/sweep/: Ray, imported by these commands only) ---------------------------
sweep_app = typer.Typer(add_completion=False, invoke_without_command=True,
                        help="Seed/config sweeps on Ray: each trial an ordinary run directory (docs/SWEEP.md).")
app.add_typer(sweep_app, name="sweep")
SweepDirOpt = typer.Option(Path("logs/sweep"), "--dir", help="Sweep directory (default: logs/sweep).")


@sweep_app.callback()
def sweep_run(
    ctx: typer.Context,
    sweep_dir: Path = SweepDirOpt,
    seeds: Optional[int] = typer.Option(None, "--seeds", min=1, help="Seeds per combination (trial s: base seed + s)."),
    sets: Optional[list[str]] = typer.Option(None, "--set", help="section.key=v1,v2 (repeatable): the grid."),
    minutes: Optional[float] = typer.Option(None, "--minutes", min=0.01, help="Budget per trial: supervisor wall minutes."),
    timesteps: Optional[int] = typer.Option(None, "--timesteps", min=1, help="Budget per trial: timesteps trained."),
    address: Optional[str] = typer.Option(None, "--address", help="An existing Ray cluster (default: embedded local Ray)."),
    cpus: Optional[float] = typer.Option(None, "--cpus-per-trial", min=0, help="CPUs each trial declares (default 1)."),
    gpus: Optional[float] = typer.Option(None, "--gpus-per-trial", min=0,
                                         help="GPUs each trial declares (default: 1 on the GPU backend, else 0)."),
    config: Optional[Path] = typer.Option(None, "--config", help="Base config TOML (default: ./go2train.toml)."),
) -> None:
    """Run (or resume) a sweep: --set value lists x --seeds, each trial under the ordinary supervisor."""
    if ctx.invoked_subcommand is not None:
        return
    from go2train.sweep import plan, runner

    if seeds is None:
        fail("sweep needs --seeds N (and optionally --set section.key=v1,v2 ...)")
    try:
        code = runner.start(sweep_dir, seeds, sets or [], minutes, timesteps, address, cpus, gpus, config)
    except plan.PlanError as exc:
        fail(str(exc))
    except runner.SweepError as exc:
        fail(str(exc), exc.code)
    raise typer.Exit(code)


@sweep_app.command("stop")
def sweep_stop(
    sweep_dir: Path = SweepDirOpt,
    timeout: float = typer.Option(300.0, "--timeout", min=0, help="Seconds to wait for every trial to stop."),
) -> None:
    """Stop a running sweep: every trial stops with a resume point; run the sweep again to resume."""
    from go2train.sweep import runner

    try:
        code = runner.stop(sweep_dir, timeout)
    except runner.SweepError as exc:
        fail(str(exc), exc.code)
    raise typer.Exit(code)


@sweep_app.command("status")
def sweep_status_cmd(
    sweep_dir: Path = SweepDirOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One row per trial: sweep state, supervisor state, chunk, timesteps, speed, reward, restarts."""
    from go2train.sweep import status as sweep_status

    raise typer.Exit(sweep_status.main(sweep_dir, as_json, once=True))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
