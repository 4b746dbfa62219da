"""The synthetic tape generator: format, determinism, internal consistency, realism, CLI."""

from __future__ import annotations

import csv
import importlib.util
import queue
import subprocess
import sys
import threading
import urllib.request
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from statistics import median

import pytest
from typer.testing import CliRunner

from crypto_pipelines.cli import app
from crypto_pipelines.domain.symbols import symbol_to_dir
from crypto_pipelines.domain.timeframes import HOUR_MS, MINUTE_MS, timeframe_ms
from crypto_pipelines.replay.synth import SynthError, SynthSpec, write_synthetic_tape
from crypto_pipelines.replay.tape import Tape

CLI = Path(sys.executable).parent / "crypto-pipelines"
START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DAY_MS = 86_400_000
SPEC = SynthSpec(
    exchanges=("binance", "okx", "coinbaseexchange"),
    symbols={
        "binance": ("BTC/USDT", "BTC/USDT:USDT"),
        "okx": ("BTC/USDT", "ETH/USDT:USDT"),
        "coinbaseexchange": ("BTC/USD",),
    },
    days=1,
    seed=11,
)
SERIES = [(ex, sym) for ex in SPEC.exchanges for sym in SPEC.symbols_for(ex)]
TIMEFRAMES = ("5m", "1h", "1d")


@pytest.fixture(scope="module")
def tape_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    write_synthetic_tape(root, SPEC)
    return root


def rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        return list(reader)


def candles(root: Path, exchange: str, symbol: str, timeframe: str) -> list[list[str]]:
    return rows(root / exchange / symbol_to_dir(symbol) / f"ohlcv_{timeframe}.csv")


def all_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# -- format ----------------------------------------------------------------------------------
def test_tape_loads_with_markets_and_all_series(tape_dir: Path) -> None:
    tape = Tape.load(tape_dir)
    try:
        assert set(tape.exchanges) == set(SPEC.exchanges)
        for exchange, symbol in SERIES:
            ex = tape.exchanges[exchange]
            market = ex.markets[symbol]
            assert market.listed_ms == START_MS
            assert Decimal(market.price_tick) > 0 and Decimal(market.amount_step) > 0
            assert market.is_swap == symbol.endswith(":USDT")
            series = ex.symbols[symbol]
            assert set(series.ohlcv) == {"1m", *TIMEFRAMES}
            assert series.trades is not None and series.trades.numeric_ids is not None
            assert series.book is not None and len(series.book) == 288
            assert (series.funding is not None) == market.is_swap
        assert tape.exchanges["okx"].markets["ETH/USDT:USDT"].contract_size == "0.1"
    finally:
        tape.close()


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    small = SynthSpec(exchanges=("bybit",), symbols={"bybit": ("ETH/USDT:USDT",)}, days=1, seed=3)
    write_synthetic_tape(tmp_path / "a", small)
    write_synthetic_tape(tmp_path / "b", small)
    assert all_files(tmp_path / "a") == all_files(tmp_path / "b")
    other = SynthSpec(exchanges=("bybit",), symbols={"bybit": ("ETH/USDT:USDT",)}, days=1, seed=4)
    write_synthetic_tape(tmp_path / "c", other)
    a, c = all_files(tmp_path / "a"), all_files(tmp_path / "c")
    assert a.keys() == c.keys()
    assert all(a[name] != c[name] for name in a if name.endswith((".csv", ".jsonl")))


def test_compressed_tape_is_deterministic_and_loads(tmp_path: Path) -> None:
    spec = SynthSpec(exchanges=("okx",), symbols={"okx": ("BTC/USDT:USDT",)}, days=1, compress=True)
    write_synthetic_tape(tmp_path / "a", spec)
    write_synthetic_tape(tmp_path / "b", spec)
    files = all_files(tmp_path / "a")
    assert files == all_files(tmp_path / "b")
    assert all(name.endswith(".gz") for name in files if not name.endswith("markets.json"))
    Tape.load(tmp_path / "a").close()


def test_shorter_tape_is_a_prefix_of_a_longer_one(tmp_path: Path) -> None:
    def spec(days: int) -> SynthSpec:
        return SynthSpec(
            exchanges=("binance",), symbols={"binance": ("BTC/USDT",)}, days=days, trades=False
        )

    write_synthetic_tape(tmp_path / "one", spec(1))
    write_synthetic_tape(tmp_path / "two", spec(2))
    one = candles(tmp_path / "one", "binance", "BTC/USDT", "1m")
    two = candles(tmp_path / "two", "binance", "BTC/USDT", "1m")
    assert two[: len(one)] == one and len(two) > len(one)


