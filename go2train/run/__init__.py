"""The run directory: layout (every path, chunk names), atomic files, checkpoints, exit codes.

Leaf modules: no torch, no genesis. The supervisor may import these (docs/CONTRACTS.md).
"""
