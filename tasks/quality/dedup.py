"""Near-duplicate removal over a run's accepted samples (MinHash + LSH, datasketch).

Each accepted sample's text (the final solution, or the problem) becomes a set of word n-grams
("shingles") and a MinHash signature. Walking the run in (prompt_id, sample_index) order, a
sample is removed when its estimated Jaccard similarity with a sample kept before it reaches the
threshold — kept earlier in this run, or by an earlier completed run (their signatures are kept
in table sample_signatures). A removed duplicate becomes a rejection (stage "dedup", reason code
"near_duplicate") whose detail names the sample it duplicates; kept samples' signatures are
stored for later runs. All in one transaction, under an advisory lock: dedups never interleave.

Normalisation: NFKC, case-folded, split into words and single punctuation marks (so whitespace
and line breaks never matter). Digits are kept on purpose: two solutions that differ only in
their numbers solve different problems, and are not duplicates.

Memory: texts are streamed and dropped once hashed; the run is indexed INDEX_SAMPLES at a time
(~6 KB per sample, mostly LSH buckets) and signatures kept before a chunk are streamed from
Postgres, so memory depends on neither the run's size nor the history of earlier runs.

One module past 300 lines on purpose: the walk, the signature store and the lock are one
transaction's logic, and a reader checking "no sample is removed twice" needs them together.
"""
from __future__ import annotations

import re
import time
import unicodedata
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy import and_, bindparam, func, literal, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from foldem.core.errors import DatabaseError
from foldem.spec.sections import DedupSettings
from tasks.store.db import get_engine, session_scope
from tasks.store.schema import rejections, runs, sample_signatures, samples
from tasks.store.solutions import solution_text, solve_stage_names

if TYPE_CHECKING:  # datasketch pulls in scipy (~1.5 s): imported only when deduplicating
    from datasketch import MinHashLSH

STAGE = "dedup"
VALIDATOR = REASON_CODE = "near_duplicate"
SCHEME = "affine32"  # datasketch's permutation scheme: 32-bit hash values, stored as 4 bytes
SEED = 1  # datasketch's default permutation seed
# How a signature was made, stored with it (sample_signatures.scheme): only signatures with the
# same label are compared. Change the label whenever SCHEME, SEED, the shingle hash (CRC-32) or
# the normalisation in `shingles` changes, so old and new signatures are never mixed.
SIGNATURE_METHOD = "affine32-seed1-crc32-nfkc-v1"
FETCH_ROWS = 500  # rows per round trip when streaming texts or earlier signatures
INDEX_SAMPLES = 20_000  # samples indexed at once (~7 KB each in the LSH): bounds memory
HASH_CHUNK = 4096  # shingles hashed per numpy step: bounds the temporary array on long texts
WRITE_ROWS = 1000
_DEDUP_LOCK_KEY = 0x666F6C64656D + 4  # pg_advisory_xact_lock key: one dedup at a time
_TOKEN = re.compile(r"\w+|[^\w\s]")
# LSH band layout weighted for recall: every candidate is verified against its signature, so a
# false candidate costs one comparison while a missed one is a duplicate left in the data. At
# threshold 0.85 and 128 permutations: 12 bands of 10 rows, which finds a pair at Jaccard 0.85
# with probability 0.93 and at 0.9 with 0.994 (datasketch's even weights: 8x16, 0.46 and 0.81).
LSH_WEIGHTS = (0.05, 0.95)

SampleKey = tuple[str, int]  # (prompt_id, sample_index) within the run being deduplicated


class DedupResult(BaseModel):
    run_id: str
    enabled: bool
    examined: int = 0
    kept: int = 0
    removed_within_run: int = 0
    removed_against_earlier: int = 0
    earlier_signatures_checked: int = 0
    signatures_stored: int = 0
    seconds: float = 0.0
    samples_per_second: float = 0.0


