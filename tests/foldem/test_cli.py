"""The `foldem` command as a user runs it: clear messages and exit codes, and the demo path
(replay endpoint started by the job, embedded Postgres, ephemeral Prefect) end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from tests.support.fake_endpoint import closed_port
from tests.support.jobs import job_dict
from tests.support.tracedata import require_shared

pytestmark = pytest.mark.integration  # every test runs `foldem` in a subprocess

FOLDEM = [sys.executable, "-m", "foldem.cli.main"]


def run_cli(args: list[str], cwd: Path, state: Path | None = None,
            timeout: float = 240) -> subprocess.CompletedProcess[str]:
    # Each command gets its own Prefect home: ephemeral Prefect keeps a SQLite database there,
    # which two processes starting at once can lock each other out of.
    full_env = {**os.environ, "FOLDEM_STATE_DIR": str(state or cwd / "state"),
                "PREFECT_HOME": str(cwd / "prefect-home")}
    full_env.pop("DATABASE_URL", None)
    return subprocess.run(FOLDEM + args, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def write(tmp_path: Path, data: Any, name: str = "job.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return p


@pytest.mark.parametrize(("content", "code", "fragment"), [
    ("name: [oops\n", 2, "malformed YAML"),
    ({"name": "x"}, 2, "prompts: Field required"),
    ("{}", 2, "endpoints: Field required"),
])
def test_bad_spec_exits_2_without_traceback(tmp_path: Path, content: Any, code: int,
                                            fragment: str) -> None:
    res = run_cli(["run", str(write(tmp_path, content))], tmp_path, timeout=60)
    assert res.returncode == code
    assert fragment in res.stderr and "Traceback" not in res.stderr + res.stdout


def test_missing_spec_file(tmp_path: Path) -> None:
    res = run_cli(["run", "nope.yaml"], tmp_path, timeout=60)
    assert res.returncode == 2 and "job spec not found" in res.stderr


def test_unknown_validator_names_field(tmp_path: Path) -> None:
    require_shared()
    data = job_dict("replay", validators=[{"name": "no_such"}])
    res = run_cli(["run", str(write(tmp_path, data))], tmp_path, timeout=60)
    assert res.returncode == 2
    assert "stages[0].validators[0]" in res.stderr and "unknown validator" in res.stderr


@pytest.mark.integration
def test_dead_endpoint_exits_4(tmp_path: Path) -> None:
    require_shared()
    data = job_dict(f"http://127.0.0.1:{closed_port()}/v1", limit=1, samples=1)
    res = run_cli(["run", str(write(tmp_path, data))], tmp_path)
    assert res.returncode == 4, res.stderr[-2000:]
    assert "cannot connect" in res.stderr and "Traceback" not in res.stderr


def test_unreachable_database_is_one_line_before_prefect(tmp_path: Path) -> None:
    """A database URL to nowhere: exit 5 with one line naming the place, its password masked
    as a field (a one-letter password must not garble the words around it), and no Prefect
    start (no flow run, no retries)."""
    require_shared()
    data = job_dict("replay", limit=1, samples=1)
    url = f"postgresql://analyst:p@127.0.0.1:{closed_port()}/nowhere"
    res = run_cli(["run", str(write(tmp_path, data)), "--database-url", url], tmp_path,
                  timeout=60)
    assert res.returncode == 5, res.stderr[-2000:]
    lines = [line for line in (res.stdout + res.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert "cannot connect to Postgres at 127.0.0.1:" in lines[0]
    assert "***ort" not in lines[0] and "acce***ting" not in lines[0]
    assert "Traceback" not in lines[0] and "Flow run" not in lines[0]
    assert not (tmp_path / "prefect-home" / "prefect.db").exists()  # no Prefect server ran


def test_db_url_for_prefects_own_database(tmp_path: Path) -> None:
    """`foldem db url --prefect` names a `prefect` database on the results server, with the
    driver Prefect's server needs, wherever that server is (no hard-coded socket path)."""
    res = run_cli(["db", "url", "--prefect", "--database-url",
                   "postgresql://analyst:pw@db.internal:5433/foldem"], tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "postgresql+asyncpg://analyst:pw@db.internal:5433/prefect"


@pytest.mark.integration
def test_demo_path_end_to_end(tmp_path: Path, fresh_state_dir: Path) -> None:
    """`foldem run` with `base_url: replay` starts the replay endpoint itself; the embedded
    Postgres lives in a state dir outside pytest's tmp tree (see conftest)."""
    require_shared()
    data = job_dict("replay", limit=4, samples=2, name="cli-demo")
    data["export"] = {"dir": "out/{job}"}
    # Calls spread over a priced endpoint and one with no known price (the same replay).
    data["endpoints"][0]["prices"] = {"input_per_mtok": 0.15, "output_per_mtok": 0.6}
    data["endpoints"].append({**data["endpoints"][0], "name": "free", "prices": None})
    data["stages"][0]["endpoint"] = ["replay", "free"]
    job = write(tmp_path, data)
    res = run_cli(["run", str(job), "--summary-json", "out/summary.json"], tmp_path,
                  fresh_state_dir)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert set(summary) >= {"run_id", "samples", "accepted", "rejected", "failed",
                            "prompt_tokens", "completion_tokens", "tokens_saved",
                            "server_tokens_sent"}
    assert summary["samples"] == 8
    assert summary["accepted"] + summary["rejected"] + summary["failed"] == 8
    assert summary["server_tokens_sent"] == summary["completion_tokens"] > 0
    assert "Query the results with SQL" in res.stdout
    exported = (tmp_path / "out" / "cli-demo" / "chat.jsonl").read_text().splitlines()
    assert len(exported) == summary["accepted"]
    db = run_cli(["db", "url"], tmp_path, fresh_state_dir, timeout=60)
    assert db.returncode == 0 and "postgresql" in db.stdout
    db = run_cli(["db", "url", "--sqlalchemy"], tmp_path, fresh_state_dir, timeout=60)
    # The cost: the ledger's sum, in the summary; the endpoint with no price said once at the
    # start, and its calls counted as not costed, never as $0.
    with sa.create_engine(db.stdout.strip()).connect() as conn:
        total, unpriced = conn.execute(sa.text(
            "SELECT sum(cost_usd), count(*) FILTER (WHERE cost_usd IS NULL) FROM ledger "
            "WHERE run_id = :r"), {"r": summary["run_id"]}).one()
    cost = summary["cost"]
    assert Decimal(cost["total_usd"]) == total > 0
    assert cost["unpriced_calls"] == unpriced > 0 and cost["unpriced_endpoints"] == ["free"]
    output = res.stdout + res.stderr
    assert output.count("no price known for endpoint(s) 'free'") == 1
    assert f"{unpriced} calls on free not costed" in res.stdout
