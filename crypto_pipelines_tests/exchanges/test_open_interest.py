"""``iter_open_interest`` end to end over HTTP against the replay exchange (stock ccxt clients,
no mocks): every venue with perpetuals, ranges of several pages, the venue's own units, NaN
where a venue reports no value, and refusals for spot markets and venues without swaps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crypto_pipelines.exchanges import FetchStats, UnsupportedRequest, get_venue
from crypto_pipelines.exchanges.open_interest import OPEN_INTEREST_COLUMNS, iter_open_interest
from crypto_pipelines.replay import ReplayClock, ReplayServer
from crypto_pipelines.replay.tape.markets import MarketSpec
from crypto_pipelines.replay.tape.writer import write_markets, write_ohlcv, write_open_interest
from crypto_pipelines_tests.exchanges.conftest import client_for

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
MIN = 60_000
P5 = 5 * MIN
HOUR = 3_600_000
DAY = 86_400_000
SNAPSHOTS = 3 * 288
GAP = range(100, 130)  # 150 minutes without snapshots: longer than an OKX page
NOW = T0 + 2 * DAY + 3 * MIN
SWAP_VENUES = ("binance", "okx", "bybit")
LINEAR, INVERSE = "BTC/USDT:USDT", "BTC/USD:BTC"
SPOT = {"binance": "BTC/USDT", "okx": "BTC/USDT", "bybit": "BTC/USDT"}
SIZES = {"binance": "100", "okx": "100", "bybit": "1"}  # inverse contract sizes (USD)


def snapshot(k: int) -> tuple[int, str, str]:
    """Snapshot k, 1.5 s before the k-th 5-minute mark: contracts and a quote value."""
    ts = T0 + k * P5 - (1_500 if k else 0)
    return ts, f"{1000 + k}.25", f"{(1000 + k) * 40}.5"


@pytest.fixture(scope="module")
def tape_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("oi-exchanges")
    candles = [(T0 + i * MIN, "40000", "40010", "39990", "40005", "2") for i in range(3 * 1440)]
    rows = [snapshot(k) for k in range(SNAPSHOTS) if k not in GAP]
    for exchange in SWAP_VENUES:
        markets = []
        for symbol, size in ((LINEAR, "1"), (INVERSE, SIZES[exchange])):
            write_ohlcv(root, exchange, symbol, "1m", candles)
            write_open_interest(root, exchange, symbol, rows)
            markets.append(MarketSpec(symbol, "swap", "0.1", "1", "1", size, T0))
        write_ohlcv(root, exchange, SPOT[exchange], "1m", candles[:10])
        write_markets(root, exchange, markets)
    write_ohlcv(root, "coinbaseexchange", "BTC/USD", "1m", candles[:10])
    return root


@pytest.fixture(scope="module")
def server(tape_dir: Path) -> Iterator[ReplayServer]:
    with ReplayServer(tape_dir, clock=ReplayClock(start_ms=NOW, speed=0)) as srv:
        yield srv


def periods(start: int, end: int) -> list[int]:
    """Snapshot indexes of the 5-minute periods in [start, end) that have a snapshot in the
    five minutes up to them (every mark but the hole)."""
    first = -(-start // P5) * P5
    stop = -(-(end - T0) // P5)
    return [k for k in range((first - T0) // P5, stop) if 0 <= k < SNAPSHOTS and k not in GAP]


def load(
    exchange: str, url: str, symbol: str, start: int, end: int, **kwargs: object
) -> tuple[pd.DataFrame, FetchStats]:
    stats = FetchStats()
    client = client_for(exchange, url)
    kwargs.setdefault("now_ms", NOW)
    chunks = list(
        iter_open_interest(client, get_venue(exchange), symbol, start, end, stats=stats, **kwargs)  # type: ignore[arg-type]
    )
    frame = (
        pd.concat(chunks, ignore_index=True)
        if chunks
        else pd.DataFrame(columns=list(OPEN_INTEREST_COLUMNS))
    )
    return frame, stats


def expected(exchange: str, symbol: str, ks: list[int]) -> pd.DataFrame:
    """What the loader must yield: contracts as the tape holds them; the quote value as the
    tape holds it, or contracts x size for an inverse swap where the venue sends none in the
    quote currency (Binance COIN-M, Bybit), or NaN where it sends none at all (Bybit linear)."""
    oi = np.array([float(snapshot(k)[1]) for k in ks])
    value = np.array([float(snapshot(k)[2]) for k in ks])
    if symbol == INVERSE and exchange in ("binance", "bybit"):
        value = oi * float(SIZES[exchange])
    elif exchange == "bybit":
        value = np.full(len(ks), np.nan)
    return pd.DataFrame(
        {
            "ts": np.array([T0 + k * P5 for k in ks], dtype=np.int64),
            "open_interest": oi,
            "open_interest_value": value,
        }
    )


@pytest.mark.parametrize("exchange", SWAP_VENUES)
@pytest.mark.parametrize("symbol", [LINEAR, INVERSE])
def test_rows_equal_the_tape_over_many_pages(
    server: ReplayServer, exchange: str, symbol: str
) -> None:
    """Three days asked, two served up to "now" (577 periods less a 30-period hole): several
    pages at every venue (500 / 100 / 200 a request), oldest first, no period twice."""
    frame, stats = load(exchange, server.url, symbol, T0, T0 + 3 * DAY, chunk_rows=100)
    assert list(frame.columns) == list(OPEN_INTEREST_COLUMNS)
    assert (frame["exchange"] == exchange).all() and (frame["symbol"] == symbol).all()
    assert frame["ts"].dtype == np.int64
    assert frame["open_interest"].dtype == frame["open_interest_value"].dtype == np.float64
    want = expected(exchange, symbol, periods(T0, NOW + 1))
    assert len(want) == 577 - len(GAP)
    pd.testing.assert_frame_equal(frame[list(want.columns)], want)
    assert frame["ts"].is_monotonic_increasing and frame["ts"].iloc[-1] <= NOW
    assert stats.rows == len(frame) and stats.chunks >= 2  # chunks gather whole pages
    assert stats.requests > len(frame) // {"binance": 500, "okx": 100, "bybit": 200}[exchange]
    assert stats.notes == []
    nan_value = exchange == "bybit" and symbol == LINEAR
    assert frame["open_interest_value"].isna().all() == nan_value
    assert frame["open_interest"].notna().all()


@pytest.mark.parametrize("exchange", SWAP_VENUES)
def test_unaligned_sub_ranges(server: ReplayServer, exchange: str) -> None:
    """``start <= ts < end`` whatever the bounds' alignment, the hole included."""
    start, end = T0 + 7 * P5 + 1_234, T0 + 140 * P5
    frame, _ = load(exchange, server.url, LINEAR, start, end)
    want = expected(exchange, LINEAR, periods(start, end))
    assert want["ts"].iloc[0] == T0 + 8 * P5 and want["ts"].iloc[-1] == T0 + 139 * P5
    pd.testing.assert_frame_equal(frame[list(want.columns)], want)
    inside, _ = load(exchange, server.url, LINEAR, T0 + 101 * P5, T0 + 129 * P5)
    assert inside.empty


