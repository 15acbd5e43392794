"""The shared trace format: recorded generations, loaded from JSONL and cut into token chunks.

The replay endpoint plays them back; the validator benchmark streams them through the
checkpoints; the data download converts upstream files into this format.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, ValidationError

from foldem.core.errors import InputFormatError
from foldem.core.jsonl import load_jsonl
from foldem.core.tokens import encoding


class Trace(BaseModel):
    """One recorded generation in the shared trace format (see shared/data/README.md)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    dataset: str
    generator: str
    problem: str
    reference_answer: str | None
    steps: list[str]
    separator: str
    final_answer_correct: bool
    first_error_step: int | None

    @property
    def text(self) -> str:
        """The generated text exactly as the model produced it."""
        return self.separator.join(self.steps)


class TokenChunks(NamedTuple):
    """A trace's text cut into wire chunks; `tokens[i]` is how many tokens `texts[i]` carries."""

    texts: tuple[str, ...]
    tokens: tuple[int, ...]

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)


def tokenize_chunks(text: str) -> TokenChunks:
    """One o200k token per chunk, except that tokens which split a UTF-8 character are grouped
    until the bytes decode, so every chunk is valid text and the chunks join to `text` exactly."""
    enc = encoding()
    texts: list[str] = []
    counts: list[int] = []
    pending = b""
    pending_tokens = 0
    for piece in enc.decode_tokens_bytes(enc.encode_ordinary(text)):
        pending += piece
        pending_tokens += 1
        try:
            decoded = pending.decode("utf-8")
        except UnicodeDecodeError:
            continue  # a character continues in the next token
        texts.append(decoded)
        counts.append(pending_tokens)
        pending, pending_tokens = b"", 0
    if pending:  # cannot happen for text that came from a str; kept so no token is ever lost
        texts.append(pending.decode("utf-8", errors="replace"))
        counts.append(pending_tokens)
    return TokenChunks(tuple(texts), tuple(counts))


def load_traces(paths: Iterable[Path]) -> list[Trace]:
    """All traces of the files in file order; a bad line or repeated id is an InputFormatError."""
    traces: list[Trace] = []
    seen: set[str] = set()
    for path in paths:
        for line, obj in load_jsonl(path):
            try:
                trace = Trace.model_validate(obj)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in err['loc']) or 'record'}: {err['msg']}"
                    for err in exc.errors()
                )
                raise InputFormatError(str(path), line,
                                       f"not a trace record ({problems})") from None
            if trace.id in seen:
                raise InputFormatError(str(path), line, f"duplicate trace id {trace.id!r}")
            seen.add(trace.id)
            traces.append(trace)
    return traces
