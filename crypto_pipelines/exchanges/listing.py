"""Listing dates the exchange's catalog does not give, read from the market's first candle.

ccxt's ``created`` is None for Binance spot markets (``exchangeInfo`` has no listing date) and
missing for some Bybit ones. Without a listing date the automation asks for every partition
from the universe's ``start``, and those before the market traded load nothing and count as
materialized. Venues whose candle endpoint answers the *first* rows of a range
(``Anchor.OLDEST``: Binance, Bybit) tell the first candle in one request: a range opening
before any crypto market existed starts at the market's first candle. Other venues are not
asked (None): OKX publishes ``listTime``, which ccxt gives, and Coinbase answers windows
newest first, so finding its first candle would mean walking years of empty windows.

A listing found this way is stored with the market (``listed_ms``), so each market is asked
once; the catalog's own date always wins over it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from crypto_pipelines.domain.checks import TS_MIN_MS
from crypto_pipelines.domain.instruments import Instruments
from crypto_pipelines.exchanges.calls import Caller, FetchStats, RetryPolicy, market_kind
from crypto_pipelines.exchanges.loader import iter_ohlcv
from crypto_pipelines.exchanges.venues import Anchor, get_venue


def first_candle_ms(
    client: Any,
    symbol: str,
    timeframe: str,
    *,
    stats: FetchStats,
    now_ms: int | None = None,
    policy: RetryPolicy | None = None,
) -> int | None:
    """The open time of the market's first ``timeframe`` candle, where one request tells it;
    None where the venue cannot say so cheaply, or when it has no candle yet."""
    spec = get_venue(client.id)
    if timeframe not in spec.ohlcv.intervals:
        return None
    market = Caller(client, spec, stats, f"{symbol} listing", policy).market(symbol)
    queries = spec.ohlcv.queries.get(market_kind(spec, market), ())
    if not queries or any(query.anchor is not Anchor.OLDEST for query in queries):
        return None
    now = int(client.milliseconds()) if now_ms is None else now_ms
    chunks = iter_ohlcv(
        client,
        spec,
        symbol,
        timeframe,
        TS_MIN_MS,
        now,
        stats=stats,
        now_ms=now,
        policy=policy,
        chunk_rows=1,
    )
    first = next(chunks, None)
    return None if first is None or first.empty else int(first["ts"].iloc[0])


def with_first_candles(
    client: Any,
    instruments: Instruments,
    symbols: Collection[str],
    stored: Mapping[str, int],
    timeframe: str,
    *,
    stats: FetchStats,
    now_ms: int | None = None,
    policy: RetryPolicy | None = None,
) -> tuple[Instruments, dict[str, int]]:
    """``instruments`` with a listing date for each of ``symbols`` that has none: the one
    stored before (``stored``: symbol -> ``listed_ms``), else its first candle. Also the
    dates asked of the exchange this time (symbol -> ms)."""
    asked: dict[str, int] = {}

    def complete(listed: int | None, symbol: str) -> int | None:
        if listed is not None or symbol not in symbols:
            return listed
        if symbol in stored:
            return stored[symbol]
        found = first_candle_ms(
            client, symbol, timeframe, stats=stats, now_ms=now_ms, policy=policy
        )
        if found is not None:
            asked[symbol] = found
        return found

    pairs = tuple(
        dataclasses.replace(p, listed_ms=complete(p.listed_ms, p.symbol)) for p in instruments.pairs
    )
    perps = tuple(
        dataclasses.replace(p, listed_ms=complete(p.listed_ms, p.symbol)) for p in instruments.perps
    )
    return dataclasses.replace(instruments, pairs=pairs, perps=perps), asked
