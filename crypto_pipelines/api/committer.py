"""Group commit: concurrent ingestion requests share one check of their cells, one model
validation and one transaction, and each is answered only after that transaction committed.

A request hands its parsed rows to ``GroupCommitter.submit`` and waits. The committer takes
everything queued within ``window_s`` of the first waiting request (or up to
``MAX_GROUP_ROWS``) and, in a worker thread, per dataset: checks every cell of the group at
once (``bodies.rows_frame``, vectorised), validates the rows of the requests still standing
with the dataset's Pandera model in one call, answers the requests whose rows break a rule
with their errors, and writes every other request through the sink in one transaction,
classifying each row (inserted, updated, unchanged) so every request gets its own counts.
Per-request costs that do not shrink with size (a model call is milliseconds even for one
row; a commit is a disk flush) are paid once per group, which is what lets single-candle
POSTs run at thousands per second.

All or nothing per request holds throughout: a request is written whole or not at all. If
the group's transaction fails, each request is retried alone, so one cannot fail another.
Two requests of one group may send the same key: the rows are written in rounds (the first
occurrence of each key, then the second ...), so the later request wins and both are counted
as if they had come one after the other.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final

import numpy as np
import pandas as pd
import pandera.errors as pa_errors
import pandera.pandas as pa
from sqlalchemy.engine import Connection

from crypto_pipelines.api.bodies import rows_frame
from crypto_pipelines.api.errors import RowError
from crypto_pipelines.domain.datasets import MarketDataset, get_market_dataset
from crypto_pipelines.domain.validation import rule_keys
from crypto_pipelines.ingest import Sink
from crypto_pipelines.storage import changes
from crypto_pipelines.storage.engine import write_transaction
from crypto_pipelines.storage.schema import SOURCE_COLUMN
from crypto_pipelines.storage.store import MarketStore

log = logging.getLogger(__name__)

MAX_GROUP_ROWS: Final = 200_000


class RowsRejected(Exception):
    def __init__(self, errors: list[RowError]) -> None:
        super().__init__(f"{len(errors)} row error(s)")
        self.errors = errors


@dataclass(frozen=True, slots=True)
class PeriodChange:
    """Rows of one date partition a request inserted or updated (for lineage)."""

    period: str
    rows: int
    first_ts: int
    last_ts: int


@dataclass(frozen=True, slots=True)
class Committed:
    """One request's outcome, after the commit."""

    inserted: int
    updated: int
    unchanged: int
    periods: tuple[PeriodChange, ...] = ()

    @property
    def written(self) -> int:
        return self.inserted + self.updated


@dataclass
class _Job:
    dataset: str
    rows: list[Any]
    fields: dict[str, str]
    source: str
    future: asyncio.Future[Committed] = field(repr=False)


@cache
def _schema_without_key_check(dataset: str) -> pa.DataFrameSchema:
    """The model's schema without its ``unique_key`` check: keys are unique within each
    request (``bodies`` refuses repeats), and two requests of a group may rightly send the
    same key (the later one wins)."""
    schema = copy.deepcopy(get_market_dataset(dataset).table.schema)
    schema.checks = [c for c in schema.checks if c.name != "unique_key"]
    return schema


def _warm_up() -> None:
    for dataset in ("ohlcv", "trades", "funding_rates"):
        spec = get_market_dataset(dataset)
        _schema_without_key_check(dataset).validate(
            pd.DataFrame({c: pd.Series(dtype=object) for c in spec.table.columns})
        )


