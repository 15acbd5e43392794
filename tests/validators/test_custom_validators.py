"""A user's own validators: named by dotted path in a job spec, or registered through the
`foldem.validators` entry-point group, they load, are checked against the contract, and run
through the same StagePolicy as the built-ins. The package under test is
tests/support/custom_validator_pkg (importable as `tests.support.custom_validator_pkg`: pytest
puts the repository root on sys.path because tests/ is a package)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from foldem.core.errors import SpecError, ValidatorLoadError
from foldem.spec.job import parse_job
from tasks.engine.policy import Action, StagePolicy
from tasks.engine.runner import build_stage_validators
from validators.base import Checkpoint, ProblemContext, Step
from validators.registry import build, resolve

PKG = "tests.support.custom_validator_pkg"
SHOUTING = f"{PKG}.shouting.NoShouting"
CTX = ProblemContext(problem="Tom has 3 apples and buys 4 more. How many apples does he have?")
CALM = Checkpoint(0, (Step(0, "He has 3 + 4 = 7 apples."),))
LOUD = Checkpoint(1, (Step(1, "THE ANSWER IS SEVEN APPLES, OBVIOUSLY"),))
FINAL = Checkpoint(2, (Step(2, "#### 7"),), final=True)


def spec(validators: list[dict[str, Any]]) -> dict[str, Any]:
    """The smallest job spec with one solve stage using `validators`."""
    return {
        "name": "custom-validators",
        "prompts": {"path": "prompts.jsonl"},
        "endpoints": [{"name": "replay", "base_url": "replay", "model": "*"}],
        "stages": [{"name": "solve", "template": "{problem}", "validators": validators}],
    }


def stage_policy(validators: list[dict[str, Any]]) -> StagePolicy:
    """Load the spec and build the stage's validators as the runner does, then open a policy."""
    job = parse_job(spec(validators), file="job.yaml")
    return StagePolicy(build_stage_validators(job)["solve"], CTX, early_exit=False)


def test_the_package_is_importable_from_the_repository_root() -> None:
    assert importlib.util.find_spec(PKG) is not None


def test_dotted_path_in_a_job_spec_loads_and_runs_through_the_policy() -> None:
    policy = stage_policy([{"name": SHOUTING}])
    assert policy.judge(CALM).action is Action.CONTINUE
    decision = policy.judge(LOUD)
    assert decision.action is Action.REJECT
    assert decision.verdict is not None
    assert (decision.verdict.validator, decision.verdict.reason) == ("no_shouting", "shouting")
    assert decision.verdict.step_index == 1


def test_dotted_path_params_are_validated_and_used() -> None:
    lenient = stage_policy([{"name": SHOUTING, "params": {"min_letters": 100}}])
    assert lenient.judge(LOUD).action is Action.CONTINUE  # the step is shorter than 100 letters
    with pytest.raises(SpecError) as err:
        parse_job(spec([{"name": SHOUTING, "params": {"min_letters": "many"}}]), file="job.yaml")
    field, message = err.value.problems[0]
    assert field == "stages[0].validators[0]" and "min_letters" in message


def test_colon_form_of_a_dotted_path() -> None:
    assert resolve(f"{PKG}.shouting:NoShouting") is resolve(SHOUTING)


@pytest.fixture
def plugin_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed distribution (a dist-info on sys.path) declaring `foldem.validators` entry
    points, as `pip install` of a third-party package would leave it."""
    dist = tmp_path / "foldem_test_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: foldem-test-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[foldem.validators]\n"
        f"plugin_no_shouting = {PKG}.shouting:NoShouting\n"
        f"plugin_not_a_validator = {PKG}.broken:NotAValidator\n"
        f"plugin_missing_module = {PKG}.no_such_module:Thing\n")
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.usefixtures("plugin_dist")
def test_entry_point_validator_loads_and_runs_through_the_policy() -> None:
    policy = stage_policy([{"name": "plugin_no_shouting", "mode": "hard"}])
    decision = policy.judge(LOUD)
    assert decision.action is Action.REJECT
    assert decision.verdict is not None and decision.verdict.reason == "shouting"


@pytest.mark.usefixtures("plugin_dist")
@pytest.mark.parametrize(("name", "fragment"), [
    ("plugin_not_a_validator", "is not a subclass of validators.base.Validator"),
    ("plugin_missing_module", "entry point failed to load"),
])
def test_broken_entry_points_are_refused(name: str, fragment: str) -> None:
    with pytest.raises(ValidatorLoadError, match=fragment):
        build(name)


def test_entry_points_are_gone_when_the_distribution_is() -> None:
    with pytest.raises(ValidatorLoadError, match="unknown validator"):
        build("plugin_no_shouting")


CONTRACT_BREAKS = [
    (f"{PKG}.broken.NotAValidator", "is not a subclass of validators.base.Validator"),
    (f"{PKG}.broken.NOT_A_CLASS", "is not a subclass of validators.base.Validator"),
    (f"{PKG}.broken.MissingName", "class attribute 'name' must be a string"),
    (f"{PKG}.broken.MissingDescription", "class attribute 'description' must be a string"),
    (f"{PKG}.broken.ParamsNotAModel", "Params must be a pydantic BaseModel subclass"),
    (f"{PKG}.broken.AbstractOpen", "does not implement open"),
    (f"{PKG}.no_such_module.Thing", "cannot import"),
    (f"{PKG}.shouting.NoSuchClass", "has no 'NoSuchClass'"),
    ("no_such_validator", "unknown validator 'no_such_validator'; known: "),
]


@pytest.mark.parametrize(("name", "fragment"), CONTRACT_BREAKS)
def test_contract_is_checked_at_load(name: str, fragment: str) -> None:
    with pytest.raises(ValidatorLoadError) as err:
        build(name)
    assert fragment in err.value.message and name in err.value.message


@pytest.mark.parametrize(("name", "fragment"), CONTRACT_BREAKS)
def test_a_job_spec_naming_a_broken_validator_is_refused(name: str, fragment: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_job(spec([{"name": "arithmetic"}, {"name": name}]), file="job.yaml")
    assert [field for field, _ in err.value.problems] == ["stages[0].validators[1]"]
    assert fragment in str(err.value) and "job.yaml" in str(err.value)


@pytest.mark.parametrize("mode", ["hard", "soft"])
def test_a_validator_raising_in_feed_does_not_crash_the_policy(mode: str) -> None:
    raising = f"{PKG}.shouting.RaisesInFeed"
    policy = stage_policy([{"name": raising, "mode": mode}, {"name": SHOUTING}])
    for checkpoint in (CALM, FINAL):
        decision = policy.judge(checkpoint)
        assert decision.action is Action.CONTINUE and decision.utility == 1.0
    again = stage_policy([{"name": raising, "mode": mode}, {"name": SHOUTING}])
    decision = again.judge(LOUD)  # the validators after the broken one still judge
    assert decision.action is Action.REJECT
    assert decision.verdict is not None and decision.verdict.validator == "no_shouting"
