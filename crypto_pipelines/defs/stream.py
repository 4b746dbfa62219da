"""The stream in Dagster: job ``market_stream`` (one long-running op) and its supervisor.

The op hosts ``crypto_pipelines.stream.StreamService`` in a thread of its own (its asyncio
loop) while the op's thread watches it: every ``report_every_s`` seconds, when a UTC day
closes, and when the run ends it logs the statistics and records materializations of the
stream-fed partitions (``<exchange>/trades`` and ``<exchange>/ohlcv_<tf>``, ``date|symbol``)
with rows and lag: a few events a minute, never one per message (each Dagster event costs
~10 ms on SQLite). Order book snapshots (``books`` on) are stored and counted in the
statistics but have no asset: there is no REST history of books to partition and backfill.
Where a venue keeps no REST history of a dataset (Bybit's trades, ``defs.stream_fed``), its
asset is fed by this job alone, which then also logs each of its partitions' ``schema`` check
once the partition's window has closed.

When the run is terminated Dagster raises ``DagsterExecutionInterruptedError`` (a
BaseException) in the op's thread: the service is told to stop, flushes every buffer and
closes every connection before the op gives up.

``market_stream_supervisor`` starts the job whenever no run of it is queued or started, also
after a crash, so the stream runs as long as the sensor is on. It is off by default: a stream
holds connections to the exchanges around the clock, which an operator turns on knowingly.
The incremental REST sensors stay as the safety net; upserts make the overlap harmless.
"""

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg
from pydantic import Field

from crypto_pipelines.defs.checks.results import evaluation
from crypto_pipelines.defs.checks.schema import SCHEMA_CHECK, market_data_verdicts
from crypto_pipelines.defs.partitions import symbol_ranges
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.stream_fed import is_stream_fed
from crypto_pipelines.domain.datasets import get_market_dataset
from crypto_pipelines.domain.incremental import partition_date_key, partition_start
from crypto_pipelines.domain.redis_url import redis_url_from_env
from crypto_pipelines.domain.universe import Universe, with_changes
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines.storage.universe_changes import universe_changes
from crypto_pipelines.stream.service import StreamService, StreamSettings

STREAM_JOB = "market_stream"
SUPERVISOR = "market_stream_supervisor"
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


class StreamConfig(dg.Config):
    exchanges: list[str] = Field(default_factory=list, description="default: every exchange")
    timeframes: list[str] = Field(default_factory=lambda: ["1m"], description="candles streamed")
    report_every_s: float = Field(default=60.0, description="statistics and materializations")
    stop_after_s: float = Field(default=0.0, description="0: until the run is terminated")
    flush_ms: int = 250
    watchdog_s: float = 30.0
    books: bool = Field(
        default=False, description="order book snapshots too (table order_book_snapshots)"
    )
    book_depth: int = Field(default=10, ge=1, description="book levels stored per side")
    funding: bool = Field(
        default=False,
        description="perpetuals' funding channel: each settlement's rate stored as it passes",
    )
    book_every_s: float = Field(default=1.0, gt=0, description="one book snapshot this often")


class _Runner:
    """The service's event loop in a thread; the op's thread can stop it and ask it things."""

    def __init__(self, service: StreamService) -> None:
        self.service = service
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.error: BaseException | None = None
        self.started = threading.Event()
        self.thread = threading.Thread(target=self._main, name="market-stream", daemon=True)

    def _main(self) -> None:
        async def main() -> None:
            self.loop, self.stop = asyncio.get_running_loop(), asyncio.Event()
            self.started.set()
            await self.service.run(self.stop)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by the op's thread
            self.error = exc
        finally:
            self.started.set()

    def start(self) -> None:
        self.thread.start()
        self.started.wait(timeout=30)

    def request_stop(self) -> None:
        if self.loop is not None and self.stop is not None and not self.loop.is_closed():
            try:
                self.loop.call_soon_threadsafe(self.stop.set)
            except RuntimeError:  # the loop closed meanwhile
                pass

    def drain(self) -> dict[tuple[str, str, str, str, int], list[int]]:
        """What was committed since the last call, taken on the loop's own thread."""
        if self.loop is None or self.loop.is_closed() or not self.thread.is_alive():
            return self.service.stats.drain_touched()

        async def take() -> dict[tuple[str, str, str, str, int], list[int]]:
            return self.service.stats.drain_touched()

        return asyncio.run_coroutine_threadsafe(take(), self.loop).result(timeout=10)