class GroupCommitter:
    def __init__(self, store: MarketStore, *, window_s: float = 0.002) -> None:
        self.store = store
        self.window_s = window_s
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self.groups = 0
        self.jobs = 0

    def start(self) -> None:
        self._queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="group-commit")
        # Pandera loads its backends (and hypothesis) on its first validation: ~0.3 s that
        # would otherwise fall on the first request.
        loop.run_in_executor(None, _warm_up)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def submit(
        self, dataset: str, rows: list[Any], fields: dict[str, str], source: str
    ) -> Committed:
        """Check, validate and store ``rows`` of one series (all of them or nothing); the
        outcome once committed. Raises ``RowsRejected`` with the rows' errors."""
        if self._queue is None:
            raise RuntimeError("the group committer is not running (app lifespan not started)")
        future: asyncio.Future[Committed] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(dataset, rows, fields, source, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            jobs = [await self._queue.get()]
            rows = len(jobs[0].rows)
            deadline = time.monotonic() + self.window_s
            while rows < MAX_GROUP_ROWS:
                timeout = deadline - time.monotonic()
                try:
                    if timeout <= 0:
                        job = self._queue.get_nowait()
                    else:
                        job = await asyncio.wait_for(self._queue.get(), timeout)
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                jobs.append(job)
                rows += len(job.rows)
            try:
                results = await asyncio.to_thread(self._commit, jobs)
            except Exception as exc:  # the whole group, unexpectedly: answer every request
                log.exception("group commit of %d requests failed", len(jobs))
                results = [exc] * len(jobs)
            self.groups += 1
            self.jobs += len(jobs)
            for job, result in zip(jobs, results, strict=True):
                if job.future.done():  # the client went away
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)

    def _commit(self, jobs: list[_Job]) -> list[Committed | BaseException]:
        results: list[Committed | BaseException | None] = [None] * len(jobs)
        batches: list[_Checked] = []
        for dataset in dict.fromkeys(job.dataset for job in jobs):
            members = [i for i, job in enumerate(jobs) if job.dataset == dataset]
            checked = _check(get_market_dataset(dataset), [jobs[i] for i in members])
            for local, error in checked.rejected.items():
                results[members[local]] = error
            if checked.jobs:
                checked.jobs = [members[i] for i in checked.jobs]
                batches.append(checked)
        if batches:
            try:
                with write_transaction(self.store.engine) as connection:
                    for batch in batches:
                        for i, outcome in zip(
                            batch.jobs, self._write(connection, batch), strict=True
                        ):
                            results[i] = outcome
            except Exception:
                log.warning(
                    "group transaction failed; writing its requests one by one", exc_info=True
                )
                for batch in batches:
                    for part in batch.single():
                        try:
                            with write_transaction(self.store.engine) as connection:
                                [results[part.jobs[0]]] = self._write(connection, part)
                        except Exception as exc:
                            results[part.jobs[0]] = exc
        return [r if r is not None else RuntimeError("not processed") for r in results]

    def _write(self, connection: Connection, batch: _Checked) -> list[Committed]:
        """Write ``batch`` in rounds of unique keys; each job's counts and changed periods."""
        spec = batch.spec
        frame = batch.frame
        counts = np.zeros((len(batch.jobs), 3), dtype=np.int64)
        changed = np.zeros(len(frame), dtype=bool)
        key = list(spec.table.key)
        # Keys repeat only across requests (each request's own are unique): one request
        # needs no look.
        repeats = len(batch.jobs) > 1 and bool(frame.duplicated(subset=key).any())
        rounds = (
            frame.groupby(key, sort=False).cumcount().to_numpy()
            if repeats
            else np.zeros(len(frame), dtype=np.int64)
        )
        sink = Sink(self.store, source="api")
        for number in range(int(rounds.max()) + 1 if len(frame) else 0):
            mask = rounds == number
            part = frame[mask] if rounds.any() else frame
            report = sink.write_in(connection, spec.name, part, validated=True, classify=True)
            assert report.outcomes is not None
            owners = batch.owner[mask]
            changed[mask] = report.outcomes != changes.UNCHANGED
            for outcome in (changes.INSERTED, changes.UPDATED, changes.UNCHANGED):
                hits = owners[report.outcomes == outcome]
                counts[:, outcome] += np.bincount(hits, minlength=len(batch.jobs))
        periods = _periods(spec, frame[changed], batch.owner[changed])
        return [
            Committed(int(c[0]), int(c[1]), int(c[2]), periods.get(n, ()))
            for n, c in enumerate(counts)
        ]


def _periods(
    spec: MarketDataset, rows: pd.DataFrame, owner: np.ndarray
) -> dict[int, tuple[PeriodChange, ...]]:
    """Per job, the date partitions of its changed ``rows``: rows, first and last ``ts``
    (a partition is a month or a day by the dataset and, for candles, the timeframe)."""
    if rows.empty:
        return {}
    stamps = rows["ts"].to_numpy()
    if spec.per_timeframe:
        grain = {tf: spec.is_monthly(tf) for tf in rows["timeframe"].unique()}
        monthly = rows["timeframe"].map(grain).to_numpy(dtype=bool)
    else:
        monthly = np.full(len(rows), spec.is_monthly())
    days = stamps.astype("datetime64[ms]").astype("datetime64[D]")
    months = days.astype("datetime64[M]").astype("datetime64[D]")
    period = np.where(monthly, months, days).astype(np.int64)  # days since the epoch
    # One sort over (job, period) pairs packed in an int64: pandas' groupby costs a few
    # milliseconds per call, as much as a small group's whole write.
    packed = owner.astype(np.int64) * (1 << 32) + period
    pairs, inverse, sizes = np.unique(packed, return_inverse=True, return_counts=True)
    first = np.full(len(pairs), np.iinfo(np.int64).max)
    last = np.full(len(pairs), np.iinfo(np.int64).min)
    np.minimum.at(first, inverse, stamps)
    np.maximum.at(last, inverse, stamps)
    keys = np.datetime_as_string((pairs % (1 << 32)).astype("datetime64[D]"), unit="D")
    out: dict[int, list[PeriodChange]] = {}
    for job, key, size, lo, hi in zip(pairs >> 32, keys, sizes, first, last, strict=True):
        out.setdefault(int(job), []).append(PeriodChange(str(key), int(size), int(lo), int(hi)))
    return {job: tuple(found) for job, found in out.items()}


