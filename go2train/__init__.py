"""go2train: train a Unitree Go2 to walk in Genesis, in isolated chunks, for days.

This package's top level imports neither torch nor genesis, so the supervisor and the
TUI stay light. Heavy modules (env, worker, video, eval) import them on use.
"""

__version__ = "0.1.0"
