"""Validators registered by name; custom ones by dotted path or the `foldem.validators`
entry-point group. Every loaded class is checked against the contract before use."""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel, ValidationError

from foldem.core.errors import ValidatorLoadError
from validators.base import Validator
from validators.builtin import BUILTIN_VALIDATORS

_REGISTRY: dict[str, type[Validator]] = {}
ENTRY_POINT_GROUP = "foldem.validators"


def register(cls: type[Validator]) -> type[Validator]:
    """Class decorator: make a validator available by its `name`."""
    _check_contract(cls, cls.__dict__.get("name", cls.__name__))
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValidatorLoadError(cls.name, "a different validator is registered under this name")
    _REGISTRY[cls.name] = cls
    return cls


def _check_contract(cls: object, name: str) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Validator)):
        raise ValidatorLoadError(name, "is not a subclass of validators.base.Validator")
    for attr in ("name", "description"):
        if not isinstance(getattr(cls, attr, None), str):
            raise ValidatorLoadError(name, f"class attribute {attr!r} must be a string")
    params = getattr(cls, "Params", None)
    if not (isinstance(params, type) and issubclass(params, BaseModel)):
        raise ValidatorLoadError(name, "Params must be a pydantic BaseModel subclass")
    if getattr(cls, "__abstractmethods__", None):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise ValidatorLoadError(name, f"does not implement {missing}")


def _load_entry_point(name: str) -> type[Validator] | None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                return ep.load()
            except Exception as exc:  # noqa: BLE001 - any import failure is a load error
                raise ValidatorLoadError(name, f"entry point failed to load: {exc}") from None
    return None


def _load_dotted(path: str) -> type[Validator]:
    module_name, _, attr = path.replace(":", ".").rpartition(".")
    if not module_name:
        raise ValidatorLoadError(path, "a dotted path needs a module and a class name")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001
        raise ValidatorLoadError(path, f"cannot import {module_name}: {exc}") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ValidatorLoadError(path, f"module {module_name} has no {attr!r}") from None


def resolve(name: str) -> type[Validator]:
    """A registered name, an entry-point name, or a dotted path `pkg.module.Class`."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    cls = _load_entry_point(name)
    if cls is None and ("." in name or ":" in name):
        cls = _load_dotted(name)
    if cls is None:
        known = ", ".join(sorted(_REGISTRY))
        raise ValidatorLoadError(name, f"unknown validator {name!r}; known: {known}")
    _check_contract(cls, name)
    return cls


def build(name: str, params: dict[str, Any] | None = None) -> Validator:
    """Resolve and configure a validator; bad parameters fail with the field at fault."""
    cls = resolve(name)
    try:
        parsed = cls.Params.model_validate(params or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors()
        )
        raise ValidatorLoadError(name, f"bad params: {problems}") from None
    return cls(parsed)


def available() -> dict[str, type[Validator]]:
    return dict(sorted(_REGISTRY.items()))


for _builtin in BUILTIN_VALIDATORS:
    register(_builtin)
