"""Cut a token stream into checkpoints: at step boundaries, at fractions of expected length, and
inside a step that runs `step_tokens` tokens without a separator (a runaway line would otherwise
reach max_tokens unjudged).

Pure and incremental: `push(text, tokens, confidences)` takes each new chunk and returns the
checkpoints it completes; work is proportional to the new text (only the unfinished tail is
re-scanned for the separator). `close()` returns the final checkpoint when the stream ends.
Token confidences (when the endpoint sends logprobs) go to the next checkpoint emitted: each
checkpoint carries those of the tokens since the one before.

Each step knows where it starts in the text streamed (`Step.start`, and `Checkpoint.tail_start`
for the unfinished tail), so a verdict can point at the text that explains it. One running
count, updated on the slow path only, keeps that free.
"""

from __future__ import annotations

from validators.base import MAX_STEP_CHARS, Checkpoint, Step

_NEVER = 1 << 62  # a token count no stream reaches: no fraction checkpoint left


class CheckpointSplitter:
    def __init__(self, *, separator: str = "\n", every_step: bool = True,
                 fractions: list[float] | None = None, expected_tokens: int | None = None,
                 step_tokens: int | None = None) -> None:
        self.separator = separator
        self.every_step = every_step
        self.step_tokens = step_tokens
        self._bound_from = 0  # tokens at the last step boundary or bounded checkpoint
        self.thresholds = sorted(
            int(f * expected_tokens) for f in (fractions or []) if expected_tokens)
        self.expected_tokens = expected_tokens
        # The text after the last separator, as the chunks it came in (joined only when a step
        # ends: `+=` on an attribute copies the whole tail at every token) and its length.
        self._buf: list[str] = []
        self._buf_len = 0
        self._next_fraction = self.thresholds[0] if self.thresholds else _NEVER
        self._next_threshold = self._next_stop()
        self._joining = frozenset(separator[1:])
        self._pending: list[Step] = []  # complete steps not yet handed out
        self._step_index = 0
        self._tokens = 0
        self._checkpoint = 0
        self._text_parts: list[str] = []  # the text before the unfinished tail
        self._done_len = 0  # its length: where the unfinished tail starts in the text
        self._confidences: list[float] = []  # of the tokens since the last checkpoint

    @property
    def text(self) -> str:
        """Everything streamed so far."""
        return "".join(self._text_parts) + "".join(self._buf)

    @property
    def complete_text(self) -> str:
        """The text through the last step separator (complete steps only)."""
        return "".join(self._text_parts)

    @property
    def steps_completed(self) -> int:
        """Steps handed out or pending so far (a separator ended each; close() adds one)."""
        return self._step_index

    @property
    def tokens(self) -> int:
        return self._tokens

    @property
    def checkpoints_emitted(self) -> int:
        return self._checkpoint

    def _fraction(self) -> float | None:
        return self._tokens / self.expected_tokens if self.expected_tokens else None

    def _emit(self, *, tail: str = "", final: bool = False) -> Checkpoint:
        cp = Checkpoint(index=self._checkpoint, steps=tuple(self._pending), tail=tail,
                        tokens_so_far=self._tokens, final=final, fraction=self._fraction(),
                        confidences=tuple(self._confidences), tail_start=self._done_len)
        self._checkpoint += 1
        self._pending = []
        self._confidences.clear()
        return cp

    def push(self, text: str, tokens: int = 1,
             confidences: tuple[float, ...] = ()) -> list[Checkpoint]:
        """Add one chunk (`tokens` tokens of `text`, with their confidences when known); return
        the checkpoints it completes."""
        self._tokens += tokens
        if confidences:
            self._confidences.extend(confidences)
        sep = self.separator
        # Most pushes end no step, overflow nothing and reach no fraction: just keep the text.
        # (A separator ending in this chunk lies in it, or starts in the tail and goes on with
        # the chunk's first character, one of the separator's characters after its first.)
        if (sep not in text and text[:1] not in self._joining
                and self._tokens < self._next_threshold
                and (size := self._buf_len + len(text)) <= MAX_STEP_CHARS):
            self._buf.append(text)
            self._buf_len = size
            return []
        out: list[Checkpoint] = []
        # Only the old tail's last len(sep)-1 chars can join with new text into a separator.
        start = max(0, self._buf_len - len(sep) + 1)
        buf = "".join(self._buf) + text
        base = self._done_len  # where `buf` starts in the text
        pos = 0  # a cursor, not slicing per step: a 1 MB push with many steps stays linear
        while (at := buf.find(sep, max(pos, start))) >= 0:
            self._add_step(buf[pos:at], base + pos, out, checkpoint=self.every_step)
            pos = at + len(sep)
            self._bound_from = self._tokens
        rest = buf[pos:]
        while len(rest) > MAX_STEP_CHARS:
            # A step that never ends (a 1 MB line): hand it on in bounded pieces, each judged.
            self._add_step(rest[:MAX_STEP_CHARS], base + len(buf) - len(rest), out,
                           checkpoint=True)
            rest = rest[MAX_STEP_CHARS:]
        self._text_parts.append(buf[:len(buf) - len(rest)])
        self._done_len = base + len(buf) - len(rest)
        self._buf, self._buf_len = [rest] if rest else [], len(rest)
        while self.thresholds and self._tokens >= self.thresholds[0]:
            self.thresholds.pop(0)
            out.append(self._emit(tail=rest))
            self._bound_from = self._tokens
        if self.step_tokens and self._tokens - self._bound_from >= self.step_tokens:
            if rest.strip():
                out.append(self._emit(tail=rest))  # a long step so far: judge its text now
            self._bound_from = self._tokens
        self._next_fraction = self.thresholds[0] if self.thresholds else _NEVER
        self._next_threshold = self._next_stop()
        return out

    def _next_stop(self) -> int:
        """The token count at which a push must take the slow path: the next fraction, or the
        bound on tokens without a checkpoint inside one step."""
        bound = self._bound_from + self.step_tokens if self.step_tokens else _NEVER
        return min(self._next_fraction, bound)

    def _add_step(self, text: str, start: int, out: list[Checkpoint], *,
                  checkpoint: bool) -> None:
        """A complete step starting at `start` in the text (in pieces of at most
        MAX_STEP_CHARS, nothing dropped)."""
        if not text.strip():
            return
        for i in range(0, len(text), MAX_STEP_CHARS):
            self._pending.append(Step(self._step_index, text[i:i + MAX_STEP_CHARS], start + i))
            self._step_index += 1
            if checkpoint:
                out.append(self._emit())

    def close(self) -> Checkpoint:
        """The stream ended: the unfinished tail is the last step."""
        tail = "".join(self._buf)
        self._text_parts.append(tail)
        if tail.strip():
            self._pending.append(Step(self._step_index, tail[:MAX_STEP_CHARS], self._done_len))
            self._step_index += 1
        self._buf, self._buf_len = [], 0
        self._done_len += len(tail)
        return self._emit(final=True)
