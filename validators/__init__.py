"""Validators: pure, incremental checks over streamed text (see validators/base.py).

Importing this package registers every built-in validator module listed below.
"""

from validators.base import Checkpoint, ProblemContext, Step, Validator, ValidatorSession, Verdict
from validators.registry import available, build, register, resolve

__all__ = [
    "Checkpoint", "ProblemContext", "Step", "Validator", "ValidatorSession", "Verdict",
    "available", "build", "register", "resolve",
]

# Built-in validator modules; each registers itself on import.
from validators import builtin_modules as _builtin  # noqa: E402,F401
