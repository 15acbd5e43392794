"""The local model server never outlives its owner: stopped on leaving the block (also by
KeyboardInterrupt), and gone on its own when its parent is killed without a chance to stop it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from tasks.endpoints.local_model import LocalModelOptions, start_local_model

pytestmark = pytest.mark.integration

OPTIONS = LocalModelOptions(parallel=1, threads=1, ctx=512)


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_keyboard_interrupt_stops_the_server() -> None:
    pid = None
    with pytest.raises(KeyboardInterrupt):
        with start_local_model(OPTIONS) as server:
            pid = server.pid
            assert pid is not None and psutil.pid_exists(pid)
            raise KeyboardInterrupt
    assert pid is not None and _gone(pid, within=1)  # stop() waited for it


def test_server_exits_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        from tasks.endpoints.local_model import LocalModelOptions, start_local_model
        server = start_local_model(LocalModelOptions(parallel=1, threads=1, ctx=512))
        print(server.pid, flush=True)
        time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert psutil.pid_exists(child)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert _gone(child, within=5)
