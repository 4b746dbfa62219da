"""Instruments from ccxt markets: real venue answers parsed by stock ccxt, plus edge cases.

Markets come from ccxt's own parsing wherever possible: the venue samples in
../shared/fixtures/venue-samples fed to ``parse_market``/``fetch_markets`` (with the HTTP
call replaced), and ``load_markets()`` against the replay exchange serving the real tapes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import ccxt
import pytest

from crypto_pipelines.domain.instruments import (
    CryptoAsset,
    CryptoPair,
    CryptoPerp,
    InstrumentError,
    UnsupportedMarketError,
    assets_of,
    from_ccxt_market,
    instruments_from_ccxt_markets,
)
from crypto_pipelines.domain.schemas import DATASETS
from crypto_pipelines.replay import ReplayServer, point_ccxt_at
from crypto_pipelines_tests.conftest import VENUE_SAMPLES, require_shared


def sample(name: str) -> Any:
    return json.loads(require_shared(VENUE_SAMPLES / name).read_text())


def spot_market(**overrides: Any) -> dict[str, Any]:
    """A ccxt-shaped spot market as ``load_markets()`` returns it (TICK_SIZE precision)."""
    market: dict[str, Any] = {
        "id": "BTCUSDT",
        "symbol": "BTC/USDT",
        "base": "BTC",
        "quote": "USDT",
        "settle": None,
        "type": "spot",
        "spot": True,
        "swap": False,
        "active": True,
        "linear": None,
        "contractSize": None,
        "precision": {"amount": 0.00001, "price": 0.01},
        "limits": {"amount": {"min": 0.00001, "max": 9000.0}},
        "created": None,
        "info": {},
    }
    market.update(overrides)
    return market


def test_dataclass_fields_are_the_table_columns() -> None:
    for cls, dataset in (
        (CryptoAsset, "crypto_assets"),
        (CryptoPair, "crypto_pairs"),
        (CryptoPerp, "crypto_perps"),
    ):
        assert tuple(f.name for f in dataclasses.fields(cls)) == DATASETS[dataset].columns


def test_okx_instruments_through_ccxt_parse_market() -> None:
    okx = ccxt.okx()
    spot = [
        okx.parse_market(m) for m in sample("okx_test_data_http_get_instruments_spot.json")["data"]
    ]
    swaps = [
        okx.parse_market(m) for m in sample("okx_test_data_http_get_instruments_swap.json")["data"]
    ]
    pair = from_ccxt_market("okx", spot[0])
    assert pair == CryptoPair(
        exchange="okx", symbol="BTC/USD", base="BTC", quote="USD", price_tick=0.1,
        amount_step=0.00000001, min_amount=0.00001, active=True, listed_ms=1733454000000,
    )  # fmt: skip
    perps = {p.symbol: p for p in (from_ccxt_market("okx", m) for m in swaps)}
    inverse = perps["BTC/USD:BTC"]
    assert isinstance(inverse, CryptoPerp)
    assert (inverse.linear, inverse.settle, inverse.contract_size) == (False, "BTC", 100.0)
    assert (inverse.price_tick, inverse.listed_ms, inverse.funding_interval_ms) == (
        0.1,
        1535424203000,
        None,
    )
    linear = perps["ETH/USDT:USDT"]
    assert isinstance(linear, CryptoPerp) and linear.linear and linear.contract_size == 0.1


def test_binance_spot_through_ccxt_parse_market() -> None:
    binance = ccxt.binance()
    binance.options["crossMarginPairsData"] = []  # filled by load_markets() normally
    binance.options["isolatedMarginPairsData"] = []
    raw = sample("binance_test_data_spot_http_json_exchange_info_response.json")["symbols"][0]
    pair = from_ccxt_market("binance", binance.parse_market(raw))
    # The sample has no filters: no tick or step is published, and none is invented.
    assert pair == CryptoPair(exchange="binance", symbol="ETH/BTC", base="ETH", quote="BTC")


def test_bybit_instruments_through_ccxt_fetch_markets() -> None:
    files = {
        "spot": "bybit_test_data_http_get_instruments_spot.json",
        "linear": "bybit_test_data_http_get_instruments_linear.json",
        "inverse": "bybit_test_data_http_get_instruments_inverse.json",
    }
    responses = {category: sample(name) for category, name in files.items()}
    bybit = ccxt.bybit({"options": {"fetchMarkets": {"types": ["spot", "linear", "inverse"]}}})

    def instruments_info(params: dict[str, Any] | None = None) -> Any:
        params = params or {}
        if params.get("status") == "PreLaunch":
            return {"retCode": 0, "result": {"list": []}}
        return responses[params["category"]]

    bybit.publicGetV5MarketInstrumentsInfo = instruments_info
    found = instruments_from_ccxt_markets("bybit", bybit.fetch_markets())
    assert [p.symbol for p in found.pairs] == ["BTC/USDT", "ETH/USDT"]
    perps = {p.symbol: p for p in found.perps}
    assert set(perps) == {"BTC/USDT:USDT", "ETH/USDT:USDT", "BTC/USD:BTC"}
    btc = perps["BTC/USDT:USDT"]
    # ccxt says linear=False here (the sample lacks `category`); the currencies decide.
    assert btc.linear and not perps["BTC/USD:BTC"].linear
    assert (btc.price_tick, btc.amount_step, btc.min_amount) == (0.5, 0.001, 0.001)
    assert btc.funding_interval_ms == 8 * 60_000  # v5 `fundingInterval` is in minutes
    assert (btc.listed_ms, btc.delisted_ms) == (1699990000000, 1702592000000)
    assert {a.code for a in found.assets} == {"BTC", "ETH", "USD", "USDT"}


def test_coinbaseexchange_products_through_ccxt_fetch_markets() -> None:
    """A hand-written product in Coinbase Exchange's documented /products format."""
    exchange = ccxt.coinbaseexchange()
    product = {
        "id": "ETH-USD", "base_currency": "ETH", "quote_currency": "USD",
        "quote_increment": "0.01", "base_increment": "0.00000001", "display_name": "ETH-USD",
        "min_market_funds": "1", "margin_enabled": False, "post_only": False,
        "limit_only": False, "cancel_only": False, "status": "online", "status_message": "",
        "trading_disabled": False, "auction_mode": False,
    }  # fmt: skip
    exchange.publicGetProducts = lambda params=None: [
        product,
        {**product, "id": "ETH-EUR", "quote_currency": "EUR", "status": "delisted"},
    ]
    found = instruments_from_ccxt_markets("coinbaseexchange", exchange.fetch_markets())
    by_symbol = {p.symbol: p for p in found.pairs}
    assert by_symbol["ETH/USD"] == CryptoPair(
        exchange="coinbaseexchange", symbol="ETH/USD", base="ETH", quote="USD",
        price_tick=0.01, amount_step=0.00000001,
    )  # fmt: skip
    assert by_symbol["ETH/EUR"].active is False


