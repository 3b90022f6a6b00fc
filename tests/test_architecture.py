"""The layout's one direction of dependency (docs/CONTRACTS.md, "Layout"), read from the source.

- ``supervisor/`` imports from go2train only its leaves: ``go2train.config``, ``go2train.guard``,
  ``go2train.robot``, ``go2train.run.*`` and ``go2train.sim.rewards`` (the reward table the config
  is built from; torch-free at import) — never torch, genesis, SB3 or gymnasium;
- inside go2train only ``go2train/cli.py`` imports ``supervisor`` (its ``daemon`` commands);
- the leaves import nothing heavy at module level and no other part of go2train, so the
  supervisor stays small.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# go2train.sim.rewards: the reward table config.py builds [reward] from (torch-free at import)
LEAVES = ("go2train.config", "go2train.guard", "go2train.robot", "go2train.run", "go2train.sim.rewards")
HEAVY = ("torch", "genesis", "stable_baselines3", "gymnasium")


def imports(path: Path, package: str, top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path`` (a module of ``package``); ``from a import b``
    gives ``a.b`` (b may be a module); relative imports resolved; ``top_level_only`` skips the
    lazy imports inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return out


def _is_leaf(mod: str) -> bool:
    return any(mod == leaf or mod.startswith(leaf + ".") for leaf in LEAVES)


def supervisor_violations(files: list[Path], root: Path = ROOT) -> list[str]:
    bad = []
    for f in files:
        pkg = ".".join(f.relative_to(root).with_suffix("").parts[:-1])
        for line, mod in imports(f, pkg):
            if (mod.startswith("go2train") and mod != "go2train" and not _is_leaf(mod)) or mod.split(".")[0] in HEAVY:
                bad.append(f"{f.relative_to(root)}:{line} imports {mod}")
    return bad


def _py(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_the_layout_is_the_design_cards():
    for name in ("pyproject.toml", "go2train", "supervisor", "tests"):
        assert (ROOT / name).exists(), name
    for sub in ("run", "sim", "train", "tools", "tui", "faults", "sweep"):
        assert (ROOT / "go2train" / sub / "__init__.py").is_file(), sub


def test_supervisor_imports_only_go2train_leaves_and_nothing_heavy():
    assert supervisor_violations(_py("supervisor")) == []


def test_only_the_cli_reaches_the_supervisor():
    bad = [f"{f.relative_to(ROOT)}:{line} imports {mod}"
           for f in _py("go2train") if f != ROOT / "go2train" / "cli.py"
           for line, mod in imports(f, "go2train") if mod.split(".")[0] == "supervisor"]
    assert bad == []


def test_leaves_import_nothing_heavy_and_no_other_part_of_go2train():
    leaves = [ROOT / "go2train" / f for f in ("config.py", "guard.py", "robot.py", "sim/rewards.py")] + _py("go2train/run")
    bad = [f"{f.relative_to(ROOT)}:{line} imports {mod}" for f in leaves if f.exists()
           for line, mod in imports(f, "go2train", top_level_only=True)
           if mod.split(".")[0] in HEAVY or (mod.startswith("go2train.") and not _is_leaf(mod))]
    assert bad == []


def test_the_scanner_sees_a_crossing(tmp_path):
    """So the tests above can fail: a lazy import of the trainer from a supervisor module is seen."""
    (tmp_path / "supervisor").mkdir()
    f = tmp_path / "supervisor" / "core.py"
    f.write_text("from go2train.run.layout import RunDir\n\ndef f():\n    from go2train.train import worker\n"
                 "    import torch\n")
    assert supervisor_violations([f], tmp_path) == [
        "supervisor/core.py:4 imports go2train.train.worker", "supervisor/core.py:5 imports torch"]
