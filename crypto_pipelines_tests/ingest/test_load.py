"""``load_series`` against the replay exchange (real HTTP, stock ccxt): what a run fetches is
what coverage lacks, wherever it lies; a closed partition's trailing missing candles are
gaps; a refetch asks again for everything. SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from crypto_pipelines.domain.datasets import SeriesKey
from crypto_pipelines.domain.instruments import CryptoPair
from crypto_pipelines.exchanges import get_venue, make_client
from crypto_pipelines.ingest import load_series
from crypto_pipelines.replay import ReplayServer
from crypto_pipelines.replay.tape.writer import write_ohlcv
from crypto_pipelines.storage.coverage import covered
from crypto_pipelines.storage.gap_checks import check_candle_windows
from crypto_pipelines.storage.gaps import GapStore
from crypto_pipelines.storage.store import MarketStore

T0 = 1_704_067_200_000  # 2024-01-01
M = 60_000
DAY = 1440 * M
DAYS = 5
#: minutes the exchange does not have: the last 7 of day 1 (2024-01-02), and a run inside day 3
MISSING = {*range(2 * 1440 - 7, 2 * 1440), *range(3 * 1440 + 60, 3 * 1440 + 65)}
NOW = T0 + (DAYS + 1) * DAY  # every candle of the tape is closed
SERIES = SeriesKey("binance", "BTC/USDT", "ohlcv", "1m")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReplayServer]:
    root: Path = tmp_path_factory.mktemp("coverage-tape")
    rows = [
        (T0 + i * M, "100.5", "101.25", "99.75", "100.0", "1.5")
        for i in range(DAYS * 1440)
        if i not in MISSING
    ]
    write_ohlcv(root, "binance", "BTC/USDT", "1m", rows)
    with ReplayServer(root) as srv:
        yield srv


def _load(server: ReplayServer, store: MarketStore, day0: int, days: int, **kw: bool) -> object:
    client = make_client("binance", replay_url=server.url, enable_rate_limit=False)
    return load_series(
        client,
        get_venue("binance"),
        store,
        SERIES,
        T0 + day0 * DAY,
        T0 + (day0 + days) * DAY,
        now_ms=NOW,
        **kw,
    )


def _expected(day0: int, days: int) -> list[int]:
    return [T0 + i * M for i in range(day0 * 1440, (day0 + days) * 1440) if i not in MISSING]


def test_a_later_day_first_then_a_range_around_it_loses_nothing(
    server: ReplayServer, db_url: str
) -> None:
    with MarketStore.open(db_url) as store:
        first = _load(server, store, 2, 1)
        around = _load(server, store, 0, DAYS)
        again = _load(server, store, 0, DAYS)
        stored = store.timestamps("ohlcv", exchange="binance", symbol="BTC/USDT", timeframe="1m")
        cover = covered(store.engine, SERIES)
    assert first.spans == [(T0 + 2 * DAY, T0 + 3 * DAY)]  # type: ignore[attr-defined]
    # only the two parts on either side of the day already covered are fetched
    assert around.spans == [(T0, T0 + 2 * DAY), (T0 + 3 * DAY, T0 + DAYS * DAY)]  # type: ignore[attr-defined]
    assert again.spans == [] and again.rows_fetched == 0  # type: ignore[attr-defined]
    assert stored == _expected(0, DAYS)
    assert cover == [(T0, T0 + DAYS * DAY)]


def test_trailing_missing_candles_of_a_closed_partition_are_gaps(
    server: ReplayServer, db_url: str
) -> None:
    """Day 1 loaded on its own is the newest partition stored; its last 7 candles are missing
    at the exchange, and the check reports exactly them (it used to end at the newest row)."""
    with MarketStore.open(db_url) as store:
        _load(server, store, 0, 2)
        windows = [(T0, T0 + DAY), (T0 + DAY, T0 + 2 * DAY), (T0 + 2 * DAY, T0 + 3 * DAY)]
        checks = check_candle_windows(
            store, GapStore(store.engine), "binance", "BTC/USDT", "1m", windows, now_ms=NOW
        )
    assert [c.passed for c in checks] == [True, False, False]
    assert checks[1].missing_ranges == [(T0 + 2 * DAY - 7 * M, T0 + 2 * DAY - M)]
    assert checks[1].gaps.expected == 1440
    # day 2 was never asked for: not loaded, not "no gaps in 0 expected candles"
    assert not checks[2].loaded and checks[2].gaps.expected == 0


def test_refetch_asks_for_everything_and_the_open_partition_tail_is_freshness(
    server: ReplayServer, db_url: str
) -> None:
    with MarketStore.open(db_url) as store:
        client = make_client("binance", replay_url=server.url, enable_rate_limit=False)
        now = T0 + 3 * DAY + 12 * 60 * M + 30_000  # day 3, 12:00:30
        partial = load_series(
            client, get_venue("binance"), store, SERIES, T0 + 3 * DAY, T0 + 4 * DAY, now_ms=now
        )
        checks = check_candle_windows(
            store,
            GapStore(store.engine),
            "binance",
            "BTC/USDT",
            "1m",
            [(T0 + 3 * DAY, T0 + 4 * DAY)],
            now_ms=now + 3_600_000,  # checked an hour later: the tail is not a gap
        )
        refetch = _load(server, store, 3, 1, refetch=True)
    assert partial.spans == [(T0 + 3 * DAY, now - M + 1)]
    assert partial.expected == 12 * 60
    assert checks[0].loaded and checks[0].gaps.expected == 12 * 60
    # the run inside the morning is a gap; the afternoon, not asked for yet, is not
    assert checks[0].missing_ranges == [(T0 + 3 * DAY + 60 * M, T0 + 3 * DAY + 64 * M)]
    assert refetch.spans == [(T0 + 3 * DAY, T0 + 4 * DAY)]  # type: ignore[attr-defined]


def test_the_grid_follows_the_listing_and_the_delisting(server: ReplayServer, db_url: str) -> None:
    """With the market in the catalog, a leading run of missing candles after the listing is a
    gap too (without it, the series' first candle would be taken as its start), and nothing
    after the delisting is expected."""
    listed, delisted = T0 + 2 * DAY - 30 * M, T0 + 3 * DAY + 62 * M
    pair = CryptoPair(
        exchange="binance",
        symbol="BTC/USDT",
        base="BTC",
        quote="USDT",
        active=False,
        listed_ms=listed,
        delisted_ms=delisted,
    )
    windows = [(T0 + d * DAY, T0 + (d + 1) * DAY) for d in range(DAYS)]
    with MarketStore.open(db_url) as store:
        store.upsert_instruments(pairs=[pair])
        _load(server, store, 0, DAYS)
        checks = check_candle_windows(
            store, GapStore(store.engine), "binance", "BTC/USDT", "1m", windows, now_ms=NOW
        )
    assert [c.gaps.expected for c in checks] == [0, 30, 1440, 62, 0]
    # day 1: the listing's first 23 minutes are there, its last 7 are missing at the exchange
    assert checks[1].missing_ranges == [(T0 + 2 * DAY - 7 * M, T0 + 2 * DAY - M)]
    assert checks[3].missing_ranges == [(T0 + 3 * DAY + 60 * M, T0 + 3 * DAY + 61 * M)]
    assert all(c.loaded for c in checks)
