"""The plan of a sweep: its grid, its trials, their names and config files, and the sweep directory.

A sweep is the cartesian product of the ``--set section.key=v1,v2`` value lists times ``--seeds N``
seeds. Trial ``s`` of a combination sets ``[ppo] seed`` and ``[env] seed`` to the base config's
seeds + ``s``. Each trial is an ordinary run directory ``DIR/trials/NAME`` whose ``go2train.toml`` is
the base config file (``--config``, else ./go2train.toml, else defaults) plus that trial's values,
validated with :mod:`go2train.config` exactly like a TOML file (:class:`PlanError`: one line naming
the ``--set`` and the key). Nothing is written until the whole plan validates.

Layout (docs/SWEEP.md)::

    DIR/sweep.json             grid, trials, budget, address, resources (atomic; the driver writes it)
    DIR/sweep.pid              {"pid", "start_time"}, flock held by the running `go2train sweep`
    DIR/trials/NAME/           an ordinary run directory (go2train.toml, models/, videos/, logs/)
    DIR/logs/trials/NAME.json  the trial's sweep bookkeeping (state, elapsed_s, timesteps, reason)
    DIR/logs/sweep.log         Ray's and the trials' driver-side messages

No Ray, no torch here.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from go2train import config as config_mod
from go2train.config import ConfigError
from go2train.run.files import atomic_write_bytes, atomic_write_json, read_json

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

FORMAT = 1
DEFAULT_DIR = Path("logs/sweep")
SEED_KEYS = ("ppo.seed", "env.seed")
_NAME_SAFE = re.compile(r"[^A-Za-z0-9.+-]+")
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class PlanError(ValueError):
    """A bad sweep request; ``str()`` is one line."""


# ---------------------------------------------------------------------- the sweep directory
@dataclass(frozen=True)
class SweepDir:
    """Every path of a sweep directory."""

    root: Path

    @classmethod
    def at(cls, path: str | Path) -> "SweepDir":
        return cls(Path(path).absolute())

    @property
    def sweep_json(self) -> Path:
        return self.root / "sweep.json"

    @property
    def pidfile(self) -> Path:
        return self.root / "sweep.pid"

    @property
    def trials(self) -> Path:
        return self.root / "trials"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def log(self) -> Path:
        return self.logs / "sweep.log"

    def trial(self, name: str) -> Path:
        return self.trials / name

    def book(self, name: str) -> Path:
        """The trial's bookkeeping file (written by its runner)."""
        return self.logs / "trials" / f"{name}.json"

    def read(self) -> dict | None:
        """``sweep.json``, or None when this is not a sweep directory."""
        data = read_json(self.sweep_json)
        return data if isinstance(data, dict) and isinstance(data.get("trials"), list) else None


def is_sweep(path: str | Path) -> bool:
    return SweepDir.at(path).read() is not None


# ---------------------------------------------------------------------- --set
@dataclass(frozen=True)
class SetSpec:
    """One ``--set section.key=v1,v2``: the dotted key, the values as given and as parsed."""

    key: str
    texts: tuple[str, ...]
    values: tuple[Any, ...]


def split_values(text: str) -> list[str]:
    """Split on commas outside brackets and quotes: ``0.1,[0.5, 0.5],"a,b"`` has three values."""
    out, cur, depth, quote = [], [], 0, None
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return out


def parse_value(text: str) -> Any:
    """A TOML value (``3e-4``, ``true``, ``[1, 2]``, ``"cpu"``); anything else is a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_set(spec: str) -> SetSpec:
    """``section.key=v1,v2`` -> :class:`SetSpec`, or :class:`PlanError` (one line)."""
    key, eq, rest = spec.partition("=")
    key = key.strip()
    if not eq or "." not in key or not all(key.split(".")):
        raise PlanError(f"--set {spec!r}: expected section.key=value[,value...], e.g. ppo.learning_rate=3e-4,1e-3")
    if key in SEED_KEYS:
        raise PlanError(f"--set {key}: seeds are set by --seeds (trial s: the base seed + s)")
    texts = split_values(rest)
    if any(t == "" for t in texts):
        raise PlanError(f"--set {spec!r}: an empty value")
    if len(set(texts)) != len(texts):
        raise PlanError(f"--set {spec!r}: a value is listed twice")
    return SetSpec(key, tuple(texts), tuple(parse_value(t) for t in texts))


# ---------------------------------------------------------------------- trials
@dataclass(frozen=True)
class Trial:
    """One trial: its name (a folder name), its --set values, its seed index and its config data."""

    name: str
    values: dict[str, Any]
    texts: dict[str, str]
    seed: int
    config: dict[str, Any] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "values": self.values, "texts": self.texts, "seed": self.seed,
                "run_dir": f"trials/{self.name}"}


def abbreviations(keys: list[str]) -> dict[str, str]:
    """Short, distinct labels for the set keys: ``ppo.learning_rate`` -> ``lr``, ``ppo.gamma`` -> ``gamma``;
    the key's last part (then the dotted key) when two would collide."""
    def short(k: str) -> str:
        last = k.split(".")[-1]
        return "".join(w[0] for w in last.split("_") if w) if "_" in last else last

    for fn in (short, lambda k: k.split(".")[-1], lambda k: k.replace(".", "-")):
        labels = {k: fn(k) for k in keys}
        if len(set(labels.values())) == len(keys):
            return labels
    return labels


def _name_part(text: str) -> str:
    return _NAME_SAFE.sub("-", text).strip("-") or "x"


