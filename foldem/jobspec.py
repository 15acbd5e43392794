"""The job spec: a YAML file validated into typed models before any call is made.

`load_job(path)` returns a `JobSpec` or raises `SpecError` naming the file, the field and what
is wrong. Paths in the spec are relative to the spec file; `data://...` paths name the shared
data set (see `foldem.data`).
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from foldem.errors import DataNotFoundError, SpecError, ValidatorLoadError

TEMPLATE_FIELDS = {"problem", "seed", "reference", "solution"}
REPLAY = "replay"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromptSource(_Strict):
    path: str = Field(description="JSONL file of prompts; relative to the spec, or data://...")
    field: str = Field("question", description="Field holding the problem (or seed) text.")
    id_field: str | None = Field(None, description="Field holding a stable prompt id; "
                                 "default: the 0-based line number.")
    reference_field: str | None = Field(None, description="Field holding a reference answer.")
    reference_pattern: str | None = Field(
        None, description="Regex with one group extracting the reference answer from "
        "reference_field (e.g. '####\\s*(.+)$'); default: the whole field.")
    limit: int | None = Field(None, ge=1, description="Use only the first N prompts.")

    @field_validator("reference_pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                compiled = re.compile(v, re.MULTILINE)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
            if compiled.groups < 1:
                raise ValueError("the pattern needs one capturing group")
        return v


class Timeouts(_Strict):
    connect: float = Field(10.0, gt=0, description="Seconds to open the connection.")
    first_token: float = Field(60.0, gt=0, description="Seconds from request to first chunk.")
    idle: float = Field(30.0, gt=0, description="Longest silence between two chunks, seconds.")
    total: float = Field(600.0, gt=0, description="Longest whole call, seconds.")


#: Characters Prefect refuses in a concurrency limit's name.
_LIMIT_NAME = r"^[^/%&<>]{1,120}$"


class Breaker(_Strict):
    """The circuit breaker of one endpoint (used when a stage lists several endpoints)."""

    failures_to_trip: int = Field(3, ge=1, le=1000, description="Consecutive failed calls "
                                  "(errors, timeouts; never rejections) that take the endpoint "
                                  "out of the rotation.")
    cooldown_seconds: float = Field(30.0, gt=0, le=3600, description="How long it stays out "
                                    "after tripping; doubles after each failed trial call.")
    max_cooldown_seconds: float = Field(300.0, gt=0, le=86400)
    max_wait_seconds: float = Field(60.0, ge=0, le=3600, description="When every endpoint of "
                                    "a stage is out, how long a call waits for one to come "
                                    "back before its sample fails.")

    @model_validator(mode="after")
    def _cap_above_start(self) -> Breaker:
        if self.max_cooldown_seconds < self.cooldown_seconds:
            raise ValueError("max_cooldown_seconds must be >= cooldown_seconds")
        return self


class EndpointLimits(_Strict):
    """Limits that hold across every process using the same Prefect API (Prefect global
    concurrency limits); unset: off, and no Prefect call is made per stream."""

    max_streams: int | None = Field(None, ge=1, le=100_000, description="Concurrent streams "
                                    "across all runs and workers.")
    requests_per_minute: int | None = Field(None, ge=1, le=10_000_000)
    tokens_per_minute: int | None = Field(None, ge=1, le=1_000_000_000, description="Prompt "
                                          "plus expected completion tokens (see ENDPOINTS.md).")
    burst_seconds: float = Field(10.0, gt=0, le=60, description="Rate limits: a quiet "
                                 "endpoint may take this many seconds' worth at once.")
    limit_name: str | None = Field(None, pattern=_LIMIT_NAME, description="Base name of the "
                                   "Prefect limits; default: derived from base_url and model, "
                                   "so every job calling the same server shares them.")

    @property
    def configured(self) -> bool:
        return (self.max_streams or self.requests_per_minute or self.tokens_per_minute) is not None


class Endpoint(_Strict):
    name: str = Field(description="Name used by stages and in the ledger.")
    base_url: str = Field(description="OpenAI-compatible base URL (…/v1), or 'replay' to start "
                          "the bundled replay endpoint on a free loopback port.")
    model: str = Field(description="Model name sent in each request.")
    api_key_env: str | None = Field(None, description="Environment variable holding the API key;"
                                    " unset: no key (local servers).")
    api_key_secret_block: str | None = Field(
        None, description="Name of a Prefect `Secret` block holding the API key (read from the "
        "Prefect API the run talks to); instead of api_key_env.")
    max_concurrent_streams: int = Field(16, ge=1, le=4096)
    timeouts: Timeouts = Field(default_factory=lambda: Timeouts())
    max_retries: int = Field(4, ge=0, le=20, description="Retries of 429/5xx/connection errors "
                             "before the first token.")
    require_abort_honoured: bool = Field(
        False, description="Refuse to run unless the newest `foldem probe` of this base_url and "
        "model (table endpoint_probes) measured that a disconnect stops generation.")
    continuous_usage: Literal["auto", "on", "off"] = Field(
        "auto", description="Ask for usage in every chunk (vLLM/SGLang). auto: try it, fall back "
        "if the endpoint refuses the option.")
    weight: float = Field(1.0, gt=0, le=1_000_000, description="Share of a stage's calls "
                          "when the stage lists several endpoints (with their current load).")
    limits: EndpointLimits = Field(default_factory=lambda: EndpointLimits())
    breaker: Breaker = Field(default_factory=lambda: Breaker())

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v != REPLAY and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an http(s):// URL or 'replay'")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _one_key_source(self) -> Endpoint:
        if self.api_key_env and self.api_key_secret_block:
            raise ValueError("give api_key_env or api_key_secret_block, not both")
        return self


class Replay(_Strict):
    traces: list[str] = Field(
        default_factory=lambda: ["data://traces/gsm8k_gpt3_dev.jsonl"],
        description="Trace files (JSONL, shared format) the replay endpoint plays back.")
    tokens_per_second: float = Field(200.0, ge=0, description="Pace per stream; 0 = unpaced.")


class Sampling(_Strict):
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1, le=1_000_000)
    seed_per_sample: bool = Field(True, description="Send seed = sample index so samples of "
                                  "one prompt differ reproducibly.")


class Checkpoints(_Strict):
    separator: str = Field("\n", min_length=1, description="Step separator in the stream.")
    every_step: bool = Field(True, description="Judge at every step boundary.")
    fractions: list[float] = Field(default_factory=list, description="Also judge when these "
                                   "fractions of expected_tokens have streamed (paper: [0.5]).")

    @field_validator("separator", mode="before")
    @classmethod
    def _unescape(cls, v: Any) -> Any:
        return v.encode().decode("unicode_escape") if isinstance(v, str) and "\\" in v else v

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < f < 1 for f in v):
            raise ValueError("fractions must lie strictly between 0 and 1")
        return sorted(set(v))

    @model_validator(mode="after")
    def _some(self) -> Checkpoints:
        if not self.every_step and not self.fractions:
            raise ValueError("set every_step: true or give at least one fraction")
        return self


class ValidatorRef(_Strict):
    name: str = Field(description="Registered name, entry-point name or dotted path.")
    params: dict[str, Any] = Field(default_factory=dict)
    mode: Literal["hard", "soft"] = Field("hard", description="hard: any fault rejects; "
                                          "soft: the score multiplies into the utility.")


class Stage(_Strict):
    name: str
    kind: Literal["problem", "solve", "judge"] = Field(
        "solve", description="problem: S1, generate a problem from a seed; solve: answer it; "
        "judge: S4, a model scores the solution 1-5 ({solution} in the template).")
    endpoint: str | list[str] | None = Field(
        None, description="Endpoint name, or a list of names to spread the calls over (by "
        "weight and load, away from failing ones); default: the first endpoint.")
    system: str | None = Field(None, description="System message.")
    template: str = Field(description="User message; fields: {problem}, {seed}, {reference}.")
    checkpoints: Checkpoints = Field(default_factory=lambda: Checkpoints())
    validators: list[ValidatorRef] = Field(default_factory=list)
    threshold: float = Field(0.5, ge=0, le=1, description="Reject when the product of soft "
                             "scores falls below this.")
    early_exit: bool = Field(True, description="Stop the stream once a complete final answer "
                             "has been written.")
    expected_tokens: int | None = Field(None, ge=1, description="Expected completion length; "
                                        "used by fraction checkpoints and tokens-saved figures.")
    max_tokens: int | None = Field(None, ge=1, description="Overrides sampling.max_tokens.")
    accept_at: int = Field(3, ge=1, le=5, description="judge stages: accept scores >= this "
                           "(the paper: 3).")

    @field_validator("endpoint")
    @classmethod
    def _endpoint_list(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list):
            if not v:
                raise ValueError("give at least one endpoint name (or leave endpoint out)")
            if len(set(v)) != len(v):
                raise ValueError(f"endpoint names repeat: {v}")
        return v

    @property
    def endpoint_names(self) -> list[str] | None:
        """The endpoint names this stage may call, in the spec's order; None: the default."""
        return [self.endpoint] if isinstance(self.endpoint, str) else self.endpoint

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(v) if f is not None}
        except ValueError as exc:
            raise ValueError(
                f"bad template: {exc} (write literal braces as {{{{ and }}}})") from None
        bad = names - TEMPLATE_FIELDS
        if bad:
            raise ValueError(f"unknown template field(s) {sorted(bad)}; "
                             f"allowed: {sorted(TEMPLATE_FIELDS)}")
        return v


