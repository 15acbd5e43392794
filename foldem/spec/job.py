"""The job spec: a YAML file validated into typed models before any call is made.

`load_job(path)` returns a `JobSpec` or raises `SpecError` naming the file, the field and what
is wrong. Paths in the spec are relative to the spec file; `data://...` paths name the shared
data set (see `foldem.core.data`).

The section models live in foldem/spec/sections.py (prompts, sampling, early exit by
agreement, export, dedup, quality gate), foldem/spec/stages.py (stages, checkpoints, validators,
the step judge) and foldem/spec/endpoints.py (endpoints, limits, breaker, replay, the local
model server); every one is importable from here.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from foldem.core.errors import SpecError, ValidatorLoadError
from foldem.spec.endpoints import (
    Endpoint,
    LocalModel,
    Replay,
)
from foldem.spec.sections import (
    AgreementExit,
    DedupSettings,
    Export,
    PromptSource,
    QualityGateSettings,
    Sampling,
    _Strict,
)
from foldem.spec.stages import Stage


class JobSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    prompts: PromptSource
    samples_per_prompt: int = Field(1, ge=1, le=1000)
    endpoints: list[Endpoint] = Field(min_length=1)
    replay: Replay = Field(default_factory=lambda: Replay())
    local: LocalModel = Field(default_factory=lambda: LocalModel(),
                              description="The local model server, for endpoints whose "
                              "base_url is 'local'.")
    sampling: Sampling = Field(default_factory=lambda: Sampling())
    stages: list[Stage] = Field(min_length=1)
    early_exit: AgreementExit | None = Field(
        None, description="Stop a prompt's remaining samples once k accepted samples agree on "
        "the final answer: `{agreement: k}`. (A stage's own early_exit stops one stream at its "
        "complete final answer.)")
    shard_size: int = Field(32, ge=1, le=100_000, description="Samples per Prefect task.")
    in_flight: bool = Field(True, description="Judge while streaming and abort at the first "
                            "rejection (MSIFR). false: generate every sample in full, then filter "
                            "with the same validators (the baseline benchmarks compare against).")
    database_url: str | None = Field(None, description="Postgres URL; DATABASE_URL overrides; "
                                     "unset: embedded Postgres.")
    export: Export = Field(default_factory=lambda: Export())
    dedup: DedupSettings = Field(default_factory=lambda: DedupSettings())
    quality_gate: QualityGateSettings = Field(default_factory=lambda: QualityGateSettings())

    # Set by load_job, not by the YAML: where relative paths resolve from.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _cross(self) -> JobSpec:
        names = [e.name for e in self.endpoints]
        if len(set(names)) != len(names):
            raise ValueError(f"endpoint names must be unique, got {names}")
        stage_names = [s.name for s in self.stages]
        if len(set(stage_names)) != len(stage_names):
            raise ValueError(f"stage names must be unique, got {stage_names}")
        for i, st in enumerate(self.stages):
            unknown_eps = [n for n in st.endpoint_names or [] if n not in names]
            if unknown_eps:
                raise ValueError(f"stages[{i}].endpoint {unknown_eps[0]!r} is not one of {names}")
            if st.step_judge is not None:
                if st.kind != "solve":
                    raise ValueError(f"stages[{i}].step_judge: only a 'solve' stage streams "
                                     f"steps to judge (this one is {st.kind!r})")
                unknown_judges = [n for n in st.step_judge.endpoint_names if n not in names]
                if unknown_judges:
                    raise ValueError(f"stages[{i}].step_judge.endpoint "
                                     f"{unknown_judges[0]!r} is not one of {names}")
            if st.kind == "problem" and i != 0:
                raise ValueError(f"stages[{i}]: a 'problem' stage can only come first")
        unknown = set(self.quality_gate.acceptance_bounds) - {*stage_names, "dedup"}
        if unknown:
            raise ValueError(f"quality_gate.acceptance_bounds names unknown stage(s) "
                             f"{sorted(unknown)}; stages: {stage_names}")
        kinds = [s.kind for s in self.stages]
        if self.early_exit is not None:
            k = self.early_exit.agreement
            if k > self.samples_per_prompt:
                raise ValueError(f"early_exit.agreement is {k}, but a prompt has only "
                                 f"samples_per_prompt = {self.samples_per_prompt} samples: k "
                                 "accepted samples could never agree (lower k or raise "
                                 "samples_per_prompt)")
            if "problem" in kinds:
                raise ValueError("early_exit.agreement: with a 'problem' stage every sample "
                                 "solves a problem of its own, so their answers cannot agree")
        if "solve" not in kinds:
            raise ValueError("a job needs a 'solve' stage")
        for i, kind in enumerate(kinds):
            if kind == "judge" and "solve" not in kinds[:i]:
                raise ValueError(f"stages[{i}]: a 'judge' stage must follow a 'solve' stage")
        return self

    def endpoints_for(self, stage: Stage) -> list[Endpoint]:
        """The endpoints a stage spreads its calls over (one, unless it lists several)."""
        by_name = {e.name: e for e in self.endpoints}
        return [by_name[n] for n in stage.endpoint_names or [self.endpoints[0].name]]

    def endpoint_for(self, stage: Stage) -> Endpoint:
        """The stage's first (or only) endpoint."""
        return self.endpoints_for(stage)[0]

    def max_tokens_for(self, stage: Stage) -> int:
        return stage.max_tokens or self.sampling.max_tokens

    def snapshot(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def spec_hash(self) -> str:
        # Defaults left out: a setting added to foldem later does not change the hash of a
        # spec that does not use it, so runs started before an upgrade still resume.
        blob = json.dumps(self.model_dump(mode="json", exclude_defaults=True),
                          sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def resolve_path(self, path: str) -> Path:
        from foldem.core.data import resolve_data_path  # local import: data pulls in settings

        if path.startswith("data://"):
            return resolve_data_path(path)
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _model_types(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, unions, lists, dicts)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _model_types(arg)]


def _field_names(model: type[BaseModel]) -> set[str]:
    names: set[str] = set()
    for name, info in model.model_fields.items():
        if not info.exclude:
            names |= {name} | ({info.alias} if info.alias else set())
    return names


def _models_at(loc: tuple[int | str, ...]) -> list[type[BaseModel]]:
    """The models that can stand at `loc` inside a job spec."""
    models: list[type[BaseModel]] = [JobSpec]
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a list: the same models
        nxt = [m for model in models if (info := model.model_fields.get(str(part))) is not None
               for m in _model_types(info.annotation)]
        models = nxt or models  # a tagged-union tag in the path: stay with what we have
    return models


def _nested_paths(model: type[BaseModel], prefix: str = "", depth: int = 3) -> dict[str, str]:
    """{field name: its dotted path below `model`} for the fields of nested models."""
    found: dict[str, str] = {}
    for name, info in model.model_fields.items():
        for inner in _model_types(info.annotation) if depth else []:
            for leaf in _field_names(inner):
                found.setdefault(leaf, f"{prefix}{name}.{leaf}")
            for leaf, path in _nested_paths(inner, f"{prefix}{name}.", depth - 1).items():
                found.setdefault(leaf, path)
    return found


def _explain(error: Any) -> str:
    """Pydantic's message, with the nearest real field for a mistyped one: at the same level,
    else one level or more down (`temperature` belongs under `sampling`)."""
    if error["type"] != "extra_forbidden":
        return str(error["msg"])
    key = str(error["loc"][-1])
    models = _models_at(tuple(error["loc"][:-1]))
    here = sorted(set().union(*(_field_names(m) for m in models)))
    close = difflib.get_close_matches(key, here, n=1, cutoff=0.6)
    if close:
        hint = f"did you mean {close[0]!r}?"
    else:
        below = {leaf: path for m in models for leaf, path in _nested_paths(m).items()}
        deeper = difflib.get_close_matches(key, sorted(below), n=1, cutoff=0.75)
        hint = (f"did you mean {below[deeper[0]]!r}?" if deeper
                else f"known fields here: {', '.join(here)}")
    return f"unknown field {key!r} ({error['msg']}); {hint}"


def parse_job(data: Any, *, file: str = "<spec>", base_dir: Path | None = None) -> JobSpec:
    if not isinstance(data, dict):
        got = type(data).__name__
        raise SpecError(file, [("", f"expected a mapping at the top level, got {got}")])
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        problems = [(_field_path(e["loc"]), _explain(e)) for e in exc.errors()]
        raise SpecError(file, problems) from None
    spec.base_dir = base_dir or Path(".")
    _check_validators(spec, file)
    return spec


def _check_validators(spec: JobSpec, file: str) -> None:
    from validators.registry import build  # validators import nothing from here

    problems = []
    for i, st in enumerate(spec.stages):
        for j, ref in enumerate(st.validators):
            try:
                build(ref.name, ref.params)
            except ValidatorLoadError as exc:
                problems.append((f"stages[{i}].validators[{j}]", exc.reason if exc.name == ref.name
                                 else exc.message))
    if problems:
        raise SpecError(file, problems)


def load_job(path: str | Path) -> JobSpec:
    """Read and validate a job spec file."""
    p = Path(path)
    if not p.is_file():
        raise SpecError(str(p), [("", "job spec not found (no such file)")])
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(str(p), [("", f"not UTF-8 text: {exc}")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(str(p), [("", f"{where}malformed YAML: {problem}")]) from None
    return parse_job(data, file=str(p), base_dir=p.resolve().parent)
