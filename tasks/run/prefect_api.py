"""The Prefect API a `foldem run` talks to: the configured one, or a temporary server of its own.

Without `PREFECT_API_URL`, Prefect would start a temporary API server as a child process in the
terminal's process group, so Ctrl-C stopped it together with the run, and the interrupted run
then spent minutes retrying a server that was gone, unable to record its own end. The server
started here runs in a session of its own: Ctrl-C reaches foldem only, the flow run is marked
crashed through a live API, and foldem stops the server itself on the way out. On Linux the
server also ends when foldem dies without cleaning up (SIGKILL).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings

from foldem.core.errors import ConfigError
from foldem.core.processes import stop_process

_PR_SET_PDEATHSIG = 1
DEFAULT_STARTUP_TIMEOUT_S = 120.0  # the first start on a new Prefect home takes ~20 s


def configured_api_url() -> str | None:
    """The Prefect API this process is configured for, or None (Prefect would go ephemeral)."""
    value = PREFECT_API_URL.value()
    return str(value) if value else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child before exec: end with the parent (Linux), so no orphan outlives foldem."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the server is stopped by the context manager as usual


def _startup_timeout() -> float:
    raw = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "")
    try:
        return max(float(raw), 1.0) if raw else DEFAULT_STARTUP_TIMEOUT_S
    except ValueError:
        return DEFAULT_STARTUP_TIMEOUT_S


def _wait_healthy(proc: subprocess.Popen[bytes], api_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ConfigError(f"the temporary Prefect server exited with code "
                                  f"{proc.returncode} before it answered; set PREFECT_API_URL "
                                  "to a running server (`prefect server start`)")
            try:
                if client.get(f"{api_url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    raise ConfigError(f"the temporary Prefect server did not answer within {timeout:g} s; raise "
                      "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS or set PREFECT_API_URL "
                      "to a running server")


@dataclass(frozen=True, slots=True)
class PrefectApi:
    url: str
    temporary: bool  # started for this command, stopped when it ends


@contextmanager
def prefect_api() -> Iterator[PrefectApi]:
    """Yield the API to use: the configured one as is, or a temporary server (API and UI, no
    background services), which is stopped when the block ends."""
    configured = configured_api_url()
    if configured:
        yield PrefectApi(configured, temporary=False)
        return
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
               "--port", str(port), "--ui", "--no-services", "--log-level", "ERROR"]
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_die_with_parent)
    try:
        _wait_healthy(proc, api_url, _startup_timeout())
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            try:
                yield PrefectApi(api_url, temporary=True)
            finally:
                _flush_to_api()
    finally:
        stop_process(proc, grace_seconds=10)


def _flush_to_api(timeout: float = 10.0) -> None:
    """Send the logs and events still queued while the server is up. Left queued, Prefect
    sends them at interpreter exit, to a server that is gone by then, retrying for minutes."""
    APILogWorker.drain_all(timeout=timeout)
    EventsWorker.drain_all(timeout=timeout)
