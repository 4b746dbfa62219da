"""The ``cross_exchange`` asset check: a venue's closes against the same market elsewhere.

Which listings are compared and against what reference: ``crypto_pipelines.domain.
cross_exchange`` (same base and market type, USDT/USDC/USD quotes, median of the venues).
A candle whose close is more than ``max_deviation_bps`` (default 50, resource
``cross_exchange``, env ``CRYPTO_PIPELINES_CROSS_EXCHANGE_MAX_BPS``) away from the reference
gives a WARN listing those candles. A divergence is a reason to look, not proof of a bad row
(a thin venue can really trade away), hence WARN and never blocking.

Where it hangs: one check per ``<exchange>/ohlcv_<tf>`` asset that may have a comparable
listing on another exchange with that timeframe, partitioned like its asset (the groups are
formed when it runs, from the symbols partitioned then, so listings added by filters count), comparing that exchange's candles of the run's
partitions against the others' *stored* candles of the same window. The result belongs to the
asset whose candles diverge, runs in whatever run loads that exchange (runs are per exchange:
pools and sensors are), and needs none of the other assets in the run. The other exchanges'
assets of the same timeframe are ``additional_deps``: lineage, and in a run that loads several
exchanges the check waits for all of them. (A multi-asset check over all exchanges would have
to subset itself to the exchanges a run selected, to the same effect.)
"""

import os
import time
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from crypto_pipelines.defs.checks.results import (
    Verdict,
    emit,
    iso,
    markdown_table,
    run_partition_keys,
)
from crypto_pipelines.defs.partitions import (
    market_partitions,
    symbol_ranges,
    symbols_partitions_name,
)
from crypto_pipelines.defs.resources import MarketStoreResource
from crypto_pipelines.domain.cross_exchange import (
    DEFAULT_MAX_DEVIATION_BPS,
    ComparableGroup,
    Listing,
    close_deviations,
    comparable_groups,
    group_of,
    offending,
    validate_max_bps,
)
from crypto_pipelines.domain.datasets import OHLCV, get_market_dataset
from crypto_pipelines.domain.universe import ExchangeUniverse, Universe
from crypto_pipelines.storage.store import MarketStore

CROSS_EXCHANGE_CHECK = "cross_exchange"
MAX_BPS_ENV = "CRYPTO_PIPELINES_CROSS_EXCHANGE_MAX_BPS"
SAMPLE_CANDLES = 20


class CrossExchangeResource(dg.ConfigurableResource):
    """Settings of the ``cross_exchange`` check."""

    max_deviation_bps: float = Field(
        default=DEFAULT_MAX_DEVIATION_BPS,
        gt=0,
        lt=10_000,
        description="a close further than this from the venues' reference warns (basis points)",
    )


def cross_exchange_resource(environ: Mapping[str, str] | None = None) -> CrossExchangeResource:
    """The resource with ``$CRYPTO_PIPELINES_CROSS_EXCHANGE_MAX_BPS`` when set; a ValueError
    naming the variable when it is not a number in (0, 10000)."""
    raw = (os.environ if environ is None else environ).get(MAX_BPS_ENV, "").strip()
    if not raw:
        return CrossExchangeResource()
    try:
        value = validate_max_bps(float(raw))
    except ValueError as exc:
        raise ValueError(f"{MAX_BPS_ENV}={raw!r}: {exc}") from None
    return CrossExchangeResource(max_deviation_bps=value)


def cross_exchange_checks(universe: Universe) -> list[dg.AssetChecksDefinition]:
    """A ``cross_exchange`` check per OHLCV asset that may have a comparable listing on another
    exchange with the same timeframe (listed in the universe, or possible through filters)."""
    checks = []
    timeframes = sorted({tf for config in universe.exchanges.values() for tf in config.timeframes})
    for timeframe in timeframes:
        venues = {e: c for e, c in universe.exchanges.items() if timeframe in c.timeframes}
        listed = comparable_groups(
            Listing(exchange, symbol)
            for exchange, config in venues.items()
            for symbol in config.symbols
        )
        dynamic = any(config.filters is not None for config in venues.values())
        for exchange, config in venues.items():
            if len(venues) >= 2 and (dynamic or any(_has(g, exchange) for g in listed)):
                checks.append(_check(exchange, config, timeframe, venues))
    return checks


def _has(group: ComparableGroup, exchange: str) -> bool:
    return any(member.exchange == exchange for member in group.listings)


def groups_now(
    instance: dg.DagsterInstance, venues: Mapping[str, ExchangeUniverse]
) -> list[ComparableGroup]:
    """Comparable groups over the venues' symbols as partitioned now: the universe's, plus
    those listing filters added to the dynamic partitions."""
    listings = [
        Listing(exchange, symbol)
        for exchange, config in venues.items()
        for symbol in {
            *config.symbols,
            *instance.get_dynamic_partitions(symbols_partitions_name(exchange)),
        }
    ]
    return comparable_groups(listings)


def closes(
    store: MarketStore, listing: Listing, timeframe: str, start_ms: int, end_ms: int
) -> pd.Series:
    """A listing's stored closes in ``[start_ms, end_ms)``, indexed by ``ts``."""
    raw = store.read(
        "ohlcv",
        exchange=listing.exchange,
        symbol=listing.symbol,
        timeframe=timeframe,
        start_ts=start_ms,
        end_ts=end_ms,
        typed=False,
    )
    ts = pd.to_numeric(raw["ts"], errors="coerce")
    values = pd.to_numeric(raw["close"], errors="coerce")
    keep = ts.notna() & values.notna()
    series = pd.Series(values[keep].to_numpy(), index=ts[keep].astype("int64").to_numpy())
    return series[~series.index.duplicated()]  # a table without its key can repeat a ts