CHECK_GRACE_MS = 10_000
"""A stream-fed partition is checked this long after its window closes: its last trades may
still be in the writer's buffer (flushed every ``flush_ms``) when the day turns."""


@dataclass
class _StreamFedChecks:
    """The ``schema`` check of the stream-fed partitions the stream wrote to: no run of their
    own executes it (their asset has no body, and Dagster 1.13 cannot run a partitioned check
    alone), so the stream evaluates each partition once its window has closed, and the open
    ones when the run ends, and logs the public ``AssetCheckEvaluation``.

    "Closed" is read on the exchange's own clock, the newest time the stream received from it
    (the replay exchange's clock is not the wall clock), plus ``CHECK_GRACE_MS``."""

    store: MarketStore
    pending: set[tuple[str, str, str]] = field(default_factory=set)  # exchange, dataset, key
    clock: dict[str, int] = field(default_factory=dict)  # exchange -> newest ts received

    def note(self, exchange: str, newest_ms: int, dataset: str | None, key: str | None) -> None:
        self.clock[exchange] = max(self.clock.get(exchange, 0), newest_ms)
        if dataset is not None and key is not None:
            self.pending.add((exchange, dataset, key))

    def evaluate(self, context: dg.OpExecutionContext, *, final: bool) -> None:
        for exchange, dataset, key in sorted(self.pending):
            spec = get_market_dataset(dataset)
            window = symbol_ranges([key], monthly=spec.is_monthly(None))[0]
            now = self.clock.get(exchange, 0)
            if not final and now < window.end_ms + CHECK_GRACE_MS:
                continue
            self.pending.discard((exchange, dataset, key))
            asset_key = dg.AssetKey([exchange, spec.asset_name(None)])
            for partition, verdict in market_data_verdicts(
                self.store, exchange, dataset, None, [key], now_ms=now
            ):
                # ``log_event`` records an ``AssetCheckEvaluation`` as the check's result (it
                # has a branch for it); its type stub names only the older event types.
                context.log_event(
                    evaluation(asset_key, SCHEMA_CHECK, partition, verdict, blocking=True)  # type: ignore[arg-type]
                )


def _report(
    context: dg.OpExecutionContext,
    runner: _Runner,
    universe: Universe,
    checks: _StreamFedChecks,
    final: bool = False,
) -> None:
    """Statistics to the run's log, one materialization per stream-fed partition that
    received rows since the last report, and the checks of stream-fed partitions that closed."""
    stats = runner.service.stats.as_json()
    context.log.info(("final " if final else "") + "stream statistics: " + json.dumps(stats))
    now = time.time()
    for (dataset, exchange, symbol, timeframe, day), (rows, newest) in sorted(
        runner.drain().items()
    ):
        config = universe.exchanges.get(exchange)
        spec = get_market_dataset(dataset)
        if config is None or not any(
            s is spec and tf == (timeframe or None) for s, tf in config.series_datasets()
        ):
            continue  # streamed, but no asset in this universe (e.g. a timeframe not loaded)
        start = partition_start(day, spec.is_monthly(timeframe or None))
        key = f"{partition_date_key(start)}|{symbol}"
        context.log_event(
            dg.AssetMaterialization(
                asset_key=[exchange, spec.asset_name(timeframe or None)],
                partition=key,
                metadata={
                    "source": "stream",
                    "rows_received": rows,
                    "newest": dg.MetadataValue.timestamp(newest / 1000),
                    "lag_s": round(max(now - newest / 1000, 0.0), 3),
                    "lag_ms_p99": stats["lag_ms_p99"],
                },
            )
        )
        fed = is_stream_fed(exchange, spec)
        checks.note(exchange, newest, dataset if fed else None, key if fed else None)
    checks.evaluate(context, final=final)