def test_load_markets_from_the_replay_exchange(real_tape_dir: Path) -> None:
    """Stock ccxt clients, real tapes: every market the four venues list converts."""
    with ReplayServer(real_tape_dir) as server:
        seen: dict[str, int] = {}
        for exchange_id in ("binance", "okx", "bybit", "coinbaseexchange"):
            exchange = point_ccxt_at(getattr(ccxt, exchange_id)(), server.url)
            found = instruments_from_ccxt_markets(exchange_id, exchange.load_markets())
            seen[exchange_id] = len(found.pairs) + len(found.perps)
            for inst in (*found.pairs, *found.perps):
                assert inst.exchange == exchange_id and inst.active
                assert inst.price_tick and inst.price_tick > 0, inst
            if exchange_id == "bybit":
                perp = next(p for p in found.perps if p.symbol == "BTC/USDT:USDT")
                assert perp.funding_interval_ms == 8 * 3_600_000 and perp.linear
    assert all(seen.values()), seen


def test_malformed_markets_name_exchange_and_symbol() -> None:
    with pytest.raises(InstrumentError, match=r"okx market 'BTC/USDT': 'base' missing"):
        from_ccxt_market("okx", spot_market(base=None))
    with pytest.raises(
        InstrumentError, match=r"binance market 'BTC/USDT': .*price_tick must be > 0"
    ):
        from_ccxt_market("binance", spot_market(precision={"price": -0.01, "amount": 1}))
    with pytest.raises(
        InstrumentError, match=r"bybit market 'BTC/USDT': .*'price' is not a number"
    ):
        from_ccxt_market("bybit", spot_market(precision={"price": "abc"}))
    with pytest.raises(InstrumentError, match=r"okx market 'BTC/USDT': not epoch milliseconds"):
        from_ccxt_market("okx", spot_market(created="yesterday"))
    with pytest.raises(
        InstrumentError, match=r"okx market 'BTC/USDT': .*listed_ms is not epoch milliseconds"
    ):
        from_ccxt_market("okx", spot_market(created=1_700_000_000))  # seconds
    with pytest.raises(InstrumentError, match=r"okx market 'BTC/EUR': .*do not match"):
        from_ccxt_market("okx", spot_market(symbol="BTC/EUR"))
    with pytest.raises(InstrumentError, match=r"okx market None: not a ccxt market dict"):
        from_ccxt_market("okx", ["BTC/USDT"])  # type: ignore[arg-type]


