"""The vectorized readers: the same rows as ccxt's own parser, and every broken answer
refused with a message naming exchange, data set, range and problem."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from crypto_pipelines.domain.validation import DatasetValidationError, validate_frame
from crypto_pipelines.exchanges import InvalidResponse, get_venue
from crypto_pipelines.exchanges.calls import Caller, FetchStats, market_kind
from crypto_pipelines.exchanges.paging import range_params
from crypto_pipelines.exchanges.parse import (
    Where,
    candle_block,
    funding_block,
    rows_at,
    trade_block,
)
from crypto_pipelines.replay import ReplayServer
from crypto_pipelines_tests.exchanges.conftest import client_for
from crypto_pipelines_tests.exchanges.tapes import MIN, SPOT, SWAP, T0

WHERE = Where("binance", "BTC/USDT 1m candles")
SPAN = (T0, T0 + 10 * MIN)
OHLCV = get_venue("binance").ohlcv


def kline(
    ts: int, o: str = "10", h: str = "12", lo: str = "9", c: str = "11", v: str = "1"
) -> list[Any]:
    return [ts, o, h, lo, c, v, ts + MIN - 1, "0", 0, "0", "0", "0"]


def read(rows: list[Any], span: tuple[int, int] = SPAN) -> Any:
    return candle_block(rows, OHLCV, "spot", MIN, False, WHERE, span)


def test_good_rows_become_columns() -> None:
    block = read([kline(T0), kline(T0 + MIN, v="nan")])
    assert block.ts.tolist() == [T0, T0 + MIN] and block.ts.dtype == np.int64
    assert block.cols["close"].tolist() == [11.0, 11.0] and math.isnan(block.cols["volume"][1])


@pytest.mark.parametrize(
    "rows, problem",
    [
        ([kline(T0 + MIN), kline(T0)], "unsorted rows"),
        ([kline(T0), kline(T0)], "duplicate rows"),
        ([kline(T0 - MIN)], "outside the requested range"),
        ([kline(T0 + 10 * MIN)], "outside the requested range"),
        ([kline(T0 + 1)], "not aligned to the timeframe"),
        ([[T0, "x", "1", "1", "1", "1"]], "unreadable row"),
        ([[T0]], "unreadable row"),
    ],
)
def test_broken_candles_are_refused(rows: list[Any], problem: str) -> None:
    with pytest.raises(InvalidResponse, match=problem) as caught:
        read(rows)
    assert str(caught.value).startswith("binance BTC/USDT 1m candles [2024-01-01T00:00:00.000Z, ")


@pytest.mark.parametrize(
    "row, rule",
    [
        (kline(T0, o="0"), "price_positive"),
        (kline(T0, h="inf"), "price_positive"),
        (kline(T0, h="10.5"), "high_ge_open_close"),
        (kline(T0, lo="10.5"), "low_le_open_close"),
        (kline(T0, v="-1"), "volume_non_negative"),
    ],
)
def test_bad_values_pass_the_parser_and_break_the_model(row: Any, rule: str) -> None:
    """A candle with impossible values is a row, not a broken page: the parser keeps it and
    the dataset's model names the rule (the ingestion sink quarantines it)."""
    block = read([row])
    frame = pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": "BTC/USDT",
            "timeframe": "1m",
            "ts": block.ts,
            **block.cols,
        }
    )
    with pytest.raises(DatasetValidationError) as caught:
        validate_frame("ohlcv", frame)
    assert rule in caught.value.counts


def test_newest_first_venues_must_send_newest_first() -> None:
    okx = get_venue("okx").ohlcv
    rows = [
        [str(T0 + MIN), "1", "2", "1", "1", "5", "5", "5", "1"],
        [str(T0), "1", "2", "1", "1", "5", "5", "5", "1"],
    ]
    block = candle_block(rows, okx, "spot", MIN, False, WHERE, SPAN)
    assert block.ts.tolist() == [T0, T0 + MIN]
    with pytest.raises(InvalidResponse, match=r"unsorted rows \(expected newest first\)"):
        candle_block(rows[::-1], okx, "spot", MIN, False, WHERE, SPAN)


def test_answer_without_rows_is_refused() -> None:
    with pytest.raises(InvalidResponse, match="answer has no data list"):
        rows_at({"code": "0"}, ("data",), WHERE, SPAN)
    with pytest.raises(InvalidResponse, match="expected a list of rows"):
        rows_at({"data": {"a": 1}}, ("data",), WHERE, SPAN)


def test_broken_trades_and_funding_are_refused() -> None:
    fields = get_venue("binance").trades.fields
    good = {"a": 1, "p": "10", "q": "1", "T": T0, "m": True}
    block = trade_block([good, {**good, "a": 2, "m": False}], fields, False, WHERE, SPAN)
    assert block.cols["side"].tolist() == ["sell", "buy"] and block.cols["trade_id"].tolist() == [
        "1",
        "2",
    ]
    for bad, problem in (
        ([good, good], "duplicate trade ids"),
        ([{**good, "T": T0 + 5}, {**good, "a": 2}], "unsorted rows"),
    ):
        with pytest.raises(InvalidResponse, match=problem):
            trade_block(bad, fields, False, WHERE, SPAN)
    funding = get_venue("binance").funding
    assert funding is not None
    # values are the model's to judge: kept here, quarantined by the sink
    assert funding_block([{"fundingTime": T0, "fundingRate": "3"}], funding, WHERE, SPAN).cols[
        "rate"
    ].tolist() == [3.0]
    odd = trade_block([{**good, "m": "maybe", "q": "0"}], fields, False, WHERE, SPAN)
    assert odd.cols["side"].tolist() == [None] and odd.cols["amount"].tolist() == [0.0]
    with pytest.raises(InvalidResponse, match="duplicate rows"):
        funding_block([{"fundingTime": T0, "fundingRate": "0"}] * 2, funding, WHERE, SPAN)


def test_same_candles_as_ccxts_parser(exchange: str, server: ReplayServer) -> None:
    """The column map of each venue and market kind reads what ccxt's ``parse_ohlcv`` reads
    (base-currency volume: OKX swaps' volCcy, Bybit inverse turnover, Binance COIN-M col 7)."""
    spec = get_venue(exchange)
    client = client_for(exchange, server.url)
    caller = Caller(client, spec, FetchStats(), "parity")
    for symbol in (SPOT[exchange], SWAP.get(exchange)):
        if symbol is None:
            continue
        market = caller.market(symbol)
        kind = market_kind(spec, market)
        query = spec.ohlcv.queries[kind][-1]
        span = (T0, T0 + query.max_rows * MIN)
        params = {
            spec.symbol_param: market["id"],
            spec.ohlcv.interval_param: spec.ohlcv.intervals["1m"],
        }
        params.update(spec.market_params.get(kind, ()))
        params.update(range_params(query, *span, query.max_rows))
        raw = rows_at(caller.call(query.method, params), spec.ohlcv.rows_path, WHERE, span)
        ours = candle_block(raw, spec.ohlcv, kind, MIN, False, WHERE, span)
        theirs = sorted(client.parse_ohlcvs(raw, market, "1m"))
        assert len(ours) == len(theirs) > 0
        assert ours.ts.tolist() == [r[0] for r in theirs]
        for j, name in enumerate(("open", "high", "low", "close", "volume"), start=1):
            np.testing.assert_array_equal(
                ours.cols[name], np.array([r[j] for r in theirs], dtype=np.float64)
            )
