"""Worker exit codes: the contract between `go2train train-chunk` and the supervisor."""

CHUNK_DONE = 0
FAILURE = 1
CONFIG_ERROR = 2
RUN_COMPLETE = 3
STOPPED = 4

NAMES = {
    CHUNK_DONE: "chunk_done",
    FAILURE: "failure",
    CONFIG_ERROR: "config_error",
    RUN_COMPLETE: "run_complete",
    STOPPED: "stopped",
}