def shingles(text_: str, size: int) -> set[bytes]:
    """Word n-grams of the normalised text (a text shorter than `size` words is one shingle)."""
    words = _TOKEN.findall(unicodedata.normalize("NFKC", text_).casefold())
    if len(words) <= size:
        return {" ".join(words).encode()}
    return {" ".join(words[i:i + size]).encode() for i in range(len(words) - size + 1)}


class _Hasher:
    """MinHash signatures with one shared set of permutations (built once, not per sample).

    Shingles are hashed to 32 bits with CRC-32 (one C call each via map) rather than datasketch's
    default per-shingle SHA-1 in Python, which took 60% of the time; datasketch's affine32 scheme
    pre-mixes every input hash with the MurmurHash3 finalizer before permuting, so CRC's linearity
    does not leak into the signature. Stored signatures depend on it (SIGNATURE_METHOD)."""

    def __init__(self, num_perm: int) -> None:
        from datasketch import MinHash

        self._minhash = MinHash
        self._permutations = MinHash(num_perm=num_perm, seed=SEED, scheme=SCHEME).permutations
        self.num_perm = num_perm

    def signature(self, items: set[bytes]) -> np.ndarray:
        mh = self._minhash(num_perm=self.num_perm, seed=SEED, scheme=SCHEME, hashfunc=int,
                           permutations=self._permutations)
        hashes = list(map(zlib.crc32, items))
        for start in range(0, len(hashes), HASH_CHUNK):
            mh.update_batch(hashes[start:start + HASH_CHUNK])
        return np.asarray(mh.hashvalues, dtype=np.uint32)


class _ChunkIndex:
    """A chunk's samples in order: an LSH index for candidates, signatures to verify them."""

    def __init__(self, settings: DedupSettings) -> None:
        from datasketch import LeanMinHash, MinHashLSH

        self._lean = LeanMinHash
        self.lsh: MinHashLSH = MinHashLSH(threshold=settings.threshold,
                                          num_perm=settings.num_perm, weights=LSH_WEIGHTS)
        self.threshold = settings.threshold
        self.keys: list[SampleKey] = []
        self.signatures: list[np.ndarray] = []

    def matches(self, signature: np.ndarray) -> Iterator[tuple[int, float]]:
        """(position in the chunk, estimated Jaccard) of each sample at the threshold."""
        sketch = self._lean(seed=SEED, hashvalues=signature, scheme=SCHEME)
        for pos in sorted(self.lsh.query(sketch)):
            similarity = float(np.mean(self.signatures[pos] == signature))
            if similarity >= self.threshold:
                yield pos, similarity

    def add(self, key: SampleKey, signature: np.ndarray) -> None:
        sketch = self._lean(seed=SEED, hashvalues=signature, scheme=SCHEME)
        self.lsh.insert(len(self.keys), sketch, check_duplication=False)
        self.keys.append(key)
        self.signatures.append(signature)


class _Duplicate(NamedTuple):
    of_run: str
    of_prompt: str
    of_index: int
    similarity: float


def _key(key: SampleKey) -> ColumnElement[Any]:
    return tuple_(literal(key[0], sa.Text), literal(key[1], sa.Integer))


def _same_method(settings: DedupSettings) -> list[ColumnElement[bool]]:
    """Signatures comparable with the ones these settings make."""
    sig = sample_signatures.c
    return [sig.field == settings.field, sig.shingle == settings.shingle,
            sig.num_perm == settings.num_perm, sig.scheme == SIGNATURE_METHOD]


