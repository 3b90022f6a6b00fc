"""The `go2train` command line (typer).

Each command is a thin shell over a module that owns it; heavy imports (torch, genesis)
happen inside the command so `go2train status` and `go2train daemon` start fast.
Bad input: one line on stderr naming the file/key/value at fault, exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from go2train import exitcodes
from go2train.config import ConfigError, load

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
config_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Show the configuration.")
daemon_app = typer.Typer(add_completion=False, no_args_is_help=True, help="The supervisor daemon.")
app.add_typer(config_app, name="config")
app.add_typer(daemon_app, name="daemon")

RunDirOpt = typer.Option(Path("."), "--run-dir", help="Run directory (holds models/ videos/ logs/).")
ConfigOpt = typer.Option(None, "--config", help="Config TOML (default: RUN_DIR/go2train.toml).")


def fail(message: str, code: int = exitcodes.CONFIG_ERROR) -> "typer.Exit":
    """Print one line to stderr and exit with ``code``."""
    typer.echo(f"go2train: {message}", err=True)
    raise typer.Exit(code)


def load_config(config: Optional[Path], run_dir: Path):
    try:
        return load(config, run_dir)
    except ConfigError as exc:
        fail(str(exc))


def check_run_dir(run_dir: Path, must_exist: bool = True) -> Path:
    """Resolve and check a run directory: one clear line and exit 2 when unusable."""
    run_dir = run_dir.absolute()
    if must_exist and not run_dir.is_dir():
        fail(f"run directory {run_dir} does not exist")
    return run_dir


@config_app.command("show")
def config_show(run_dir: Path = RunDirOpt, config: Optional[Path] = ConfigOpt) -> None:
    """Print the effective configuration as JSON."""
    cfg = load_config(config, run_dir)
    typer.echo(cfg.to_json())


@app.command("status")
def status(
    run_dir: Path = RunDirOpt,
    once: bool = typer.Option(False, "--once", help="Print the screen once and exit."),
    as_json: bool = typer.Option(False, "--json", help="Print the machine-readable state and exit."),
) -> None:
    """Live dashboard of a run, read from its files (q or Ctrl-C quits)."""
    from go2train import tui

    run_dir = check_run_dir(run_dir)
    if tui.has_run(run_dir):
        cfg = load_config(None, run_dir)
    else:
        cfg = None  # no run: say so, whatever the config file holds
    raise typer.Exit(tui.run_status(run_dir, cfg, once=once, as_json=as_json))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
