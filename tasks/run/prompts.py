"""Load a job's prompts from JSONL and expand them into work items."""

from __future__ import annotations

import re

from foldem.core.errors import InputFormatError
from foldem.core.jsonl import load_jsonl
from foldem.spec.job import JobSpec
from tasks.records.models import Prompt, WorkItem

#: A prompt longer than this is almost certainly a broken file, not a problem statement.
MAX_PROMPT_CHARS = 100_000


def load_prompts(job: JobSpec) -> list[Prompt]:
    """Read the prompt source; a malformed line fails with file, line and reason."""
    src = job.prompts
    path = job.resolve_path(src.path)
    pattern = re.compile(src.reference_pattern, re.MULTILINE) if src.reference_pattern else None
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for line_no, record in load_jsonl(path):
        text = record.get(src.field)
        if not isinstance(text, str) or not text.strip():
            has = ", ".join(repr(k) for k in list(record)[:20]) or "none"
            raise InputFormatError(str(path), line_no, f"field {src.field!r} is missing or not "
                                   "a non-empty string (prompts.field in the job spec); the "
                                   f"record's fields: {has}")
        if len(text) > MAX_PROMPT_CHARS:
            raise InputFormatError(str(path), line_no, f"prompt of {len(text):,} characters "
                                   f"exceeds the limit of {MAX_PROMPT_CHARS:,}")
        prompt_id = str(record.get(src.id_field)) if src.id_field else str(line_no - 1)
        if src.id_field and src.id_field not in record:
            raise InputFormatError(str(path), line_no, f"id field {src.id_field!r} is missing")
        if prompt_id in seen:
            raise InputFormatError(str(path), line_no, f"duplicate prompt id {prompt_id!r}")
        seen.add(prompt_id)
        prompts.append(Prompt(prompt_id=prompt_id, text=text,
                              reference_answer=_reference(record, src.reference_field, pattern)))
        if src.limit is not None and len(prompts) >= src.limit:
            break
    if not prompts:
        raise InputFormatError(str(path), 0, "no prompts in the file")
    return prompts


def _reference(record: dict[str, object], field: str | None,
               pattern: re.Pattern[str] | None) -> str | None:
    if field is None or not isinstance(record.get(field), str):
        return None
    value = str(record[field])
    if pattern is None:
        return value.strip()
    match = pattern.search(value)
    return match.group(1).strip() if match else None


def work_items(prompts: list[Prompt], samples_per_prompt: int,
               done: set[tuple[str, int]] | frozenset[tuple[str, int]] = frozenset()
               ) -> list[WorkItem]:
    """Every (prompt, sample index) not already in a final state."""
    return [WorkItem(prompt=p, sample_index=i) for p in prompts for i in range(samples_per_prompt)
            if (p.prompt_id, i) not in done]


def shard(items: list[WorkItem], size: int) -> list[list[WorkItem]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
