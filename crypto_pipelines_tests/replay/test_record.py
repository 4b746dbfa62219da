"""``record_tape`` against the replay exchange: a hand-built tape is served by an in-process
ReplayServer, recorded back through a stock ccxt client, and the recorded tape must hold the
same values (compared as Decimal, row by row: the recorder writes ccxt's floats back as their
shortest decimal text, so '1482.0' in a source comes back as '1482').

Per-venue cases skip cleanly while a venue module is not importable yet. What a venue cannot
give back is declared in its Case (Bybit serves only its latest trades; Binance spot and
Coinbase books carry no time), never silently tolerated.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest

from crypto_pipelines.replay import FaultConfig, ReplayClock, ReplayServer, Tape
from crypto_pipelines.replay.faults import FaultInjector
from crypto_pipelines.replay.record import PROFILES, RecordError, record_tape
from crypto_pipelines.replay.tape import MarketSpec, SymbolTape, writer
from crypto_pipelines_tests.replay.record_helpers import (
    DAY,
    HOUR,
    LINEAR,
    NOW,
    SINCE,
    SPOT,
    T0,
    all_rows,
    dec,
    fast_client,
    market_values,
    values,
    write_source,
)


@dataclass(frozen=True)
class Case:
    exchange: str
    specs: tuple[MarketSpec, ...]
    #: market types whose book time ccxt reports (others are stamped with the exchange clock)
    book_time: frozenset[str] = frozenset({"spot", "swap"})
    #: LATEST-only trade venues: how many newest trades each market type serves
    trade_caps: dict[str, int] = field(default_factory=dict)
    nan_volume: bool = False


CASES = [
    pytest.param(
        Case("binance", (SPOT, LINEAR), frozenset({"swap"}), nan_volume=True), id="binance"
    ),
    pytest.param(
        Case(
            "binance",
            (MarketSpec("BTC/USD:BTC", "swap", "0.1", "1", "1", "100", T0 - 30 * DAY),),
            frozenset({"swap"}),
        ),
        id="binance-inverse",
    ),
    pytest.param(
        Case(
            "okx",
            (
                SPOT,
                MarketSpec("BTC/USDT:USDT", "swap", "0.1", "0.01", "0.01", "0.01", T0 - 30 * DAY),
                MarketSpec("BTC/USD:BTC", "swap", "0.1", "1", "1", "100", T0 - 30 * DAY),
            ),
        ),
        id="okx",
    ),
    pytest.param(
        Case(
            "bybit",
            (
                MarketSpec("BTC/USDT", "spot", "0.01", "0.000001", "0.000048"),
                LINEAR,
                # ccxt takes an inverse contract's size from minOrderQty: both are 1 USD.
                MarketSpec("BTC/USD:BTC", "swap", "0.5", "1", "1", "1", T0 - 30 * DAY),
            ),
            trade_caps={"spot": 60, "swap": 1000},
        ),
        id="bybit",
    ),
    pytest.param(
        Case(
            "coinbaseexchange",
            # ccxt reads no minimum amount from /products: the tape's default (the step) is kept.
            (
                MarketSpec("BTC/USD", "spot", "0.01", "0.00000001", "0.00000001"),
                MarketSpec("ETH/BTC", "spot", "0.00001", "0.0001", "0.0001"),
            ),
            book_time=frozenset(),
        ),
        id="coinbaseexchange",
    ),
]


def require_venue(exchange: str) -> None:
    if exchange != "binance":
        pytest.importorskip(
            f"crypto_pipelines.replay.venues.{exchange}",
            reason=f"the {exchange} venue is not written yet",
        )


def assert_symbol_equal(case: Case, spec: MarketSpec, src: SymbolTape, rec: SymbolTape) -> None:
    assert set(rec.ohlcv) == set(src.ohlcv)
    for tf, candles in src.ohlcv.items():
        assert all_rows(rec.ohlcv[tf]) == all_rows(candles), f"{spec.symbol} {tf}"
    source_trades = all_rows(src.trades)
    cap = case.trade_caps.get(spec.type)
    if cap is not None:
        assert len(source_trades) > cap  # the cut is real, not vacuous
        source_trades = source_trades[-cap:]
    assert all_rows(rec.trades) == source_trades
    assert all_rows(rec.funding) == all_rows(src.funding)
    assert src.book is not None and rec.book is not None and len(rec.book) == 1
    want, got = src.book.at(NOW), rec.book.snapshot(0)
    assert want is not None
    assert [values(lv) for lv in got.bids] == [values(lv) for lv in want.bids]
    assert [values(lv) for lv in got.asks] == [values(lv) for lv in want.asks]
    assert got.ts == (want.ts if spec.type in case.book_time else NOW)


@pytest.mark.parametrize("case", CASES)
def test_record_round_trip(case: Case, tmp_path: Path) -> None:
    require_venue(case.exchange)
    source, out = tmp_path / "source", tmp_path / "recorded"
    write_source(source, case.exchange, list(case.specs), nan_volume=case.nan_volume)
    with ReplayServer(source, clock=ReplayClock(NOW, speed=0)) as server:
        summary = record_tape(
            fast_client(case.exchange, server.url),
            out,
            [s.symbol for s in case.specs],
            ["1m", "1h"],
            SINCE,
            retry_delay_s=0,
        )
    assert summary.until_ms == NOW  # until defaults to the exchange's clock
    src, rec = Tape.load(source), Tape.load(out)
    try:
        for spec in case.specs:
            assert_symbol_equal(
                case,
                spec,
                src.exchanges[case.exchange].symbols[spec.symbol],
                rec.exchanges[case.exchange].symbols[spec.symbol],
            )
            assert market_values(
                rec.exchanges[case.exchange].markets[spec.symbol]
            ) == market_values(src.exchanges[case.exchange].markets[spec.symbol])
        assert summary.rows(case.specs[0].symbol, "ohlcv 1m") == len(
            src.exchanges[case.exchange].symbols[case.specs[0].symbol].ohlcv["1m"]
        )
    finally:
        src.close()
        rec.close()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # staging removed


def test_open_candle_dropped_and_range_cut(tmp_path: Path) -> None:
    """``now`` inside the tape: the candle still open at now is not recorded; ``until`` cuts
    at a candle's open time (exclusive) even when unaligned."""
    source, out = tmp_path / "source", tmp_path / "recorded"
    write_source(source, "binance", [SPOT])
    now = T0 + 10 * HOUR + 30_000  # the 10:00 hourly and 10:00:00 minute candles are open
    with ReplayServer(source, clock=ReplayClock(now, speed=0)) as server:
        record_tape(
            fast_client("binance", server.url),
            out / "a",
            ["BTC/USDT"],
            ["1m", "1h"],
            T0,
            trades=False,
            book=False,
        )
        record_tape(
            fast_client("binance", server.url),
            out / "b",
            ["BTC/USDT"],
            ["1m"],
            T0 + 61_000,
            T0 + 90 * 60_000 + 1,
            trades=False,
            book=False,
        )
    src = Tape.load(source).exchanges["binance"].symbols["BTC/USDT"]
    a = Tape.load(out / "a").exchanges["binance"].symbols["BTC/USDT"]
    assert all_rows(a.ohlcv["1h"]) == [
        values(tuple(c)) for c in src.ohlcv["1h"].between(T0, T0 + 9 * HOUR, 100)
    ]
    assert all_rows(a.ohlcv["1m"]) == [
        values(tuple(c)) for c in src.ohlcv["1m"].between(T0, now - 60_000, 10_000)
    ]
    assert (
        a.ohlcv["1m"].last_ts == T0 + 10 * HOUR - 60_000 and a.ohlcv["1h"].last_ts == T0 + 9 * HOUR
    )
    b = Tape.load(out / "b").exchanges["binance"].symbols["BTC/USDT"]
    assert all_rows(b.ohlcv["1m"]) == [
        values(tuple(c)) for c in src.ohlcv["1m"].between(T0 + 120_000, T0 + 90 * 60_000, 1000)
    ]


