"""Listing dates the exchange's catalog does not give, read from the market's first candle.

ccxt's ``created`` is None for Binance and Coinbase spot markets (neither publishes a listing
date) and missing for some Bybit ones. Without a listing date the automation asks for every
partition from the universe's ``start``, and those before the market traded load nothing and
count as materialized. The first candle tells the listing:

* Venues whose candle endpoint answers the *first* rows of a range (``Anchor.OLDEST``:
  Binance, Bybit): one request for a range opening before any crypto market existed starts at
  the market's first candle.
* Venues answering windows newest first (Coinbase): daily candles from the universe's
  ``start``, one window (300 days) per request, up to the first non-empty one. A market
  already trading at ``start`` gives no date (its listing is earlier, and nothing before
  ``start`` is requested anyway).

OKX publishes ``listTime``, which ccxt gives, so it is never asked. A listing found this way
is stored with the market (``listed_ms``), so each market is asked once; the catalog's own
date always wins over it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from crypto_pipelines.domain.checks import TS_MIN_MS
from crypto_pipelines.domain.instruments import Instruments
from crypto_pipelines.domain.timeframes import timeframe_ms
from crypto_pipelines.exchanges.calls import Caller, FetchStats, RetryPolicy, market_kind
from crypto_pipelines.exchanges.loader import iter_ohlcv
from crypto_pipelines.exchanges.venues import Anchor, get_venue


def first_candle_ms(
    client: Any,
    symbol: str,
    timeframe: str,
    start_ms: int,
    *,
    stats: FetchStats,
    now_ms: int | None = None,
    policy: RetryPolicy | None = None,
) -> int | None:
    """The open time of the market's first candle where the venue can tell it cheaply (see
    the module docstring); None otherwise, when it has no candle yet, or when it was already
    trading at ``start_ms`` on a venue that answers newest first."""
    spec = get_venue(client.id)
    market = Caller(client, spec, stats, f"{symbol} listing", policy).market(symbol)
    queries = spec.ohlcv.queries.get(market_kind(spec, market), ())
    if not queries:
        return None
    if all(query.anchor is Anchor.OLDEST for query in queries):
        if timeframe not in spec.ohlcv.intervals:
            return None
        since = TS_MIN_MS
    else:
        timeframe = max(
            (tf for tf in spec.ohlcv.intervals if not tf.endswith("M")), key=timeframe_ms
        )
        since = start_ms
    now = int(client.milliseconds()) if now_ms is None else now_ms
    chunks = iter_ohlcv(
        client,
        spec,
        symbol,
        timeframe,
        since,
        now,
        stats=stats,
        now_ms=now,
        policy=policy,
        chunk_rows=1,
    )
    first = next(chunks, None)
    if first is None or first.empty:
        return None
    found = int(first["ts"].iloc[0])
    if since == start_ms and found < start_ms + timeframe_ms(timeframe):
        return None  # trading from the start: listed earlier, date unknown
    return found


def with_first_candles(
    client: Any,
    instruments: Instruments,
    symbols: Collection[str],
    stored: Mapping[str, int],
    timeframe: str,
    start_ms: int,
    *,
    stats: FetchStats,
    now_ms: int | None = None,
    policy: RetryPolicy | None = None,
) -> tuple[Instruments, dict[str, int]]:
    """``instruments`` with a listing date for each of ``symbols`` that has none: the one
    stored before (``stored``: symbol -> ``listed_ms``), else its first candle (``timeframe``
    where one request tells it; ``start_ms``: the universe's start). Also the dates asked of
    the exchange this time (symbol -> ms)."""
    asked: dict[str, int] = {}

    def complete(listed: int | None, symbol: str) -> int | None:
        if listed is not None or symbol not in symbols:
            return listed
        if symbol in stored:
            return stored[symbol]
        found = first_candle_ms(
            client, symbol, timeframe, start_ms, stats=stats, now_ms=now_ms, policy=policy
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
