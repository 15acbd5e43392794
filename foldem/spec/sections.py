"""The sections of a job spec besides its endpoints (foldem/spec/endpoints.py) and stages
(foldem/spec/stages.py): prompts, sampling, early exit by agreement, export, dedup and the
quality gate; and the strict base every section shares (an unknown key is an error, never
silently ignored).

`JobSpec` and `load_job` live in foldem/spec/job.py.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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


class Sampling(_Strict):
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int = Field(1024, ge=1, le=1_000_000)
    seed_per_sample: bool = Field(True, description="Send seed = sample index so samples of "
                                  "one prompt differ reproducibly.")


class AgreementExit(_Strict):
    """The job's `early_exit:` section: stop a prompt's remaining samples once `agreement`
    accepted samples agree on the final answer (equal normal forms, or equivalent by the answer
    comparison the validators use). A sample not needed then is stored as 'superseded'."""

    agreement: int = Field(description="How many accepted samples must agree (k, at least 2 "
                           "and at most samples_per_prompt).")
    spare: int = Field(0, ge=0, le=1000, description="Samples a prompt may stream beyond those "
                       "that could still complete the agreement: a prompt finishes sooner, and "
                       "the spare streams still running when k agree are cut (ledger "
                       "abort_reason 'agreement'). 0: a sample starts only when it is needed, "
                       "so agreement never wastes a token.")

    @field_validator("agreement")
    @classmethod
    def _at_least_two(cls, k: int) -> int:
        if k < 2:
            raise ValueError(f"agreement must be at least 2, got {k}: one sample agrees with "
                             "nothing (to keep every accepted sample, leave early_exit out)")
        return k

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, data: Any) -> Any:
        if isinstance(data, bool):
            raise ValueError("the job-level early_exit stops a prompt's samples once k agree: "
                             "write `early_exit: {agreement: k}`; to stop a stream at its "
                             "complete final answer, set `early_exit: true` on the stage "
                             "(stages[].early_exit, on by default)")
        if isinstance(data, int):
            raise ValueError(f"write `early_exit: {{agreement: {data}}}` (k accepted samples "
                             "that agree end the prompt)")
        return data


#: The file formats an export may be written in, in the order they are written: the one list of
#: them. The spec is checked before any call is made, and it cannot ask tasks/outputs what it can
#: write (that layer sits above this one), so the names live here and each has a sink in
#: tasks/outputs/sinks.py, which refuses to import unless the two agree exactly.
ExportFormat = Literal["jsonl", "parquet"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)


class Export(_Strict):
    dir: str = Field("out/{run_id}", description="Where the accepted samples go "
                     "(chat.*, plain.*, manifest.json); {job} and {run_id} are filled in. "
                     "Relative to the working directory.")
    formats: list[ExportFormat] = Field(list(EXPORT_FORMATS), min_length=1)
    system_prompt: str | None = Field(None, description="System message of the chat form; "
                                      "default: the solve stage's `system`, if it has one.")
    strip_calculator_markup: bool = Field(
        False, description="Remove GSM8K-style calculator annotations (`<<48/2=24>>`) from the "
        "exported solutions.")


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
    max_failed_share: float = Field(
        0.2, ge=0.0, le=1.0, description="The run is quarantined when more than this share of "
        "its samples failed (endpoint errors; rejections do not count). 1 turns the check off.")

    @field_validator("acceptance_bounds")
    @classmethod
    def _bounds_are_shares(cls, bounds: dict[str, tuple[float, float]]
                           ) -> dict[str, tuple[float, float]]:
        for stage, (low, high) in bounds.items():
            if not 0.0 <= low <= high <= 1.0:
                raise ValueError(f"acceptance_bounds[{stage!r}] must be [min, max] with "
                                 f"0 <= min <= max <= 1, got [{low}, {high}]")
        return bounds
