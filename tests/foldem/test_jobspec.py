"""The job spec: the bundled example loads; wrong specs fail with file, field and reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from foldem import PROJECT_ROOT
from foldem.core.errors import SpecError
from foldem.spec.job import load_job

EXAMPLE = PROJECT_ROOT / "examples" / "gsm8k.yaml"


def _write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return p


def _base() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_bundled_example_loads() -> None:
    job = load_job(EXAMPLE)
    assert job.name == "gsm8k-cot"
    assert job.stages[-1].kind == "solve"
    assert job.endpoint_for(job.stages[0]).base_url == "replay"
    assert job.stages[0].checkpoints.separator == "\n"
    assert len(job.spec_hash()) == 16


def _mutate(path: str, value: object):
    def apply(d: dict) -> dict:
        keys = path.split(".")
        cur = d
        for k in keys[:-1]:
            cur = cur[int(k)] if k.isdigit() else cur[k]
        last = keys[-1]
        if value is _DELETE:
            del cur[last]
        elif last.isdigit():
            cur[int(last)] = value
        else:
            cur[last] = value
        return d
    return apply


_DELETE = object()


@pytest.mark.parametrize(("mutation", "field", "fragment"), [
    (_mutate("samples_per_prompt", 0), "samples_per_prompt", "greater than or equal to 1"),
    (_mutate("endpoints.0.base_url", "localhost:8000"), "endpoints[0].base_url", "http(s)://"),
    (_mutate("stages.0.template", "Solve {problem} in {style}"), "stages[0].template",
     "unknown template field"),
    (_mutate("stages.0.validators", [{"name": "no_such_validator"}]),
     "stages[0].validators[0]", "unknown validator"),
    (_mutate("stages.0.endpoint", "missing"), "", "is not one of"),
    (_mutate("prompts.reference_pattern", "(unclosed"), "prompts.reference_pattern",
     "invalid regular expression"),
    (_mutate("prompts", _DELETE), "prompts", "Field required"),
    (_mutate("sampling.temperature", 5), "sampling.temperature", "less than or equal to 2"),
    (_mutate("stages.0.checkpoints.fractions", [1.5]), "stages[0].checkpoints.fractions",
     "strictly between 0 and 1"),
    (_mutate("typo_field", 1), "typo_field", "Extra inputs are not permitted"),
])
def test_wrong_spec_names_field(tmp_path: Path, mutation, field: str, fragment: str) -> None:
    path = _write(tmp_path, mutation(_base()))
    with pytest.raises(SpecError) as err:
        load_job(path)
    assert str(path) in err.value.message
    fields = [f for f, _ in err.value.problems]
    assert any(f.startswith(field) for f in fields), err.value.message
    assert fragment in err.value.message


@pytest.mark.parametrize(("text", "fragment"), [
    ("name: [unclosed\n", "malformed YAML"),
    ("- just\n- a list\n", "expected a mapping"),
])
def test_malformed_yaml(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(SpecError) as err:
        load_job(_write(tmp_path, text))
    assert fragment in err.value.message


def test_missing_file_is_a_spec_error(tmp_path: Path) -> None:
    """A job file that is not there is the user's spec mistake (exit 2), like a bad one."""
    with pytest.raises(SpecError, match="job spec not found"):
        load_job(tmp_path / "nope.yaml")
