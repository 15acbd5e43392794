"""foldem.core.data: data:// resolution order, downloads (faked), the GPT-3 trace converter,
JSONL."""

from __future__ import annotations

import json
import urllib.error
from collections.abc import Iterator
from pathlib import Path

import pytest

import foldem.core.data as data
from foldem.core.data import (
    convert_gpt3_solutions,
    resolve_data_path,
    resolve_input_path,
)
from foldem.core.errors import DataNotFoundError, InputFormatError
from foldem.core.jsonl import load_jsonl
from foldem.core.settings import get_settings
from tests.support import tracedata


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Path]]:
    """Isolated settings: a fresh state dir, no FOLDEM_DATA_DIR, an empty 'shared' folder."""
    dirs = {"state": tmp_path / "state", "shared": tmp_path / "shared", "own": tmp_path / "own"}
    monkeypatch.setenv("FOLDEM_STATE_DIR", str(dirs["state"]))
    monkeypatch.delenv("FOLDEM_DATA_DIR", raising=False)
    monkeypatch.delenv("FOLDEM_DOWNLOAD", raising=False)
    monkeypatch.setattr(data, "shared_data_dir", lambda: dirs["shared"])
    get_settings.cache_clear()
    yield dirs
    get_settings.cache_clear()


def _put(folder: Path, rel: str, text: str = "{}\n") -> Path:
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _no_download(uri: str, url: str) -> bytes:
    raise AssertionError(f"unexpected download of {url}")


