"""The venue registry and ``make_client``: data per venue, refusals by name, the client's
settings and its routing to the replay exchange."""

from __future__ import annotations

import ccxt
import ccxt.async_support as ccxt_async
import pytest

from crypto_pipelines.exchanges import (
    VENUES,
    FetchStats,
    Quirk,
    TradesPaging,
    UnsupportedRequest,
    fetch_markets,
    get_venue,
    make_client,
)
from crypto_pipelines.exchanges.client import make_stream_client
from crypto_pipelines.exchanges.venues import Anchor
from crypto_pipelines.replay import ReplayServer
from crypto_pipelines.replay.routing import REPLAY_URL_ENV
from crypto_pipelines_tests.exchanges.conftest import client_for
from crypto_pipelines_tests.exchanges.tapes import INVERSE, SPOT, SWAP


def test_registry_holds_the_four_venues() -> None:
    assert sorted(VENUES) == ["binance", "bybit", "coinbaseexchange", "okx"]
    with pytest.raises(
        UnsupportedRequest, match="unknown exchange 'kraken': supported are binance, bybit"
    ):
        get_venue("kraken")


def test_venue_data() -> None:
    """The documented limits and behaviours, as data."""
    binance, okx, bybit, coinbase = (
        get_venue(n) for n in ("binance", "okx", "bybit", "coinbaseexchange")
    )
    assert binance.max_candles_per_request("spot") == {"publicGetKlines": 1000}
    assert binance.max_candles_per_request("linear") == {"fapiPublicGetKlines": 1000}
    assert okx.max_candles_per_request("spot") == {
        "publicGetMarketCandles": 300,
        "publicGetMarketHistoryCandles": 100,
    }
    assert bybit.max_candles_per_request("linear") == {"publicGetV5MarketKline": 1000}
    assert coinbase.max_candles_per_request("spot") == {"publicGetProductsIdCandles": 300}
    assert [v.trades.paging for v in (binance, okx, bybit, coinbase)] == [
        TradesPaging.FROM_ID,
        TradesPaging.BACKWARD,
        TradesPaging.RECENT_ONLY,
        TradesPaging.ID_CURSORS,
    ]
    assert coinbase.has(Quirk.OMITS_EMPTY_CANDLES) and coinbase.has(Quirk.MAKER_SIDE)
    assert all(v.has(Quirk.NEWEST_FIRST) for v in (okx, bybit, coinbase)) and not binance.has(
        Quirk.NEWEST_FIRST
    )
    assert [v.funding_interval_ms for v in (binance, okx, bybit, coinbase)] == [28_800_000] * 3 + [
        None
    ]
    assert coinbase.market_types == {"spot"} and binance.market_types == {"spot", "swap"}
    assert {"1m", "1h", "1d"} <= set(coinbase.timeframes) and "3m" not in coinbase.timeframes
    assert okx.ohlcv.queries["spot"][0].anchor is Anchor.NEWEST
    for venue in VENUES.values():
        assert venue.rate_budgets and all(
            b.capacity > 0 and b.window_ms > 0 for b in venue.rate_budgets
        )
        assert venue.ohlcv.newest_first == venue.has(Quirk.NEWEST_FIRST)
        with pytest.raises(TypeError):
            venue.ohlcv.intervals["2m"] = "2m"  # type: ignore[index]


def test_make_client_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REPLAY_URL_ENV, raising=False)
    client = make_client("bybit", options={"fetchMarkets": {"extra": 1}, "defaultType": "swap"})
    assert isinstance(client, ccxt.bybit)
    assert client.enableRateLimit is True and client.timeout == 10_000
    assert client.options["fetchMarkets"]["types"] == ["spot", "linear", "inverse"]
    assert client.options["fetchMarkets"]["extra"] == 1 and client.options["defaultType"] == "swap"
    assert client.urls["api"]["public"] == "https://api.{hostname}"  # not routed anywhere
    assert make_client("okx", enable_rate_limit=False, timeout_ms=1234).timeout == 1234
    with pytest.raises(UnsupportedRequest):
        make_client("kraken")


async def test_make_async_client() -> None:
    client = make_client("okx", asynchronous=True, replay_url="http://127.0.0.1:9")
    try:
        assert isinstance(client, ccxt_async.okx)
        assert client.urls["api"]["rest"] == "http://127.0.0.1:9/okx/www.okx.com"
    finally:
        await client.close()


def test_credentials_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(REPLAY_URL_ENV, raising=False)
    monkeypatch.setenv("CRYPTO_PIPELINES_BINANCE_API_KEY", "key")
    monkeypatch.setenv("CRYPTO_PIPELINES_BINANCE_SECRET", "secret")
    monkeypatch.setenv("MY_OKX_API_KEY", "k2")
    client = make_client("binance")
    assert (client.apiKey, client.secret) == ("key", "secret")
    assert make_client("okx", api_key_env_prefix="MY_OKX").apiKey == "k2"
    assert not make_client("okx").apiKey
    routed = make_client("binance", replay_url="http://127.0.0.1:9")
    assert not routed.apiKey and not routed.secret  # never sent to the replay exchange


async def test_stream_client_keys_only_for_signed_channels(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Public by default; ``signed`` (Coinbase Exchange's level2 book) takes the keys from the
    environment on the live venue and placeholders on the replay, never the real ones."""
    import ccxt.pro

    monkeypatch.delenv(REPLAY_URL_ENV, raising=False)
    monkeypatch.setenv("CRYPTO_PIPELINES_COINBASEEXCHANGE_API_KEY", "real-key")
    clients = [
        make_stream_client("coinbaseexchange"),
        make_stream_client("coinbaseexchange", signed=True),
        make_stream_client("coinbaseexchange", signed=True, replay_url="http://127.0.0.1:9"),
        make_stream_client("okx"),
    ]
    try:
        assert not clients[0].apiKey and not clients[0].secret
        assert (clients[1].apiKey, clients[2].apiKey) == ("real-key", "replay")
        assert type(clients[0]) is ccxt.pro.coinbaseexchange
        assert isinstance(clients[3], ccxt.pro.okx) and type(clients[3]) is not ccxt.pro.okx
    finally:
        for client in clients:
            await client.close()


def test_replay_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, server: ReplayServer
) -> None:
    monkeypatch.setenv(REPLAY_URL_ENV, server.url)
    client = make_client("coinbaseexchange")
    assert (
        client.urls["api"]["public"] == f"{server.url}/coinbaseexchange/api.exchange.coinbase.com"
    )


def test_fetch_markets_lists_spot_and_swaps(exchange: str, server: ReplayServer) -> None:
    stats = FetchStats()
    markets = fetch_markets(client_for(exchange, server.url), stats=stats)
    symbols = [m["symbol"] for m in markets]
    want = sorted({SPOT[exchange], *([SWAP[exchange], INVERSE] if exchange in SWAP else [])})
    assert symbols == want
    assert {m["type"] for m in markets} <= {"spot", "swap"} and stats.requests == 1
