"""User tools over a run directory: eval, video, export, bench, walkbench, milestone render."""
