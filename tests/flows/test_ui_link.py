"""The link foldem logs for a run opens its Artifacts tab in Prefect's current UI (the V1 page
that Prefect's own `View at` line opens ignores the tab)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prefect.settings import PREFECT_UI_URL, temporary_settings

from flows import generate


def test_the_run_link_opens_the_artifacts_tab_of_the_v2_ui(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generate, "flow_run", SimpleNamespace(id="5b9e"))
    with temporary_settings(updates={PREFECT_UI_URL: "http://127.0.0.1:4200/"}):
        assert generate._artifacts_link() == (
            "http://127.0.0.1:4200/v2/runs/flow-run/5b9e?tab=Artifacts")


def test_no_link_without_a_ui_or_outside_a_flow_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generate, "flow_run", SimpleNamespace(id=None))
    with temporary_settings(updates={PREFECT_UI_URL: "http://127.0.0.1:4200"}):
        assert generate._artifacts_link() is None
