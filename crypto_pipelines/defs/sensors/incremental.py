"""Incremental loads: per exchange, a sensor that keeps every series current.

On a new install, while the exchange's catalog is not stored, a tick requests
``<exchange>/markets`` and nothing else: listings and delistings come from it, so no partition
before a market's listing is requested and left empty.

``<exchange>_incremental_sensor`` (default RUNNING, every ``incremental.interval_seconds``,
45 s unless the universe says otherwise) asks the exchange for its clock (one ``fetch_time`` per
tick), reads each series' newest stored ``ts`` and the exchange's stored listing, and requests
runs for the partitions holding closed data that is neither stored nor already requested
(``domain.incremental`` decides; its docstring has the rules). Per asset, symbols that need
the same dates share one run (``defs.run_requests``). Each tick:

- requests at most ``incremental.max_runs_per_tick`` runs, finalizations first, then the
  series furthest behind; deferred series are picked up by the next tick;
- finalizes each day's (candles and funding: month's) partition once after it closed;
- gives every run a key made of asset, partitions, symbols and watermark (``final`` for a
  finalization), so the same new data never launches two runs;
- keeps its cursor as JSON: per series (``<asset>|<symbol>``) the newest ``ts`` requested
  (``w``) and the newest partition finalized (``f``).

Symbols are each asset's dynamic partitions (what the universe sensor keeps):
``<exchange>_symbols``, or ``<exchange>_perps`` for the datasets of perpetual swaps only; a
range's symbols are contiguous in that set's order. Nothing at or after a symbol's
``delisted_ms`` nor before its ``listed_ms`` is requested. A series with
nothing stored catches up from the universe's ``start``, ``max_partitions_per_run`` partitions
per tick, except trades, which start at the current day (trade history is a backfill).
"""

import json
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import ccxt
import dagster as dg

from crypto_pipelines.defs.partitions import date_partitions, symbol_set, symbol_sets
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.run_requests import contiguous_blocks, partitions_run_request
from crypto_pipelines.defs.stream_fed import rest_series_datasets
from crypto_pipelines.domain.datasets import get_market_dataset
from crypto_pipelines.domain.incremental import (
    DEFAULT_FUNDING_INTERVAL_MS,
    TRADES,
    Series,
    SeriesPlan,
    SeriesState,
    partition_date_key,
    plan_series,
)
from crypto_pipelines.domain.listings import Listing
from crypto_pipelines.domain.universe import ExchangeUniverse, Universe
from crypto_pipelines.exchanges.calls import RetryPolicy
from crypto_pipelines.exchanges.errors import FetchError
from crypto_pipelines.exchanges.loader import exchange_time_ms
from crypto_pipelines.storage.store import MarketStore

INCREMENTAL_TAG = "crypto_pipelines/incremental"
"""Tag of the runs the sensor requests: ``load`` (new closed data) or ``finalize``."""


#: A sensor tick must stay well inside the daemon's evaluation timeout: one retry, short waits.
CLOCK_POLICY = RetryPolicy(max_attempts=2, base_delay_s=0.5, max_delay_s=2.0, max_retry_after_s=5.0)


def exchange_clock_ms(exchanges: ExchangesResource, exchange: str) -> int:
    """The exchange's clock for a sensor tick (raises ccxt's error or ``FetchError`` after one
    quick retry)."""
    return exchange_time_ms(exchanges.client(exchange), policy=CLOCK_POLICY)


def sensor_name(exchange: str) -> str:
    return f"{exchange}_incremental_sensor"


@dataclass(frozen=True)
class SeriesAsset:
    """A partitioned asset of the exchange the sensor keeps current."""

    name: str  # ohlcv_1m, trades, funding_rates
    dataset: str
    timeframe: str | None
    monthly: bool
    symbols: str
    """Its dynamic symbol partitions (``<exchange>_symbols``, ``<exchange>_perps``)."""


def series_assets(exchange: str, config: ExchangeUniverse) -> list[SeriesAsset]:
    """The exchange's market-data assets that REST runs load (``defs.build`` creates them;
    stream-fed ones are the stream's)."""
    return [
        SeriesAsset(
            spec.asset_name(tf), spec.name, tf, spec.is_monthly(tf), symbol_set(exchange, spec).name
        )
        for spec, tf in rest_series_datasets(exchange, config)
    ]


def partition_orders(
    instance: dg.DagsterInstance, exchange: str, config: ExchangeUniverse
) -> dict[str, Sequence[str]]:
    """The keys of each symbol partition set of the exchange, in the set's order (a range
    request's symbols must be contiguous in it)."""
    return {s.name: instance.get_dynamic_partitions(s.name) for s in symbol_sets(exchange, config)}


