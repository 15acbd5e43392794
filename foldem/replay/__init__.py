"""The replay endpoint: recorded generations served as an OpenAI-compatible stream.

`start_replay_server` (launcher) runs it as a subprocess for tests and benchmarks;
`server.create_app`/`server.serve` build and run it in-process.
"""

from foldem.replay.launcher import ReplayServer, ReplayServerError, start_replay_server

__all__ = ["ReplayServer", "ReplayServerError", "start_replay_server"]