def trial_name(labels: dict[str, str], texts: dict[str, str], seed: int) -> str:
    """``lr3e-4_seed1``: each set key's label and value as given, then the seed index."""
    parts = [f"{labels[k]}{_name_part(t)}" for k, t in texts.items()]
    return "_".join(parts + [f"seed{seed}"])


def _deep_copy(data: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(data))


def _validate(data: dict[str, Any], source: str) -> None:
    try:
        config_mod.from_dict(data, source)
    except ConfigError as exc:
        raise PlanError(str(exc)) from None


def make_trials(base: dict[str, Any], sets: list[SetSpec], seeds: int) -> list[Trial]:
    """The trials of ``sets`` x ``seeds`` on the base config data, each validated (:class:`PlanError`)."""
    if seeds < 1:
        raise PlanError(f"--seeds must be >= 1, got {seeds}")
    keys = [s.key for s in sets]
    if len(set(keys)) != len(keys):
        raise PlanError(f"--set {next(k for k in keys if keys.count(k) > 1)} is given twice")
    for s in sets:  # each value alone first: the error names the --set that carries it
        for text, value in zip(s.texts, s.values):
            data = _deep_copy(base)
            config_mod.put_key(data, s.key, value)
            _validate(data, f"--set {s.key}={text}")
    labels = abbreviations(keys)
    base_seeds = {k: int(config_mod.get_key(base, k)[1] or 0) for k in SEED_KEYS}
    trials, names = [], set()
    for combo in itertools.product(*[list(zip(s.texts, s.values)) for s in sets]):
        texts = {k: t for k, (t, _) in zip(keys, combo)}
        values = {k: v for k, (_, v) in zip(keys, combo)}
        for seed in range(seeds):
            name = trial_name(labels, texts, seed)
            if name in names:  # two values that read the same as folder names
                name = f"{name}_{len(trials)}"
            names.add(name)
            data = _deep_copy(base)
            for k, v in values.items():
                config_mod.put_key(data, k, v)
            for k in SEED_KEYS:
                config_mod.put_key(data, k, base_seeds[k] + seed)
            _validate(data, f"trial {name}")
            trials.append(Trial(name, values, texts, seed, data))
    return trials


def grid_of(sets: list[SetSpec], seeds: int) -> dict[str, Any]:
    """What identifies a sweep: the set keys with their values as given, and the number of seeds."""
    return {"set": {s.key: list(s.texts) for s in sets}, "seeds": seeds}


# ---------------------------------------------------------------------- TOML out
def _toml_key(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise PlanError(f"cannot write {v!r} to TOML")


def dump_toml(data: dict[str, Any]) -> str:
    """A config dict (tables of scalars and lists, nested tables) as TOML text."""
    lines: list[str] = []

    def table(path: list[str], d: dict[str, Any]) -> None:
        scalars = [(k, v) for k, v in d.items() if not isinstance(v, dict)]
        subs = [(k, v) for k, v in d.items() if isinstance(v, dict)]
        if path and (scalars or not subs):
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_toml_key(p) for p in path) + "]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars)
        for k, v in subs:
            table(path + [k], v)

    table([], data)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- base config and writing
def read_base(config: Path | None, cwd: Path | None = None) -> tuple[dict[str, Any], str]:
    """The base config data and its name: ``--config``, else ./go2train.toml, else defaults. It must
    load like any config file (:class:`PlanError` otherwise)."""
    path = Path(config) if config is not None else Path(cwd or Path.cwd()) / config_mod.CONFIG_FILENAME
    if config is None and not path.exists():
        return {}, "defaults"
    try:
        data, source = config_mod.read_toml(path, None)
        config_mod.resolve(data, source)
    except ConfigError as exc:
        raise PlanError(str(exc)) from None
    return data, source


def check_against(sd: SweepDir, grid: dict[str, Any]) -> dict | None:
    """The existing ``sweep.json`` (None for a new sweep); :class:`PlanError` when DIR holds a
    different grid, or something that is not a sweep."""
    old = sd.read()
    if old is None:
        if sd.sweep_json.exists():
            raise PlanError(f"{sd.sweep_json} is not a sweep file; choose another --dir")
        if sd.trials.is_dir() and any(sd.trials.iterdir()):
            raise PlanError(f"{sd.trials} exists without {sd.sweep_json.name}; choose another --dir")
        return None
    if old.get("grid") != grid:
        raise PlanError(f"{sd.root} holds another sweep (grid {json.dumps(old.get('grid'), sort_keys=True)});"
                        " use the same --set/--seeds to resume it, or another --dir")
    return old


def write(sd: SweepDir, trials: list[Trial], grid: dict[str, Any], meta: dict[str, Any],
          old: dict | None) -> dict[str, Any]:
    """Create the sweep directory: each new trial's run directory and go2train.toml (an existing
    trial keeps the config it started with), then ``sweep.json``. Returns what was written."""
    sd.trials.mkdir(parents=True, exist_ok=True)
    (sd.logs / "trials").mkdir(parents=True, exist_ok=True)
    for t in trials:
        d = sd.trial(t.name)
        d.mkdir(exist_ok=True)
        cfg = d / config_mod.CONFIG_FILENAME
        if not cfg.exists():
            atomic_write_bytes(cfg, dump_toml(t.config).encode())
    now = time.time()
    doc = {"format": FORMAT, "grid": grid, "trials": [t.to_json() for t in trials], **meta,
           "created": (old or {}).get("created", now), "updated": now}
    atomic_write_json(sd.sweep_json, doc)
    return doc
