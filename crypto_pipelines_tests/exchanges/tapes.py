"""The tape the exchange-loader tests serve: the same shapes for all four venues, with the
awkward parts real data has (omitted candles, a gap longer than any request window, unknown
volumes, trades sharing a millisecond, an hour without trades, a funding interval change).

Rows are kept as written (decimal strings) so that tests compare the loader's output with
exactly what the replay exchange was given."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crypto_pipelines.replay.tape.writer import write_funding, write_ohlcv, write_trades

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
MIN = 60_000
HOUR = 3_600_000
DAYS = 3
#: minutes without a candle: single ones, a short run, and 1,500 minutes (longer than one
#: request window at every venue: 1,000 / 300 / 100 candles)
MISSING = {5, 6, 7, 200, *range(1000, 2500), 4000}
NAN_VOLUME = {42, 3000}  # minutes whose volume the source did not record
N_TRADES = 3000

EXCHANGES = ("binance", "okx", "bybit", "coinbaseexchange")
SPOT = {
    "binance": "BTC/USDT",
    "okx": "BTC/USDT",
    "bybit": "BTC/USDT",
    "coinbaseexchange": "BTC/USD",
}
SWAP = {"binance": "BTC/USDT:USDT", "okx": "BTC/USDT:USDT", "bybit": "BTC/USDT:USDT"}
INVERSE = "BTC/USD:BTC"  # a coin-margined perpetual at the venues that list swaps


@dataclass(frozen=True)
class Rows:
    candles: list[tuple[int, str, str, str, str, str]]
    swap_candles: list[tuple[int, str, str, str, str, str]]
    trades: list[tuple[int, int, str, str, str]]
    funding: list[tuple[int, str]]


def candle_rows(skip: set[int], nan_volume: set[int]) -> list[tuple[int, str, str, str, str, str]]:
    rows = []
    for i in range(DAYS * 1440):
        if i in skip:
            continue
        base = 42000 + (i % 97) - (i % 13) * 0.5
        volume = "nan" if i in nan_volume else f"{(i % 17) * 0.125 + 0.001:.3f}"
        rows.append(
            (
                T0 + i * MIN,
                f"{base:.2f}",
                f"{base + 3.25:.2f}",
                f"{base - 2.5:.2f}",
                f"{base + 1.01:.2f}",
                volume,
            )
        )
    return rows


def trade_rows() -> list[tuple[int, int, str, str, str]]:
    """Trades in clusters every 20 s (four sharing a millisecond), ids increasing with a few
    holes, and no trade at all between hours 2 and 3."""
    rows = []
    trade_id = 1000
    for i in range(N_TRADES):
        ts = T0 + (i // 5) * 20_000 + (i % 5 == 4)
        if ts - T0 >= 2 * HOUR:
            ts += HOUR
        trade_id += 3 if i % 97 == 0 else 1
        rows.append(
            (ts, trade_id, "buy" if i % 3 else "sell", f"{42000 + i % 50}.5", f"0.{i % 9 + 1:03d}")
        )
    return rows


def funding_rows() -> list[tuple[int, str]]:
    """30 days every 8 h, then 20 days every 4 h (denser than the venues' 8-hour default)."""
    times = [T0 + k * 8 * HOUR for k in range(90)]
    times += [times[-1] + k * 4 * HOUR for k in range(1, 121)]
    return [(t, f"{((k % 7) - 3) * 0.00001:.5f}") for k, t in enumerate(times)]


def write_tape(root: Path, exchanges: Sequence[str] = EXCHANGES) -> Rows:
    """The same rows under each of ``exchanges`` (a tape may only hold served venues)."""
    rows = Rows(
        candle_rows(MISSING, NAN_VOLUME), candle_rows(set(), set()), trade_rows(), funding_rows()
    )
    for exchange in exchanges:
        write_ohlcv(root, exchange, SPOT[exchange], "1m", rows.candles)
        write_trades(root, exchange, SPOT[exchange], rows.trades)
        if exchange in SWAP:
            write_ohlcv(root, exchange, SWAP[exchange], "1m", rows.swap_candles)
            write_ohlcv(root, exchange, INVERSE, "1m", rows.swap_candles[:1500])
            write_funding(root, exchange, SWAP[exchange], rows.funding)
    return rows


def candle_frame(rows: list[tuple[int, str, str, str, str, str]]) -> pd.DataFrame:
    """The tape rows as the loader should yield them (minus the constant columns)."""
    frame = pd.DataFrame(rows, columns=["ts", "open", "high", "low", "close", "volume"])
    frame["ts"] = frame["ts"].astype(np.int64)
    for column in ("open", "high", "low", "close", "volume"):
        frame[column] = frame[column].astype(np.float64)
    return frame
