"""Classes that break the validator contract; each must be refused when a spec names it."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel

from validators.base import Checkpoint, ProblemContext, Validator, ValidatorSession, Verdict


class _Session(ValidatorSession):
    def feed(self, checkpoint: Checkpoint) -> Verdict:
        raise AssertionError("never reached: the class is refused at load")


class NotAValidator:
    name = "not_a_validator"
    description = "Has the attributes but not the base class."

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        return _Session()


class MissingName(Validator):
    description = "No name."

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        return _Session()


class MissingDescription(Validator):
    name = "missing_description"

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        return _Session()


class ParamsNotAModel(Validator):
    name = "params_not_a_model"
    description = "Params is a plain dict type."
    Params: ClassVar[type[BaseModel]] = dict  # type: ignore[assignment]

    def open(self, ctx: ProblemContext) -> ValidatorSession:
        return _Session()


class AbstractOpen(Validator):
    name = "abstract_open"
    description = "Forgets to implement open()."


NOT_A_CLASS = "a string where a class should be"
