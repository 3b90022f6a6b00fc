"""`go2train sweep`: seed and config sweeps, each trial an ordinary run directory, scheduled by Ray.

* :mod:`~go2train.sweep.plan` — the grid: ``--set`` value lists x seeds, trial names, each trial's
  go2train.toml (validated like a config file), ``sweep.json`` and the sweep directory's layout.
  No Ray, no torch.
* :mod:`~go2train.sweep.runner` — the Ray side: one actor per trial that runs the ordinary
  supervisor (``python -m go2train daemon run --run-dir TRIAL``), enforces the budget, and stops it
  with a resume point; the driver loop, its stop (signals, ``sweep stop``) and the sweep's lock.
* :mod:`~go2train.sweep.status` — one row per trial, from the trials' files (``sweep status``, and
  ``go2train status`` on a sweep directory). No Ray.
* :mod:`~go2train.sweep.compare` — ``go2train eval --sweep``: each trial's newest checkpoint through
  :mod:`go2train.tools.evaluate`, grouped by the ``--set`` values (mean ± spread across seeds), and
  time-to-walk per trial from its chunk records.

Ray is imported only by :mod:`runner`, inside the command (``pip install 'go2train[sweep]'``).
The layout and the commands are described in docs/SWEEP.md.
"""
