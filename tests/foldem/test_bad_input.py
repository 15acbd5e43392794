"""Bad input from users, over the real `foldem run` command: each mistake gets a specific message
naming what is wrong, the documented exit code (foldem/cli/main.py), and no traceback.

Exit codes: 2 bad spec or settings; 3 bad input data; 4 endpoint unusable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.fake_endpoint import FakeEndpoint, closed_port, fake_fixture

FOLDEM = [sys.executable, "-m", "foldem.cli.main"]
PROMPTS = [{"id": "p1", "question": "Tom has 3 apples and buys 4 more. How many apples now?"},
           {"id": "p2", "question": "A box holds 6 eggs. How many eggs are in 5 boxes?"}]


@dataclass
class Case:
    """One mistake: how to make it, and what the user must be told."""

    code: int
    fragments: list[str]
    spec: Callable[[dict[str, Any]], Any] = lambda d: d  # edits the valid spec (or replaces it)
    files: dict[str, bytes] = field(default_factory=dict)  # written beside the spec
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)  # replaces the spec path argument


def valid_spec(base_url: str = "replay") -> dict[str, Any]:
    return {
        "name": "bad-input",
        "prompts": {"path": "prompts.jsonl", "field": "question", "id_field": "id"},
        "endpoints": [{"name": "ep", "base_url": base_url, "model": "m",
                       "timeouts": {"connect": 2, "first_token": 5, "idle": 5, "total": 30}}],
        "stages": [{"name": "solve", "template": "{problem}",
                    "validators": [{"name": "arithmetic"}]}],
    }


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """An edit of the spec at a dotted path (list indices as numbers)."""
    def edit(d: dict[str, Any]) -> dict[str, Any]:
        *parents, last = path.split(".")
        node: Any = d
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
        return d
    return edit


def _drop(key: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def edit(d: dict[str, Any]) -> dict[str, Any]:
        del d[key]
        return d
    return edit


TEN_MB_LINE = json.dumps({"id": "big", "question": "How many? " + "7" * 10_000_000}).encode()

CASES: dict[str, Case] = {
    # The spec itself (exit 2), checked before anything starts.
    "malformed YAML": Case(2, ["malformed YAML", "line 2, column 1"],
                             spec=lambda d: "name: [oops\n"),
    "tabs in YAML": Case(2, ["malformed YAML"], spec=lambda d: "name: x\n\tprompts: y\n"),
    "not a mapping": Case(2, ["expected a mapping at the top level, got list"],
                          spec=lambda d: "- a\n- b\n"),
    "empty file": Case(2, ["expected a mapping at the top level, got NoneType"],
                       spec=lambda d: ""),
    "missing field": Case(2, ["prompts: Field required"], spec=_drop("prompts")),
    "missing endpoints": Case(2, ["endpoints: Field required"], spec=_drop("endpoints")),
    "wrong type": Case(2, ["samples_per_prompt", "valid integer"],
                       spec=_set("samples_per_prompt", "many")),
    "out of range": Case(2, ["samples_per_prompt", "less than or equal to 1000"],
                         spec=_set("samples_per_prompt", 10**6)),
    "unknown field": Case(2, ["temprature", "Extra inputs are not permitted",
                                  "did you mean 'sampling.temperature'?"],
                          spec=_set("temprature", 0.5)),
    "bad job name": Case(2, ["name: String should match pattern"],
                         spec=_set("name", "my job; drop table")),
    "bad base_url": Case(2, ["endpoints[0].base_url", "http(s):// URL"],
                         spec=_set("endpoints.0.base_url", "ftp://x")),
    "unknown validator": Case(2, ["stages[0].validators[0]",
                                  "unknown validator 'no_such'; known:"],
                              spec=_set("stages.0.validators.0", {"name": "no_such"})),
    "validator bad params": Case(2, ["stages[0].validators[0]", "bad params"],
                                 spec=_set("stages.0.validators.0",
                                           {"name": "arithmetic", "params": {"nope": 1}})),
    "invalid regex": Case(2, ["prompts.reference_pattern", "invalid regular expression"],
                          spec=_set("prompts.reference_pattern", "####\\s*(.+")),
    "regex without group": Case(2, ["reference_pattern", "one capturing group"],
                                spec=_set("prompts.reference_pattern", "####")),
    "bad template field": Case(2, ["stages[0].template", "unknown template field"],
                               spec=_set("stages.0.template", "{question}")),
    "unbalanced template": Case(2, ["stages[0].template", "bad template"],
                                spec=_set("stages.0.template", "{problem")),
    "step judge on an unknown endpoint": Case(
        2, ["stages[0].step_judge.endpoint 'judge' is not one of ['ep']"],
        spec=_set("stages.0.step_judge", {"endpoint": "judge"})),
    "step judge template field": Case(
        2, ["stages[0].step_judge.template", "unknown template field(s) ['solution']"],
        spec=_set("stages.0.step_judge", {"endpoint": "ep", "template": "{solution}"})),
    "spec file missing": Case(2, ["job spec not found"], args=["nope.yaml"]),
    "database to nowhere": Case(5, ["cannot connect to Postgres at 127.0.0.1:", "user 'u'"],
                                args=["job.yaml", "--database-url",
                                      f"postgresql://u:p@127.0.0.1:{closed_port()}/x"]),
    "spec not UTF-8": Case(2, ["not UTF-8"], spec=lambda d: b"name: caf\xe9\n"),
    # The endpoint (exit 4 / 2), checked before the run starts.
    "unreachable endpoint": Case(4, ["cannot connect", "is the server running"],
                                 spec=lambda d: _set("endpoints.0.base_url",
                                                     f"http://127.0.0.1:{closed_port()}/v1")(d)),
    "wrong API key": Case(4, ["API key was refused", "HTTP 401", "FOLDEM_BAD_INPUT_KEY"],
                          spec=_set("endpoints.0.api_key_env", "FOLDEM_BAD_INPUT_KEY"),
                          env={"FOLDEM_BAD_INPUT_KEY": "sk-wrong-key"}),
    "unreachable step judge": Case(4, ["judge", "cannot connect"], spec=lambda d: {
        **d, "endpoints": [*d["endpoints"], {"name": "judge", "model": "judge-steps",
                                             "base_url": f"http://127.0.0.1:{closed_port()}/v1"}],
        "stages": [{**d["stages"][0], "step_judge": {"endpoint": "judge"}}]}),
    "API key variable unset": Case(2, ["FOLDEM_UNSET_KEY is not set"],
                                   spec=_set("endpoints.0.api_key_env", "FOLDEM_UNSET_KEY")),
    # The prompt data (exit 3).
    "prompt file missing": Case(3, ["missing.jsonl", "cannot open"],
                                spec=_set("prompts.path", "missing.jsonl")),
    "non-UTF-8 line": Case(3, ["prompts.jsonl:2", "not UTF-8"],
                           files={"prompts.jsonl": b'{"id": "a", "question": "ok?"}\n'
                                                   b'{"id": "b", "question": "caf\xe9?"}\n'}),
    "invalid JSON line": Case(3, ["prompts.jsonl:1", "invalid JSON"],
                              files={"prompts.jsonl": b'{"id": "a", "question": \n'}),
    "10 MB prompt line": Case(3, ["prompts.jsonl:1", "exceeds the limit"],
                              files={"prompts.jsonl": TEN_MB_LINE + b"\n"}),
    "prompt field missing": Case(3, ["prompts.jsonl:1", "'question' is missing",
                                     "the record's fields: 'id', 'text'"],
                                 files={"prompts.jsonl": b'{"id": "a", "text": "hi"}\n'}),
    "duplicate prompt ids": Case(3, ["prompts.jsonl:2", "duplicate prompt id 'a'"],
                                 files={"prompts.jsonl": b'{"id": "a", "question": "x?"}\n'
                                                         b'{"id": "a", "question": "y?"}\n'}),
}

#: Mistakes in the prompt data: `foldem run` reads the prompts before Prefect starts (as it does
#: the spec and the endpoints); the flow reads them again, and the in-process test below checks
#: that path gives the same message and code.
PROMPT_DATA = {"prompt file missing", "non-UTF-8 line", "invalid JSON line", "10 MB prompt line",
               "prompt field missing", "duplicate prompt ids"}
KEYED = {"wrong API key", "API key variable unset"}  # run against a server that wants a key


keyed_endpoint = fake_fixture(auth_key="sk-the-right-key")


def run_foldem(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "FOLDEM_STATE_DIR": str(cwd / "state"),
                "PREFECT_HOME": str(cwd / "prefect-home"), **env}
    full_env.pop("DATABASE_URL", None)
    return subprocess.run(FOLDEM + args, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=240)


def write_case(case: Case, tmp_path: Path, base_url: str) -> Path:
    spec = case.spec(valid_spec(base_url))
    content = spec if isinstance(spec, (str, bytes)) else yaml.safe_dump(spec, sort_keys=False)
    (tmp_path / "job.yaml").write_bytes(content if isinstance(content, bytes)
                                        else content.encode())
    files = {"prompts.jsonl": b"".join(json.dumps(p).encode() + b"\n" for p in PROMPTS),
             **case.files}
    for fname, data in files.items():
        (tmp_path / fname).write_bytes(data)
    return tmp_path / "job.yaml"


def run_case(name: str, tmp_path: Path, endpoint: FakeEndpoint
             ) -> subprocess.CompletedProcess[str]:
    case = CASES[name]
    write_case(case, tmp_path, endpoint.base_url if name in KEYED else "replay")
    return run_foldem(["run", *(case.args or ["job.yaml"])], tmp_path, case.env)


@pytest.fixture(scope="module")
def outcomes(keyed_endpoint: FakeEndpoint, tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, subprocess.CompletedProcess[str]]:
    """The command's answer to every case checked before the flow starts, run a few at a time
    (each is a fresh process: ~2 s of start-up, most of it imports)."""
    names = list(CASES)
    dirs = {n: tmp_path_factory.mktemp("bad-input") for n in names}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {n: pool.submit(run_case, n, dirs[n], keyed_endpoint) for n in names}
        return {n: f.result() for n, f in futures.items()}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.integration  # `foldem run` in a subprocess, per case
def test_bad_input_gets_a_specific_message_and_exit_code(
        name: str, outcomes: dict[str, subprocess.CompletedProcess[str]]) -> None:
    case = CASES[name]
    res = outcomes[name]
    out = res.stdout + res.stderr
    assert res.returncode == case.code, out[-3000:]
    for fragment in case.fragments:
        assert fragment in res.stderr, (fragment, res.stderr[-3000:])
    assert "Traceback" not in out, out[-3000:]
    assert "sk-wrong-key" not in out  # a refused key is named by its variable, never shown


@pytest.mark.parametrize("name", sorted(PROMPT_DATA))
def test_bad_prompt_data_is_refused_with_its_code(name: str, tmp_path: Path) -> None:
    """The same mistakes, in-process: the error the command reports, and its exit code."""
    from foldem.core.errors import FoldemError
    from foldem.spec.job import load_job
    from tasks.run.prompts import load_prompts

    case = CASES[name]
    job = load_job(write_case(case, tmp_path, "replay"))
    with pytest.raises(FoldemError) as err:
        load_prompts(job)
    assert err.value.exit_code == case.code
    for fragment in case.fragments:
        assert fragment in err.value.message