def test_binance_is_asked_only_for_the_30_days_it_keeps(tape_dir: Path) -> None:
    """Binance refuses a startTime older than 30 days: the loader starts inside them (an
    hour clear of the edge) and notes what it skipped."""
    late = T0 + 32 * DAY + 12 * HOUR
    with ReplayServer(tape_dir, clock=ReplayClock(start_ms=late, speed=0)) as srv:
        frame, stats = load("binance", srv.url, LINEAR, T0, T0 + 3 * DAY, now_ms=late)
    kept = T0 + 2 * DAY + 13 * HOUR
    assert frame["ts"].tolist() == [T0 + k * P5 for k in periods(kept, T0 + 3 * DAY)]
    assert len(stats.notes) == 1 and "last 30 days only" in stats.notes[0]


@pytest.mark.parametrize("exchange", SWAP_VENUES)
def test_spot_markets_have_no_open_interest(server: ReplayServer, exchange: str) -> None:
    with pytest.raises(UnsupportedRequest, match="perpetual swaps only"):
        iter_open_interest(
            client_for(exchange, server.url),
            get_venue(exchange),
            SPOT[exchange],
            T0,
            T0 + DAY,
            stats=FetchStats(),
        )


def test_coinbase_has_no_open_interest(server: ReplayServer) -> None:
    spec = get_venue("coinbaseexchange")
    assert spec.open_interest is None and spec.open_interest_period_ms is None
    stats = FetchStats()
    with pytest.raises(UnsupportedRequest, match="no perpetual swaps"):
        iter_open_interest(
            client_for("coinbaseexchange", server.url), spec, "BTC/USD", T0, T0 + DAY, stats=stats
        )
    assert stats.requests == 0


def test_the_period_is_venue_data() -> None:
    for exchange in SWAP_VENUES:
        spec = get_venue(exchange)
        assert spec.open_interest is not None
        assert spec.open_interest_period_ms == spec.open_interest.period_ms == 300_000
    history = get_venue("binance").open_interest
    assert history is not None and history.history_ms == 30 * DAY