def test_server_errors_fail_cleanly(tmp_path: Path) -> None:
    """Every answer a 503: retried, then a RecordError naming the exchange and the ccxt error;
    nothing is written."""
    source, out = tmp_path / "source", tmp_path / "recorded"
    write_source(source, "binance", [SPOT])
    with ReplayServer(
        source, faults=FaultConfig(server_error=1.0), clock=ReplayClock(NOW, speed=0)
    ) as server:
        with pytest.raises(
            RecordError, match=r"binance markets: ExchangeNotAvailable after 3 tries"
        ):
            record_tape(
                fast_client("binance", server.url),
                out,
                ["BTC/USDT"],
                ["1m"],
                SINCE,
                retries=2,
                retry_delay_s=0,
            )
        assert server.app.stats.snapshot()["totals"]["server_errors"] == 3
    assert not out.exists() or not any(out.rglob("*"))


def first_fault_seed(probability: float, lo: int, hi: int) -> int:
    """A seed whose first injected fault is request number ``lo <= n < hi``."""
    for seed in range(100_000):
        injector = FaultInjector(FaultConfig(server_error=probability, seed=seed))
        first = next(n for n in range(10_000) if injector.draw() is not None)
        if lo <= first < hi:
            return seed
    raise AssertionError("no such seed")


