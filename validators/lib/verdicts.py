"""The plain "no concern" verdict, built once and shared.

A `Verdict` is immutable, and most checkpoints of most validators end with `ok()`: building a
fresh one per checkpoint per validator was a measurable share of a stream's validation time.
(A module starting with `_` is not imported as a validator module.)
"""

from __future__ import annotations

from validators.base import Validator, Verdict

_MAX_NAMES = 1024  # validator names are few; a bound keeps a pathological caller from growing it
_OK: dict[str, Verdict] = {}


def ok_verdict(validator: Validator) -> Verdict:
    """What `validator.ok()` returns (no keyword arguments), shared per validator name."""
    name = validator.name
    verdict = _OK.get(name)
    if verdict is None:
        verdict = validator.ok()
        if len(_OK) < _MAX_NAMES:
            _OK[name] = verdict
    return verdict
