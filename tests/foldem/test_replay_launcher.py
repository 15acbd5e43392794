"""The replay server as a subprocess: start-up, failures with the server's own message, CLI."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from foldem.core.settings import get_settings
from foldem.replay.cli import build_parser, register
from foldem.replay.launcher import ReplayServerError, start_replay_server

TRACE = ('{"id": "t1", "dataset": "made-up", "generator": "g", "problem": "What is 2 + 3 '
         'when you add them together carefully?", "reference_answer": "5", "steps": ["2 + 3 = 5", '
         '"A: 5"], "separator": "\\n", "final_answer_correct": true, "first_error_step": null}\n')


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    path = tmp_path / "one.jsonl"
    path.write_text(TRACE)
    return path


@pytest.mark.integration  # starts `foldem replay serve`
def test_start_serve_stop(trace_file: Path) -> None:
    srv = start_replay_server([trace_file])
    with srv:
        assert srv.base_url == f"http://127.0.0.1:{srv.port}/v1"
        assert httpx.get(f"{srv.root_url}/health", trust_env=False).json()["traces"] == 1
        assert srv.stats().requests == []
        process = srv._process
    assert process is not None and process.poll() is not None  # the process is gone
    srv.stop()  # idempotent
    with pytest.raises(ReplayServerError, match="not running"):
        srv.stats()


@pytest.mark.integration  # starts `foldem replay serve`
def test_data_uri_resolved_in_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "traces").mkdir()
    (tmp_path / "traces" / "mine.jsonl").write_text(TRACE)
    monkeypatch.setenv("FOLDEM_DATA_DIR", str(tmp_path))  # inherited by the subprocess
    get_settings.cache_clear()
    try:
        with start_replay_server(["data://traces/mine.jsonl"]) as srv:
            assert srv.stats().total_completion_tokens == 0
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (TRACE + "{broken\n", "one.jsonl:2: invalid JSON")],
)
@pytest.mark.integration  # starts `foldem replay serve`
def test_server_errors_surface_with_their_message(tmp_path: Path, content: str | None,
                                                  message: str) -> None:
    path = tmp_path / "one.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ReplayServerError, match="exited with code 3") as info:
        start_replay_server([path], startup_timeout=30)
    assert message in info.value.message
    assert "Traceback" not in info.value.message  # a user mistake is a message, not a crash


@pytest.mark.integration  # starts `foldem replay serve`
def test_startup_timeout(trace_file: Path) -> None:
    with pytest.raises(ReplayServerError, match="did not become healthy within 0.01 s"):
        start_replay_server([trace_file], startup_timeout=0.01)


@pytest.mark.integration  # starts `foldem replay serve`
def test_port_in_use_is_a_clear_error(trace_file: Path) -> None:
    with start_replay_server([trace_file]) as first:
        result = subprocess.run(
            [sys.executable, "-m", "foldem.replay", "serve", "--traces", str(trace_file),
             "--port", str(first.port)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "cannot listen on 127.0.0.1" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("rate", ["-1", "nan", "fast"])
def test_bad_rate_is_rejected_by_the_parser(rate: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["serve", "--traces", "x.jsonl", "--tokens-per-second", rate])
    assert info.value.code == 2
    assert "--tokens-per-second" in capsys.readouterr().err


def test_register_adds_replay_serve() -> None:
    parser = argparse.ArgumentParser(prog="foldem")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["replay", "serve", "--traces", "a.jsonl", "data://traces/b.jsonl",
                              "--port", "0", "--tokens-per-second", "50", "--ignore-disconnect",
                              "--port-file", "p.txt"])
    assert args.traces == ["a.jsonl", "data://traces/b.jsonl"]
    assert (args.port, args.tokens_per_second, args.ignore_disconnect) == (0, 50.0, True)
    assert args.port_file == Path("p.txt") and callable(args.func)