def build_series(
    config: ExchangeUniverse, asset: SeriesAsset, symbol: str, listing: Listing | None
) -> Series | None:
    """The series of ``asset`` for ``symbol`` (None: a dataset the market has not, such as
    funding of a spot pair). Its cadence is the dataset's grid step (candles, open interest),
    the trade polling bucket, or the market's funding interval."""
    spec = get_market_dataset(asset.dataset)
    if not spec.has_market(symbol):
        return None
    step = spec.step_ms(asset.timeframe)
    if step is not None:
        cadence = step
    elif asset.dataset == TRADES:
        cadence = config.incremental.trades_every_seconds * 1000
    else:
        cadence = (listing and listing.funding_interval_ms) or DEFAULT_FUNDING_INTERVAL_MS
    first = config.start_ms
    if listing is not None and listing.listed_ms is not None:
        first = max(first, listing.listed_ms)
    return Series(
        asset=asset.name,
        dataset=asset.dataset,
        symbol=symbol,
        monthly=asset.monthly,
        cadence_ms=cadence,
        first_ms=first,
        end_ms=listing.delisted_ms if listing is not None else None,
        timeframe=asset.timeframe,
        catch_up=asset.dataset != TRADES,
    )


def read_cursor(cursor: str | None) -> dict[str, SeriesState]:
    try:
        raw = json.loads(cursor) if cursor else {}
    except ValueError:
        raw = {}
    series = raw.get("series") if isinstance(raw, dict) else None
    if not isinstance(series, dict):
        return {}
    return {str(k): SeriesState.from_json(v) for k, v in series.items()}


def write_cursor(states: Mapping[str, SeriesState], now_ms: int) -> str:
    return json.dumps(
        {"now": now_ms, "series": {k: v.as_json() for k, v in sorted(states.items())}},
        separators=(",", ":"),
    )


@dataclass
class TickResult:
    """What one evaluation decided: the run requests and the cursor to keep."""

    run_requests: list[dg.RunRequest]
    cursor: str
    deferred: int  # runs left for the next tick by ``max_runs_per_tick``


@dataclass
class _Unit:
    """Series of one asset needing the same partitions for the same reason."""

    asset: str
    kind: str  # finalize | load
    first: int
    last: int
    plans: list[SeriesPlan]


def plan_tick(
    exchange: str,
    config: ExchangeUniverse,
    store: MarketStore,
    symbols: Mapping[str, Sequence[str]],
    now_ms: int,
    cursor: str | None,
    date_exists: Callable[[str, bool], bool] = lambda _key, _monthly: True,
) -> TickResult:
    """One evaluation of the sensor, without Dagster's context: ``symbols`` holds each symbol
    partition set's keys in its order (``partition_orders``), ``now_ms`` the exchange's clock. ``date_exists(date_key, monthly)``
    says whether Dagster has that date partition yet (it follows the daemon's clock, which
    may lag the exchange's at midnight); a request for one it has not is left for a later
    tick, since one unknown partition would fail the whole tick."""
    settings = config.incremental
    listings = store.listings(exchange)
    states = read_cursor(cursor)
    plans: list[SeriesPlan] = []
    assets = series_assets(exchange, config)
    for asset in assets:
        for symbol in symbols.get(asset.symbols, ()):
            series = build_series(config, asset, symbol, listings.get(symbol))
            if series is None:
                continue
            stored = store.latest_ts(
                asset.dataset, exchange=exchange, symbol=symbol, timeframe=asset.timeframe
            )
            plans.append(
                plan_series(
                    series,
                    now_ms,
                    stored,
                    states.get(series.key),
                    max_partitions=settings.max_partitions_per_run,
                    finalize_after_ms=settings.finalize_after_seconds * 1000,
                )
            )

    units: dict[tuple[str, str, int, int], _Unit] = {}
    for plan in plans:
        name = plan.series.asset
        if plan.finalize is not None:
            key = (name, "finalize", plan.finalize, plan.finalize)
            units.setdefault(key, _Unit(*key, [])).plans.append(plan)
        if plan.load is not None:
            key = (name, "load", *plan.load)
            units.setdefault(key, _Unit(*key, [])).plans.append(plan)
    # Finalizations first (they happen once), then the series furthest behind.
    ordered = sorted(units.values(), key=lambda u: (u.kind != "finalize", u.first, u.asset))

    requests: list[dg.RunRequest] = []
    done: dict[str, set[str]] = defaultdict(set)  # series key -> kinds requested
    deferred = 0
    sets = {asset.name: asset.symbols for asset in assets}
    for unit in ordered:
        by_symbol = {p.series.symbol: p for p in unit.plans}
        blocks = contiguous_blocks(by_symbol, symbols.get(sets[unit.asset], ()))
        if not date_exists(partition_date_key(unit.last), unit.plans[0].series.monthly):
            deferred += len(blocks)
            continue
        for block in blocks:
            if len(requests) >= settings.max_runs_per_tick:
                deferred += 1
                continue
            requests.append(_request(exchange, unit, [by_symbol[s] for s in block]))
            for symbol in block:
                done[by_symbol[symbol].series.key].add(unit.kind)

    kept = {
        plan.series.key: plan.state_after(
            loaded="load" in done[plan.series.key], finalized="finalize" in done[plan.series.key]
        )
        for plan in plans
    }
    return TickResult(requests, write_cursor(kept, now_ms), deferred)


