"""Recording the real tapes in ../shared back through the replay exchange gives the same
values: real prices, real gaps (missing candles stay missing), real trade sequences and
funding, ``nan`` volumes. Skips cleanly where ../shared is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from crypto_pipelines.replay import ReplayServer, Tape
from crypto_pipelines.replay.record import record_tape
from crypto_pipelines.replay.tape import SymbolTape
from crypto_pipelines_tests.replay.record_helpers import (
    all_rows,
    fast_client,
    market_values,
    values,
)

EXCHANGES = ["binance", "okx", "bybit", "coinbaseexchange"]


def span(symbol: SymbolTape) -> tuple[int, int]:
    """[first row, end of the last row) over every series of a symbol."""
    firsts = [
        s.first_ts
        for s in (*symbol.ohlcv.values(), symbol.trades, symbol.funding)
        if s is not None and len(s)
    ]
    ends = [s.last_ts + s.timeframe_ms for s in symbol.ohlcv.values() if s.last_ts is not None]
    ends += [
        s.last_ts + 1
        for s in (symbol.trades, symbol.funding)
        if s is not None and s.last_ts is not None
    ]
    return min(firsts), max(ends)


@pytest.mark.parametrize("exchange", EXCHANGES)
def test_real_tapes_record_back_identically(
    exchange: str, real_tape: Tape, real_server: ReplayServer, tmp_path: Path
) -> None:
    source = real_tape.exchanges.get(exchange)
    if source is None:
        pytest.skip(f"no real {exchange} tape")
    client = fast_client(exchange, real_server.url)
    compared = 0
    for symbol, series in source.symbols.items():
        out = tmp_path / symbol.replace("/", "_").replace(":", "_")
        book_only = not series.ohlcv and series.trades is None  # recorded: its book, now
        since, until = (0, None) if book_only else span(series)
        last_book = series.book.at(None) if series.book is not None else None
        record_tape(
            client,
            out,
            [symbol],
            list(series.ohlcv),
            since,
            until,
            trades=series.trades is not None,
            funding=series.funding is not None,
            book=book_only,
            # every level of the snapshot (ccxt's Bybit default is 25)
            book_depth=max(len(last_book.bids), len(last_book.asks)) if last_book else None,
            retry_delay_s=0,
        )
        recorded = Tape.load(out).exchanges[exchange]
        rec = recorded.symbols[symbol]
        for tf, candles in series.ohlcv.items():
            assert all_rows(rec.ohlcv[tf]) == all_rows(candles), f"{exchange} {symbol} {tf}"
            compared += len(candles)
        assert all_rows(rec.trades) == all_rows(series.trades)
        assert all_rows(rec.funding) == all_rows(series.funding)
        if book_only:
            got = rec.book.snapshot(0) if rec.book is not None else None
            assert last_book is not None and got is not None and got.ts == last_book.ts
            assert [values(lv) for lv in got.bids] == [values(lv) for lv in last_book.bids]
            assert [values(lv) for lv in got.asks] == [values(lv) for lv in last_book.asks]
        else:
            assert market_values(recorded.markets[symbol]) == market_values(source.markets[symbol])
    assert compared > 1000
