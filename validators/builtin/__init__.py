"""The built-in validators, one module each, all implementing validators.base.Validator.

Pure: they import only validators.base and validators.lib (no I/O, no tasks, no Prefect).
A new built-in validator is a module here and one entry in `BUILTIN_VALIDATORS`; the registry
(validators/registry.py) makes each available by its `name`.
"""

from validators.base import Validator
from validators.builtin.answer_marker import AnswerMarker
from validators.builtin.arithmetic import ArithmeticValidator
from validators.builtin.confidence import Confidence
from validators.builtin.final_answer import FinalAnswer
from validators.builtin.hallucination import Hallucination
from validators.builtin.json_prefix import JsonPrefixValidator
from validators.builtin.length_budget import LengthBudget
from validators.builtin.magnitude import MagnitudeValidator, NegativeValuesValidator
from validators.builtin.reference_answer import ReferenceAnswer
from validators.builtin.repetition import Repetition
from validators.builtin.ungrounded import UngroundedValidator
from validators.builtin.well_posed import WellPosed

BUILTIN_VALIDATORS: tuple[type[Validator], ...] = (
    AnswerMarker, ArithmeticValidator, Confidence, FinalAnswer, Hallucination, JsonPrefixValidator,
    LengthBudget, MagnitudeValidator, NegativeValuesValidator, ReferenceAnswer, Repetition,
    UngroundedValidator, WellPosed,
)
