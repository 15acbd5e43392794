"""The export's file formats: one `Sink` class per format, registered by name in `SINKS`.

A sink is one output file of one form (chat or plain) written under a temporary name: `write`
takes batches of rows, `close` flushes them, `finish` renames the file into place and describes
it, `discard` removes it. Memory stays bounded however large the run: rows go out as they come
(JSONL) or one row group at a time (Parquet).

The format names a spec may use are `foldem.spec.sections.EXPORT_FORMATS`; this module refuses
to import unless it has a sink for each of them and for nothing else. The names live with the
spec because a spec is checked before any call is made and cannot import this layer; the check
runs here because only this module sees both lists. So a format named in a spec always has a
sink when the run ends, and a sink no spec can name does not linger. A new format is a name
added to `ExportFormat` and a class here decorated with `@sink("name")`.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, TypeVar

from foldem.spec.sections import EXPORT_FORMATS, ExportFormat
from tasks.outputs.manifest import (
    CHAT_COLUMNS,
    PLAIN_COLUMNS,
    ExportedFile,
    ExportForm,
    file_sha256,
)

if TYPE_CHECKING:  # pyarrow is imported only when exporting Parquet (~0.5 s)
    import pyarrow as pa

ROW_GROUP_ROWS = 10_000  # Parquet row group size: large enough to compress, small to hold

Row = dict[str, Any]


class Sink(ABC):
    """One output file (`{form}.{format}`) under a temporary name until `finish`."""

    format: ClassVar[ExportFormat]

    def __init__(self, out_dir: Path, form: ExportForm) -> None:
        self.form = form
        self.path = out_dir / f"{form}.{self.format}"
        self.tmp = out_dir / f".{form}.{self.format}.tmp-{os.getpid()}"
        self.rows = 0

    def write(self, rows: Sequence[Row]) -> None:
        self.rows += len(rows)
        self._write(rows)

    @abstractmethod
    def _write(self, rows: Sequence[Row]) -> None: ...

    @abstractmethod
    def close(self) -> None:
        """Flush everything to the temporary file; a sink with no rows is still a valid file."""

    def finish(self) -> ExportedFile:
        os.replace(self.tmp, self.path)
        return ExportedFile(name=self.path.name, form=self.form, format=self.format,
                            rows=self.rows, bytes=self.path.stat().st_size,
                            sha256=file_sha256(self.path))

    def discard(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - already failing; the original error is what matters
            pass
        self.tmp.unlink(missing_ok=True)


SINKS: dict[str, type[Sink]] = {}
_S = TypeVar("_S", bound=type[Sink])


def sink(name: ExportFormat) -> Callable[[_S], _S]:
    """Register a Sink class as the writer of format `name`."""

    def register(cls: _S) -> _S:
        if name in SINKS:
            raise RuntimeError(f"two sinks for the export format {name!r}")
        cls.format = name
        SINKS[name] = cls
        return cls

    return register


# ----------------------------------------------------------------------------------- the sinks


def _json_line(row: Mapping[str, Any]) -> bytes:
    # U+2028/2029 are legal inside JSON strings but are line breaks to str.splitlines and some
    # JSONL readers: escape them so one sample is always exactly one line.
    text = json.dumps(row, ensure_ascii=False)
    return (text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + "\n").encode()


@sink("jsonl")
class JsonlSink(Sink):
    """One JSON object per line, UTF-8."""

    def __init__(self, out_dir: Path, form: ExportForm) -> None:
        super().__init__(out_dir, form)
        self._file: IO[bytes] = self.tmp.open("wb")

    def _write(self, rows: Sequence[Row]) -> None:
        self._file.write(b"".join(_json_line(r) for r in rows))

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def _arrow_schema(form: ExportForm) -> pa.Schema:
    import pyarrow as pa

    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    types = {"messages": pa.list_(message), "sample_index": pa.int64(),
             "early_exit": pa.bool_()}
    columns = CHAT_COLUMNS if form == "chat" else PLAIN_COLUMNS
    return pa.schema([(name, types.get(name, pa.string())) for name in columns])


@sink("parquet")
class ParquetSink(Sink):
    """Parquet with a fixed schema per form, written ROW_GROUP_ROWS rows per row group."""

    def __init__(self, out_dir: Path, form: ExportForm) -> None:
        super().__init__(out_dir, form)
        import pyarrow.parquet as pq

        self._schema = _arrow_schema(form)
        self._parquet: Any = pq.ParquetWriter(self.tmp, self._schema)
        self._pending: list[Row] = []

    def _write(self, rows: Sequence[Row]) -> None:
        self._pending.extend(rows)
        while len(self._pending) >= ROW_GROUP_ROWS:
            self._write_row_group(self._pending[:ROW_GROUP_ROWS])
            del self._pending[:ROW_GROUP_ROWS]

    def _write_row_group(self, rows: list[Row]) -> None:
        import pyarrow as pa

        table = pa.Table.from_pylist(rows, schema=self._schema)
        self._parquet.write_table(table, row_group_size=len(rows))

    def close(self) -> None:
        if self._pending:
            self._write_row_group(self._pending)
            self._pending = []
        self._parquet.close()  # an export with no rows is still a valid file with the schema


def _check_registry() -> None:
    missing = [f for f in EXPORT_FORMATS if f not in SINKS]
    unnamed = [f for f in SINKS if f not in EXPORT_FORMATS]
    if missing or unnamed:
        raise RuntimeError(f"export sinks and the spec's formats disagree: no sink for "
                           f"{missing}, sinks no spec can name: {unnamed}")


_check_registry()