def test_swap_needs_settle_and_refuses_quanto() -> None:
    swap = spot_market(symbol="BTC/USDT:USDT", type="swap", settle="USDT", contractSize=0.001)
    perp = from_ccxt_market("binance", swap, funding_interval_ms=28_800_000)
    assert isinstance(perp, CryptoPerp) and perp.linear and perp.funding_interval_ms == 28_800_000
    with pytest.raises(InstrumentError, match="'settle' missing"):
        from_ccxt_market("binance", {**swap, "settle": None})
    with pytest.raises(UnsupportedMarketError, match="quanto"):
        from_ccxt_market(
            "bitmex",
            {**swap, "symbol": "ETH/USD:BTC", "base": "ETH", "quote": "USD", "settle": "BTC"},
        )


def test_futures_and_options_are_skipped_not_fatal() -> None:
    future = spot_market(symbol="BTC/USDT:USDT-250328", type="future", settle="USDT")
    with pytest.raises(UnsupportedMarketError, match="market type 'future'"):
        from_ccxt_market("okx", future)
    found = instruments_from_ccxt_markets("okx", {"BTC/USDT": spot_market(), "F": future})
    assert [p.symbol for p in found.pairs] == ["BTC/USDT"]
    assert found.skipped == ("BTC/USDT:USDT-250328",)


def test_delisting_from_venue_info_and_never_sentinel() -> None:
    swap = spot_market(symbol="BTC/USDT:USDT", type="swap", settle="USDT")
    never = from_ccxt_market("binance", {**swap, "info": {"deliveryDate": "4133404800000"}})
    assert never.delisted_ms is None
    soon = from_ccxt_market("bybit", {**swap, "info": {"deliveryTime": "1735689600000"}})
    assert soon.delisted_ms == 1735689600000
    assert from_ccxt_market("bybit", {**swap, "info": {"deliveryTime": "0"}}).delisted_ms is None


def test_active_unknown_counts_as_active() -> None:
    assert from_ccxt_market("okx", spot_market(active=None)).active is True
    assert from_ccxt_market("okx", spot_market(active=False)).active is False


def test_assets_of_collects_base_quote_and_settle() -> None:
    pair = from_ccxt_market("okx", spot_market())
    perp = from_ccxt_market(
        "okx", spot_market(symbol="ETH/USD:ETH", base="ETH", quote="USD", type="swap", settle="ETH")
    )
    assert assets_of([pair], [perp]) == tuple(CryptoAsset(c) for c in ("BTC", "ETH", "USD", "USDT"))
    with pytest.raises(InstrumentError):
        CryptoAsset("BTC USD")