class Export(_Strict):
    dir: str = Field("out/{run_id}", description="Where the accepted samples go "
                     "(chat.*, plain.*, manifest.json); {job} and {run_id} are filled in. "
                     "Relative to the working directory.")
    formats: list[Literal["jsonl", "parquet"]] = Field(["jsonl", "parquet"], min_length=1)
    system_prompt: str | None = Field(None, description="System message of the chat form.")


class DedupSettings(_Strict):
    """The job spec's `dedup:` section."""

    enabled: bool = True
    threshold: float = Field(0.85, gt=0, le=1, description="Remove a sample whose estimated "
                             "Jaccard similarity with a kept one is at least this.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations.")
    shingle: int = Field(5, ge=1, le=32, description="Word n-gram size.")
    field: Literal["solution", "problem"] = Field(
        "solution", description="solution: the last solve stage's text; problem: the problem "
        "(then every sample of a prompt after the first is a duplicate).")
    against_earlier_runs: bool = Field(True, description="Also remove samples that duplicate "
                                       "samples kept by earlier completed runs.")




class QualityGateSettings(_Strict):
    """The job spec's `quality_gate:` section."""

    enabled: bool = True
    acceptance_bounds: dict[str, tuple[float, float]] = Field(
        default_factory=dict, description="Per stage name: the allowed [min, max] share of the "
        "samples accepted among those accepted or rejected at the stage (endpoint failures do "
        "not count). A stage not listed is not bounded.")
    extra_reason_codes: list[str] = Field(
        default_factory=list, description="Reason codes to accept besides those the validators "
        "declare (e.g. from a custom validator that does not list its reason_codes).")

    @field_validator("acceptance_bounds")
    @classmethod
    def _bounds_are_shares(cls, bounds: dict[str, tuple[float, float]]
                           ) -> dict[str, tuple[float, float]]:
        for stage, (low, high) in bounds.items():
            if not 0.0 <= low <= high <= 1.0:
                raise ValueError(f"acceptance_bounds[{stage!r}] must be [min, max] with "
                                 f"0 <= min <= max <= 1, got [{low}, {high}]")
        return bounds


class JobSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    prompts: PromptSource
    samples_per_prompt: int = Field(1, ge=1, le=1000)
    endpoints: list[Endpoint] = Field(min_length=1)
    replay: Replay = Field(default_factory=lambda: Replay())
    sampling: Sampling = Field(default_factory=lambda: Sampling())
    stages: list[Stage] = Field(min_length=1)
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
            if st.kind == "problem" and i != 0:
                raise ValueError(f"stages[{i}]: a 'problem' stage can only come first")
        unknown = set(self.quality_gate.acceptance_bounds) - {*stage_names, "dedup"}
        if unknown:
            raise ValueError(f"quality_gate.acceptance_bounds names unknown stage(s) "
                             f"{sorted(unknown)}; stages: {stage_names}")
        kinds = [s.kind for s in self.stages]
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
        from foldem.data import resolve_data_path  # local import: data pulls in settings

        if path.startswith("data://"):
            return resolve_data_path(path)
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()


def _field_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def parse_job(data: Any, *, file: str = "<spec>", base_dir: Path | None = None) -> JobSpec:
    if not isinstance(data, dict):
        got = type(data).__name__
        raise SpecError(file, [("", f"expected a mapping at the top level, got {got}")])
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        problems = [(_field_path(e["loc"]), e["msg"]) for e in exc.errors()]
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
                                 else str(exc)))
    if problems:
        raise SpecError(file, problems)


def load_job(path: str | Path) -> JobSpec:
    """Read and validate a job spec file."""
    p = Path(path)
    if not p.is_file():
        raise DataNotFoundError(str(p), "job spec not found")
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
