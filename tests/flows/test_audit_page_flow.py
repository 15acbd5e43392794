"""The demo job's audit page, end to end: the bundled GSM8K job (examples/gsm8k.yaml, on fewer
prompts) runs through the `generate` flow against the replay endpoint and embedded Postgres;
the page it writes next to its export opens from disk in headless Chromium, lists every
sample, and filtered to the rejected ones shows where each stream was cut. Screenshots go to
docs/audit/ (docs/AUDIT.md embeds them), with the recorded text blurred: the recordings stay
in ../shared/data, not in the repository.

Skipped without Chromium (Debian: `make browser`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from foldem import PROJECT_ROOT
from foldem.replay.launcher import ReplayServer
from tests.support.browser import chromium_path, chromium_tab
from tests.support.jobs import PACE, run_flow, write_job
from tests.support.replay import replay_fixture
from tests.support.tracedata import SHARED_DATA

pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    chromium_path() is None, reason="chromium not installed (Debian: `make browser`, i.e. "
    "apt-get install -y chromium)")]

DOCS_AUDIT = PROJECT_ROOT / "docs" / "audit"
replay = replay_fixture("gpt3", tokens_per_second=PACE)
ROWS = "Array.from(document.querySelectorAll('#list > .sample'))"


def demo_job(replay_url: str, prompts: int) -> dict[str, Any]:
    job = yaml.safe_load((PROJECT_ROOT / "examples" / "gsm8k.yaml").read_text())
    job["prompts"]["path"] = str(SHARED_DATA / "gsm8k" / "test.jsonl")
    job["prompts"]["limit"] = prompts
    job["endpoints"][0]["base_url"] = replay_url
    job["replay"]["traces"] = [str(SHARED_DATA / "traces" / "gsm8k_gpt3_dev.jsonl")]
    return job


def test_demo_run_writes_an_audit_page_that_opens_from_disk(
        prefect_api: None, own_pg_url: str, replay: ReplayServer, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    chromium = chromium_path()
    assert chromium is not None
    monkeypatch.chdir(tmp_path)
    run_id = "audit-demo"
    summary = run_flow(write_job(tmp_path, demo_job(replay.base_url, prompts=10)), run_id,
                       own_pg_url)
    page = (tmp_path / "out" / run_id / "audit.html").resolve()
    assert summary.audit_page == str(page) and page.exists()
    assert summary.rejected > 0

    with chromium_tab(chromium, tmp_path / "profile", window=(1440, 1000)) as tab:
        tab.open(page.as_uri())
        assert tab.evaluate(f"{ROWS}.length") == summary.samples  # all listed: a small run
        tab.redact_recorded_text()
        tab.screenshot(tmp_path / "overview.png")

        tab.evaluate("(() => { const e = document.getElementById('f-status'); "
                     "e.value = 'rejected'; e.dispatchEvent(new Event('change')); })()")
        shown = tab.evaluate(f"{ROWS}.filter(r => !r.hidden).map(r => r.dataset.status)")
        assert shown == ["rejected"] * summary.rejected
        # rejections that cut the stream in flight: the list shows ✂, the text its cut mark
        cut = tab.evaluate(f"""{ROWS}.filter(r => !r.hidden && r.querySelector('.end.cut'))
                               .map(r => r.dataset.key)""")
        assert cut, "no rejected sample was cut in flight"
        facts = tab.evaluate(f"""(() => {{
            const row = document.querySelector('[data-key="{cut[0]}"]');
            row.open = true;
            document.getElementById('samples').scrollIntoView({{block: 'start'}});
            const mark = row.querySelector('.end.cut');
            return {{tail: row.querySelector('summary .cutmark') !== null,
                    note: mark.textContent, height: mark.getBoundingClientRect().height}};
        }})()""")
        assert facts["tail"] and facts["height"] > 0
        assert facts["note"].startswith("✂ stream cut here after ")
        assert ": rejected by " in facts["note"]
        tab.redact_recorded_text()
        tab.screenshot(tmp_path / "rejected.png")
        errors = [e for e in tab.events if e.get("method") == "Runtime.exceptionThrown"]
        assert errors == []
    DOCS_AUDIT.mkdir(parents=True, exist_ok=True)
    for name in ("overview", "rejected"):
        (DOCS_AUDIT / f"demo-{name}.png").write_bytes((tmp_path / f"{name}.png").read_bytes())
