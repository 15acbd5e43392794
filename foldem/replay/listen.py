"""Run the replay app on a socket with uvicorn (`foldem replay serve`)."""

from __future__ import annotations

import socket
from pathlib import Path

import uvicorn

from foldem.core.errors import ConfigError
from foldem.replay.faults import FaultPlan
from foldem.replay.judge import JudgeNoise
from foldem.replay.server import create_app, expose_connection_state


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(1024)  # connections made from now on wait in the backlog until uvicorn serves
    return sock


def serve(traces: list[Path], host: str = "127.0.0.1", port: int = 8000,
          tokens_per_second: float = 0.0, ignore_disconnect: bool = False,
          port_file: Path | None = None, faults: FaultPlan | None = None,
          judge_noise: JudgeNoise | None = None) -> None:
    """Run the replay endpoint until interrupted; port 0 picks a free port, written to port_file."""
    sock = _bind(host, port)  # first: a taken port fails fast, before traces are loaded
    app = create_app(traces, tokens_per_second, ignore_disconnect, faults, judge_noise)
    if port_file is not None:
        tmp = port_file.with_name(port_file.name + ".tmp")
        tmp.write_text(f"{sock.getsockname()[1]}\n")
        tmp.replace(port_file)  # atomic: a watcher never reads a half-written port
    config = uvicorn.Config(expose_connection_state(app), log_level="warning",
                            access_log=False, lifespan="off", timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])
