"""The stream follows the universe as the API changed it: symbols added through the API are
streamed, symbols removed (also the file's) are not, read from the market store when a run
starts."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from crypto_pipelines.defs.stream import stream_symbols
from crypto_pipelines.domain.universe import ExchangeUniverse, Universe
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines.storage.universe_changes import record_change


def test_stream_symbols_apply_the_api_changes(tmp_path: Path) -> None:
    universe = Universe(
        exchanges={
            "binance": ExchangeUniverse(symbols=("BTC/USDT", "ETH/USDT"), start=date(2024, 1, 1)),
            "okx": ExchangeUniverse(symbols=("BTC/USDT",), start=date(2024, 1, 1)),
        }
    )
    with MarketStore.open(f"sqlite:///{tmp_path / 'market.db'}") as store:
        assert stream_symbols(universe, [], store) == {
            "binance": ["BTC/USDT", "ETH/USDT"],
            "okx": ["BTC/USDT"],
        }
        record_change(store.engine, "binance", "SOL/USDT", "add", by="desk", now_ms=1)
        record_change(store.engine, "binance", "ETH/USDT", "remove", by="desk", now_ms=2)
        record_change(store.engine, "okx", "BTC/USDT", "remove", by="desk", now_ms=3)
        assert stream_symbols(universe, [], store) == {"binance": ["BTC/USDT", "SOL/USDT"]}
        assert stream_symbols(universe, ["okx"], store) == {}
