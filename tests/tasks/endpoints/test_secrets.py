"""Secrets never leak: an API key (read from the variable that api_key_env names, or from a
Prefect Secret block) and a database password are planted as unique canaries, a real
`foldem run` is made against an endpoint that requires the key, and every place a secret could
end up is searched: the command's output, Prefect's logs and artifacts (its database), every
table and view of the results database, the exported files, and every file the run wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr
from sqlalchemy import text

from foldem.core.errors import ConfigError, SpecError
from foldem.spec.endpoints import Endpoint
from foldem.spec.job import parse_job
from tasks.endpoints.client import resolve_api_key
from tasks.store.db import get_engine, migrate
from tasks.store.embedded_pg import ensure_embedded_postgres
from tests.support.fake_endpoint import FakeEndpoint, running_fake

FOLDEM = [sys.executable, "-m", "foldem.cli.main"]
KEY_ENV = "FOLDEM_TEST_CANARY_KEY"
SOLUTION = ["Tom has 3 apples.", " He buys 4 more,", " so 3 + 4 = 7.\n", "#### 7\n"]


@pytest.fixture(scope="module")
def canary() -> str:
    return f"sk-canary-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def keyed(canary: str) -> Iterator[FakeEndpoint]:
    with running_fake() as fake:
        fake.reset(auth_key=canary, tokens=SOLUTION, usage="continuous")
        yield fake


def job(base_url: str) -> dict[str, object]:
    return {
        "name": "secrets",
        "prompts": {"path": "prompts.jsonl", "id_field": "id", "reference_field": "answer"},
        "samples_per_prompt": 2,
        "endpoints": [{"name": "keyed", "base_url": base_url, "model": "m",
                       "api_key_env": KEY_ENV, "max_retries": 1,
                       "timeouts": {"connect": 2, "first_token": 5, "idle": 5, "total": 30}}],
        "stages": [{"name": "solve", "template": "{problem}", "expected_tokens": 20,
                    "validators": [{"name": "arithmetic"}, {"name": "final_answer"}]}],
        "export": {"dir": "out/{job}-{run_id}", "formats": ["jsonl"]},
    }


def files_containing(root: Path, needle: bytes) -> list[str]:
    """Every file under root whose raw bytes hold the needle (databases, logs, exports)."""
    hits = []
    for path in root.rglob("*"):
        try:
            if path.is_file() and needle in path.read_bytes():
                hits.append(str(path.relative_to(root)))
        except OSError:
            continue  # a socket, or a file that vanished
    return hits


def tables_containing(url: str, needle: str) -> dict[str, int]:
    """Rows of every table and view in the results database whose text holds the needle (the
    text form of a row, so JSON and TOAST-compressed values are searched decompressed)."""
    hits: dict[str, int] = {}
    with get_engine(url).connect() as conn:
        names = conn.execute(text(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )).scalars().all()
        assert {"runs", "samples", "ledger", "rejections"} <= set(names)
        for name in names:
            n = conn.execute(text(f'SELECT count(*) FROM "{name}" t WHERE t::text LIKE :pat'),
                             {"pat": f"%{needle}%"}).scalar()
            if n:
                hits[name] = int(n)
    return hits


@pytest.mark.integration
def test_planted_secrets_appear_nowhere(keyed: FakeEndpoint, canary: str, tmp_path: Path,
                                        fresh_state_dir: Path) -> None:
    password = f"pw-canary-{uuid.uuid4().hex}"
    url = ensure_embedded_postgres(fresh_state_dir)  # trusts its socket: any password works
    migrate(url)
    url_with_password = url.replace("postgres@", f"postgres:{password}@", 1)
    (tmp_path / "prompts.jsonl").write_text(
        "".join(json.dumps({"id": f"p{i}", "question": q, "answer": "7"}) + "\n" for i, q in
                enumerate(["Tom has 3 apples and buys 4 more. How many apples does he have?",
                           "Ann had 10 pens and gave away 3. How many pens are left?"])))
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job(keyed.base_url), sort_keys=False))
    env = {**os.environ, KEY_ENV: canary, "DATABASE_URL": url_with_password,
           "FOLDEM_STATE_DIR": str(fresh_state_dir), "PREFECT_HOME": str(tmp_path / "prefect")}
    res = subprocess.run([*FOLDEM, "run", "job.yaml", "--run-id", "secrets-run",
                          "--summary-json", "out/summary.json"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["samples"] == 4 and summary["accepted"] > 0
    assert len(keyed.seen.requests) >= 4  # the key was sent and accepted on every call

    # Positive controls: the places searched do hold this run's records.
    assert "secrets-run" in res.stdout
    assert files_containing(tmp_path / "prefect", b"secrets-run"), "Prefect kept nothing"
    assert list((tmp_path / "out" / "secrets-secrets-run").glob("*.jsonl")), "nothing exported"
    # The secrets, nowhere.
    for secret in (canary, password):
        assert secret not in res.stdout + res.stderr
        assert files_containing(tmp_path, secret.encode()) == []  # Prefect db, logs, exports
        assert files_containing(fresh_state_dir, secret.encode()) == []  # Postgres files, WAL
        assert tables_containing(url, secret) == {}


@pytest.mark.integration  # starts `foldem run`
def test_a_refused_key_is_named_by_its_variable_never_shown(keyed: FakeEndpoint,
                                                            tmp_path: Path) -> None:
    wrong = f"sk-wrong-{uuid.uuid4().hex}"
    (tmp_path / "prompts.jsonl").write_text('{"id": "p", "question": "2+2?", "answer": "4"}\n')
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job(keyed.base_url), sort_keys=False))
    env = {**os.environ, KEY_ENV: wrong, "FOLDEM_STATE_DIR": str(tmp_path / "state"),
           "PREFECT_HOME": str(tmp_path / "prefect")}
    res = subprocess.run([*FOLDEM, "run", "job.yaml"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 4 and KEY_ENV in res.stderr
    assert wrong not in res.stdout + res.stderr
    assert files_containing(tmp_path, wrong.encode()) == []


# --- keys from Prefect Secret blocks -----------------------------------------------------------

def endpoint(**extra: object) -> Endpoint:
    return Endpoint.model_validate({"name": "ep", "base_url": "http://127.0.0.1:1/v1",
                                    "model": "m", **extra})


def test_key_from_a_secret_block(prefect_api: None, canary: str) -> None:
    from prefect.blocks.system import Secret

    block = f"foldem-test-{uuid.uuid4().hex[:8]}"
    Secret(value=canary).save(block)
    key = resolve_api_key(endpoint(api_key_secret_block=block))
    assert isinstance(key, SecretStr) and key.get_secret_value() == canary
    assert canary not in repr(key) + str(key)


def test_a_key_has_one_source() -> None:
    with pytest.raises(SpecError) as err:
        parse_job({**job("http://127.0.0.1:1/v1"), "endpoints": [
            {"name": "ep", "base_url": "http://127.0.0.1:1/v1", "model": "m",
             "api_key_env": KEY_ENV, "api_key_secret_block": "b"}]})
    assert "api_key_env or api_key_secret_block, not both" in err.value.message


async def test_key_from_a_secret_block_inside_an_event_loop(prefect_api: None,
                                                            canary: str) -> None:
    from prefect.blocks.system import Secret

    block = f"foldem-test-{uuid.uuid4().hex[:8]}"
    await Secret(value=canary).asave(block)
    # The flow resolves keys from synchronous code inside its running loop.
    assert resolve_api_key(endpoint(api_key_secret_block=block)).get_secret_value() == canary


@pytest.mark.integration
@pytest.mark.slow  # ~50 s (a Prefect home of its own); blocks resolve in the two tests above
def test_a_run_takes_its_key_from_a_secret_block(keyed: FakeEndpoint, canary: str,
                                                 tmp_path: Path) -> None:
    """The whole path: the block saved in the Prefect home the run uses, the job naming it,
    `foldem run` authenticating with it; the key shown nowhere and kept in no result."""
    prefect_home = tmp_path / "prefect"
    env = {**os.environ, "FOLDEM_STATE_DIR": str(tmp_path / "state"),
           "PREFECT_HOME": str(prefect_home)}
    env.pop(KEY_ENV, None)
    save = ("import sys; from prefect.blocks.system import Secret; "
            "Secret(value=sys.stdin.read()).save('foldem-canary-key')")
    subprocess.run([sys.executable, "-c", save], input=canary, env=env, text=True,
                   check=True, capture_output=True, timeout=120)
    spec = job(keyed.base_url)
    spec["endpoints"][0].pop("api_key_env")  # type: ignore[index]
    spec["endpoints"][0]["api_key_secret_block"] = "foldem-canary-key"  # type: ignore[index]
    (tmp_path / "prompts.jsonl").write_text(
        '{"id": "p", "question": "Tom has 3 apples and buys 4 more. How many?", "answer": "7"}\n')
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    before = len(keyed.seen.requests)
    res = subprocess.run([*FOLDEM, "run", "job.yaml", "--summary-json", "out/summary.json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["samples"] == 2
    assert len(keyed.seen.requests) - before >= 2  # the fake refuses any other key
    assert canary not in res.stdout + res.stderr
    assert files_containing(tmp_path / "out", canary.encode()) == []
    assert files_containing(tmp_path / "state", canary.encode()) == []


def test_a_missing_secret_block_is_a_clear_config_error(prefect_api: None) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_api_key(endpoint(api_key_secret_block="foldem-no-such-block"))
    assert "no Prefect Secret block named 'foldem-no-such-block'" in err.value.message
    assert err.value.exit_code == 2
