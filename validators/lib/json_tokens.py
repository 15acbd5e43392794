"""The lexical pieces of the JSON prefix parser (validators/lib/json_stream.py): regexes that
consume runs of text at C speed, string escapes read one character at a time, the code-fence
line, and the schema judgement of a finished number. Everything here is pure and bounded.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import cache

from validators.lib.json_schema import SchemaNode

WHITESPACE = re.compile(r"[ \t\n\r]*")
STRING_RUN = re.compile(r'[^"\\\x00-\x1f\ud800-\udfff]+')
DIGITS = re.compile(r"[0-9]+")
# Plain characters and complete valid escapes (a surrogate only as a high-low pair): what a
# string not kept for the schema is made of, consumed in one match.
_STRING_BODY = (r'(?:[^"\\\x00-\x1f\ud800-\udfff]++|\\["\\/bfnrt]'
                r'|\\u(?![dD][89a-fA-F])[0-9a-fA-F]{4}'
                r'|\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})')
STRING_SKIP = re.compile(_STRING_BODY + "++")
LITERALS = {"t": ("true", True), "f": ("false", False), "n": ("null", None)}
KIND_OF_START = {"{": "object", "[": "array", '"': "string", "t": "boolean", "f": "boolean",
                 "n": "null", "-": "number", **{d: "number" for d in "0123456789"}}
MAX_NUMBER_CHARS = 1_000  # a longer number is still parsed, but not checked against the schema

# Runs of scalar members (`, 1, 2, "x"` or `, "k": 1`) in containers whose members need no schema
# check beyond their type: one regex match instead of a Python step per token. Each member is
# atomic and a run ends only where a delimiter is already visible, so a member cut by the end of
# a chunk is left to the character-level machine.
_WSP = r"[ \t\n\r]*"
_SCALARS = {
    "number": r"-?(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?(?:[eE][+-]?[0-9]++)?",
    "integer": r"-?(?:0|[1-9][0-9]*+)(?![.eE])",  # plainly integral; 1.0 is left to the machine
    "string": f'"{_STRING_BODY}*+"', "boolean": "true|false", "null": "null"}


@cache
def _member_run(kinds: frozenset[str], key: bool) -> re.Pattern[str] | None:
    scalars = sorted(kinds & set(_SCALARS) - ({"integer"} if "number" in kinds else set()))
    if not scalars:
        return None
    member = (f"(?>{_WSP},{_WSP}" + (f'"{_STRING_BODY}*+"{_WSP}:{_WSP}' if key else "")
              + f"(?:{'|'.join(_SCALARS[k] for k in scalars)}))")
    closer = "}" if key else r"\]"
    return re.compile(f"{member}+(?={_WSP}[,{closer}])")


def member_run(kind: str, node: SchemaNode | None) -> re.Pattern[str] | None:
    """The member-run pattern for a new container, if its scalar members need no check beyond
    their type (objects: only without a schema, as keys are checked one by one)."""
    if kind == "object":
        return _member_run(frozenset(_SCALARS), key=True) if node is None else None
    items = node.items if node is not None else None
    if items is not None and items.enum is not None:
        return None
    types = items.types if items is not None and items.types is not None else _SCALARS
    return _member_run(frozenset(types), key=False)


class LexError(ValueError):
    """A character that no JSON text can have here (the message says why)."""


_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_HEX = frozenset("0123456789abcdefABCDEF")
_NO_LOW = "a high surrogate escape without its low half"


class EscapeReader:
    """String escapes after a backslash, one character at a time: `\\n`, `\\u00e9`, and a
    surrogate pair `\\ud83d\\ude00` as one character. A lone surrogate is a fault at the first
    character that shows it (Postgres jsonb and UTF-8 refuse them)."""

    __slots__ = ("pending", "high")

    def __init__(self) -> None:
        self.pending = ""  # the escape read so far, from its backslash
        self.high: int | None = None  # a high surrogate waiting for its low half

    @property
    def busy(self) -> bool:
        return bool(self.pending) or self.high is not None

    def push(self, ch: str) -> str:
        """Read one character; the decoded text once an escape is complete, else ''."""
        esc = self.pending
        if not esc:  # only a backslash may follow a high surrogate
            if ch != "\\":
                raise LexError(_NO_LOW)
            self.pending = "\\"
            return ""
        if esc == "\\":
            if ch == "u":
                self.pending = "\\u"
                return ""
            if ch not in _ESCAPES:
                raise LexError(f"invalid escape \\{ch}")
            if self.high is not None:
                raise LexError(_NO_LOW)
            self.pending = ""
            return _ESCAPES[ch]
        if ch not in _HEX:
            raise LexError(f"expected a hex digit in {esc}, got {ch!r}")
        digits = (esc + ch)[2:].lower()
        if self.high is not None and (digits[0] != "d" or digits[1:2] not in ("", "c", "d",
                                                                               "e", "f")):
            raise LexError(_NO_LOW)
        if self.high is None and digits[:1] == "d" and digits[1:2] in ("c", "d", "e", "f"):
            raise LexError("a low surrogate escape without its high half")
        if len(digits) < 4:
            self.pending = esc + ch
            return ""
        code, self.pending = int(digits, 16), ""
        if 0xD800 <= code <= 0xDBFF:
            self.high = code
            return ""
        if self.high is not None:
            code = 0x10000 + ((self.high - 0xD800) << 10) + (code - 0xDC00)
            self.high = None
        return chr(code)


# Number states; the terminal ones may end the number.
_SIGN, _ZERO, _INT, _DOT, _FRAC, _EXP, _EXP_SIGN, _EXP_DIGITS = range(8)
_TERMINAL = frozenset({_ZERO, _INT, _FRAC, _EXP_DIGITS})
_AFTER_DIGITS = {_SIGN: _INT, _DOT: _FRAC, _EXP: _EXP_DIGITS, _EXP_SIGN: _EXP_DIGITS}


class NumberReader:
    """`-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`, read as it streams; digit runs go by
    regex. The text is kept (up to MAX_NUMBER_CHARS) only when a schema must judge it."""

    __slots__ = ("state", "text")

    def __init__(self) -> None:
        self.state = _SIGN
        self.text: str | None = None

    def start(self, ch: str, keep: bool) -> None:
        self.state = _SIGN if ch == "-" else _ZERO if ch == "0" else _INT
        self.text = ch if keep else None

    @property
    def can_end(self) -> bool:
        return self.state in _TERMINAL

    def push(self, text: str, i: int) -> int:
        """Consume from `text[i]`: the index after what belongs to the number, or `i` when the
        number has ended before `text[i]`."""
        state, ch = self.state, text[i]
        end = i + 1
        if "0" <= ch <= "9":
            if state == _ZERO:
                raise LexError("a number with a leading zero")
            if state == _SIGN and ch == "0":
                self.state = _ZERO
            else:
                end = DIGITS.match(text, i).end()  # type: ignore[union-attr]  # ch is a digit
                self.state = _AFTER_DIGITS.get(state, state)
        elif ch == "." and state in (_ZERO, _INT):
            self.state = _DOT
        elif ch in "eE" and state in (_ZERO, _INT, _FRAC):
            self.state = _EXP
        elif ch in "+-" and state == _EXP:
            self.state = _EXP_SIGN
        elif state in _TERMINAL:
            return i
        else:
            raise LexError(f"expected a digit in a number, got {ch!r}")
        if self.text is not None and len(self.text) <= MAX_NUMBER_CHARS:
            self.text += text[i:end]
        return end


def fence_accepts(fence: str, ch: str, closing: bool) -> bool:
    """Whether `ch` may follow `fence` (the fence line so far). Opening: three backticks, `json`
    in any case or nothing, blanks, a line break. Closing: three backticks."""
    if len(fence) < 3:
        return ch == "`"
    if closing:
        return False
    rest = fence[3:]
    letters = rest.rstrip(" \t\r")
    tag_ok = letters.lower() in ("", "json")
    if ch.isascii() and ch.isalpha():
        return rest == letters and "json".startswith((letters + ch).lower())
    if rest.endswith("\r"):
        return ch == "\n" and tag_ok
    return tag_ok and ch in " \t\r\n"


def number_fault(text: str, node: SchemaNode) -> str | None:
    """Why a finished number does not match `node` (integer type, enum), or None. A number too
    long or with an exponent beyond what Decimal handles is not judged."""
    if len(text) > MAX_NUMBER_CHARS:
        return None
    try:
        value = Decimal(text)
        integral = value == value.to_integral_value()
    except (InvalidOperation, ValueError, OverflowError):
        return None
    if node.types is not None and "number" not in node.types and not integral:
        return f"expected an integer, got {text}"
    if node.enum is not None and not any(
            isinstance(e, int | float) and not isinstance(e, bool) and Decimal(str(e)) == value
            for e in node.enum):
        return f"{text} is not one of {list(node.enum)}"
    return None


def common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    for k in range(n):
        if a[k] != b[k]:
            return k
    return n
