"""Where the public data lives: `data://` URIs resolved to local files, downloaded if need be.

Resolution order for `data://<relative path>`:
1. `FOLDEM_DATA_DIR` if set (authoritative: a missing file there is an error, not a download);
2. `../shared/data` beside the project, if it holds the file (the development workplace);
3. a download cache under `<state_dir>/data`, filled from the public source on first use
   (only when `FOLDEM_DOWNLOAD` allows it).
"""

from __future__ import annotations

import json
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from foldem import PROJECT_ROOT
from foldem.core.errors import DataNotFoundError, InputFormatError
from foldem.core.settings import get_settings
from foldem.core.traces import Trace

SCHEME = "data://"
_GSM8K_RAW = "https://raw.githubusercontent.com/openai/grade-school-math/master/grade_school_math/data"
#: Relative data path -> public URL it is fetched from verbatim.
DIRECT_SOURCES: dict[str, str] = {
    "gsm8k/train.jsonl": f"{_GSM8K_RAW}/train.jsonl",
    "gsm8k/test.jsonl": f"{_GSM8K_RAW}/test.jsonl",
}
#: Relative data path -> upstream URL of a file that is converted into the shared trace format.
CONVERTED_SOURCES: dict[str, str] = {
    "traces/gsm8k_gpt3_dev.jsonl": f"{_GSM8K_RAW}/example_model_solutions.jsonl",
}
# Upstream keys of example_model_solutions.jsonl, in the order the shared file lists them.
GPT3_SOLUTION_KEYS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
DOWNLOAD_TIMEOUT_S = 60.0


def shared_data_dir() -> Path:
    """The development workplace's shared data folder (may not exist on a user's machine)."""
    return PROJECT_ROOT.parent / "shared" / "data"


def _relative(uri: str) -> PurePosixPath:
    if not uri.startswith(SCHEME):
        raise DataNotFoundError(uri, f"not a data URI (expected {SCHEME}<folder>/<file>)")
    rel = PurePosixPath(uri[len(SCHEME):])
    if not rel.parts or rel.is_absolute() or ".." in rel.parts:
        raise DataNotFoundError(uri, "a data URI names a file under the data folder, like "
                                     f"{SCHEME}gsm8k/test.jsonl")
    return rel


def resolve_data_path(uri: str) -> Path:
    """The local file for a `data://` URI, downloading it into the cache if allowed."""
    rel = _relative(uri)
    settings = get_settings()
    if settings.data_dir is not None:
        path = settings.data_dir.expanduser() / rel
        if path.is_file():
            return path
        raise DataNotFoundError(uri, f"not found in FOLDEM_DATA_DIR ({path} does not exist)")
    shared = shared_data_dir() / rel
    if shared.is_file():
        return shared
    cached = settings.resolved_state_dir / "data" / rel
    if cached.is_file():
        return cached
    key = rel.as_posix()
    if key not in DIRECT_SOURCES and key not in CONVERTED_SOURCES:
        raise DataNotFoundError(uri, "not found locally and there is no public source to download "
                                     "it from; set FOLDEM_DATA_DIR to a folder that holds it")
    if not settings.download:
        raise DataNotFoundError(uri, "not found locally and downloading is disabled "
                                     "(FOLDEM_DOWNLOAD=false); set FOLDEM_DATA_DIR to a folder "
                                     "that holds it, or allow FOLDEM_DOWNLOAD=true")
    if key in DIRECT_SOURCES:
        _atomic_write(cached, _download(uri, DIRECT_SOURCES[key]))
    else:
        upstream = _download(uri, CONVERTED_SOURCES[key])
        lines = convert_gpt3_solutions(upstream.decode("utf-8").splitlines(), source=key)
        _atomic_write(cached, "".join(line + "\n" for line in lines).encode("utf-8"))
    return cached


def resolve_input_path(arg: str) -> Path:
    """A command-line file argument: a `data://` URI or a path that must exist."""
    if arg.startswith(SCHEME):
        return resolve_data_path(arg)
    path = Path(arg).expanduser()
    if not path.is_file():
        raise DataNotFoundError(arg, "no such file")
    return path


def _download(uri: str, url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            body: bytes = resp.read()
            return body
    except (urllib.error.URLError, OSError) as exc:
        raise DataNotFoundError(uri, f"download from {url} failed ({exc}); set FOLDEM_DATA_DIR "
                                     "to a folder that holds the file") from None


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder + rename, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _final_answer(solution: str) -> str | None:
    """The answer on an upstream worked solution's last line, `A: <answer>`."""
    last = solution.rsplit("\n", 1)[-1]
    return last[len("A:"):].strip() if last.startswith("A:") else None


def convert_gpt3_solutions(lines: list[str], source: str) -> Iterator[str]:
    """grade-school-math `example_model_solutions.jsonl` lines -> shared-format trace lines.

    Each upstream line is one problem with four model solutions; each becomes one trace with
    id `gsm8k-gpt3-<problem index>-<key>`, generator `gpt3-<key>`, steps = solution lines.
    """
    index = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
            reference = _final_answer(obj["ground_truth"])
            traces = [
                Trace(id=f"gsm8k-gpt3-{index}-{key}", dataset="gsm8k", generator=f"gpt3-{key}",
                      problem=obj["question"], reference_answer=reference,
                      steps=obj[key]["solution"].split("\n"), separator="\n",
                      final_answer_correct=obj[key]["is_correct"], first_error_step=None)
                for key in GPT3_SOLUTION_KEYS
            ]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # ValidationError too
            raise InputFormatError(source, number, f"not an example_model_solutions record "
                                                   f"({type(exc).__name__}: {exc})") from None
        for trace in traces:
            yield json.dumps(trace.model_dump(), ensure_ascii=False)
        index += 1
