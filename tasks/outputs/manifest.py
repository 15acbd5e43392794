"""What an export is made of: its two forms, the files written for them, and manifest.json
(an `ExportManifest`) that names the run, its spec hash, counts and each file's sha256.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from foldem import __version__
from foldem.spec.sections import ExportFormat

ExportForm = Literal["chat", "plain"]
FORMS: tuple[ExportForm, ...] = ("chat", "plain")
PLAIN_COLUMNS = ("problem", "solution", "answer", "reference_answer", "run_id", "prompt_id",
                 "sample_index")
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


class ExportManifest(_Model):
    """What manifest.json says about an export."""

    run_id: str
    job_name: str
    spec_hash: str
    code_version: str = Field(description="The foldem code that generated the run.")
    run_status: str
    rows: int = Field(description="Accepted samples exported (the rows of every file).")
    samples_by_status: dict[str, int] = Field(
        description="All of the run's samples by status when the export was made.")
    system_prompt: str | None = None
    row_order: str = "prompt_id, sample_index"
    files: list[ExportedFile]
    created_at: datetime
    foldem_version: str = __version__


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