class _RunDedup:
    """One dedup pass over a run, INDEX_SAMPLES accepted samples at a time, inside the
    caller's transaction."""

    def __init__(self, session: Session, run_id: str, run: Any, settings: DedupSettings) -> None:
        self.session, self.run_id, self.settings = session, run_id, settings
        self.started_at, self.solve = run.started_at, solve_stage_names(run.spec)
        self.hasher = _Hasher(settings.num_perm)
        self.result = DedupResult(run_id=run_id, enabled=True)

    def texts(self, after: SampleKey | None) -> Iterator[tuple[SampleKey, str]]:
        problem = self.settings.field == "problem"
        stmt = (select(samples.c.prompt_id, samples.c.sample_index,
                       samples.c.problem if problem else samples.c.stage_texts)
                .where(samples.c.run_id == self.run_id, samples.c.status == "accepted",
                       sa.true() if after is None else
                       tuple_(samples.c.prompt_id, samples.c.sample_index) > _key(after))
                .order_by(samples.c.prompt_id, samples.c.sample_index).limit(INDEX_SAMPLES)
                .execution_options(yield_per=FETCH_ROWS))
        for prompt_id, index, value in self.session.execute(stmt).tuples():
            yield (prompt_id, index), value if problem else solution_text(value, self.solve)

    def prior_signatures(self, first: SampleKey) -> Iterator[tuple[str, str, int, bytes]]:
        """Kept signatures made the same way before `first`: this run's before it in order and,
        when asked, those of runs that completed and started before this one, oldest first."""
        sig = sample_signatures.c
        this_run = and_(sig.run_id == self.run_id,
                        tuple_(sig.prompt_id, sig.sample_index) < _key(first))
        earlier = and_(runs.c.status == "completed",
                       tuple_(runs.c.started_at, runs.c.run_id) < tuple_(
                           literal(self.started_at, runs.c.started_at.type),
                           literal(self.run_id, sa.Text)))
        stmt = (select(sig.run_id, sig.prompt_id, sig.sample_index, sig.hashvalues)
                .join(runs, runs.c.run_id == sig.run_id)
                .join(samples, and_(samples.c.run_id == sig.run_id,
                                    samples.c.prompt_id == sig.prompt_id,
                                    samples.c.sample_index == sig.sample_index))
                .where(*_same_method(self.settings), samples.c.status == "accepted",
                       sa.or_(this_run, earlier) if self.settings.against_earlier_runs
                       else this_run)
                .order_by(runs.c.started_at, sig.run_id, sig.prompt_id, sig.sample_index)
                .execution_options(yield_per=FETCH_ROWS))
        yield from self.session.execute(stmt).tuples()

    def chunk(self, after: SampleKey | None) -> SampleKey | None:
        """Deduplicate the chunk after `after`; return its last key (None: no samples left).

        A sample is removed when it duplicates a sample kept before it — in an earlier run, an
        earlier chunk, or earlier in this chunk — the same outcome whatever the chunk size."""
        index, removed = _ChunkIndex(self.settings), dict[SampleKey, _Duplicate]()
        for key, sample_text in self.texts(after):
            index.add(key, self.hasher.signature(shingles(sample_text, self.settings.shingle)))
        if not index.keys:
            return None
        for of_run, of_prompt, of_index, blob in self.prior_signatures(index.keys[0]):
            self.result.earlier_signatures_checked += of_run != self.run_id
            prior = np.frombuffer(blob, dtype="<u4").astype(np.uint32)
            for pos, similarity in index.matches(prior):
                key = index.keys[pos]
                if key not in removed or similarity > removed[key].similarity:
                    removed[key] = _Duplicate(of_run, of_prompt, of_index, similarity)
        for pos, key in enumerate(index.keys):
            if key in removed:
                continue
            best = max(((p, sim) for p, sim in index.matches(index.signatures[pos])
                        if p < pos and index.keys[p] not in removed),
                       key=lambda m: m[1], default=None)
            if best is not None:
                of = index.keys[best[0]]
                removed[key] = _Duplicate(self.run_id, of[0], of[1], best[1])
        kept = [(k, s) for k, s in zip(index.keys, index.signatures, strict=True)
                if k not in removed]
        self.write(removed, kept, index.keys[0], index.keys[-1])
        against = sum(d.of_run != self.run_id for d in removed.values())
        self.result.examined += len(index.keys)
        self.result.kept += len(kept)
        self.result.removed_within_run += len(removed) - against
        self.result.removed_against_earlier += against
        return index.keys[-1]

    def write(self, removed: dict[SampleKey, _Duplicate],
              kept: list[tuple[SampleKey, np.ndarray]], first: SampleKey, last: SampleKey,
              ) -> None:
        """Duplicates become rejections; kept samples' signatures are stored."""
        run_id, settings, session = self.run_id, self.settings, self.session
        reject = (update(samples)
                  .where(samples.c.run_id == run_id, samples.c.prompt_id == bindparam("p"),
                         samples.c.sample_index == bindparam("i"),
                         samples.c.status == "accepted")
                  .values(status="rejected", updated_at=func.now()))
        for chunk in _batches([{"p": p, "i": i} for p, i in removed]):
            session.execute(reject, chunk)
        record = insert(rejections).on_conflict_do_nothing(
            index_elements=["run_id", "prompt_id", "sample_index"])
        for chunk in _batches([
                {"run_id": run_id, "prompt_id": p, "sample_index": i, "stage": STAGE,
                 "checkpoint": 0, "validator": VALIDATOR, "reason_code": REASON_CODE,
                 "detail": _describe(dup, settings), "step_index": None, "tokens_at_fire": 0,
                 "fraction_at_fire": None} for (p, i), dup in removed.items()]):
            session.execute(record, chunk)
        sig = sample_signatures.c
        in_chunk = tuple_(sig.prompt_id, sig.sample_index).between(_key(first), _key(last))
        already = set(session.execute(  # a previous pass stored these: skip them
            select(sig.prompt_id, sig.sample_index)
            .where(*_same_method(settings), sig.run_id == run_id, in_chunk)).tuples())
        store = insert(sample_signatures).on_conflict_do_nothing().returning(sig.run_id)
        for chunk in _batches([
                {"run_id": run_id, "prompt_id": p, "sample_index": i, "field": settings.field,
                 "shingle": settings.shingle, "num_perm": settings.num_perm,
                 "scheme": SIGNATURE_METHOD, "hashvalues": signature.astype("<u4").tobytes()}
                for (p, i), signature in kept if (p, i) not in already]):
            self.result.signatures_stored += len(session.execute(store, chunk).all())


