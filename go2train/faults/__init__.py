"""`go2train chaos`: a seeded fault-injection campaign against a REAL daemon, then checks.

A temp run directory gets a tiny config (8 robots, 40-step episodes, 50-episode chunks, a resume
point every 3 s, [32, 32] net, 64x48 ten-frame milestone videos, 20 s hang timeout) and a real
``go2train daemon start``. Then, one at a time, with seeded kinds, parameters and delays
(``random.Random(seed)``; the plan is printed and stored in ``RUN_DIR/chaos/plan.json``):

==========  ==========================================================================================
segv        SIGSEGV to the worker (``logs/state.json`` ``worker_pid``, checked to be a live
            ``go2train train-chunk`` of this run dir), during start-up or during training
kill        SIGKILL to the worker, likewise
sup_kill    SIGKILL to the supervisor, then a new ``go2train daemon start`` (it must stop the orphan)
save_crash  ``save_crash@*:N`` appended to ``RUN_DIR/failpoints``: the next worker dies with SIGSEGV in
            the middle of its next checkpoint write (data files written, manifest not)
corrupt     the worker is frozen (SIGSTOP) while training, one file of the newest chunk checkpoint is
            truncated or bit-flipped, the worker is SIGKILLed; the next worker must move the
            checkpoint to ``models/damaged/`` (never delete it, never load it) and redo that chunk
hang        ``hang@*:K`` failpoint (training stops, the heartbeat thread goes on) or SIGSTOP without
            SIGCONT: the watchdog must kill it after ``hang_timeout_s``
stopcont    SIGSTOP, a few seconds (below ``hang_timeout_s``), SIGCONT: the worker must carry on
render_fail the render command (``GO2TRAIN_RENDER_CMD`` = this package's ``render-hook``) exits 1 for a
            seeded subset of the milestones and runs the real ``go2train video`` for the others
==========  ==========================================================================================

About one fault in six is a supervisor kill. When the faults are in (or the time left is what the
run needs to finish), ``[chunk] max_episodes`` is set to the chunk after the one in progress and
the run must reach ``DONE``; if it has not by the end of ``--minutes``, ``daemon stop``. Then the
checks (docs/RELIABILITY.md): faults injected and detected, restarts, target reached, chunks
contiguous and each done once, checksums, damaged checkpoints moved aside and never loaded,
timesteps/episodes monotonic (chunk records and monitor.csv), work lost per fault, one worker at a
time, no orphan processes, supervisor RSS. Exit 0 only if every check passes.

Imports neither torch nor genesis (the workers and renderers are separate processes). One owner per
concern:

==============  ======================================================================================
plan            the campaign's config and the seeded plan (pure)
driver          the run under test: its files, its live worker/supervisor, waiting, ``daemon start/stop``
inject          one injector per fault kind
monitor         the sampling thread (heartbeats, supervisor RSS) and process-table scans
worklog         ``logs/worker.log`` per worker pid
checks          the invariants, one function each, and the printed table
campaign        the loop (setup, faults, target, end) and ``main`` (``go2train chaos``)
__main__        the render hook, ``python -m go2train.faults render-hook RUN_DIR CHUNK``
==============  ======================================================================================
"""