def _request(exchange: str, unit: _Unit, plans: list[SeriesPlan]) -> dg.RunRequest:
    first, last = partition_date_key(unit.first), partition_date_key(unit.last)
    symbols = [p.series.symbol for p in plans]
    if unit.kind == "finalize":
        mark = "final"
    else:
        mark = f"w{max(p.watermark or 0 for p in plans)}"
    return partitions_run_request(
        dg.AssetKey([exchange, unit.asset]),
        first,
        last,
        symbols,
        run_key=f"{exchange}/{unit.asset}:{first}..{last}:{symbols[0]}..{symbols[-1]}:{mark}",
        tags={INCREMENTAL_TAG: unit.kind, "exchange": exchange},
    )


MARKETS_RETRY_MS = 600_000
"""While an exchange's catalog is not stored, ``<exchange>/markets`` is requested at most
once per this span (run keys differ per span), so a failed load is retried, not repeated."""


def catalog_stored(store: MarketStore, exchange: str) -> bool:
    """Whether ``<exchange>/markets`` has stored any of the exchange's instruments."""
    return (
        store.count("crypto_pairs", exchange=exchange)
        + store.count("crypto_perps", exchange=exchange)
        > 0
    )


def incremental_sensor(exchange: str, config: ExchangeUniverse) -> dg.SensorDefinition:
    """The ``<exchange>_incremental_sensor`` (see the module docstring)."""
    keys = [dg.AssetKey([exchange, asset.name]) for asset in series_assets(exchange, config)]
    markets = dg.AssetKey([exchange, "markets"])
    dates = {m: date_partitions(config.start.isoformat(), monthly=m) for m in (False, True)}

    def date_exists(date_key: str, monthly: bool) -> bool:
        return dates[monthly].has_partition_key(date_key)

    @dg.sensor(
        name=sensor_name(exchange),
        minimum_interval_seconds=config.incremental.interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        asset_selection=[markets, *keys],  # the implicit asset job: any partitioning, checks too
        description=f"Requests runs for {exchange}'s partitions that have new closed candles, "
        "trades or funding rates; finalizes each partition once after it closed.",
        tags={"exchange": exchange},
    )
    def _sensor(
        context: dg.SensorEvaluationContext,
        exchanges: ExchangesResource,
        market_store: MarketStoreResource,
    ) -> dg.SensorResult | dg.SkipReason:
        try:
            now = exchange_clock_ms(exchanges, exchange)
        except (ccxt.BaseError, FetchError) as exc:
            # A skip, not an empty result: the tick's page says why, and the cursor is kept.
            return dg.SkipReason(f"{exchange} clock unavailable: {exc}")
        store = market_store.store()
        if not catalog_stored(store, exchange):
            # A new install: the catalog holds each market's listing and delisting, without
            # which partitions before a listing would be requested and stay empty. Nothing
            # else until it is stored; asked again every MARKETS_RETRY_MS while it is not.
            context.log.info(
                f"{exchange}: no stored markets yet, requesting {markets.to_user_string()} first"
            )
            request = dg.RunRequest(
                run_key=f"{exchange}/markets:first:{now // MARKETS_RETRY_MS}",
                asset_selection=[markets],
                tags={INCREMENTAL_TAG: "markets", "exchange": exchange},
            )
            return dg.SensorResult(
                run_requests=[request], cursor=context.cursor or write_cursor({}, now)
            )
        symbols = partition_orders(context.instance, exchange, config)
        tick = plan_tick(exchange, config, store, symbols, now, context.cursor, date_exists)
        if tick.deferred:
            context.log.info(
                f"{len(tick.run_requests)} runs requested, {tick.deferred} left for the next tick"
            )
        if not tick.run_requests:
            return dg.SensorResult(skip_reason="no new closed data", cursor=tick.cursor)
        return dg.SensorResult(run_requests=tick.run_requests, cursor=tick.cursor)

    return _sensor


def incremental_sensors(universe: Universe) -> list[dg.SensorDefinition]:
    """One incremental sensor per exchange of the universe."""
    return [incremental_sensor(exchange, config) for exchange, config in universe.exchanges.items()]
