"""Stopping a child process foldem started (the replay endpoint, a local model server, a
temporary Prefect server): one way, so none is left behind."""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(process: subprocess.Popen[Any] | None, *, grace_seconds: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace_seconds`; a no-op for None or a process that ended.
    A second Ctrl-C while waiting kills at once (no grace left) and is raised again."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    except KeyboardInterrupt:
        process.kill()
        process.wait()
        raise
