"""The audit page in headless Chromium, opened from disk: the filters hide and show the right
rows, the span that triggered a rejection is highlighted before the cut mark, hostile model
text stays text (its script never runs), and the page fetches nothing. A screenshot of a
rejection's highlight goes to docs/audit/ (docs/AUDIT.md embeds it).

Skipped without Chromium (Debian: `make browser`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from foldem import PROJECT_ROOT
from tasks.reports.audit_page import write_audit_page
from tasks.store import db
from tests.support.audit_run import ARITHMETIC_SPAN, AuditRun, save_audit_run
from tests.support.browser import Tab, chromium_path, chromium_tab
from tests.support.scratch_db import scratch_database

pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    chromium_path() is None, reason="chromium not installed (Debian: `make browser`, i.e. "
    "apt-get install -y chromium)")]

DOCS_AUDIT = PROJECT_ROOT / "docs" / "audit"
VISIBLE = "Array.from(document.querySelectorAll('#list > .sample')).filter(r => !r.hidden)"


def set_filter(tab: Tab, field: str, value: str) -> None:
    """Change one filter as a person would: set the control, fire its input event."""
    tab.evaluate(f"(() => {{ const e = document.getElementById('f-{field}'); "
                 f"e.value = {value!r}; e.dispatchEvent(new Event('input')); }})()")


def visible_keys(tab: Tab) -> list[str]:
    return list(tab.evaluate(f"{VISIBLE}.map(r => r.dataset.key)"))


def fetched_elsewhere(tab: Tab) -> list[str]:
    """URLs the page asked for that are not the file itself or inline data."""
    return [e["params"]["request"]["url"] for e in tab.events
            if e.get("method") == "Network.requestWillBeSent"
            and not e["params"]["request"]["url"].startswith(("file:", "data:"))]


@pytest.fixture(scope="module")
def page_file(pg_url: str, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[Path, AuditRun]]:
    with scratch_database(pg_url, migrated=True) as url:
        with db.session_scope(db.get_engine(url)) as session:
            made = save_audit_run(session, f"audit-{uuid.uuid4().hex[:10]}")
            path = write_audit_page(session, run_id=made.run_id,
                                    path=tmp_path_factory.mktemp("audit") / "audit.html")
        yield path, made


def test_filters_highlight_and_hostile_text_in_chromium(page_file: tuple[Path, AuditRun],
                                                        tmp_path: Path) -> None:
    chromium = chromium_path()
    assert chromium is not None
    path, made = page_file
    total = made.rejected + made.accepted + made.superseded + made.failed
    with chromium_tab(chromium, tmp_path / "profile", window=(1440, 1100)) as tab:
        tab.open(path.as_uri())
        assert tab.evaluate("document.title").startswith("foldem audit: audit-test")
        assert len(visible_keys(tab)) == total
        # the hostile sample's <script> and onerror never ran: they are text on the page
        assert tab.evaluate("typeof window.__pwned") == "undefined"
        assert "<script>window.__pwned = 1</script>" in tab.evaluate(
            "document.querySelector('[data-key=\"p-hostile#0\"] mark.span').textContent")

        set_filter(tab, "status", "rejected")
        rejected = visible_keys(tab)
        assert len(rejected) == made.rejected
        assert tab.evaluate("document.getElementById('shown').textContent") == str(made.rejected)
        set_filter(tab, "validator", "arithmetic")
        assert sorted(visible_keys(tab)) == ["p-arith#0", "p-badspan#0", "p-hostile#0"]
        set_filter(tab, "text", "altogether")  # in the text of p-arith and p-badspan only
        assert sorted(visible_keys(tab)) == ["p-arith#0", "p-badspan#0"]
        set_filter(tab, "text", "no such words anywhere")
        assert visible_keys(tab) == []
        assert tab.evaluate("document.getElementById('none').hidden") is False
        set_filter(tab, "text", "")
        set_filter(tab, "validator", "")
        set_filter(tab, "status", "superseded")
        assert visible_keys(tab) == ["p-ok-0#1"]
        set_filter(tab, "status", "rejected")

        # open the arithmetic rejection: the span is marked, then the cut
        facts = tab.evaluate("""(() => {
            const row = document.querySelector('[data-key="p-arith#0"]');
            row.open = true;
            row.scrollIntoView({block: 'start'});
            window.scrollBy(0, -70);  // below the sticky filter bar
            const mark = row.querySelector('pre.text mark.span');
            const cut = row.querySelector('pre.text .end.cut');
            const box = mark.getBoundingClientRect();
            return {mark: mark.textContent, height: box.height, cut: cut.textContent,
                    before: !!(mark.compareDocumentPosition(cut) & 4)};
        })()""")
        assert facts["mark"] == ARITHMETIC_SPAN and facts["height"] > 0
        assert facts["cut"].startswith("✂ stream cut here after 21 tokens")
        assert facts["before"]  # the highlight comes before the cut mark

        assert fetched_elsewhere(tab) == []
        tab.screenshot(tmp_path / "highlight.png")

        # a link may preselect the filters (a fresh load: a change of fragment alone is not one)
        tab.open("about:blank")
        tab.open(path.as_uri() + "#status=rejected&validator=repetition")
        assert visible_keys(tab) == ["p-loop#0"]
        assert tab.evaluate("document.getElementById('f-validator').value") == "repetition"
    DOCS_AUDIT.mkdir(parents=True, exist_ok=True)
    (DOCS_AUDIT / "audit-highlight.png").write_bytes((tmp_path / "highlight.png").read_bytes())