def compare(
    store: MarketStore,
    group: ComparableGroup,
    listing: Listing,
    timeframe: str,
    start_ms: int,
    end_ms: int,
    max_bps: float,
) -> Verdict:
    """The verdict for ``listing``'s candles in one window against its group."""
    series = {
        member: closes(store, member, timeframe, start_ms, end_ms) for member in group.listings
    }
    deviations = close_deviations(series)
    mine = deviations[
        (deviations["exchange"] == listing.exchange) & (deviations["symbol"] == listing.symbol)
    ]
    bad = offending(deviations, listing, max_bps)
    others = [f"{m.exchange} {m.symbol}" for m in group.others(listing)]
    metadata: dict[str, Any] = {
        "offending_candles": len(bad),
        "max_deviation_bps": round(float(mine["deviation_bps"].max()), 3) if len(mine) else 0.0,
        "threshold_bps": max_bps,
        "candles_compared": len(mine),
        "compared_with": dg.MetadataValue.json(others),
    }
    if bad.empty:
        text = f"{len(mine)} candles within {max_bps:g} bps of {len(others)} other venue(s)"
        return Verdict(True, metadata, text, dg.AssetCheckSeverity.WARN)
    sample = _sample(bad, deviations)
    metadata["offending"] = dg.MetadataValue.json(sample)
    metadata["offending_table"] = dg.MetadataValue.md(
        markdown_table(
            [{**row, "time": iso(row["ts"])} for row in sample],
            ["time", "ts", "exchange", "symbol", "close", "reference", "deviation_bps", "closes"],
        )
    )
    text = (
        f"{len(bad)} of {len(mine)} candles deviate more than {max_bps:g} bps from the other "
        f"venues (max {metadata['max_deviation_bps']} bps)"
    )
    return Verdict(False, metadata, text, dg.AssetCheckSeverity.WARN)


def _sample(bad: pd.DataFrame, deviations: pd.DataFrame) -> list[dict[str, Any]]:
    """The first offending candles, each with every venue's close at its ``ts``."""
    shown = [dict(r) for r in bad.head(SAMPLE_CANDLES).to_dict("records")]
    at: dict[int, dict[str, float]] = {}
    for row in deviations[deviations["ts"].isin([r["ts"] for r in shown])].to_dict("records"):
        at.setdefault(int(row["ts"]), {})[f"{row['exchange']} {row['symbol']}"] = float(
            row["close"]
        )
    return [
        {
            "ts": int(row["ts"]),
            "exchange": str(row["exchange"]),
            "symbol": str(row["symbol"]),
            "close": float(row["close"]),
            "reference": float(row["reference"]),
            "deviation_bps": round(float(row["deviation_bps"]), 3),
            "closes": at.get(int(row["ts"]), {}),
        }
        for row in shown
    ]


def _check(
    exchange: str, config: ExchangeUniverse, timeframe: str, venues: Mapping[str, ExchangeUniverse]
) -> dg.AssetChecksDefinition:
    spec = get_market_dataset(OHLCV)
    asset_key = dg.AssetKey([exchange, spec.asset_name(timeframe)])
    monthly = spec.is_monthly(timeframe)
    peers = sorted(set(venues) - {exchange})

    @dg.asset_check(  # type: ignore[arg-type]  # stub types only the returning form
        asset=asset_key,
        name=CROSS_EXCHANGE_CHECK,
        description=f"{exchange}'s {timeframe} closes against the same market on other exchanges "
        "(USDT/USDC/USD quotes alike, spot with spot, perps with perps): WARN for candles more "
        "than the threshold away from the venues' median. Metadata: offending_candles, "
        "max_deviation_bps, offending (ts, exchanges, closes).",
        partitions_def=market_partitions(exchange, config.start.isoformat(), spec, timeframe),
        additional_deps=[dg.AssetKey([peer, f"ohlcv_{timeframe}"]) for peer in peers],
        blocking=False,
    )
    def _cross_exchange(
        context: dg.AssetCheckExecutionContext,
        market_store: MarketStoreResource,
        cross_exchange: CrossExchangeResource,
    ) -> Iterator[Any]:
        store = market_store.store()
        max_bps = cross_exchange.max_deviation_bps
        groups = groups_now(context.instance, venues)
        now = int(time.time() * 1000)

        def verdicts() -> Iterator[tuple[str, Verdict]]:
            for key in run_partition_keys(context):
                span = symbol_ranges([key], monthly=monthly)[0]
                listing = Listing(exchange, span.symbol)
                group = group_of(groups, listing)
                if group is None:
                    note = f"{span.symbol} has no comparable listing on another exchange"
                    metadata = {"candles_compared": 0}
                    yield key, Verdict(True, metadata, note, dg.AssetCheckSeverity.WARN)
                    continue
                end = min(span.end_ms, now)
                yield key, compare(store, group, listing, timeframe, span.start_ms, end, max_bps)

        yield from emit(context, asset_key, CROSS_EXCHANGE_CHECK, verdicts(), blocking=False)

    return _cross_exchange
