"""What an export is made of: its two forms, the files written for them, and manifest.json
(an `ExportManifest`) that names the run, the job behind it (endpoints and models, sampling,
stages and their validators), counts and each file's sha256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from foldem import __version__
from foldem.spec.sections import ExportFormat

ExportForm = Literal["chat", "plain"]
FORMS: tuple[ExportForm, ...] = ("chat", "plain")
#: Where a row came from, in both forms: joins back to `samples` and `ledger`, and says which
#: endpoint and model wrote the solution and how its stream ended.
TRACE_COLUMNS = ("run_id", "prompt_id", "sample_index", "endpoint", "model", "early_exit")
PLAIN_COLUMNS = ("problem", "solution", "answer", "reference_answer", *TRACE_COLUMNS)
CHAT_COLUMNS = ("messages", *TRACE_COLUMNS, "answer")
MANIFEST_NAME = "manifest.json"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ExportedFile(_Model):
    name: str = Field(description="File name inside the export directory.")
    form: ExportForm
    format: ExportFormat
    rows: int
    bytes: int
    sha256: str


class ExportCounts(_Model):
    """The run's samples when the export was made, and how many rows the export holds."""

    accepted: int = 0
    rejected: int = 0
    failed: int = 0
    superseded: int = 0  # not generated: k samples of the prompt agreed (never exported)
    exported: int = 0


class ManifestEndpoint(_Model):
    name: str
    model: str | None = Field(None, description="The model the job asked the endpoint for.")
    models_served: list[str] = Field(
        default_factory=list, description="The models the endpoint named in its replies to the "
        "run's calls (for a replay of `*`: the recorded generators).")


class ManifestStage(_Model):
    name: str
    kind: str
    endpoint: list[str] | None = Field(None, description="Endpoint names; None: the first.")
    system: str | None = None
    validators: list[str] = Field(default_factory=list, description="`name` or `name (soft)`.")
    step_judge: bool = False


class ExportManifest(_Model):
    """What manifest.json says about an export."""

    run_id: str
    job_name: str
    spec_hash: str
    code_version: str = Field(description="The foldem code that generated the run.")
    run_status: str
    rows: int = Field(description="Accepted samples exported (the rows of every file).")
    counts: ExportCounts
    samples_by_status: dict[str, int] = Field(
        description="All of the run's samples by status when the export was made.")
    endpoints: list[ManifestEndpoint] = Field(default_factory=list)
    sampling: dict[str, Any] = Field(default_factory=dict)
    stages: list[ManifestStage] = Field(default_factory=list)
    system_prompt: str | None = None
    strip_calculator_markup: bool = False
    row_order: str = "prompt_id, sample_index"
    files: list[ExportedFile]
    created_at: datetime
    foldem_version: str = __version__


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def job_stages(spec: Any) -> list[ManifestStage]:
    """The stages of a stored spec (`runs.spec`), read leniently: a field it lacks is left out."""
    out = []
    for stage in map(_map, _list(_map(spec).get("stages"))):
        endpoint = stage.get("endpoint")
        out.append(ManifestStage(
            name=str(stage.get("name")), kind=str(stage.get("kind") or "solve"),
            endpoint=[endpoint] if isinstance(endpoint, str) else endpoint or None,
            system=stage.get("system"), step_judge=stage.get("step_judge") is not None,
            validators=[str(v.get("name")) + (" (soft)" if v.get("mode") == "soft" else "")
                        for v in map(_map, _list(stage.get("validators")))]))
    return out


def job_endpoints(spec: Any, served: Mapping[str, list[str]]) -> list[ManifestEndpoint]:
    """The stored spec's endpoints, each with the models it named in the run (`served`)."""
    return [ManifestEndpoint(name=str(e.get("name")), model=e.get("model"),
                             models_served=served.get(str(e.get("name")), []))
            for e in map(_map, _list(_map(spec).get("endpoints")))]


def job_sampling(spec: Any) -> dict[str, Any]:
    return dict(_map(_map(spec).get("sampling")))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
