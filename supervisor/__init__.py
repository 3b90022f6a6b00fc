"""The go2train supervisor: one isolated worker process per chunk, restarts, watchdog, state files.

Light by design: this package imports neither torch nor genesis (only the stdlib, psutil and
go2train.config, go2train.guard and go2train.run.*), so the daemon that babysits a multi-day run
stays small. See docs/SUPERVISOR.md (which module owns what) and docs/CONTRACTS.md.
"""