def _describe(dup: _Duplicate, settings: DedupSettings) -> str:
    return (f"near-duplicate of run {dup.of_run!r}, prompt {dup.of_prompt!r}, sample "
            f"{dup.of_index}: estimated Jaccard similarity {dup.similarity:.3f} >= "
            f"{settings.threshold} on the {settings.field} ({settings.shingle}-word shingles)")


def _batches(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), WRITE_ROWS):
        yield rows[start:start + WRITE_ROWS]


def dedup_run(database_url: str, *, run_id: str, settings: DedupSettings) -> DedupResult:
    """Remove near-duplicates among the run's accepted samples (and against earlier runs'
    kept samples) as rejections; idempotent. Raises DatabaseError for an unknown run."""
    if not settings.enabled:
        return DedupResult(run_id=run_id, enabled=False)
    started = time.perf_counter()
    with session_scope(get_engine(database_url)) as session:
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _DEDUP_LOCK_KEY})
        run = session.execute(select(runs.c.spec, runs.c.started_at)
                              .where(runs.c.run_id == run_id).with_for_update()).first()
        if run is None:
            raise DatabaseError(f"run {run_id!r} is not in the database; nothing to deduplicate")
        dedup = _RunDedup(session, run_id, run, settings)
        after = dedup.chunk(None)
        while after is not None:
            after = dedup.chunk(after)
    result = dedup.result
    result.seconds = round(time.perf_counter() - started, 3)
    result.samples_per_second = round(result.examined / result.seconds, 1) if result.seconds \
        else 0.0
    return result
