"""Recorded generations to replay: matching a prompt to its problem, rotation, chunk caches.

Startup must stay fast over thousands of traces, so tokenization happens lazily per trace (and is
cached), and prompt matching uses a slice index instead of testing every problem per request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

from foldem.core.traces import TokenChunks, Trace, load_traces, tokenize_chunks

#: Request model names meaning "any generator".
ANY_GENERATOR = "*"


def _collapse_whitespace(text: str) -> str:
    return " ".join(text.split())


class SubstringIndex:
    """Finds the longest of a fixed set of keys that occurs inside a text, in O(len(text)).

    Keys of at least KEY_PREFIX characters are bucketed by their first KEY_PREFIX characters; the
    text's slices of that length are looked up in the buckets. Shorter keys are tested directly.
    """

    KEY_PREFIX = 24

    def __init__(self, keys: Iterable[str]) -> None:
        self._buckets: dict[str, list[str]] = {}
        self._short: list[str] = []
        for key in dict.fromkeys(keys):
            if not key:
                continue
            if len(key) >= self.KEY_PREFIX:
                self._buckets.setdefault(key[: self.KEY_PREFIX], []).append(key)
            else:
                self._short.append(key)

    def longest_in(self, text: str) -> str | None:
        best: str | None = None
        width = self.KEY_PREFIX
        for start in range(len(text) - width + 1):
            bucket = self._buckets.get(text[start : start + width])
            if bucket is None:
                continue
            for key in bucket:
                if (best is None or len(key) > len(best)) and text.startswith(key, start):
                    best = key
        for key in self._short:
            if (best is None or len(key) > len(best)) and key in text:
                best = key
        return best


class TraceLibrary:
    """The loaded traces, grouped by problem, with per-problem rotation and chunk caches."""

    def __init__(self, traces: list[Trace]) -> None:
        self.traces = traces
        self.by_problem: dict[str, list[Trace]] = {}
        for trace in traces:  # file order is kept: candidate order must be deterministic
            self.by_problem.setdefault(trace.problem, []).append(trace)
        self.generators = list(dict.fromkeys(t.generator for t in traces))
        self._exact = SubstringIndex(self.by_problem)
        # Fallback for prompt templates that reflow whitespace (strip, join lines).
        self._collapsed_to_problem: dict[str, str] = {}
        for problem in self.by_problem:
            self._collapsed_to_problem.setdefault(_collapse_whitespace(problem), problem)
        self._collapsed = SubstringIndex(self._collapsed_to_problem)
        self._rotation: dict[tuple[str, str], int] = {}
        # Clients resend the same prompts (n samples, retries): cache the match per message.
        self.find_problem: Callable[[str], str | None] = lru_cache(maxsize=8192)(
            self._find_problem
        )
        self._chunk_cache: dict[str, TokenChunks] = {}

    @classmethod
    def from_files(cls, paths: Iterable[Path]) -> TraceLibrary:
        return cls(load_traces(paths))

    def _find_problem(self, message: str) -> str | None:
        """The recorded problem contained in a user message (the longest, if several)."""
        found = self._exact.longest_in(message)
        if found is not None:
            return found
        collapsed = self._collapsed.longest_in(_collapse_whitespace(message))
        return None if collapsed is None else self._collapsed_to_problem[collapsed]

    def candidates(self, problem: str, model: str) -> list[Trace]:
        """Traces of `problem` by generator `model`; all of them for `*`, an unknown model, or a
        generator that has no recording of this problem (a replay never fails for the model)."""
        traces = self.by_problem[problem]
        if model != ANY_GENERATOR:
            matching = [t for t in traces if t.generator == model]
            if matching:
                return matching
        return traces

    def choose(self, problem: str, model: str, seed: int | None) -> Trace:
        """candidates[seed % n] with a seed; otherwise the next one in a per-problem rotation,
        so n unseeded samples of one prompt replay different recordings."""
        options = self.candidates(problem, model)
        if seed is not None:
            return options[seed % len(options)]
        key = (problem, model if model in self.generators else ANY_GENERATOR)
        turn = self._rotation.get(key, 0)
        self._rotation[key] = turn + 1
        return options[turn % len(options)]

    def chunks_of(self, trace: Trace) -> TokenChunks:
        """The trace's wire chunks, tokenized on first use."""
        chunks = self._chunk_cache.get(trace.id)
        if chunks is None:
            chunks = self._chunk_cache[trace.id] = tokenize_chunks(trace.text)
        return chunks