def test_failure_mid_series_leaves_no_partial_file(tmp_path: Path) -> None:
    """A 503 in the middle of the 1m candles (pages of 100: ~44 requests), not retried: the
    completed 1h file stays, the 1m file was never moved into place, no markets.json (the
    recording is not finished) and no staging folder. Re-running completes the tape."""
    source, out = tmp_path / "source", tmp_path / "recorded"
    write_source(source, "binance", [SPOT])
    small_pages = dataclasses.replace(PROFILES["binance"], ohlcv_limit=100)
    # Requests 0-3: load_markets (3) and fetch_time; 4: the 1h candles; 5 on: 1m windows.
    faults = FaultConfig(server_error=0.05, seed=first_fault_seed(0.05, 15, 40))
    args = (["BTC/USDT"], ["1h", "1m"], SINCE)
    with ReplayServer(source, faults=faults, clock=ReplayClock(NOW, speed=0)) as server:
        with pytest.raises(RecordError, match=r"binance BTC/USDT ohlcv 1m: ExchangeNotAvailable"):
            record_tape(
                fast_client("binance", server.url),
                out,
                *args,
                trades=False,
                book=False,
                retries=0,
                profile=small_pages,
            )
        assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
            "binance",
            "binance/BTC_USDT",
            "binance/BTC_USDT/ohlcv_1h.csv",
        ]
        server.set_faults(FaultConfig())
        record_tape(
            fast_client("binance", server.url),
            out,
            *args,
            trades=False,
            book=False,
            profile=small_pages,
        )
    src = Tape.load(source).exchanges["binance"].symbols["BTC/USDT"]
    rec = Tape.load(out).exchanges["binance"].symbols["BTC/USDT"]
    assert all_rows(rec.ohlcv["1m"]) == all_rows(src.ohlcv["1m"]) and all_rows(
        rec.ohlcv["1h"]
    ) == all_rows(src.ohlcv["1h"])


def test_unknown_symbol_and_bad_range(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_source(source, "binance", [SPOT])
    with ReplayServer(source, clock=ReplayClock(NOW, speed=0)) as server:
        client = fast_client("binance", server.url)
        with pytest.raises(
            RecordError, match=r"binance ETH/USDT markets: the exchange does not list ETH/USDT"
        ):
            record_tape(client, tmp_path / "x", ["ETH/USDT"], ["1m"], SINCE)
        with pytest.raises(RecordError, match="empty range"):
            record_tape(client, tmp_path / "x", ["BTC/USDT"], ["1m"], NOW + DAY)
        with pytest.raises(RecordError, match="not a ccxt timeframe"):
            record_tape(client, tmp_path / "x", ["BTC/USDT"], ["7x"], SINCE)
    assert not (tmp_path / "x").exists()


def test_gzip_output_loads(tmp_path: Path) -> None:
    source, out = tmp_path / "source", tmp_path / "recorded"
    write_source(source, "binance", [LINEAR])
    with ReplayServer(source, clock=ReplayClock(NOW, speed=0)) as server:
        record_tape(
            fast_client("binance", server.url),
            out,
            ["BTC/USDT:USDT"],
            ["1h"],
            SINCE,
            compress=True,
            trades=False,
        )
    names = sorted(p.name for p in (out / "binance" / "BTC_USDT_USDT").iterdir())
    assert names == ["book.jsonl.gz", "funding.csv.gz", "ohlcv_1h.csv.gz"]
    src = Tape.load(source).exchanges["binance"].symbols["BTC/USDT:USDT"]
    rec = Tape.load(out).exchanges["binance"].symbols["BTC/USDT:USDT"]
    assert all_rows(rec.funding) == all_rows(src.funding) and all_rows(rec.ohlcv["1h"]) == all_rows(
        src.ohlcv["1h"]
    )


@pytest.mark.parametrize(
    "since_at",
    [
        pytest.param(0, id="dense-first-window-halved"),  # 2500 trades in the first hour
        pytest.param(1777, id="mid-stream"),
        pytest.param(2600, id="in-a-gap-id-search"),  # a 6 h gap: the first window is empty
        pytest.param(-1, id="a-day-before-id-search"),
    ],
)
def test_binance_trade_seed_finds_the_first_trade(since_at: int, tmp_path: Path) -> None:
    """Binance answers a time window with its *last* ``limit`` trades, and empty windows say
    nothing about later trades: wherever ``since`` falls, recording starts at the first trade
    at or after it, and gets every later one."""
    source, out = tmp_path / "source", tmp_path / "recorded"
    rng = random.Random(5)
    trades, ts = [], T0 + 3 * HOUR
    for i in range(3000):
        ts += rng.choice([0, 1, 900, 2000]) + (6 * HOUR if i == 2600 else 0)
        trades.append(
            (ts, 10_000 + 3 * i, rng.choice(["buy", "sell"]), "100.5", dec(Decimal(i + 1) / 100))
        )
    writer.write_trades(source, "binance", "BTC/USDT", trades)
    since = T0 - DAY if since_at < 0 else trades[since_at][0] - (HOUR if since_at == 2600 else 0)
    with ReplayServer(source, clock=ReplayClock(NOW, speed=0)) as server:
        record_tape(fast_client("binance", server.url), out, ["BTC/USDT"], [], since, book=False)
    rec = Tape.load(out).exchanges["binance"].symbols["BTC/USDT"]
    want = [values(t) for t in trades if t[0] >= since]
    assert len(want) > 300 and all_rows(rec.trades) == want
