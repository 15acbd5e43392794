"""The Prefect task wrappers' own behaviour (the plain functions under them are tested beside
their modules)."""

from __future__ import annotations

import uuid
from pathlib import Path

from prefect.logging import disable_run_logger

from foldem.spec.job import JobSpec
from tasks.prefect_tasks import write_audit_page_task
from tasks.store import db
from tests.support.audit_run import save_audit_run
from tests.support.jobs import job_dict


def test_audit_page_that_cannot_be_written_does_not_fail_the_run(pg_url: str,
                                                                 tmp_path: Path) -> None:
    run_id = f"audit-task-{uuid.uuid4().hex[:8]}"
    with db.session_scope(db.get_engine(pg_url)) as session:
        save_audit_run(session, run_id)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    data = job_dict("http://127.0.0.1:9", name="audit-task")
    data["export"] = {"dir": str(blocker / "{run_id}")}
    with disable_run_logger():
        assert write_audit_page_task.fn(pg_url, run_id, JobSpec.model_validate(data)) is None

    data["export"] = {"dir": str(tmp_path / "{job}" / "{run_id}")}
    with disable_run_logger():
        written = write_audit_page_task.fn(pg_url, run_id, JobSpec.model_validate(data))
    assert written == str(tmp_path / "audit-task" / run_id / "audit.html")
    assert Path(written).read_text().startswith("<!DOCTYPE html>")
