from __future__ import annotations

from tests.support.fake_endpoint import fake_fixture

#: A scripted OpenAI-compatible server in a thread, one per module (tests/support/fake_endpoint.py).
fake = fake_fixture()
