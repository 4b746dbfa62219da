"""The real recorded tapes in ../shared through the loader: every candle series, trade
series and funding series comes back exactly as recorded (real gaps, unknown volumes and
all), and passes validation. Skips cleanly where ../shared is absent."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crypto_pipelines.exchanges import (
    FetchStats,
    TradesPaging,
    get_venue,
    iter_funding_rates,
    iter_ohlcv,
    iter_trades,
)
from crypto_pipelines.replay import ReplayServer, Tape
from crypto_pipelines_tests.exchanges.conftest import client_for


def test_real_tapes_load_exactly(real_tape: Tape, real_server: ReplayServer) -> None:
    checked = 0
    for exchange, exchange_tape in real_tape.exchanges.items():
        pytest.importorskip(f"crypto_pipelines.replay.venues.{exchange}")
        spec = get_venue(exchange)
        client = client_for(exchange, real_server.url)
        for symbol, series in exchange_tape.symbols.items():
            for timeframe, candles in series.ohlcv.items():
                if (
                    timeframe not in spec.timeframes
                    or candles.first_ts is None
                    or candles.last_ts is None
                ):
                    continue
                want = candles.between(None, None, len(candles))
                stats = FetchStats()
                end = candles.last_ts + candles.timeframe_ms
                chunks = list(
                    iter_ohlcv(client, spec, symbol, timeframe, candles.first_ts, end, stats=stats)
                )
                got = pd.concat(chunks, ignore_index=True)
                assert got["ts"].tolist() == [c.ts for c in want], (exchange, symbol, timeframe)
                for j, name in enumerate(("open", "high", "low", "close", "volume"), start=1):
                    np.testing.assert_array_equal(
                        got[name].to_numpy(),
                        np.array([float(c[j]) for c in want]),
                        err_msg=f"{exchange} {symbol} {timeframe} {name}",
                    )
                checked += 1
            if series.trades is not None and spec.trades.paging is not TradesPaging.RECENT_ONLY:
                trades = series.trades.between(None, None, len(series.trades))
                got = pd.concat(
                    iter_trades(
                        client, spec, symbol, trades[0].ts, trades[-1].ts + 1, stats=FetchStats()
                    ),
                    ignore_index=True,
                )
                assert got["trade_id"].tolist() == [t.id for t in trades]
                assert got["price"].tolist() == [float(t.price) for t in trades]
                checked += 1
            if series.funding is not None and spec.funding is not None:
                rates = series.funding.between(None, None, len(series.funding))
                got = pd.concat(
                    iter_funding_rates(
                        client, spec, symbol, rates[0].ts, rates[-1].ts + 1, stats=FetchStats()
                    ),
                    ignore_index=True,
                )
                assert got["ts"].tolist() == [r.ts for r in rates]
                assert got["rate"].tolist() == [float(r.rate) for r in rates]
                checked += 1
    assert checked >= 10
