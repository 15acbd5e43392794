from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.scratch_db import scratch_database


@pytest.fixture
def scratch_url(pg_url: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped afterwards."""
    with scratch_database(pg_url) as url:
        yield url
