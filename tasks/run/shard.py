"""Process one shard: its samples run concurrently; results are written in batches.

Nothing is lost on a crash beyond the samples still in flight: each finished sample is written
(sample, rejection and ledger rows in one transaction) within `flush_seconds`. On an interrupt
(Ctrl-C cancels the shard) the samples in flight are cancelled and the ledger rows of the calls
they sent, cut short, are written with the last batch: the tokens were paid for. A re-run skips
samples already in a final state, so a retried shard resumes instead of duplicating.

Under early exit by agreement (the job's `early_exit: {agreement: k}`) a shard holds whole
prompts, and each prompt's samples run under tasks/engine/agreement.py: only those that could
still complete the agreement stream; the rest are written 'superseded' once k agree.

A database that goes away for a moment (a restart, a failover) is waited for: a batch that
fails with DatabaseError is retried with backoff, and the finished samples stay buffered
meanwhile. If it stays away longer, the shard fails cleanly — its samples still running are
cancelled, so nothing of a failed attempt writes later beside its retry — and a re-run with the
same run id picks up what was not written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence

from foldem.core.errors import DatabaseError
from foldem.spec.sections import AgreementExit
from tasks.engine.agreement import AnswerTally, run_prompt
from tasks.engine.runner import Engine, SampleCut
from tasks.records.models import SampleResult, WorkItem
from tasks.run.progress import ProgressBoard
from validators.lib.answer_equivalence import warm_up

SaveBatch = Callable[[Sequence[SampleResult]], None]
log = logging.getLogger("foldem.shard")


class ResultWriter:
    """Buffers finished samples and writes them in batches off the event loop.

    A write that fails with DatabaseError is tried again `retries` times, waiting `backoff`
    seconds, doubling up to `max_backoff` (defaults: ~45 s in all, enough for a restart).
    Writes are idempotent (tasks/store/storage.py), so a retry after a commit whose answer was lost
    duplicates nothing.
    """

    def __init__(self, save: SaveBatch, *, batch_size: int = 32, flush_seconds: float = 1.0,
                 retries: int = 6, backoff: float = 0.5, max_backoff: float = 16.0) -> None:
        self._save = save
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._buffer: list[SampleResult] = []
        self._lock = asyncio.Lock()
        self.written = 0
        self.retried = 0  # failed writes that were tried again

    def keep(self, result: SampleResult) -> None:
        """Buffer without writing now (the next flush writes it)."""
        self._buffer.append(result)

    async def add(self, result: SampleResult) -> None:
        self._buffer.append(result)
        if len(self._buffer) >= self._batch_size:
            await self.flush()

    async def _save_with_retries(self, batch: list[SampleResult]) -> None:
        delay = self._backoff
        for attempt in range(self._retries + 1):
            try:
                await asyncio.to_thread(self._save, batch)
                return
            except DatabaseError as exc:
                if attempt >= self._retries:
                    raise
                self.retried += 1
                log.warning("writing %d samples failed (%s); retry %d of %d in %.1f s",
                            len(batch), exc.message, attempt + 1, self._retries, delay)
                await asyncio.sleep(delay)
                delay = min(self._max_backoff, delay * 2)

    async def flush(self) -> None:
        async with self._lock:
            batch, self._buffer = self._buffer, []
            if batch:
                try:
                    await self._save_with_retries(batch)
                except BaseException:
                    self._buffer = batch + self._buffer  # keep them for the next try
                    raise
                self.written += len(batch)

    async def run_periodic(self) -> None:
        while True:
            await asyncio.sleep(self._flush_seconds)
            try:
                await self.flush()
            except DatabaseError as exc:  # kept in the buffer; the next flush tries again
                log.warning("periodic write failed: %s", exc.message)


async def process_items(engine: Engine, items: Sequence[WorkItem], *, save: SaveBatch,
                        board: ProgressBoard | None = None,
                        writer: ResultWriter | None = None,
                        agreement: AgreementExit | None = None,
                        agreed: Mapping[str, Sequence[str | None]] | None = None,
                        engine_for: Callable[[WorkItem], Engine] | None = None
                        ) -> list[SampleResult]:
    """Run every item of a shard concurrently (the endpoint's semaphore bounds the streams).

    With `agreement` (the job's `early_exit`), each prompt's samples run under its rule
    (tasks/engine/agreement.py), seeded with the accepted answers `agreed` already stored per
    prompt id; the shard must hold all of a prompt's pending samples. `engine_for` picks the
    engine per item (a benchmark whose items differ in their checkpoints); default `engine`."""
    writer = writer or ResultWriter(save)
    results: list[SampleResult] = []
    pick = engine_for or (lambda _: engine)

    def record(result: SampleResult) -> None:
        results.append(result)
        if board is not None:
            board.record(result)

    def handed_over(result: SampleResult) -> None:
        # Cancelled mid-call, it hands over its calls' ledger rows, for the flush below: cut
        # by Ctrl-C the sample is generated again on resume (the tokens it cost are not paid
        # twice in the ledger); cut because k siblings agreed it is final, superseded.
        writer.keep(result)
        if not result.interrupted:
            record(result)

    async def finished(result: SampleResult) -> None:
        record(result)
        await writer.add(result)

    async def run(item: WorkItem, cut: SampleCut | None = None) -> SampleResult:
        return await pick(item).run_sample(item, on_interrupt=handed_over, cut=cut)

    async def one(item: WorkItem) -> None:
        await finished(await run(item))

    if agreement is None:
        work = [one(item) for item in items]
    else:
        # Comparing answers may need math-verify, whose first use is slow: pay it once per
        # process off the event loop, not on the stream of the first sample that needs it.
        await asyncio.to_thread(warm_up)
        by_prompt: dict[str, list[WorkItem]] = {}
        for item in items:
            by_prompt.setdefault(item.prompt.prompt_id, []).append(item)
        seeds = agreed or {}
        work = [run_prompt(pick(group[0]).run_id, group,
                           AnswerTally.seeded(agreement.agreement, seeds.get(pid, ())),
                           spare=agreement.spare, run=run, finished=finished)
                for pid, group in by_prompt.items()]

    ticker = asyncio.create_task(writer.run_periodic())
    samples = [asyncio.create_task(w) for w in work]
    try:
        await asyncio.gather(*samples)
    except BaseException:
        # A failed shard stops all of its samples: left running, they would write beside the
        # shard's retry (and count their calls a second time in the ledger).
        for task in samples:
            task.cancel()
        await asyncio.gather(*samples, return_exceptions=True)
        raise
    finally:
        ticker.cancel()
        try:
            await ticker
        except asyncio.CancelledError:
            pass
        await writer.flush()
    return results
