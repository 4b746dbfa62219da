"""Shared by the recorder tests: a hand-built source tape and value-wise comparison of tapes
(numbers as Decimal, since the recorder writes ccxt's floats back as shortest decimal text)."""

from __future__ import annotations

import random
from decimal import Decimal
from pathlib import Path
from typing import Any

from crypto_pipelines.replay.record import make_exchange
from crypto_pipelines.replay.tape import BookSnapshot, MarketSpec, writer

DAY = 86_400_000
HOUR = 3_600_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % DAY  # 2023-11-14 00:00 UTC
NOW = T0 + 3 * DAY  # the replay clock, frozen: every candle of the tape is closed
SINCE = T0 - HOUR  # before the first row, so the recorder must find where data starts
SPOT = MarketSpec("BTC/USDT", "spot", "0.01", "0.00001", "0.0001")
LINEAR = MarketSpec("BTC/USDT:USDT", "swap", "0.1", "0.001", "0.002", "1", T0 - 30 * DAY)


def dec(value: Decimal | int | str) -> str:
    """Canonical decimal text: no exponent, no trailing zeros."""
    text = format(Decimal(value), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def write_source(
    root: Path, exchange: str, specs: list[MarketSpec], *, nan_volume: bool = False
) -> None:
    """Two days of 1m and 1h candles with omitted ones (every 7th minute; an 1100-minute gap,
    longer than any venue's page; three hours), 1200 trades with equal-ts ties and a 4 h gap,
    funding every 8 h for swaps, two book snapshots."""
    rng = random.Random(f"{exchange}-tape")
    for spec in specs:
        sym = spec.symbol

        def price() -> str:
            return dec(Decimal(rng.randint(100_00, 99_999_99)) / 100)

        minutes = [
            (
                T0 + i * 60_000,
                price(),
                price(),
                price(),
                price(),
                dec(Decimal(rng.randint(1, 10**6)) / 1000),
            )
            for i in range(2880)
            if i % 7 and not 1200 <= i < 2300
        ]
        minutes[3] = (*minutes[3][:4], "1482.0", minutes[3][5])  # not canonical: comes back as 1482
        if nan_volume:
            minutes[5] = (*minutes[5][:5], "nan")  # volume the source did not record
        writer.write_ohlcv(root, exchange, sym, "1m", minutes)
        hours = [
            (T0 + h * HOUR, price(), price(), price(), price(), "12.5")
            for h in range(48)
            if h not in (5, 6, 30)
        ]
        writer.write_ohlcv(root, exchange, sym, "1h", hours)
        trades, ts, trade_id = [], T0 + 3 * HOUR, 1000
        for i in range(1200):
            ts += rng.choice([0, 0, 1, 50, 7000]) + (4 * HOUR if i == 700 else 0)
            trade_id += rng.choice([1, 1, 2])
            amount = dec(Decimal(rng.randint(1, 10**3)) / (1 if spec.is_swap else 100))
            trades.append((ts, trade_id, rng.choice(["buy", "sell"]), price(), amount))
        writer.write_trades(root, exchange, sym, trades)
        if spec.is_swap:
            rates = [
                (T0 + i * 8 * HOUR, dec(Decimal(rng.randint(-300, 300)) / 10**6)) for i in range(6)
            ]
            writer.write_funding(root, exchange, sym, rates)
        books = [
            BookSnapshot(
                T0 + d * DAY + 17,
                [(dec(100 - k), str(k + 1)) for k in range(10)],
                [(dec(Decimal(101) + Decimal(k) / 2), str(k + 2)) for k in range(10)],
            )
            for d in (1, 2)
        ]
        writer.write_book(root, exchange, sym, books)
    writer.write_markets(root, exchange, specs)


def fast_client(exchange: str, url: str) -> Any:
    """A stock client with its limiter on but nearly no spacing: the replay needs no pacing
    (the CLI test keeps ccxt's real spacing)."""
    client = make_exchange(exchange, url)
    client.rateLimit = 1
    return client


def values(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A tape row with its numbers as Decimal (``nan`` kept as text: NaN never equals)."""
    out: list[Any] = []
    for v in row:
        try:
            out.append(v if isinstance(v, int) or v == "nan" else Decimal(v))
        except ArithmeticError:
            out.append(v)  # ids and sides
    return tuple(out)


def all_rows(series: Any) -> list[tuple[Any, ...]]:
    return [values(tuple(r)) for r in series.rows(0, len(series))] if series is not None else []


def market_values(m: MarketSpec) -> tuple[Any, ...]:
    return (
        m.symbol,
        m.type,
        *(
            Decimal(v) if v else None
            for v in (m.price_tick, m.amount_step, m.min_amount, m.contract_size)
        ),
        m.listed_ms,
    )
