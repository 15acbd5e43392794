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


# --- early exit by agreement (job level) and the stage's own early_exit ----------------------


@pytest.mark.parametrize(("mutation", "field", "fragment"), [
    (_mutate("early_exit", {"agreement": 1}), "early_exit.agreement", "at least 2"),
    (_mutate("early_exit", {"agreement": 5}), "", "samples_per_prompt = 4"),
    (_mutate("early_exit", True), "early_exit", "set `early_exit: true` on the stage"),
    (_mutate("early_exit", 3), "early_exit", "early_exit: {agreement: 3}"),
    (_mutate("early_exit", {"agreemnt": 2}), "early_exit.agreemnt",
     "did you mean 'agreement'?"),
    (_mutate("early_exit", {"agreement": 2, "spare": -1}), "early_exit.spare",
     "greater than or equal to 0"),
    (_mutate("agreement", 2), "agreement", "did you mean 'early_exit.agreement'?"),
    (_mutate("stages.0.early_exit", {"agreement": 2}), "stages[0].early_exit",
     "move it to the top level"),
])
def test_agreement_spec_errors_say_what_to_write(tmp_path: Path, mutation, field: str,
                                                 fragment: str) -> None:
    test_wrong_spec_names_field(tmp_path, mutation, field, fragment)


def test_agreement_with_a_problem_stage_is_refused(tmp_path: Path) -> None:
    data = _base() | {"early_exit": {"agreement": 2}}
    data["stages"].insert(0, {"name": "write", "kind": "problem", "template": "{seed}"})
    with pytest.raises(SpecError, match="solves a problem of its own"):
        load_job(_write(tmp_path, data))


def test_agreement_loads_and_leaves_other_specs_hashes_alone(tmp_path: Path) -> None:
    plain = load_job(EXAMPLE)
    job = load_job(_write(tmp_path, _base() | {"early_exit": {"agreement": 4, "spare": 1}}))
    assert (job.early_exit.agreement, job.early_exit.spare) == (4, 1)
    assert job.stages[0].early_exit is True  # the stage's own switch is untouched
    assert plain.early_exit is None
    assert job.spec_hash() != plain.spec_hash()
    # A spec without the section hashes as before it existed (runs started earlier resume).
    assert "early_exit" not in plain.model_dump(mode="json", exclude_defaults=True)


def test_agreement_example_loads() -> None:
    job = load_job(PROJECT_ROOT / "examples" / "gsm8k-agreement.yaml")
    assert job.early_exit is not None and job.early_exit.agreement <= job.samples_per_prompt
    assert all(st.kind == "solve" for st in job.stages)
