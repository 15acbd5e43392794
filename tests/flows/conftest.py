"""Fixtures of the flow tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.scratch_db import scratch_database


@pytest.fixture
def own_pg_url(pg_url: str) -> Iterator[str]:
    """A migrated database of the test's own, for runs that must not see the session's other
    runs, nor be seen by them: a job's dedup compares with every earlier run's kept samples,
    so two tests replaying the same recordings into one database reject each other's."""
    with scratch_database(pg_url, migrated=True) as url:
        yield url