def stream_symbols(
    universe: Universe, exchanges: Sequence[str], store: MarketStore
) -> dict[str, list[str]]:
    """The symbols to stream per exchange (all configured exchanges, or ``exchanges``): the
    universe file's with the changes made through the API applied, read when the run starts."""
    changes = universe_changes(store.engine)
    current = with_changes(universe, ((c.exchange, c.symbol, c.action) for c in changes))
    return {
        name: list(cfg.symbols)
        for name, cfg in current.exchanges.items()
        if (not exchanges or name in exchanges) and cfg.symbols
    }


def stream_job(universe: Universe) -> dg.JobDefinition:
    """``market_stream``: the universe's symbols streamed until the run is terminated."""

    @dg.op(
        name="run_market_stream",
        description="Hosts the WebSocket stream (trades and candles of the universe's symbols) "
        "until the run is terminated; reports statistics and stream-fed partitions periodically.",
    )
    def run_market_stream(
        context: dg.OpExecutionContext,
        config: StreamConfig,
        exchanges: ExchangesResource,
        market_store: MarketStoreResource,
    ) -> None:
        store = market_store.store()
        chosen = stream_symbols(universe, config.exchanges, store)
        settings = StreamSettings(
            timeframes=tuple(config.timeframes),
            flush_ms=config.flush_ms,
            watchdog_s=config.watchdog_s,
            books=config.books,
            funding=config.funding,
            book_depth=config.book_depth,
            book_every_s=config.book_every_s,
        )
        service = StreamService(
            chosen,
            store,
            settings=settings,
            replay_url=exchanges.effective_replay_url() if exchanges.source == "replay" else None,
            redis_url=redis_url_from_env(),
        )
        runner = _Runner(service)
        checks = _StreamFedChecks(store)
        runner.start()
        context.log.info(f"streaming {sum(map(len, chosen.values()))} symbols of {sorted(chosen)}")
        started = last = time.monotonic()
        day = datetime.now(UTC).date()
        try:
            while runner.thread.is_alive():
                runner.thread.join(timeout=0.5)
                now = time.monotonic()
                if config.stop_after_s and now - started >= config.stop_after_s:
                    runner.request_stop()
                today = datetime.now(UTC).date()
                if now - last >= config.report_every_s or today != day:
                    _report(context, runner, universe, checks)
                    last, day = now, today
        finally:  # also on DagsterExecutionInterruptedError: flush and close before leaving
            runner.request_stop()
            runner.thread.join(timeout=120)
            _report(context, runner, universe, checks, final=True)
        if runner.error is not None:
            raise dg.Failure(f"the stream stopped with an error: {runner.error!r}")

    @dg.job(name=STREAM_JOB, executor_def=dg.in_process_executor, tags={"kind": "stream"})
    def market_stream() -> None:
        run_market_stream()

    return market_stream


def stream_supervisor() -> dg.SensorDefinition:
    """Starts ``market_stream`` whenever no run of it is queued or running."""

    @dg.sensor(
        name=SUPERVISOR,
        job_name=STREAM_JOB,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Keeps one market_stream run alive: starts one whenever none is queued or "
        "running (also after a crash).",
    )
    def _supervisor(context: dg.SensorEvaluationContext) -> Any:
        active = context.instance.get_runs(
            filters=dg.RunsFilter(job_name=STREAM_JOB, statuses=ACTIVE), limit=1
        )
        if active:
            return dg.SkipReason(f"{STREAM_JOB} is running: run {active[0].run_id}")
        return dg.RunRequest(tags={"crypto_pipelines/supervisor": SUPERVISOR})

    return _supervisor