# -- consistency -----------------------------------------------------------------------------
@pytest.mark.parametrize(("exchange", "symbol"), SERIES)
def test_1m_candles_derive_exactly_from_trades(tape_dir: Path, exchange: str, symbol: str) -> None:
    trades = rows(tape_dir / exchange / symbol_to_dir(symbol) / "trades.csv")
    ids = [int(t[1]) for t in trades]
    assert ids == sorted(set(ids))
    assert [int(t[0]) for t in trades] == sorted(int(t[0]) for t in trades)
    assert {t[2] for t in trades} == {"buy", "sell"}
    by_minute: dict[int, list[list[str]]] = defaultdict(list)
    for trade in trades:
        by_minute[int(trade[0]) // MINUTE_MS * MINUTE_MS].append(trade)
    expected = [
        [
            str(ts),
            group[0][3],
            max(group, key=lambda t: Decimal(t[3]))[3],
            min(group, key=lambda t: Decimal(t[3]))[3],
            group[-1][3],
            sum((Decimal(t[4]) for t in group), Decimal(0)),
        ]
        for ts, group in sorted(by_minute.items())
    ]
    got = [[*c[:5], Decimal(c[5])] for c in candles(tape_dir, exchange, symbol, "1m")]
    assert got == expected


@pytest.mark.parametrize(("exchange", "symbol"), SERIES)
@pytest.mark.parametrize("timeframe", TIMEFRAMES)
def test_higher_timeframes_aggregate_1m_exactly(
    tape_dir: Path, exchange: str, symbol: str, timeframe: str
) -> None:
    step = timeframe_ms(timeframe)
    groups: dict[int, list[list[str]]] = defaultdict(list)
    for c in candles(tape_dir, exchange, symbol, "1m"):
        groups[int(c[0]) // step * step].append(c)
    expected = [
        [
            str(ts),
            g[0][1],
            max(g, key=lambda c: Decimal(c[2]))[2],
            min(g, key=lambda c: Decimal(c[3]))[3],
            g[-1][4],
            sum((Decimal(c[5]) for c in g), Decimal(0)),
        ]
        for ts, g in sorted(groups.items())
    ]
    got = [[*c[:5], Decimal(c[5])] for c in candles(tape_dir, exchange, symbol, timeframe)]
    assert got == expected


def test_missing_candles_are_exactly_the_minutes_without_trades(tape_dir: Path) -> None:
    total_missing = 0
    longest_run = 0
    for exchange, symbol in SERIES:
        traded = {
            int(t[0]) // MINUTE_MS * MINUTE_MS
            for t in rows(tape_dir / exchange / symbol_to_dir(symbol) / "trades.csv")
        }
        have = [int(c[0]) for c in candles(tape_dir, exchange, symbol, "1m")]
        assert set(have) == traded
        missing = sorted(set(range(START_MS, START_MS + DAY_MS, MINUTE_MS)) - set(have))
        total_missing += len(missing)
        run = 1
        for a, b in zip(missing, missing[1:], strict=False):
            run = run + 1 if b - a == MINUTE_MS else 1
            longest_run = max(longest_run, run)
    assert total_missing > 0
    assert longest_run >= 3  # an outage, not only isolated quiet minutes


def test_ohlc_invariants_and_grid(tape_dir: Path) -> None:
    tape = Tape.load(tape_dir)
    try:
        for exchange, symbol in SERIES:
            market = tape.exchanges[exchange].markets[symbol]
            tick, step = Decimal(market.price_tick), Decimal(market.amount_step)
            for timeframe in ("1m", *TIMEFRAMES):
                for row in candles(tape_dir, exchange, symbol, timeframe):
                    o, h, lo, c, v = (Decimal(x) for x in row[1:])
                    assert int(row[0]) % timeframe_ms(timeframe) == 0
                    assert h >= max(o, c) and lo <= min(o, c) and lo > 0 and v >= 0
                    assert all(p % tick == 0 for p in (o, h, lo, c)) and v % step == 0
            for trade in rows(tape_dir / exchange / symbol_to_dir(symbol) / "trades.csv"):
                amount = Decimal(trade[4])
                assert amount >= Decimal(market.min_amount) and amount % step == 0
                assert Decimal(trade[3]) % tick == 0
    finally:
        tape.close()


def test_funding_every_8h_for_perpetuals_only(tape_dir: Path) -> None:
    for exchange, symbol in SERIES:
        path = tape_dir / exchange / symbol_to_dir(symbol) / "funding.csv"
        if ":" not in symbol:
            assert not path.exists()
            continue
        funding = rows(path)
        assert [int(r[0]) for r in funding] == [START_MS + k * 8 * HOUR_MS for k in range(3)]
        assert all(
            abs(Decimal(r[1])) < Decimal("0.001") and len(r[1].split(".")[1]) == 8 for r in funding
        )


def test_books_sorted_uncrossed_on_the_tick_grid(tape_dir: Path) -> None:
    tape = Tape.load(tape_dir)
    try:
        for exchange, symbol in SERIES:
            series = tape.exchanges[exchange].symbols[symbol]
            tick = Decimal(tape.exchanges[exchange].markets[symbol].price_tick)
            assert series.book is not None
            assert [int(t) for t in series.book.ts] == [
                START_MS + k * 5 * MINUTE_MS for k in range(288)
            ]
            closes = {int(c[0]): Decimal(c[4]) for c in candles(tape_dir, exchange, symbol, "5m")}
            for i in range(len(series.book)):
                snap = series.book.snapshot(i)
                bids = [Decimal(p) for p, _ in snap.bids]
                asks = [Decimal(p) for p, _ in snap.asks]
                assert len(bids) == len(asks) == 20
                assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
                assert len(set(bids)) == 20 and len(set(asks)) == 20
                assert asks[0] - bids[0] >= tick
                assert all(p % tick == 0 for p in bids + asks)
                assert all(Decimal(a) > 0 for _, a in snap.bids + snap.asks)
                prior = closes.get(snap.ts - 5 * MINUTE_MS)
                if prior is not None:  # the book sits around the prevailing price
                    assert abs(bids[0] / prior - 1) < Decimal("0.01")
    finally:
        tape.close()


def test_same_pair_on_two_venues_stays_within_a_few_bps(tape_dir: Path) -> None:
    binance = {c[0]: Decimal(c[4]) for c in candles(tape_dir, "binance", "BTC/USDT", "1m")}
    for exchange, symbol in (("okx", "BTC/USDT"), ("coinbaseexchange", "BTC/USD")):
        other = {c[0]: Decimal(c[4]) for c in candles(tape_dir, exchange, symbol, "1m")}
        bps = [abs(binance[ts] / other[ts] - 1) * 10_000 for ts in binance.keys() & other.keys()]
        assert len(bps) > 1000
        assert median(bps) < 5
        assert max(bps) < 60


def test_prices_start_near_realistic_levels(tape_dir: Path) -> None:
    assert 38_000 < Decimal(candles(tape_dir, "binance", "BTC/USDT", "1m")[0][1]) < 46_000
    assert 2_000 < Decimal(candles(tape_dir, "okx", "ETH/USDT:USDT", "1m")[0][1]) < 2_600


def test_candles_without_trades(tmp_path: Path) -> None:
    spec = SynthSpec(
        exchanges=("bybit",),
        symbols={"bybit": ("BTC/USDT", "SOL/USDT:USDT")},
        timeframes=("1m", "15m", "4h", "1w"),
        days=9,
        trades=False,
        books=False,
        gap_rate=0.01,
    )
    summary = write_synthetic_tape(tmp_path, spec)
    assert summary.trades == 0 and summary.books == 0 and summary.funding == 27
    Tape.load(tmp_path).close()
    one_minute = candles(tmp_path, "bybit", "BTC/USDT", "1m")
    assert 9 * 1440 * 0.97 < len(one_minute) < 9 * 1440
    assert not (tmp_path / "bybit" / "BTC_USDT" / "trades.csv").exists()
    for timeframe in ("15m", "4h", "1w"):
        step, offset = timeframe_ms(timeframe), 4 * DAY_MS if timeframe == "1w" else 0
        groups: dict[int, list[list[str]]] = defaultdict(list)
        for c in one_minute:
            groups[(int(c[0]) - offset) // step * step + offset].append(c)
        got = candles(tmp_path, "bybit", "BTC/USDT", timeframe)
        assert [int(c[0]) for c in got] == sorted(groups)
        for c in got:
            g = groups[int(c[0])]
            assert c[1] == g[0][1] and c[4] == g[-1][4]
            assert Decimal(c[2]) == max(Decimal(x[2]) for x in g)
            assert Decimal(c[3]) == min(Decimal(x[3]) for x in g)
            assert Decimal(c[5]) == sum(Decimal(x[5]) for x in g)


# -- spec validation -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"exchanges": ("kraken",)}, "'kraken'"),
        ({"exchanges": ("binance",), "symbols": {"binance": ("BTCUSDT",)}}, "'BTCUSDT'"),
        (
            {"exchanges": ("coinbaseexchange",), "symbols": {"coinbaseexchange": ("BTC/USD:USD",)}},
            "'BTC/USD:USD'",
        ),
        ({"days": 0}, "days must be a positive whole number, got 0"),
        ({"days": -1}, "got -1"),
        ({"timeframes": ("30s",)}, "'30s'"),
        ({"start": datetime(2024, 1, 1, 0, 0, 30, tzinfo=UTC)}, "2024-01-01T00:00:30"),
    ],
)
def test_bad_specs_are_refused_naming_the_value(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(SynthError, match=named.replace("+", r"\+")):
        SynthSpec(**kwargs)  # type: ignore[arg-type]


def test_default_spec_matches_the_brief() -> None:
    spec = SynthSpec()
    assert spec.exchanges == ("binance", "okx", "bybit", "coinbaseexchange")
    assert spec.symbols_for("okx") == ("BTC/USDT", "ETH/USDT", "BTC/USDT:USDT", "ETH/USDT:USDT")
    assert spec.symbols_for("coinbaseexchange") == ("BTC/USD", "ETH/USD")
    assert spec.timeframes == ("1m", "5m", "1h", "1d")
    assert (spec.start_ms, spec.days, spec.seed) == (START_MS, 3, 7)


# -- CLI -------------------------------------------------------------------------------------
def test_cli_synth_writes_a_loadable_tape(tmp_path: Path) -> None:
    out = tmp_path / "tape"
    result = subprocess.run(
        [str(CLI), "replay", "synth", str(out), "--exchanges", "binance,okx", "--symbols", "BTC/USDT",
         "--symbols", "okx=ETH/USDT:USDT", "--timeframes", "1m,1h", "--start", "2024-03-01", "--days", "1",
         "--seed", "5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    tape = Tape.load(out)
    try:
        assert {e: sorted(t.symbols) for e, t in tape.exchanges.items()} == {
            "binance": ["BTC/USDT"],
            "okx": ["ETH/USDT:USDT"],
        }
        assert set(tape.exchanges["okx"].symbols["ETH/USDT:USDT"].ohlcv) == {"1m", "1h"}
        first = tape.exchanges["binance"].symbols["BTC/USDT"].ohlcv["1h"].first_ts
        assert first == int(datetime(2024, 3, 1, tzinfo=UTC).timestamp() * 1000)
    finally:
        tape.close()


def test_cli_bad_argument_exits_non_zero_naming_it(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(CLI), "replay", "synth", str(tmp_path / "t"), "--exchanges", "kraken"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "unknown exchange 'kraken'" in result.stderr
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--exchanges", "binance,ftx"], "'ftx'"),
        (["--symbols", "BTC-USDT"], "'BTC-USDT'"),
        (["--symbols", "BTC/USDT:USDT"], "coinbaseexchange lists no perpetual swaps"),
        (["--exchanges", "coinbaseexchange", "--symbols", "ETH/USD:USD"], "'ETH/USD:USD'"),
        (["--days", "0"], "days must be a positive whole number, got 0"),
        (["--days", "-3"], "got -3"),
        (["--timeframes", "1m,2x"], "'2x'"),
        (["--start", "tomorrow"], "'tomorrow'"),
        (["--exchanges", "binance", "--symbols", "okx=BTC/USDT"], "'okx'"),
    ],
)
def test_cli_bad_arguments(tmp_path: Path, args: list[str], named: str) -> None:
    result = CliRunner().invoke(app, ["replay", "synth", str(tmp_path / "t"), *args])
    assert result.exit_code == 2
    assert named in result.stderr


def test_cli_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("x")
    result = CliRunner().invoke(app, ["replay", "synth", str(tmp_path), "--days", "1"])
    assert result.exit_code == 2 and "not an empty folder" in result.stderr


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no URL on stdout within {timeout}s")


def _serve_and_check_health(extra: list[str]) -> None:
    proc = subprocess.Popen(
        [str(CLI), "replay", "serve", "--synthetic", "--port", "0", "--days", "1", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = _first_line(proc, 120).strip()
        assert url.startswith("http://127.0.0.1:"), (url, proc.poll())
        with urllib.request.urlopen(f"{url}/_replay/health", timeout=10) as response:
            assert response.status == 200
            assert b"ok" in response.read()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_serve_synthetic_single_venue_prints_url_first() -> None:
    _serve_and_check_health(["--exchanges", "binance", "--symbols", "BTC/USDT,BTC/USDT:USDT"])


def test_serve_synthetic_all_four_venues() -> None:
    missing = [
        f"crypto_pipelines.replay.venues.{m}"
        for m in ("okx", "bybit", "coinbaseexchange")
        if importlib.util.find_spec(f"crypto_pipelines.replay.venues.{m}") is None
    ]
    if missing:
        pytest.skip(f"venue module(s) not written yet: {', '.join(missing)}")
    _serve_and_check_health([])
