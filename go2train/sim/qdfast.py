"""A faster, equivalent ``quadrants.lang.kernel_impl._inside_class`` (Genesis's kernel compiler).

Quadrants decides whether each ``@qd.kernel``/``@qd.func`` is defined in a class body by reading
the decorating frame's source line with ``inspect.getframeinfo``, which calls ``inspect.getmodule``:
a scan of all of ``sys.modules`` (~3,300 modules with torch, SB3 and Genesis) per kernel.
``import genesis`` defines ~1,250 of them: 5 s of the worker's ~22 s of start-up CPU went there
(docs/CHUNKS.md). The replacement reads the same line straight from ``linecache`` (with the
frame's globals, so a loader-provided source is found as before) and matches the same patterns;
over all 1,248 calls of a Genesis import both agree. It is installed only when the original looks
as expected (it uses ``getframeinfo``); ``GO2TRAIN_NO_QD_PATCH=1`` leaves Quadrants untouched.
"""

from __future__ import annotations

import linecache
import os
import sys

_installed = False


def install() -> bool:
    """Replace ``_inside_class`` (before ``import genesis`` to matter). True if installed."""
    global _installed
    if _installed:
        return True
    if os.environ.get("GO2TRAIN_NO_QD_PATCH"):
        return False
    try:
        from quadrants.lang import kernel_impl as ki
    except Exception:  # noqa: BLE001 - no quadrants: nothing to speed up
        return False
    orig = getattr(ki, "_inside_class", None)
    patterns = getattr(ki, "_KERNEL_CLASS_STACKFRAME_STMT_RES", None)
    code = getattr(orig, "__code__", None)
    if code is None or patterns is None or "getframeinfo" not in code.co_names:
        return False

    def _inside_class(level_of_class_stackframe: int) -> bool:
        try:
            frame = sys._getframe(level_of_class_stackframe)
            line = linecache.getline(frame.f_code.co_filename, frame.f_lineno, frame.f_globals)
            first = line.strip()
            if not first:
                return False
            return any(p.match(first) for p in patterns)
        except Exception:  # noqa: BLE001 - as the original
            return False

    _inside_class.__wrapped__ = orig  # type: ignore[attr-defined]
    ki._inside_class = _inside_class
    _installed = True
    return True
