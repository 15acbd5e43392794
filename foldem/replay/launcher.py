"""Run the replay endpoint as a subprocess: for tests, benchmarks and the demo.

    with start_replay_server([trace_file], tokens_per_second=200) as srv:
        client = AsyncOpenAI(base_url=srv.base_url, api_key="x")
        ...
        print(srv.stats().total_completion_tokens)

A separate process keeps the server's event loop free of the client's work, as in real use.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import httpx

from foldem.core.errors import FoldemError
from foldem.core.processes import stop_process
from foldem.replay.judge import JudgeNoise
from foldem.replay.protocol import ReplayStats

_STDERR_TAIL_CHARS = 4000


class ReplayServerError(FoldemError):
    """The replay server did not start, died, or did not answer."""

    exit_code = 4


class ReplayServer:
    """A running replay server subprocess; stop it with `stop()` or by leaving a `with` block."""

    def __init__(self, traces: Sequence[Path | str], tokens_per_second: float = 0.0,
                 ignore_disconnect: bool = False, host: str = "127.0.0.1",
                 startup_timeout: float = 60.0, faults: str | None = None,
                 fault_seed: int = 0, judge_noise: JudgeNoise | None = None) -> None:
        if faults:
            from foldem.replay.faults import parse_rules

            parse_rules(faults)  # a bad SPEC fails here, not in the subprocess
        # Strings pass through unchanged so data:// URIs survive (Path would mangle the //).
        self.traces = [str(t) for t in traces]
        self.tokens_per_second = tokens_per_second
        self.ignore_disconnect = ignore_disconnect
        self.host = host
        self.startup_timeout = startup_timeout
        self.faults, self.fault_seed = faults, fault_seed
        self.judge_noise = judge_noise or JudgeNoise()
        self.port: int | None = None
        self._workdir = tempfile.TemporaryDirectory(prefix="foldem-replay-")
        self._stderr_path = Path(self._workdir.name) / "stderr.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._http: httpx.Client | None = None

    @property
    def root_url(self) -> str:
        """http://HOST:PORT (for /health and /stats)."""
        if self.port is None:
            raise ReplayServerError("the replay server is not running")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL: http://HOST:PORT/v1."""
        return f"{self.root_url}/v1"

    def command(self, port_file: Path) -> list[str]:
        cmd = [sys.executable, "-m", "foldem.replay", "serve", "--host", self.host, "--port", "0",
               "--port-file", str(port_file), "--tokens-per-second", str(self.tokens_per_second),
               "--traces", *self.traces]
        if self.faults:
            cmd += ["--faults", self.faults]
        # --fault-seed also seeds the step judge's noise (JudgeNoise.seed is the replay's)
        noise = self.judge_noise
        cmd += ["--fault-seed", str(self.fault_seed),
                "--judge-recall", str(noise.recall), "--judge-false-alarm", str(noise.false_alarm)]
        return [*cmd, "--ignore-disconnect"] if self.ignore_disconnect else cmd

    def start(self) -> None:
        port_file = Path(self._workdir.name) / "port"
        with self._stderr_path.open("wb") as stderr:
            self._process = subprocess.Popen(
                self.command(port_file), stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            self._wait_ready(port_file)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, port_file: Path) -> None:
        deadline = time.monotonic() + self.startup_timeout
        assert self._process is not None
        self._http = httpx.Client(timeout=10.0, trust_env=False)  # loopback: ignore proxies
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ReplayServerError(f"the replay server exited with code "
                                        f"{self._process.returncode}:\n{self.stderr_tail()}")
            if self.port is None and port_file.is_file():
                self.port = int(port_file.read_text().strip())
            if self.port is not None:
                try:
                    if self._http.get(f"{self.root_url}/health", timeout=2.0).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            time.sleep(0.05)
        raise ReplayServerError(f"the replay server did not become healthy within "
                                f"{self.startup_timeout:g} s:\n{self.stderr_tail()}")

    def stderr_tail(self) -> str:
        """The end of the server's output (its errors), for failure messages."""
        try:
            text = self._stderr_path.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            return "(no output)"
        return text[-_STDERR_TAIL_CHARS:] or "(no output)"

    def _client(self) -> httpx.Client:
        if self._http is None or self.port is None:
            raise ReplayServerError("the replay server is not running")
        return self._http

    def stats(self) -> ReplayStats:
        """Tokens sent per request since the last reset."""
        try:
            resp = self._client().get(f"{self.root_url}/stats")
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            raise ReplayServerError(f"GET /stats failed: {exc}") from None
        return ReplayStats.model_validate_json(resp.content)

    def reset_stats(self) -> None:
        try:
            self._client().post(f"{self.root_url}/stats/reset").raise_for_status()
        except httpx.HTTPError as exc:
            raise ReplayServerError(f"POST /stats/reset failed: {exc}") from None

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s); safe to call twice."""
        if self._http is not None:
            self._http.close()
            self._http = None
        process, self._process = self._process, None
        stop_process(process)
        self.port = None
        self._workdir.cleanup()

    def __enter__(self) -> ReplayServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_replay_server(traces: Sequence[Path | str], tokens_per_second: float = 0.0,
                        ignore_disconnect: bool = False, host: str = "127.0.0.1",
                        startup_timeout: float = 60.0, faults: str | None = None,
                        fault_seed: int = 0, judge_noise: JudgeNoise | None = None
                        ) -> ReplayServer:
    """Start a replay server subprocess and wait until it answers /health. `faults` is a fault
    SPEC (foldem/replay/faults.py), e.g. "429:0.1,drop:0.05"; `fault_seed` fixes which
    requests get them."""
    server = ReplayServer(traces, tokens_per_second=tokens_per_second,
                          ignore_disconnect=ignore_disconnect, host=host,
                          startup_timeout=startup_timeout, faults=faults,
                          fault_seed=fault_seed, judge_noise=judge_noise)
    server.start()
    return server
