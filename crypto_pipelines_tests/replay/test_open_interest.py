"""Open-interest history: the tape's ``open_interest.csv``, stock ccxt's
``fetch_open_interest_history`` against each venue's endpoint on the replay exchange, and
synthetic tapes that carry it.

The tape's snapshots are taken 1.5 s before each 5-minute mark (as a recorder polling on the
mark would), with a 150-minute hole and cells left empty where a venue would report only one
of the two numbers, so that periods are cut from "the latest snapshot at or before the period's
time", gaps are omitted rather than filled, and missing numbers are derived or left empty."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import ccxt
import pytest
from typer.testing import CliRunner

from crypto_pipelines.cli import app
from crypto_pipelines.replay import ReplayClock, ReplayServer, Tape, TapeError, point_ccxt_at
from crypto_pipelines.replay.synth import SynthSpec, write_synthetic_tape
from crypto_pipelines.replay.tape.markets import MarketSpec
from crypto_pipelines.replay.tape.writer import write_markets, write_ohlcv, write_open_interest

T0 = 1_704_067_200_000  # 2024-01-01 00:00 UTC
MIN = 60_000
P5 = 5 * MIN
HOUR = 3_600_000
DAY = 86_400_000
SNAPSHOTS = 3 * 288
GAP = range(100, 130)  # snapshots not recorded: 08:20 to 10:45 on the first day
NOW = T0 + 2 * DAY + 3 * MIN  # pinned "now", inside the tape and off the 5-minute grid
LINEAR, INVERSE, SPOT = "BTC/USDT:USDT", "BTC/USD:BTC", "BTC/USDT"
SIZES = {  # contract sizes (markets.json)
    ("binance", LINEAR): "1",
    ("binance", INVERSE): "100",
    ("okx", LINEAR): "0.01",
    ("okx", INVERSE): "100",
    ("bybit", LINEAR): "1",
    ("bybit", INVERSE): "1",
}


def snapshot(k: int) -> tuple[int, str, str]:
    """Snapshot k: 1.5 s before mark k; every tenth has no value (k % 10 == 3) or no
    contracts (k % 10 == 7)."""
    ts = T0 + k * P5 - (1_500 if k else 0)
    oi = "" if k % 10 == 7 else f"{1000 + k}.25"
    value = "" if k % 10 == 3 else f"{(1000 + k) * 40}.5"
    return ts, oi, value


def close(minute: int) -> str:
    return f"{40000 + minute % 50}"


@pytest.fixture(scope="module")
def tape_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("oi-tape")
    candles = [
        (T0 + i * MIN, close(i), close(i), close(i), close(i), "1.5") for i in range(3 * 1440)
    ]
    rows = [snapshot(k) for k in range(SNAPSHOTS) if k not in GAP]
    for exchange in ("binance", "okx", "bybit"):
        markets = []
        for symbol in (LINEAR, INVERSE):
            write_ohlcv(root, exchange, symbol, "1m", candles)
            write_open_interest(root, exchange, symbol, rows)
            size = SIZES[(exchange, symbol)]
            markets.append(MarketSpec(symbol, "swap", "0.1", "0.001", "0.001", size, T0))
        write_ohlcv(root, exchange, SPOT, "1m", candles[:10])
        write_markets(root, exchange, markets)
    return root


@pytest.fixture(scope="module")
def server(tape_dir: Path) -> Iterator[ReplayServer]:
    with ReplayServer(tape_dir, clock=ReplayClock(start_ms=NOW, speed=0)) as srv:
        yield srv


def client(server: ReplayServer, exchange_id: str) -> Any:
    return point_ccxt_at(getattr(ccxt, exchange_id)({"enableRateLimit": False}), server.url)


def periods(start: int, end: int, period: int = P5, offset: int = 0) -> list[tuple[int, int]]:
    """(period time, snapshot index) of the periods in [start, end] that have a snapshot in
    (t - period, t], from the tape's rows, independently of the replay's code."""
    times = {k: snapshot(k)[0] for k in range(SNAPSHOTS) if k not in GAP}
    out = []
    t = start + (offset - start) % period
    while t <= end:
        held = [k for k, ts in times.items() if t - period < ts <= t]
        if held:
            out.append((t, max(held)))
        t += period
    return out


def plain(k: int) -> bool:
    """Snapshot k has both numbers, so every venue serves them without deriving."""
    return k % 10 not in (3, 7)


def amounts(result: list[dict[str, Any]]) -> list[tuple[int, float | None, float | None]]:
    return [(r["timestamp"], r["openInterestAmount"], r["openInterestValue"]) for r in result]


# -- tape ---------------------------------------------------------------------------------------


def test_tape_reads_snapshots_back_exactly(tape_dir: Path) -> None:
    tape = Tape.load(tape_dir)
    series = tape.exchanges["okx"].symbols[LINEAR].open_interest
    assert series is not None and tape.exchanges["okx"].symbols[SPOT].open_interest is None
    rows = series.rows(0, len(series))
    assert [tuple(r) for r in rows] == [snapshot(k) for k in range(SNAPSHOTS) if k not in GAP]
    hours = series.buckets(HOUR, T0 + 8 * HOUR, T0 + 11 * HOUR, 10)
    # 09:00 is served from the 08:15 snapshot; the hour to 10:00 has none: omitted
    assert [(r.ts, r.open_interest) for r in hours] == [
        (T0 + 8 * HOUR, "1096.25"),
        (T0 + 9 * HOUR, "1099.25"),
        (T0 + 11 * HOUR, "1132.25"),
    ]
    tape.close()


def write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


HEADER = "ts,open_interest,open_interest_value\n"


@pytest.mark.parametrize(
    ("content", "line", "problem"),
    [
        ("ts,oi,value\n1,2,3\n", 1, "header must be 'ts,open_interest,open_interest_value'"),
        (HEADER + "300000,1,2\n0,1,2\n", 3, "ts not sorted ascending"),
        (HEADER + "0,1,2\n0,1,2\n", 3, "duplicate ts"),
        (HEADER + "0,1,abc\n", 2, "column 'open_interest_value' is not a decimal number"),
        (HEADER + "0,nan,2\n", 2, "column 'open_interest' is not a decimal number"),
        (HEADER + "0,1,2\n300000,,\n", 3, "needs open_interest, open_interest_value or both"),
        (HEADER + "0,1,2\n300000,1\n", 3, "expected 3 fields"),
        (HEADER + "1.5,1,2\n", 2, "ts must be an integer of milliseconds"),
    ],
)
def test_bad_open_interest_files_are_refused(
    tmp_path: Path, content: str, line: int, problem: str
) -> None:
    write(tmp_path, "bybit/BTC_USDT_USDT/open_interest.csv", content)
    with pytest.raises(TapeError) as info:
        Tape.load(tmp_path)
    assert info.value.line == line and problem in info.value.problem
    assert str(info.value).startswith(f"{tmp_path}/bybit/BTC_USDT_USDT/open_interest.csv:{line}:")


def test_open_interest_is_refused_on_a_spot_folder(tmp_path: Path) -> None:
    write(tmp_path, "okx/BTC_USDT/open_interest.csv", HEADER + "0,1,2\n")
    with pytest.raises(TapeError, match="perpetual swaps only; BTC/USDT is a spot symbol folder"):
        Tape.load(tmp_path)


def test_empty_cells_load_and_validate(tmp_path: Path) -> None:
    write_open_interest(tmp_path, "okx", LINEAR, [(0, "1.5", None), (P5, None, "20")])
    tape = Tape.load(tmp_path)
    series = tape.exchanges["okx"].symbols[LINEAR].open_interest
    assert series is not None and [tuple(r) for r in series.rows(0, 2)] == [
        (0, "1.5", ""),
        (P5, "", "20"),
    ]
    tape.close()
    result = CliRunner().invoke(app, ["replay", "validate", str(tmp_path)])
    assert result.exit_code == 0, result.output


# -- Binance ------------------------------------------------------------------------------------


def test_binance_usdm_newest_periods_of_the_window(server: ReplayServer) -> None:
    """``fapi .../futures/data/openInterestHist``: the newest ``limit`` periods of
    [startTime, endTime], oldest first, base amount and quote value as decimal strings."""
    ex = client(server, "binance")
    start, end = T0 + 7 * HOUR, T0 + 12 * HOUR
    raw = ex.fapiDataGetOpenInterestHist(
        {"symbol": "BTCUSDT", "period": "5m", "limit": 40, "startTime": start, "endTime": end}
    )
    want = [(t, k) for t, k in periods(start, end)][-40:]
    assert [r["timestamp"] for r in raw] == [t for t, _ in want]
    assert set(raw[0]) == {"symbol", "sumOpenInterest", "sumOpenInterestValue", "timestamp"}
    for row, (_, k) in zip(raw, want, strict=True):
        _, oi, value = snapshot(k)
        if plain(k):
            assert (row["sumOpenInterest"], row["sumOpenInterestValue"]) == (oi, value)
    assert not any(
        T0 + 8 * HOUR + 15 * MIN < r["timestamp"] < T0 + 10 * HOUR + 50 * MIN for r in raw
    )
    result = ex.fetch_open_interest_history(LINEAR, "5m", params={"until": end})
    assert len(result) == 30 and result[-1]["timestamp"] == end  # Binance's default limit


def test_binance_derives_the_missing_number(server: ReplayServer) -> None:
    ex = client(server, "binance")
    rows = ex.fapiDataGetOpenInterestHist(
        {"symbol": "BTCUSDT", "period": "5m", "startTime": T0 + 3 * P5, "endTime": T0 + 7 * P5}
    )
    by_ts = {r["timestamp"]: r for r in rows}
    # k=3: no value -> contracts x price of the candle open at the period's time (minute 15)
    assert by_ts[T0 + 3 * P5]["sumOpenInterestValue"] == str(Decimal("1003.25") * int(close(15)))
    # k=7: no contracts -> value / price, 8 decimals
    want = (Decimal("40280.5") / int(close(35))).quantize(Decimal("1e-8"), ROUND_HALF_EVEN)
    assert Decimal(by_ts[T0 + 7 * P5]["sumOpenInterest"]) == want


def test_binance_limits_periods_and_errors(server: ReplayServer) -> None:
    ex = client(server, "binance")
    latest = ex.fapiDataGetOpenInterestHist({"symbol": "BTCUSDT", "period": "5m"})
    assert [r["timestamp"] for r in latest] == [t for t, _ in periods(T0, NOW)][-30:]
    assert latest[-1]["timestamp"] == T0 + 2 * DAY  # never after "now"
    many = ex.fapiDataGetOpenInterestHist({"symbol": "BTCUSDT", "period": "5m", "limit": 9999})
    assert len(many) == 500
    hours = ex.fetch_open_interest_history(
        LINEAR, "1h", since=T0 + 6 * HOUR, params={"until": T0 + 12 * HOUR}
    )
    want = periods(T0 + 6 * HOUR, T0 + 12 * HOUR, HOUR)
    assert [r["timestamp"] for r in hours] == [t for t, _ in want]
    assert [r["openInterestAmount"] for r in hours] == [float(snapshot(k)[1]) for _, k in want]
    with pytest.raises(ccxt.BadRequest, match="period"):
        ex.fapiDataGetOpenInterestHist({"symbol": "BTCUSDT", "period": "1m"})
    with pytest.raises(ccxt.BadRequest, match="symbol"):
        ex.fapiDataGetOpenInterestHist({"period": "5m"})
    with pytest.raises(ccxt.BadSymbol):
        ex.fapiDataGetOpenInterestHist({"symbol": "ETHUSDT", "period": "5m"})
    with pytest.raises(ccxt.NotSupported):
        ex.fetch_open_interest_history(SPOT, "5m")


def test_binance_coin_m_contracts_and_base_value(server: ReplayServer) -> None:
    """``dapi .../futures/data/openInterestHist``: ``pair`` + ``contractType``; contracts and
    their value in BTC (contracts x 100 USD / price)."""
    ex = client(server, "binance")
    since = T0 + 20 * HOUR
    result = ex.fetch_open_interest_history(INVERSE, "5m", since=since, limit=12)
    want = periods(since, since + 12 * P5)[-12:]
    assert [r["timestamp"] for r in result] == [t for t, _ in want]
    for row, (t, k) in zip(result, want, strict=True):
        if not plain(k):
            continue
        _, oi, value = snapshot(k)
        price = int(close((t - T0) // MIN))
        base = (Decimal(value) / price).quantize(Decimal("1e-8"), ROUND_HALF_EVEN)
        assert row["openInterestAmount"] == float(oi)
        assert row["openInterestValue"] == float(base)
        assert row["info"]["pair"] == "BTCUSD" and row["info"]["contractType"] == "PERPETUAL"
    quarter = ex.dapiDataGetOpenInterestHist(
        {"pair": "BTCUSD", "contractType": "CURRENT_QUARTER", "period": "5m"}
    )
    assert quarter == []
    with pytest.raises(ccxt.BadRequest, match="contractType"):
        ex.dapiDataGetOpenInterestHist({"pair": "BTCUSD", "contractType": "X", "period": "5m"})


def test_binance_paging_by_windows_covers_the_range(server: ReplayServer) -> None:
    """Windows of ``limit`` periods (what ccxt asks with ``since``) walk the tape: every
    period once, the hole omitted."""
    ex = client(server, "binance")
    got: list[int] = []
    for start in range(T0, T0 + 300 * P5, 100 * P5):
        page = ex.fapiDataGetOpenInterestHist(
            {
                "symbol": "BTCUSDT",
                "period": "5m",
                "limit": 100,
                "startTime": start,
                "endTime": start + 100 * P5 - 1,
            }
        )
        got += [r["timestamp"] for r in page]
    assert got == [t for t, _ in periods(T0, T0 + 300 * P5 - 1)]
    assert len(got) == 300 - len(GAP)


def test_binance_keeps_30_days(tape_dir: Path) -> None:
    """Relative to the replay clock: an older startTime is refused (-1130), older periods
    are not served."""
    late = T0 + 32 * DAY + 12 * HOUR  # keeps periods from T0 + 2 d 12 h on
    with ReplayServer(tape_dir, clock=ReplayClock(start_ms=late, speed=0)) as srv:
        ex = client(srv, "binance")
        with pytest.raises(ccxt.BadRequest, match="startTime"):
            ex.fetch_open_interest_history(LINEAR, "5m", since=T0 + DAY)
        latest = ex.fapiDataGetOpenInterestHist({"symbol": "BTCUSDT", "period": "1h"})
        assert [r["timestamp"] for r in latest] == [T0 + h * HOUR for h in range(60, 73)]
        assert (
            ex.fapiDataGetOpenInterestHist(
                {"symbol": "BTCUSDT", "period": "1h", "endTime": T0 + DAY}
            )
            == []
        )


# -- OKX ----------------------------------------------------------------------------------------


def test_okx_rows_newest_first_with_exclusive_bounds(server: ReplayServer) -> None:
    ex = client(server, "okx")
    begin, end = T0 + 10 * P5, T0 + 20 * P5
    raw = ex.publicGetRubikStatContractsOpenInterestHistory(
        {"instId": "BTC-USDT-SWAP", "period": "5m", "begin": begin, "end": end}
    )
    assert raw["code"] == "0"
    rows = raw["data"]
    want = periods(begin + 1, end - 1)[::-1]
    assert [int(r[0]) for r in rows] == [t for t, _ in want]
    for row, (_, k) in zip(rows, want, strict=True):
        _, oi, value = snapshot(k)
        if plain(k):  # contracts, base (contracts x 0.01 BTC), USD
            assert row == [row[0], oi, str(Decimal(oi) * Decimal("0.01")), value]
    result = ex.fetch_open_interest_history(LINEAR, "5m", since=begin, limit=5)
    assert [r["timestamp"] for r in result] == [t for t, _ in periods(begin, begin + 4 * P5)]
    assert [r["openInterestAmount"] for r in result] == [
        float(snapshot(k)[1]) for _, k in periods(begin, begin + 4 * P5)
    ]


def test_okx_limit_periods_and_errors(server: ReplayServer) -> None:
    ex = client(server, "okx")

    def data(**params: Any) -> list[list[str]]:
        return ex.publicGetRubikStatContractsOpenInterestHistory(
            {"instId": "BTC-USD-SWAP", **params}
        )["data"]

    assert len(data()) == 100 and int(data()[0][0]) == T0 + 2 * DAY  # newest, not after now
    assert len(data(limit=500)) == 100
    days = data(period="1D")  # Hong Kong days start at 16:00 UTC
    assert [int(r[0]) for r in days] == [T0 + DAY + 16 * HOUR, T0 + 16 * HOUR]
    assert [int(r[0]) for r in data(period="1Dutc")] == [T0 + 2 * DAY, T0 + DAY, T0]
    assert data(period="1M") == []
    with pytest.raises(ccxt.BadRequest):
        data(period="7m")
    with pytest.raises(ccxt.BadSymbol):
        ex.publicGetRubikStatContractsOpenInterestHistory({"instId": "BTC-USDT", "period": "5m"})


# -- Bybit --------------------------------------------------------------------------------------


def test_bybit_contracts_only_newest_first(server: ReplayServer) -> None:
    ex = client(server, "bybit")
    since = T0 + 30 * P5
    result = ex.fetch_open_interest_history(LINEAR, "5m", since=since, limit=10)
    want = periods(since, since + 10 * P5)[-10:]
    assert [r["timestamp"] for r in result] == [t for t, _ in want]
    assert all(r["openInterestValue"] is None for r in result)
    assert [
        r["openInterestAmount"] for r, (_, k) in zip(result, want, strict=True) if plain(k)
    ] == [float(snapshot(k)[1]) for _, k in want if plain(k)]
    inverse = ex.fetch_open_interest_history(INVERSE, "1h", since=since, limit=3)
    assert [r["openInterestValue"] for r in inverse] == [
        float(snapshot(k)[1]) for _, k in periods(since, since + 3 * HOUR, HOUR)[-3:]
    ]
    raw = ex.publicGetV5MarketOpenInterest(
        {"category": "linear", "symbol": "BTCUSDT", "intervalTime": "5min", "startTime": since}
    )["result"]
    stamps = [int(r["timestamp"]) for r in raw["list"]]
    assert stamps == [t for t, _ in periods(T0, NOW)][-50:][::-1]  # a lone startTime: ignored
    assert raw["nextPageCursor"]


def test_bybit_cursor_paging(server: ReplayServer) -> None:
    """ccxt's ``paginate`` follows ``nextPageCursor`` back from ``until`` to ``since`` and
    stops at the empty page past the oldest period (its result comes newest first)."""
    ex = client(server, "bybit")
    since, until = T0, T0 + DAY
    result = ex.fetch_open_interest_history(
        LINEAR, "5m", since=since, params={"until": until, "paginate": True}
    )
    assert [r["timestamp"] for r in result][::-1] == [t for t, _ in periods(since, until)]
    seen: list[int] = []
    cursor = ""
    while True:
        page = ex.publicGetV5MarketOpenInterest(
            {
                "category": "inverse",
                "symbol": "BTCUSD",
                "intervalTime": "5min",
                "startTime": since,
                "endTime": until,
                "limit": 200,
                "cursor": cursor,
            }
        )["result"]
        if not page["list"]:
            assert page["nextPageCursor"] == ""
            break
        seen += [int(r["timestamp"]) for r in page["list"]]
        cursor = page["nextPageCursor"]
    assert seen == [t for t, _ in periods(since, until)][::-1]


def test_bybit_errors(server: ReplayServer) -> None:
    ex = client(server, "bybit")
    base = {"category": "linear", "symbol": "BTCUSDT", "intervalTime": "5min"}
    with pytest.raises(ccxt.BadRequest):
        ex.publicGetV5MarketOpenInterest({**base, "intervalTime": "2h"})
    with pytest.raises(ccxt.BadRequest):
        ex.publicGetV5MarketOpenInterest({**base, "category": "spot"})
    with pytest.raises(ccxt.BadRequest):
        ex.publicGetV5MarketOpenInterest({**base, "cursor": "garbage"})
    assert len(ex.publicGetV5MarketOpenInterest({**base, "limit": 999})["result"]["list"]) == 200


# -- synthetic tapes ----------------------------------------------------------------------------


def test_synthetic_perpetuals_have_open_interest(tmp_path: Path) -> None:
    spec = SynthSpec(
        exchanges=("binance", "okx"),
        symbols={"binance": (SPOT, LINEAR, INVERSE), "okx": (LINEAR,)},
        days=2,
        trades=False,
        books=False,
        seed=11,
    )
    summary = write_synthetic_tape(tmp_path / "a", spec)
    write_synthetic_tape(tmp_path / "b", spec)
    assert summary.open_interest == 3 * 2 * 288
    tape = Tape.load(tmp_path / "a")
    for exchange, symbol in (("binance", LINEAR), ("binance", INVERSE), ("okx", LINEAR)):
        rel = f"{exchange}/{symbol.replace('/', '_').replace(':', '_')}/open_interest.csv"
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
        series = tape.exchanges[exchange].symbols[symbol].open_interest
        assert series is not None and len(series) == 2 * 288
        rows = series.rows(0, len(series))
        assert [r.ts for r in rows] == [T0 + k * P5 for k in range(2 * 288)]
        closes = tape.exchanges[exchange].symbols[symbol].ohlcv["1m"]
        size = Decimal(tape.exchanges[exchange].markets[symbol].contract_size or "1")
        for row in rows[::50]:
            oi, value = Decimal(row.open_interest), Decimal(row.open_interest_value)
            assert oi > 0 and value > 0
            price = Decimal(closes.between(None, row.ts, 1, newest=True)[0].close)
            notional = oi * size * (price if symbol == LINEAR else 1)
            assert abs(value / notional - 1) < Decimal("0.01")
    assert tape.exchanges["binance"].symbols[SPOT].open_interest is None
    assert not (tmp_path / "a" / "binance" / "BTC_USDT" / "open_interest.csv").exists()
    tape.close()
    result = CliRunner().invoke(app, ["replay", "validate", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