@dataclass
class _Checked:
    """A dataset's valid rows of a group: the model-coerced frame (with each row's source),
    which job each row belongs to (0..n-1, in order), and the jobs refused with their
    errors."""

    spec: MarketDataset
    frame: pd.DataFrame
    owner: np.ndarray
    jobs: list[int]
    rejected: dict[int, RowsRejected]

    def single(self) -> list[_Checked]:
        """One ``_Checked`` per job (the fallback when the group's transaction failed)."""
        parts = []
        for n, job in enumerate(self.jobs):
            mask = self.owner == n
            parts.append(
                _Checked(
                    self.spec,
                    self.frame[mask],
                    np.zeros(int(mask.sum()), dtype=np.int64),
                    [job],
                    {},
                )
            )
        return parts


def _check(spec: MarketDataset, jobs: Sequence[_Job]) -> _Checked:
    """Cells, then the model, for all of ``jobs`` (one dataset) at once."""
    sizes = np.array([len(job.rows) for job in jobs], dtype=np.int64)
    owner = np.repeat(np.arange(len(jobs)), sizes)
    rows = [row for job in jobs for row in job.rows]
    series = {
        name: np.repeat(np.array([job.fields[name] for job in jobs], dtype=object), sizes)
        for name in spec.series_columns
    }
    frame, errors = rows_frame(spec, rows, series, owner)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    rejected: dict[int, list[RowError]] = {}
    for error in errors:
        index = int(error.index) if error.index is not None else 0
        job = int(owner[index])
        rejected.setdefault(job, []).append(
            error.model_copy(update={"index": index - int(starts[job])})
        )
    standing = [j for j in range(len(jobs)) if j not in rejected]
    frame, model_errors = _validate(spec, frame, owner, standing, starts)
    for job, found in model_errors.items():
        rejected[job] = found
        standing.remove(job)
    keep = np.isin(owner, standing)
    frame = frame[keep].reset_index(drop=True)
    remap = {job: n for n, job in enumerate(standing)}
    kept_owner = np.array([remap[j] for j in owner[keep]], dtype=np.int64)
    frame[SOURCE_COLUMN] = np.array([jobs[j].source for j in standing], dtype=object)[kept_owner]
    return _Checked(
        spec,
        frame,
        kept_owner,
        standing,
        {j: RowsRejected(sorted(e, key=_order)) for j, e in rejected.items()},
    )


def _order(error: RowError) -> tuple[int, str]:
    return (error.index if error.index is not None else -1, error.field or "")


def _validate(
    spec: MarketDataset,
    frame: pd.DataFrame,
    owner: np.ndarray,
    standing: list[int],
    starts: np.ndarray,
) -> tuple[pd.DataFrame, dict[int, list[RowError]]]:
    """The model-coerced rows of the ``standing`` jobs (other rows as they were), and the
    errors of the jobs whose rows break a model rule. One model call; a second, on the
    remaining jobs, when some failed."""
    schema = _schema_without_key_check(spec.name)
    columns = list(spec.table.columns)
    mask = np.isin(owner, standing)
    if not mask.any():
        return frame, {}
    try:
        checked = schema.validate(frame[mask], lazy=True)
    except pa_errors.SchemaErrors as exc:
        cases = exc.failure_cases
    else:
        return _coerced(frame, checked, mask, columns), {}
    errors: dict[int, list[RowError]] = {}
    seen: set[tuple[int, int, str]] = set()
    rules = rule_keys(spec.table, cases)
    for index, column, rule, value, context in zip(
        cases["index"],
        cases["column"],
        rules,
        cases["failure_case"],
        cases["schema_context"],
        strict=True,
    ):
        if index is None or pd.isna(index):  # not tied to rows: every job of the group
            for job in standing:
                errors.setdefault(job, []).append(
                    RowError(field=str(column), rule=rule, message=f"failure case {value!r}")
                )
            continue
        job = int(owner[int(index)])
        local = int(index) - int(starts[job])
        if (job, local, rule) in seen:
            continue
        seen.add((job, local, rule))
        if context == "Column":  # a rule of one column: name it and its value
            error = RowError(index=local, field=str(column), rule=rule, message=f"value {value!r}")
        else:  # a rule across the row's columns (high >= open, close)
            error = RowError(index=local, rule=rule, message=f"row breaks {rule}")
        errors.setdefault(job, []).append(error)
    rest = [job for job in standing if job not in errors]
    frame, more = _validate(spec, frame, owner, rest, starts)
    errors.update(more)
    return frame, errors


def _coerced(
    frame: pd.DataFrame, checked: pd.DataFrame, mask: np.ndarray, columns: list[str]
) -> pd.DataFrame:
    """``frame`` with the rows under ``mask`` replaced by the model's coerced values."""
    if mask.all():
        return checked[columns].reset_index(drop=True)
    out = frame.copy()
    for name in columns:
        values = out[name].to_numpy(copy=True)
        values[mask] = checked[name].to_numpy()
        out[name] = values
    return out
