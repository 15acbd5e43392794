"""Imports every module of the `validators` package so that each validator registers itself.

A new validator module needs no list entry: define a `Validator` subclass decorated with
`@register` in any module of this package.
"""

import importlib
import pkgutil

_NOT_VALIDATORS = {"base", "registry", "builtin_modules"}


def import_all() -> None:
    import validators

    for info in pkgutil.iter_modules(validators.__path__):
        if info.name not in _NOT_VALIDATORS and not info.name.startswith("_"):
            importlib.import_module(f"validators.{info.name}")


import_all()
