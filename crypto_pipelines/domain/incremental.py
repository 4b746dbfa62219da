"""What an incremental load must fetch next: watermarks of closed data, partition windows, and
the once-only finalization of a partition after it closed.

Plain Python (no Dagster): the ``<exchange>_incremental_sensor`` feeds it the exchange's clock,
each series' newest stored ``ts`` and the state it kept from earlier ticks, and turns the plans
into run requests. Everything is a pure function of those inputs, so a tick can be replayed
and tested without an exchange.

A series' *watermark* is the newest ``ts`` of data that is closed at "now": the open time of
the newest closed candle (``open + timeframe <= now``), the end of the newest finished trade
bucket (trades have no candles, so they are polled every ``trades_every_seconds``), the newest
funding time. Data is requested from after ``max(newest stored, already requested)`` up to the
watermark, so the same closed data is never requested twice; a request is for partitions,
and the asset resumes each partition after its newest stored row, so a failed run is healed
by the next request that touches the same partition. Nothing at or after a symbol's
delisting is ever requested, nor anything before its listing or the universe's ``start``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from crypto_pipelines.domain.timeframes import DAY_MS, grid_offset_ms

OHLCV = "ohlcv"
TRADES = "trades"
FUNDING = "funding_rates"
DEFAULT_FUNDING_INTERVAL_MS = 8 * 3_600_000


def _utc(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def partition_start(ts_ms: int, monthly: bool) -> int:
    """Start of the daily (or monthly) UTC partition holding ``ts_ms``."""
    if monthly:
        moment = _utc(ts_ms)
        return _ms(datetime(moment.year, moment.month, 1, tzinfo=UTC))
    return ts_ms - ts_ms % DAY_MS


def partition_end(start_ms: int, monthly: bool) -> int:
    """End (exclusive) of the partition starting at ``start_ms``."""
    if monthly:
        moment = _utc(start_ms)
        return _ms((moment.replace(day=28) + timedelta(days=4)).replace(day=1))
    return start_ms + DAY_MS


def partition_date_key(start_ms: int) -> str:
    """The ``date`` dimension's key of a partition (``2024-03-05``; months use their 1st)."""
    return _utc(start_ms).strftime("%Y-%m-%d")


def partition_starts(first_ms: int, last_ms: int, monthly: bool) -> list[int]:
    """Starts of the partitions from the one holding ``first_ms`` to the one holding ``last_ms``."""
    starts: list[int] = []
    current = partition_start(first_ms, monthly)
    while current <= last_ms:
        starts.append(current)
        current = partition_end(current, monthly)
    return starts


@dataclass(frozen=True, slots=True)
class Series:
    """One stored series as the sensor sees it. ``cadence_ms`` is the candle length, the
    trade polling bucket or the funding interval; ``first_ms`` the first moment wanted (the
    universe's start or the listing, whichever is later); ``end_ms`` the delisting time
    (nothing at or after it is requested). ``catch_up`` False: a series with nothing stored
    starts at the current partition (trade history is a backfill, it can be billions of rows)."""

    asset: str  # the asset's name within the exchange: ohlcv_1m, trades, funding_rates
    dataset: str
    symbol: str
    monthly: bool
    cadence_ms: int
    first_ms: int
    end_ms: int | None = None
    timeframe: str | None = None
    catch_up: bool = True

    @property
    def key(self) -> str:
        return f"{self.asset}|{self.symbol}"

    def watermark(self, now_ms: int) -> int | None:
        """The newest ``ts`` of closed data at ``now_ms`` (inclusive), never at or after the
        delisting; None while nothing of the series' life is closed."""
        step = self.cadence_ms
        if self.dataset == OHLCV:
            offset = grid_offset_ms(self.timeframe or "")
            newest_open = now_ms - step
            mark = newest_open - (newest_open - offset) % step
        elif self.dataset == TRADES:
            mark = now_ms - now_ms % step - 1
        else:
            mark = now_ms - now_ms % step
        if self.end_ms is not None:
            mark = min(mark, self.end_ms - 1)
        return mark if mark >= self.first_ms else None

    def next_after(self, ts_ms: int) -> int:
        """Where data newer than ``ts_ms`` can start: the next candle open or funding time
        on the series' grid; for trades, the next millisecond."""
        if self.dataset == TRADES:
            return ts_ms + 1
        offset = grid_offset_ms(self.timeframe or "")
        return ts_ms - (ts_ms - offset) % self.cadence_ms + self.cadence_ms

    def lives_in(self, start_ms: int) -> bool:
        """Whether the partition starting at ``start_ms`` overlaps the series' life."""
        return partition_end(start_ms, self.monthly) > self.first_ms and (
            self.end_ms is None or start_ms < self.end_ms
        )


