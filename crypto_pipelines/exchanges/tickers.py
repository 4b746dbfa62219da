"""24-hour volumes in USD from ccxt tickers, to rank markets for the universe's
``top_n_by_volume``.

Called by ``<exchange>/markets`` when it refreshes the listing (daily), only for the markets the
universe filters could add, so ranking is one bulk ticker request per market type on most
venues. Venues differ in what a ticker carries, and this module evens that out:

- a bulk ``fetch_tickers`` is asked per market type (Binance and Bybit refuse mixed types);
  a venue that refuses the bulk form, or answers it without volumes (Coinbase Exchange's
  bulk tickers carry prices only), is asked symbol by symbol;
- ``quoteVolume`` is used when present, else ``baseVolume x last``; OKX reports a swap's
  ``baseVolume`` in contracts (``vol24h``), so it is multiplied by the contract size;
- quote currencies that are dollars or dollar stablecoins count at par; another quote
  (BTC, ETH ...) is converted with the last price of ``<QUOTE>/USDT`` (or ``/USD``,
  ``/USDC``) on the same exchange; a market that cannot be valued is left out.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import ccxt

from crypto_pipelines.exchanges.calls import Caller, FetchStats, RetryPolicy
from crypto_pipelines.exchanges.venues import get_venue

log = logging.getLogger(__name__)

USD_LIKE = frozenset({"USD", "USDT", "USDC", "FDUSD", "TUSD", "DAI", "BUSD", "USDP", "PYUSD"})
_SWAP_BASE_VOLUME_IN_CONTRACTS = frozenset({"okx"})
_USD_QUOTES = ("USDT", "USD", "USDC")


def _number(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number == number and number >= 0 else None  # NaN and negatives: unknown


def _has_volume(ticker: Mapping[str, Any] | None) -> bool:
    return ticker is not None and (
        _number(ticker.get("quoteVolume")) is not None
        or _number(ticker.get("baseVolume")) is not None
    )


def quote_volume(
    exchange_id: str, market: Mapping[str, Any], ticker: Mapping[str, Any]
) -> float | None:
    """24-hour volume in the market's quote currency, or None when the ticker has none."""
    quote = _number(ticker.get("quoteVolume"))
    if quote is not None:
        return quote
    base = _number(ticker.get("baseVolume"))
    last = _number(ticker.get("last")) or _number(ticker.get("close"))
    if base is None or not last:
        return None
    if market.get("type") == "swap" and exchange_id in _SWAP_BASE_VOLUME_IN_CONTRACTS:
        base *= _number(market.get("contractSize")) or 1.0
    return base * last


def _group_key(market: Mapping[str, Any]) -> tuple[str, bool | None]:
    return str(market.get("type")), market.get("linear") if market.get("type") == "swap" else None


def fetch_tickers(
    client: Any,
    markets: Sequence[Mapping[str, Any]],
    *,
    stats: FetchStats | None = None,
    policy: RetryPolicy | None = None,
) -> dict[str, dict[str, Any]]:
    """Tickers of ``markets`` (ccxt market dicts of ``client``'s exchange) by symbol."""
    caller = Caller(client, get_venue(client.id), stats or FetchStats(), "tickers", policy)
    groups: dict[tuple[str, bool | None], list[str]] = defaultdict(list)
    for market in markets:
        groups[_group_key(market)].append(str(market["symbol"]))
    tickers: dict[str, dict[str, Any]] = {}
    for symbols in groups.values():
        try:
            bulk: dict[str, Any] = caller.retrying(
                partial(client.fetch_tickers, symbols), None, "fetch_tickers"
            )
            tickers.update({k: v for k, v in bulk.items() if k in set(symbols)})
        except (ccxt.BadRequest, ccxt.NotSupported) as exc:
            log.info("%s: bulk tickers refused (%s); asking symbol by symbol", client.id, exc)
        for symbol in symbols:
            if not _has_volume(tickers.get(symbol)):
                tickers[symbol] = caller.retrying(
                    partial(client.fetch_ticker, symbol), None, "fetch_ticker"
                )
    return tickers


def fetch_usd_volumes(
    client: Any,
    markets: Sequence[Mapping[str, Any]],
    *,
    stats: FetchStats | None = None,
    policy: RetryPolicy | None = None,
) -> dict[str, float]:
    """Symbol -> 24-hour volume in USD for ``markets``; markets that cannot be valued (no
    volume, or a quote currency without a dollar price on the exchange) are left out."""
    stats = stats or FetchStats()
    tickers = fetch_tickers(client, markets, stats=stats, policy=policy)
    prices = _usd_prices(client, {str(m["quote"]) for m in markets}, stats, policy)
    volumes: dict[str, float] = {}
    for market in markets:
        symbol = str(market["symbol"])
        ticker = tickers.get(symbol)
        amount = quote_volume(client.id, market, ticker) if ticker else None
        price = prices.get(str(market["quote"]))
        if amount is None or price is None:
            log.info("%s %s: 24h volume cannot be valued in USD; not ranked", client.id, symbol)
            continue
        volumes[symbol] = amount * price
    return volumes


def _usd_prices(
    client: Any, quotes: set[str], stats: FetchStats, policy: RetryPolicy | None
) -> dict[str, float]:
    prices = {quote: 1.0 for quote in quotes if quote in USD_LIKE}
    wanted: dict[str, str] = {}
    for quote in sorted(quotes - USD_LIKE):
        for usd in _USD_QUOTES:
            if f"{quote}/{usd}" in (client.markets or {}):
                wanted[quote] = f"{quote}/{usd}"
                break
    if wanted:
        markets = [client.markets[symbol] for symbol in wanted.values()]
        tickers = fetch_tickers(client, markets, stats=stats, policy=policy)
        for quote, symbol in wanted.items():
            ticker = tickers.get(symbol) or {}
            last = _number(ticker.get("last")) or _number(ticker.get("close"))
            if last:
                prices[quote] = last
    return prices
