"""An incremental JSON prefix parser: is the text so far still the start of a valid document?

(Past 300 lines on purpose: one state machine, whose transitions are checked against each
other; its lexical pieces are in validators/lib/json_tokens.py.)

`JsonPrefixParser.feed(chunk)` consumes the next piece of the text and returns a `JsonFault` at
the first character that makes the text impossible to complete as valid JSON (RFC 8259) that
matches an optional schema, or None while it can still be completed. `finish()` says whether
the whole text is a complete document. Feeding a text in any split gives the same answer, and
the work is proportional to the new text: runs of string characters, digits, whitespace and
scalar members are consumed by regular expressions (validators/lib/json_tokens.py), not
character by character. State is a stack of open containers (bounded by `max_depth`) plus small
bounded buffers: a key or enum string is kept
only as long as the longest name it could match, a number only up to 1,000 characters.

Strictness, and why:
- Raw control characters in strings, lone surrogates (escaped or raw), `NaN`, leading zeros,
  trailing commas and anything after the value are faults: Postgres `jsonb` and strict parsers
  refuse them. Duplicate keys are allowed (RFC 8259 permits them).
- Schema faults are reported as soon as they are certain: a value of the wrong type at its first
  character, an unknown key (additionalProperties false) at the first character no allowed name
  continues, a string outside its enum likewise, a missing required key at the closing brace.
  Numbers are judged when they end (`1.5` may still become `1.5e1`, an integer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from validators.lib.json_schema import SchemaNode
from validators.lib.json_tokens import (
    KIND_OF_START,
    LITERALS,
    STRING_RUN,
    STRING_SKIP,
    WHITESPACE,
    EscapeReader,
    LexError,
    NumberReader,
    common_prefix,
    fence_accepts,
    member_run,
    number_fault,
)

Reason = Literal["invalid_json", "schema_violation", "incomplete_json"]


@dataclass(frozen=True, slots=True)
class JsonFault:
    """Why the text cannot become valid: `offset` is the first character that makes it so."""

    reason: Reason
    offset: int
    message: str


@dataclass(slots=True)
class _Frame:
    kind: Literal["object", "array"]
    node: SchemaNode | None
    seen: set[str] | None  # required keys seen (only when the node has required keys)
    child: SchemaNode | None = None  # the node of the member value being read
    fast: re.Pattern[str] | None = None  # see json_tokens.member_run


# Modes of the parser (what the next character may be).
_START, _VALUE, _ARRAY_FIRST, _OBJECT_FIRST, _KEY, _COLON, _AFTER, _END = range(8)
_STRING, _NUMBER, _LITERAL, _FENCE_OPEN, _FENCE_CLOSE, _CLOSED = range(8, 14)


class JsonPrefixParser:
    """Feed text in pieces; see the module docstring."""

    def __init__(self, schema: SchemaNode | None = None, *, max_depth: int = 128,
                 allow_code_fence: bool = False) -> None:
        self.max_depth, self.allow_fence = max_depth, allow_code_fence
        self.offset = 0  # characters consumed so far
        self.fault: JsonFault | None = None
        self.stack: list[_Frame] = []
        self.mode = _START
        self.node: SchemaNode | None = schema  # the node of the value expected next
        self.fenced = False
        self.fence = ""  # the fence line read so far
        # The token being read.
        self.str_key = False
        self.str_buf: str | None = None  # decoded text, kept only when the schema needs it
        self.str_limit = 0
        self.str_names: frozenset[str] | None = None  # what the string must be a prefix of
        self.escape = EscapeReader()
        self.number = NumberReader()
        self.literal = ""

    @property
    def complete(self) -> bool:
        return self.fault is None and self.mode in (_END, _CLOSED)

    def feed(self, text: str) -> JsonFault | None:
        if self.fault is None and text:
            try:
                self._consume(text)
            except _Stop as stop:
                self.fault = stop.fault
            self.offset += len(text) if self.fault is None else 0
        return self.fault

    def finish(self) -> JsonFault | None:
        """The text has ended: a fault unless it is a complete document."""
        if self.fault is not None or self.mode in (_END, _CLOSED):
            return self.fault
        if self.mode == _NUMBER and not self.stack and self.number.can_end:
            try:
                self._end_number(self.offset)
            except _Stop as stop:
                self.fault = stop.fault
            return self.fault
        what = {_START: "no JSON value", _FENCE_OPEN: "only a code fence",
                _STRING: "unterminated string", _FENCE_CLOSE: "unterminated closing fence"}.get(
            self.mode, "the document is not finished")
        if self.stack:
            what += f" ({len(self.stack)} unclosed container(s))"
        self.fault = JsonFault("incomplete_json", self.offset, what)
        return self.fault

    # -- the machine -----------------------------------------------------------------------------

    def _fail(self, reason: Reason, at: int, message: str) -> _Stop:
        return _Stop(JsonFault(reason, self.offset + at, message))

    def _consume(self, text: str) -> None:
        i, n = 0, len(text)
        while i < n:
            mode = self.mode
            if mode == _STRING:
                i = self._string(text, i)
                continue
            if mode == _NUMBER:
                i = self._number(text, i)
                continue
            if mode == _LITERAL:
                i = self._literal(text, i)
                continue
            if mode in (_FENCE_OPEN, _FENCE_CLOSE):
                i = self._fence_char(text, i)
                continue
            i = WHITESPACE.match(text, i).end()  # type: ignore[union-attr]  # always matches
            if i < n:
                i = self._structural(text, i, text[i])

    def _structural(self, text: str, i: int, ch: str) -> int:
        mode = self.mode
        if mode in (_START, _VALUE, _ARRAY_FIRST):
            if mode == _ARRAY_FIRST and ch == "]":
                return self._close(i, "array")
            if mode == _START and ch == "`" and self.allow_fence:
                self.mode, self.fence = _FENCE_OPEN, ""
                return i
            return self._start_value(text, i, ch)
        if mode in (_OBJECT_FIRST, _KEY):
            if ch == '"':
                self._start_string(i, key=True)
                return i + 1
            if ch == "}" and mode == _OBJECT_FIRST:
                return self._close(i, "object")
            raise self._fail("invalid_json", i, f"expected a key in double quotes, got {ch!r}"
                             + (" (trailing comma)" if ch == "}" else ""))
        if mode == _COLON:
            if ch != ":":
                raise self._fail("invalid_json", i, f"expected ':' after the key, got {ch!r}")
            self.mode, self.node = _VALUE, self.stack[-1].child
            return i + 1
        if mode == _AFTER:
            frame = self.stack[-1]
            if ch == "," and frame.fast is not None and (run := frame.fast.match(text, i)):
                return run.end()
            if ch == ",":
                if frame.kind == "object":
                    self.mode = _KEY
                else:
                    self.mode, self.node = _VALUE, frame.node.items if frame.node else None
                return i + 1
            if ch in "}]":
                return self._close(i, "object" if ch == "}" else "array")
            closer = "}" if frame.kind == "object" else "]"
            raise self._fail("invalid_json", i, f"expected ',' or {closer!r}, got {ch!r}")
        if mode == _END and ch == "`" and self.fenced:
            self.mode, self.fence = _FENCE_CLOSE, ""
            return i
        raise self._fail("invalid_json", i, f"unexpected {ch!r} after the JSON value")

    def _start_value(self, text: str, i: int, ch: str) -> int:
        kind = KIND_OF_START.get(ch)
        if kind is None:
            raise self._fail("invalid_json", i, f"expected a JSON value, got {ch!r}")
        node = self.node
        literal = LITERALS[ch][1] if ch in LITERALS else None
        if node is not None and not node.allows(kind, literal):
            expected = "/".join(sorted(node.types)) if node.types else f"one of {node.enum}"
            what = f"{kind} {LITERALS[ch][0]}" if ch in LITERALS else kind
            raise self._fail("schema_violation", i, f"expected {expected}, got {what}")
        if kind in ("object", "array"):
            if len(self.stack) >= self.max_depth:
                raise self._fail("invalid_json", i, f"nested deeper than {self.max_depth}")
            seen: set[str] | None = (set() if kind == "object" and node is not None
                                     and node.required else None)
            self.stack.append(_Frame(kind, node, seen,  # type: ignore[arg-type]
                                     fast=member_run(kind, node)))
            self.mode = _OBJECT_FIRST if kind == "object" else _ARRAY_FIRST
            self.node = node.items if kind == "array" and node is not None else None
        elif kind == "string":
            self._start_string(i, key=False)
        elif kind == "number":
            self.mode = _NUMBER
            self.number.start(ch, keep=node is not None and (node.enum is not None or (
                node.types is not None and "integer" in node.types and "number" not in node.types)))
        else:
            self.mode, self.literal = _LITERAL, LITERALS[ch][0][1:]
        return i + 1

    def _close(self, i: int, kind: str) -> int:
        frame = self.stack[-1]
        if frame.kind != kind:
            raise self._fail("invalid_json", i, f"{'}' if kind == 'object' else ']'!r} closes "
                             f"an open {frame.kind}")
        if frame.seen is not None and frame.node is not None:
            missing = sorted(frame.node.required - frame.seen)
            if missing:
                raise self._fail("schema_violation", i, f"missing required key(s) {missing}")
        self.stack.pop()
        self._value_done()
        return i + 1

    def _value_done(self) -> None:
        self.mode = _AFTER if self.stack else _END

    # -- strings ---------------------------------------------------------------------------------

    def _start_string(self, i: int, *, key: bool) -> None:
        self.mode, self.str_key = _STRING, key  # the escape reader is idle between strings
        node = self.stack[-1].node if key else self.node
        self.str_buf, self.str_names = None, None
        if key and node is not None and node.tracks_keys:
            self.str_buf, self.str_limit = "", node.key_limit
            if node.additional is False:
                self.str_names = frozenset(node.properties)
        elif not key and node is not None and node.enum is not None:
            self.str_buf, self.str_limit, self.str_names = "", node.enum_limit, node.enum_strings

    def _string(self, text: str, i: int) -> int:
        if self.escape.busy:
            try:
                decoded = self.escape.push(text[i])
            except LexError as exc:
                raise self._fail("invalid_json", i, str(exc)) from None
            if decoded and self.str_buf is not None:
                self._append(decoded, i)
            return i + 1
        if self.str_buf is None or len(self.str_buf) >= self.str_limit:
            fast = STRING_SKIP.match(text, i)  # nothing to keep: skip whole runs and escapes
            if fast is not None:
                return fast.end()
        run = STRING_RUN.match(text, i)
        if run is not None:
            if self.str_buf is not None:
                self._append(run.group(), i)
            return run.end()
        ch = text[i]
        if ch == '"':
            self._end_string(i)
        elif ch == "\\":
            self.escape.pending = "\\"
        elif "\ud800" <= ch <= "\udfff":
            raise self._fail("invalid_json", i, "a lone surrogate character in a string")
        else:
            raise self._fail("invalid_json", i, f"unescaped control character {ch!r} in a string")
        return i + 1

    def _append(self, decoded: str, i: int) -> None:
        """Add decoded characters (a plain run written from `text[i]` on, or the one character
        of an escape ending at `text[i]`) and check the string can still become an allowed
        name: longer than every name, or no name continues it, is a fault at that character."""
        kept = self.str_buf or ""
        new = (kept + decoded)[:self.str_limit]
        self.str_buf = new
        names = self.str_names
        if names is None or (len(new) < self.str_limit
                             and any(name.startswith(new) for name in names)):
            return
        good = max((common_prefix(name, new) for name in names), default=0)
        at = i + max(good - len(kept), 0) if len(decoded) > 1 else i
        shown = ", ".join(repr(name) for name in sorted(names)[:8])
        what = "key" if self.str_key else "string"
        raise self._fail("schema_violation", at,
                         f"{what} {new[:good + 1][:40]!r}... cannot become one of {shown}")

    def _end_string(self, i: int) -> None:
        buf, names = self.str_buf, self.str_names
        overlong = buf is not None and len(buf) >= self.str_limit
        if self.str_key:
            frame = self.stack[-1]
            node = frame.node
            self.mode = _COLON
            if node is None or buf is None:
                frame.child = None
                return
            if not overlong and buf in node.properties:
                frame.child = node.properties[buf]
            elif node.additional is False:
                raise self._fail("schema_violation", i, f"unknown key {buf[:40]!r}")
            else:
                frame.child = node.additional if isinstance(node.additional, SchemaNode) else None
            if frame.seen is not None and not overlong and buf in node.required:
                frame.seen.add(buf)
            return
        if names is not None and (overlong or buf not in names):
            raise self._fail("schema_violation", i, f"string not one of {sorted(names)[:8]}")
        self._value_done()

    # -- numbers and literals -----------------------------------------------------------------

    def _number(self, text: str, i: int) -> int:
        try:
            end = self.number.push(text, i)
        except LexError as exc:
            raise self._fail("invalid_json", i, str(exc)) from None
        if end == i:  # the character belongs to what follows the number
            self._end_number(self.offset + i)
        return end

    def _end_number(self, at: int) -> None:
        node, text = self.node, self.number.text
        self._value_done()
        if node is not None and text is not None and (why := number_fault(text, node)):
            raise _Stop(JsonFault("schema_violation", at, why))

    def _literal(self, text: str, i: int) -> int:
        want = self.literal
        got = text[i:i + len(want)]
        for k, ch in enumerate(got):
            if ch != want[k]:
                raise self._fail("invalid_json", i + k, f"expected {want[k]!r} in a literal, "
                                 f"got {ch!r}")
        self.literal = want[len(got):]
        if not self.literal:
            self._value_done()
        return i + len(got)

    def _fence_char(self, text: str, i: int) -> int:
        ch, closing = text[i], self.mode == _FENCE_CLOSE
        if not fence_accepts(self.fence, ch, closing):
            raise self._fail("invalid_json", i, f"unexpected {ch!r} in a code fence")
        self.fence += ch
        if closing and len(self.fence) == 3:
            self.mode = _CLOSED
        elif ch == "\n":
            self.mode, self.fenced = _VALUE, True
        return i + 1


class _Stop(Exception):  # noqa: N818 - internal control flow, never escapes the parser
    def __init__(self, fault: JsonFault) -> None:
        super().__init__(fault.message)
        self.fault = fault