@dataclass(frozen=True, slots=True)
class SeriesState:
    """What the sensor remembers of a series between ticks (its cursor entry):
    ``requested_to`` the newest ``ts`` already requested, ``finalized`` the start of the newest
    partition requested after it closed."""

    requested_to: int | None = None
    finalized: int | None = None

    def as_json(self) -> dict[str, int]:
        out = {"w": self.requested_to, "f": self.finalized}
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_json(cls, value: object) -> SeriesState:
        if not isinstance(value, dict):
            return cls()
        w, f = value.get("w"), value.get("f")
        return cls(w if isinstance(w, int) else None, f if isinstance(f, int) else None)


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    """This tick's requests for one series: ``load`` the first and last partition start of
    new closed data (up to ``watermark``), ``finalize`` a closed partition to request once
    more. ``state_after`` is what to remember, given which of them were requested (a tick
    may defer some to respect its bound)."""

    series: Series
    previous: SeriesState
    load: tuple[int, int] | None
    watermark: int | None
    finalize: int | None
    finalized: int | None  # the ``finalized`` to keep once the plan is carried out
    load_finalizes: bool = False  # the load reaches a closed partition: that is its finalization

    @property
    def wants_run(self) -> bool:
        return self.load is not None or self.finalize is not None

    def state_after(self, *, loaded: bool, finalized: bool) -> SeriesState:
        requested_to = self.previous.requested_to
        if loaded and self.watermark is not None:
            requested_to = max(requested_to or self.watermark, self.watermark)
        if self.finalize is not None:
            done = finalized
        elif self.load_finalizes:
            done = loaded
        else:
            done = True  # nothing to request for it (first sight, or already final)
        return SeriesState(requested_to, self.finalized if done else self.previous.finalized)


def plan_series(
    series: Series,
    now_ms: int,
    stored_latest: int | None,
    state: SeriesState | None,
    *,
    max_partitions: int,
    finalize_after_ms: int,
) -> SeriesPlan:
    """The requests one series needs at ``now_ms``.

    ``state`` None means the sensor has never seen the series: rollovers before that are not
    finalized (the daily re-check schedule covers yesterday). A load spans at most
    ``max_partitions`` partitions; a longer catch-up continues at the next tick, so runs of
    other series interleave with it in the exchange's pool. A partition is finalized once,
    ``finalize_after_ms`` after it closed: by this tick's load when that reaches it, else by
    a request of its own when it was last requested before it closed."""
    old = state or SeriesState()
    monthly = series.monthly
    mark = series.watermark(now_ms)
    done = max((v for v in (stored_latest, old.requested_to) if v is not None), default=None)
    if done is not None:
        begin = max(series.next_after(done), series.first_ms)
    elif series.catch_up or mark is None:
        begin = series.first_ms
    else:
        begin = max(series.first_ms, partition_start(mark, monthly))

    load: tuple[int, int] | None = None
    upto: int | None = None
    if mark is not None and mark >= begin:
        starts = partition_starts(begin, mark, monthly)[:max_partitions]
        last = starts[-1]
        upto = mark if last == partition_start(mark, monthly) else partition_end(last, monthly) - 1
        load = (starts[0], last)

    finalize: int | None = None
    finalized = old.finalized
    load_finalizes = False
    previous = partition_start(partition_start(now_ms - finalize_after_ms, monthly) - 1, monthly)
    if series.lives_in(previous) and (finalized is None or finalized < previous):
        covered = load is not None and load[0] <= previous <= load[1]
        if state is None or covered:
            finalized, load_finalizes = previous, covered
        elif old.requested_to is not None and old.requested_to >= previous:
            finalize = finalized = previous  # last requested before it closed: once more now
        # else: never requested yet; the load that reaches it comes after it closed
    return SeriesPlan(series, old, load, upto, finalize, finalized, load_finalizes)