def test_data_dir_wins(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    own = _put(env["own"], "gsm8k/test.jsonl")
    _put(env["shared"], "gsm8k/test.jsonl")
    monkeypatch.setenv("FOLDEM_DATA_DIR", str(env["own"]))
    get_settings.cache_clear()
    assert resolve_data_path("data://gsm8k/test.jsonl") == own


def test_data_dir_is_authoritative(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    _put(env["shared"], "gsm8k/test.jsonl")
    monkeypatch.setenv("FOLDEM_DATA_DIR", str(env["own"]))
    monkeypatch.setattr(data, "_download", _no_download)
    get_settings.cache_clear()
    with pytest.raises(DataNotFoundError, match="FOLDEM_DATA_DIR"):
        resolve_data_path("data://gsm8k/test.jsonl")


def test_shared_folder_before_cache(env: dict[str, Path]) -> None:
    shared = _put(env["shared"], "traces/x.jsonl")
    _put(env["state"] / "data", "traces/x.jsonl")
    assert resolve_data_path("data://traces/x.jsonl") == shared


def test_cache_when_shared_lacks_the_file(env: dict[str, Path],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _put(env["shared"], "gsm8k/train.jsonl")
    cached = _put(env["state"] / "data", "gsm8k/test.jsonl")
    monkeypatch.setattr(data, "_download", _no_download)
    assert resolve_data_path("data://gsm8k/test.jsonl") == cached


def test_download_disabled_gives_a_helpful_error(env: dict[str, Path],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOLDEM_DOWNLOAD", "false")
    monkeypatch.setattr(data, "_download", _no_download)
    get_settings.cache_clear()
    with pytest.raises(DataNotFoundError) as info:
        resolve_data_path("data://gsm8k/test.jsonl")
    assert "FOLDEM_DATA_DIR" in info.value.message and "FOLDEM_DOWNLOAD" in info.value.message
    assert info.value.exit_code == 3


def test_unknown_file_is_not_downloadable(env: dict[str, Path]) -> None:
    with pytest.raises(DataNotFoundError, match="FOLDEM_DATA_DIR"):
        resolve_data_path("data://traces/nowhere.jsonl")


@pytest.mark.parametrize("uri", ["gsm8k/test.jsonl", "data://", "data://../etc/passwd",
                                 "data:///etc/passwd", "data://gsm8k/../../x"])
def test_bad_uris(env: dict[str, Path], uri: str) -> None:
    with pytest.raises(DataNotFoundError):
        resolve_data_path(uri)


def test_direct_download_is_cached_atomically(env: dict[str, Path],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake(uri: str, url: str) -> bytes:
        calls.append(url)
        return b'{"question": "q", "answer": "a\\n#### 1"}\n'

    monkeypatch.setattr(data, "_download", fake)
    path = resolve_data_path("data://gsm8k/train.jsonl")
    assert path == env["state"] / "data" / "gsm8k" / "train.jsonl"
    assert calls == [data.DIRECT_SOURCES["gsm8k/train.jsonl"]]
    assert calls[0].startswith("https://raw.githubusercontent.com/openai/grade-school-math/")
    assert resolve_data_path("data://gsm8k/train.jsonl") == path  # second time: from the cache
    assert len(calls) == 1
    assert [p.name for p in path.parent.iterdir()] == ["train.jsonl"]  # no temp file left


def test_trace_download_is_converted(env: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "_download", lambda uri, url: _upstream_line(
        "Q one?", "step\nA: 5", ["s1\nA: 5", "s2\nA: 4", "s3\nA: 5", "s4"]).encode() + b"\n")
    path = resolve_data_path("data://traces/gsm8k_gpt3_dev.jsonl")
    records = [obj for _, obj in load_jsonl(path)]
    assert [r["id"] for r in records] == [f"gsm8k-gpt3-0-{k}" for k in data.GPT3_SOLUTION_KEYS]


def test_network_failure_names_the_fix(env: dict[str, Path],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(url: str, timeout: float) -> None:
        raise urllib.error.URLError("no route")

    monkeypatch.setattr(data.urllib.request, "urlopen", refuse)
    with pytest.raises(DataNotFoundError, match="FOLDEM_DATA_DIR"):
        resolve_data_path("data://gsm8k/test.jsonl")
    assert not (env["state"] / "data" / "gsm8k" / "test.jsonl").exists()


def test_resolve_input_path(env: dict[str, Path], tmp_path: Path) -> None:
    plain = _put(tmp_path, "mine.jsonl")
    assert resolve_input_path(str(plain)) == plain
    shared = _put(env["shared"], "traces/y.jsonl")
    assert resolve_input_path("data://traces/y.jsonl") == shared
    with pytest.raises(DataNotFoundError, match="no such file"):
        resolve_input_path(str(tmp_path / "missing.jsonl"))


# --- the converter ---------------------------------------------------------------------------

def _upstream_line(question: str, truth: str, solutions: list[str],
                   correct: tuple[bool, ...] = (True, False, True, False)) -> str:
    obj: dict[str, object] = {"question": question, "ground_truth": truth}
    for key, solution, ok in zip(data.GPT3_SOLUTION_KEYS, solutions, correct, strict=True):
        obj[key] = {"is_correct": ok, "solution": solution}
    return json.dumps(obj)


def test_converter_on_made_up_upstream_records() -> None:
    lines = [
        _upstream_line("Tom’s 3 apples?", "3 - 1 = <<3-1=2>>2\nA: 2",
                       ["He has 3-1=<<3-1=2>>2\nA: 2", "A: 3", "x\ny\nA: 2", "cut off mid"]),
        "",
        _upstream_line("No answer line?", "just text", ["a", "b", "c", "d"]),
    ]
    out = [json.loads(line) for line in convert_gpt3_solutions(lines, source="up.jsonl")]
    assert len(out) == 8
    first = out[0]
    assert list(first) == ["id", "dataset", "generator", "problem", "reference_answer", "steps",
                           "separator", "final_answer_correct", "first_error_step"]
    assert first == {"id": "gsm8k-gpt3-0-6b_finetuning", "dataset": "gsm8k",
                     "generator": "gpt3-6b_finetuning", "problem": "Tom’s 3 apples?",
                     "reference_answer": "2", "steps": ["He has 3-1=<<3-1=2>>2", "A: 2"],
                     "separator": "\n", "final_answer_correct": True, "first_error_step": None}
    assert [o["generator"] for o in out[:4]] == [f"gpt3-{k}" for k in data.GPT3_SOLUTION_KEYS]
    assert out[3]["steps"] == ["cut off mid"] and out[3]["final_answer_correct"] is False
    assert out[4]["id"] == "gsm8k-gpt3-1-6b_finetuning"  # blank line does not count
    assert out[4]["reference_answer"] is None


@pytest.mark.parametrize("line", ["not json", "[1, 2]", '{"question": "q"}',
                                  '{"question": "q", "ground_truth": "A: 1", "6b_finetuning": 3}',
                                  _upstream_line("q", 7, ["a", "b", "c", "d"]),  # type: ignore[arg-type]
                                  _upstream_line("q", "A: 1", ["a", "b", 3, "d"])])  # type: ignore[list-item]
def test_converter_rejects_malformed_upstream(line: str) -> None:
    with pytest.raises(InputFormatError) as info:
        list(convert_gpt3_solutions(["", line], source="up.jsonl"))
    assert info.value.line == 2 and info.value.path == "up.jsonl"


def test_converter_reproduces_the_shared_file() -> None:
    """Rebuild upstream-format records from the shared traces and convert them back: the output
    must equal the shared file byte for byte (ids, generators, steps, answers, JSON layout)."""
    path = tracedata.require_shared() / "traces" / "gsm8k_gpt3_dev.jsonl"
    shared_lines = path.read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in shared_lines]
    upstream = []
    for start in range(0, len(records), 4):
        group = records[start:start + 4]
        upstream.append(_upstream_line(
            group[0]["problem"], f"worked solution\nA: {group[0]['reference_answer']}",
            [r["separator"].join(r["steps"]) for r in group],
            tuple(r["final_answer_correct"] for r in group)))
    assert list(convert_gpt3_solutions(upstream, source="rebuilt")) == shared_lines


# --- load_jsonl ------------------------------------------------------------------------------

def test_load_jsonl_numbers_lines_and_skips_blanks(tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_text('{"a": 1}\n\n  \n{"b": "’"}\n')
    assert list(load_jsonl(path)) == [(1, {"a": 1}), (4, {"b": "’"})]


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        (b'{"a": 1}\n{"a": \n', 2, "invalid JSON"),
        (b'{"a": 1}\n\n{"a": "\xff"}\n', 3, "not UTF-8"),
        (b'[1, 2]\n', 1, "expected a JSON object, got list"),
        (b'{"a": 1}\n"text"\n', 2, "expected a JSON object, got str"),
    ],
)
def test_load_jsonl_bad_lines(tmp_path: Path, content: bytes, line: int, reason: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(InputFormatError) as info:
        list(load_jsonl(path))
    assert (info.value.path, info.value.line) == (str(path), line)
    assert reason in info.value.reason


def test_load_jsonl_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError):
        list(load_jsonl(tmp_path / "nope.jsonl"))
