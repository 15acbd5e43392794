"""JSON Lines input: one object per line, every bad line reported with its number."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from foldem.core.errors import DataNotFoundError, InputFormatError


def load_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for each non-blank line; bad lines raise InputFormatError."""
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise DataNotFoundError(str(path), f"cannot open ({exc.strerror or exc})") from None
    with fh:
        for number, raw in enumerate(fh, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputFormatError(str(path), number, f"not UTF-8 ({exc.reason} at byte "
                                                          f"{exc.start})") from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise InputFormatError(str(path), number, f"invalid JSON: {exc.msg} at column "
                                                          f"{exc.colno}") from None
            if not isinstance(obj, dict):
                raise InputFormatError(str(path), number,
                                       f"expected a JSON object, got {type(obj).__name__}")
            yield number, obj
