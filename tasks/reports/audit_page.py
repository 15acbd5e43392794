"""A run's audit page: one self-contained HTML file (tasks/reports/templates/audit.html.j2).

Everything is inline — CSS, the filter script, the charts as SVG (the figures of
tasks/reports/charts.py, drawn as SVG instead of PNG) — so the file opens from disk in a browser
with no server and no network. Its Content-Security-Policy allows no fetch at all, and only the
page's own script (a fresh nonce per page) may run. Every text from the database is escaped by
the template (autoescape): model output is untrusted and may be HTML or script.
"""

from __future__ import annotations

import io
import os
import re
import secrets
from pathlib import Path

import sqlalchemy as sa
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup
from sqlalchemy.orm import Session

from foldem.core.errors import ConfigError
from foldem.spec.sections import Export
from tasks.reports.analytics import RunNotFoundError
from tasks.reports.audit import STATUS_ORDER, SampleCaps, build_audit
from tasks.reports.audit_rows import AuditPage
from tasks.reports.rows import AnalyticsReport

AUDIT_PAGE_NAME = "audit.html"
TEMPLATES = Path(__file__).parent / "templates"
_SVG_START = re.compile(r"<svg\b")
DEFAULT_EXPORT_DIR: str = Export.model_fields["dir"].default


def audit_page_path(export_dir: str, *, job_name: str, run_id: str) -> Path:
    """Where a run's audit page goes: in its export directory (a job's `export.dir`, with
    {job} and {run_id} filled in), written for every run, exported or not."""
    return Path(export_dir.format(job=job_name, run_id=run_id)) / AUDIT_PAGE_NAME


def run_audit_path(session: Session, *, run_id: str) -> Path:
    """Where the run wrote (or would write) its audit page: its spec's export directory."""
    row = session.execute(sa.text("SELECT job_name, spec FROM runs WHERE run_id = :r"),
                          {"r": run_id}).first()
    if row is None:
        raise RunNotFoundError(f"run {run_id!r} is not in the database")
    export = row.spec.get("export") if isinstance(row.spec, dict) else None
    export_dir = export.get("dir") if isinstance(export, dict) else None
    return audit_page_path(export_dir if isinstance(export_dir, str) else DEFAULT_EXPORT_DIR,
                           job_name=row.job_name, run_id=run_id)


def chart_svgs(report: AnalyticsReport) -> dict[str, Markup]:
    """The report's charts as inline SVG elements, by table key. Text stays text (no glyph
    outlines), and each chart's element ids are salted with its key so several charts on one
    page never share an id."""
    import matplotlib

    from tasks.reports.charts import build_charts

    svgs: dict[str, Markup] = {}
    for key, figure in build_charts(report).items():
        buffer = io.StringIO()
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"audit-{key}"}):
            figure.savefig(buffer, format="svg", metadata={"Date": None})
        text = buffer.getvalue()
        start = _SVG_START.search(text)
        if start is None:  # never seen; a chart is not worth failing the page for
            continue
        # matplotlib escapes the labels it writes (validator, endpoint and model names)
        svgs[key] = Markup(text[start.start():])
    return svgs


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(
        enabled_extensions=("j2", "html"), default_for_string=True), undefined=StrictUndefined,
        trim_blocks=True, lstrip_blocks=True)
    env.filters["usd"] = _usd
    env.filters["num"] = lambda v: "-" if v is None else f"{v:,}"
    return env


def _usd(value: float | None) -> str:
    if value is None:
        return "no price known"
    return f"${value:,.2f}" if value >= 1 else f"${value:.6f}".rstrip("0").rstrip(".")


def render_audit_html(page: AuditPage) -> str:
    """The page as one HTML document."""
    statuses = [str(s) for s in STATUS_ORDER]
    statuses += sorted({c.status for c in page.counts} - set(statuses))
    return _environment().get_template("audit.html.j2").render(
        page=page, charts=chart_svgs(page.analytics), statuses=statuses,
        nonce=secrets.token_urlsafe(16))


def write_audit_page(session: Session, *, run_id: str, path: Path,
                     caps: SampleCaps | None = None) -> Path:
    """Write the audit page of `run_id` to `path` (its directory is created); a reader never
    sees half a page. Returns the absolute path."""
    html = render_audit_html(build_audit(session, run_id=run_id, caps=caps))
    path = path.resolve()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(html, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"cannot write the audit page to {path}: {exc.strerror}") from None
    return path
