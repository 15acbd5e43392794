"""Process one shard: its samples run concurrently; results are written in batches.

Nothing is lost on a crash beyond the samples still in flight: each finished sample is written
(sample, rejection and ledger rows in one transaction) within `flush_seconds`. A re-run skips
samples already in a final state, so a retried shard resumes instead of duplicating.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from tasks.models import SampleResult, WorkItem
from tasks.progress import ProgressBoard
from tasks.runner import Engine

SaveBatch = Callable[[Sequence[SampleResult]], None]
log = logging.getLogger("foldem.shard")


class ResultWriter:
    """Buffers finished samples and writes them in batches off the event loop."""

    def __init__(self, save: SaveBatch, *, batch_size: int = 32,
                 flush_seconds: float = 1.0) -> None:
        self._save = save
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._buffer: list[SampleResult] = []
        self._lock = asyncio.Lock()
        self.written = 0

    async def add(self, result: SampleResult) -> None:
        self._buffer.append(result)
        if len(self._buffer) >= self._batch_size:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            batch, self._buffer = self._buffer, []
            if batch:
                try:
                    await asyncio.to_thread(self._save, batch)
                except BaseException:
                    self._buffer = batch + self._buffer  # keep them for the next try
                    raise
                self.written += len(batch)

    async def run_periodic(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            await self.flush()


async def process_items(engine: Engine, items: Sequence[WorkItem], *, save: SaveBatch,
                        board: ProgressBoard | None = None) -> list[SampleResult]:
    """Run every item of a shard concurrently (the endpoint's semaphore bounds the streams)."""
    writer = ResultWriter(save)
    results: list[SampleResult] = []

    async def one(item: WorkItem) -> None:
        result = await engine.run_sample(item)
        results.append(result)
        if board is not None:
            board.record(result)
        await writer.add(result)

    ticker = asyncio.create_task(writer.run_periodic())
    try:
        await asyncio.gather(*(one(item) for item in items))
    finally:
        ticker.cancel()
        try:
            await ticker
        except asyncio.CancelledError:
            pass
        await writer.flush()
    return results
