"""tasks/outputs/sinks.py: every export format a spec may name has exactly one sink."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from foldem.spec.sections import EXPORT_FORMATS
from tasks.outputs import sinks


def test_the_sinks_are_the_spec_formats() -> None:
    assert set(sinks.SINKS) == set(EXPORT_FORMATS)
    assert all(cls.format == name for name, cls in sinks.SINKS.items())


@pytest.mark.parametrize(("change", "message"), [
    (lambda reg: reg.pop("parquet"), r"no sink for \['parquet'\]"),
    (lambda reg: reg.setdefault("csv", sinks.JsonlSink), r"no spec can name: \['csv'\]"),
])
def test_a_registry_that_disagrees_with_the_spec_refuses_to_load(
        monkeypatch: pytest.MonkeyPatch, change: Callable[[dict[str, Any]], object],
        message: str) -> None:
    registry = dict(sinks.SINKS)
    change(registry)
    monkeypatch.setattr(sinks, "SINKS", registry)
    with pytest.raises(RuntimeError, match=message):
        sinks._check_registry()


def test_a_format_has_one_sink() -> None:
    with pytest.raises(RuntimeError, match="two sinks"):
        sinks.sink("jsonl")(type("AnotherJsonl", (sinks.JsonlSink,), {}))
