"""The ``gaps`` asset check through Dagster: real assets load a replay exchange into a real
database, the check runs in the same run, one evaluation per partition.

Real tapes: okx BTC_USDT 1m has exactly 538 runs of missing candles and binance ADA_BTC 5m
has 5, and each ends inside the last day checked; the check reports exactly those and the
closed last day's tail, nothing else, and after one repair attempt they
are confirmed and the check passes with WARN. Synthetic: holes punched into a complete tape
(candles, and Binance's sequential trade ids) are found with the right ranges.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from crypto_pipelines.domain.gaps import Range, merge_adjacent, slots_in
from crypto_pipelines.domain.timeframes import MINUTE_MS, timeframe_ms
from crypto_pipelines.replay import ReplayClock, ReplayServer, Tape
from crypto_pipelines.replay.synth import SynthSpec, write_synthetic_tape
from crypto_pipelines.storage.gaps import GapStore
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.conftest import REAL_TAPES, require_shared
from crypto_pipelines_tests.defs.gap_helpers import (
    evaluations,
    gap_world,
    month_keys,
    ranges_of,
    series,
    tape_runs,
    trailing_run,
    universe,
)

WARN, ERROR = dg.AssetCheckSeverity.WARN, dg.AssetCheckSeverity.ERROR


@pytest.mark.parametrize(
    ("exchange", "symbol", "folder", "timeframe", "start", "days", "runs"),
    [
        ("okx", "BTC/USDT", "okx/BTC_USDT", "1m", date(2017, 11, 4), 11, 538),
        ("binance", "ADA/BTC", "binance/ADA_BTC", "5m", date(2018, 1, 10), 21, 5),
    ],
)
def test_real_tape_gaps_reported_exactly_then_confirmed(
    real_server: ReplayServer,
    tmp_path: Path,
    exchange: str,
    symbol: str,
    folder: str,
    timeframe: str,
    start: date,
    days: int,
    runs: int,
) -> None:
    tape_file = require_shared(REAL_TAPES / folder / f"ohlcv_{timeframe}.csv")
    step = timeframe_ms(timeframe)
    expected = tape_runs(tape_file, step)
    assert len(expected) == runs
    # the tape ends inside its month, which is closed: the month's tail is missing as well
    keys = month_keys(start.isoformat(), days, symbol)
    month_end = pd.Timestamp(keys[-1].split("|")[0], tz="UTC") + pd.offsets.MonthBegin(1)
    expected += trailing_run(tape_file, step, int(month_end.timestamp() * 1000))
    the_universe = universe(**{exchange: series(symbol, (timeframe,), start)})
    db_url = f"sqlite:///{tmp_path / 'market.db'}"
    asset = f"ohlcv_{timeframe}"
    with gap_world(the_universe, real_server.url, db_url, max_runs_per_tick=50) as world:
        result = world.materialize(exchange, asset, keys[0], keys[-1])
        assert result.success  # a failed check does not fail the run (not blocking)
        found = evaluations(result)
        assert set(found) == set(keys)
        reported = [r for key in keys for r in ranges_of(found[key])]
        # a run that straddles a month's end is reported by both months, one part each
        assert merge_adjacent(reported, step) == expected
        for evaluation in found.values():
            mine = ranges_of(evaluation)
            assert evaluation.passed is not bool(mine)
            assert evaluation.metadata["missing_candles"].value == slots_in(mine, step)
            if mine:
                assert evaluation.severity == ERROR
                assert ranges_of(evaluation, "confirmed_gaps") == []
        failed = {key for key, e in found.items() if not e.passed}
        assert failed

        # one repair attempt per failed partition: the refetch finds nothing more
        tick = world.tick()
        requests = list(tick.run_requests or [])
        assert {r.partition_key for r in requests} == failed
        for request in requests:
            run = world.launch(request)
            assert run.success
            (evaluation,) = evaluations(run).values()
            assert evaluation.passed and evaluation.severity == WARN
            assert ranges_of(evaluation, "confirmed_gaps") == ranges_of(
                found[request.partition_key]
            )

        # from now on an ordinary check passes with WARN, and nothing is refetched again
        again = evaluations(world.materialize(exchange, asset, keys[0], keys[-1]))
        assert all(e.passed for e in again.values())
        assert {k for k, e in again.items() if e.severity == WARN} == failed
        assert (
            merge_adjacent(
                [r for key in keys for r in ranges_of(again[key], "confirmed_gaps")], step
            )
            == expected
        )
        assert not world.tick().run_requests
        with MarketStore.open(db_url) as store:
            rows = GapStore(store.engine).records()
        assert {r.status for r in rows} == {"confirmed"}
        assert merge_adjacent([(r.start, r.end) for r in rows], step) == expected


T0 = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp() * 1000)
DAY = 1440 * MINUTE_MS
HOLES_MINUTES = [*range(100, 105), 1439, 1440, 1441, 2000]  # one run straddles midnight
MONTH = "2024-01-01|BTC/USDT"


@dataclass
class PunchedTape:
    server: ReplayServer
    candle_holes: dict[str, list[Range]]  # by partition key
    trade_holes: dict[str, list[Range]]


def _punch(path: Path, drop: set[int], column: int) -> list[int]:
    """Remove the rows whose ``column`` is in ``drop``; returns that column of the rest."""
    lines = path.read_text().splitlines(keepends=True)
    kept = [lines[0]] + [ln for ln in lines[1:] if int(ln.split(",")[column]) not in drop]
    path.write_text("".join(kept))
    return [int(ln.split(",")[column]) for ln in kept[1:]]


@pytest.fixture(scope="module")
def punched_tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PunchedTape]:
    """A complete synthetic binance BTC/USDT tape (2 days of 1m candles and aggTrades)
    with holes punched into it."""
    root = tmp_path_factory.mktemp("punched")
    spec = SynthSpec(
        exchanges=("binance",),
        symbols={"binance": ("BTC/USDT",)},
        timeframes=("1m",),
        days=2,
        seed=5,
        books=False,
        funding=False,
        gap_rate=0.0,
        outages_per_day=0.0,
    )
    write_synthetic_tape(root, spec)
    folder = root / "binance" / "BTC_USDT"
    candles = (folder / "ohlcv_1m.csv").read_text().splitlines()[1:]
    assert [int(c.split(",")[0]) for c in candles] == [T0 + i * MINUTE_MS for i in range(2880)]
    _punch(folder / "ohlcv_1m.csv", {T0 + m * MINUTE_MS for m in HOLES_MINUTES}, 0)

    trades = [ln.split(",") for ln in (folder / "trades.csv").read_text().splitlines()[1:]]
    ids = [int(t[1]) for t in trades]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # sequential, like aggTrades
    first_day2 = next(i for i, t in enumerate(trades) if int(t[0]) >= T0 + DAY)
    dropped = [*range(500, 510), *range(first_day2 - 3, first_day2 + 2), first_day2 + 700]
    _punch(folder / "trades.csv", {ids[i] for i in dropped}, 1)

    tape = Tape.load(root)
    # the clock at the tape's end: the month partition's window ends there, complete
    clock = ReplayClock(start_ms=T0 + 2 * DAY, speed=0)
    with ReplayServer(tape, clock=clock) as server:
        day1, day2 = "2024-01-01|BTC/USDT", "2024-01-02|BTC/USDT"
        yield PunchedTape(
            server,
            {
                # candles are partitioned monthly: one partition, the midnight run whole
                MONTH: [
                    (T0 + 100 * MINUTE_MS, T0 + 104 * MINUTE_MS),
                    (T0 + 1439 * MINUTE_MS, T0 + 1441 * MINUTE_MS),
                    (T0 + 2000 * MINUTE_MS,) * 2,
                ],
            },
            {
                day1: [(ids[500], ids[509])],
                # the run straddling midnight belongs to the day its next trade is in
                day2: [(ids[first_day2 - 3], ids[first_day2 + 1]), (ids[first_day2 + 700],) * 2],
            },
        )
    tape.close()


def test_punched_holes_fail_with_their_ranges_then_confirm(
    punched_tape: PunchedTape, db_url: str
) -> None:
    the_universe = universe(binance=series("BTC/USDT", ("1m",), date(2024, 1, 1), trades=True))
    days = ("2024-01-01|BTC/USDT", "2024-01-02|BTC/USDT")
    with gap_world(the_universe, punched_tape.server.url, db_url) as world:
        (candles,) = evaluations(world.materialize("binance", "ohlcv_1m", MONTH, MONTH)).values()
        trades = evaluations(world.materialize("binance", "trades", *days))
        assert not candles.passed and candles.severity == ERROR
        assert ranges_of(candles) == punched_tape.candle_holes[MONTH]
        assert candles.metadata["missing_candles"].value == slots_in(
            punched_tape.candle_holes[MONTH], MINUTE_MS
        )
        assert candles.metadata["present_candles"].value == 2880 - len(HOLES_MINUTES)
        for key in days:
            assert not trades[key].passed
            assert ranges_of(trades[key]) == punched_tape.trade_holes[key]
            assert trades[key].metadata["missing_ids"].value == slots_in(
                punched_tape.trade_holes[key], 1
            )

        # the exchange has none of them: one repair confirms them all
        requests = list(world.tick().run_requests or [])
        assert sorted((r.asset_selection[0].path[-1], r.partition_key) for r in requests) == [
            ("ohlcv_1m", MONTH),
            ("trades", days[0]),
            ("trades", days[1]),
        ]
        for request in requests:
            (evaluation,) = evaluations(world.launch(request)).values()
            assert evaluation.passed and evaluation.severity == WARN
            holes = (
                punched_tape.trade_holes
                if request.asset_selection[0].path[-1] == "trades"
                else punched_tape.candle_holes
            )
            assert ranges_of(evaluation, "confirmed_gaps") == holes[request.partition_key]
            assert evaluation.metadata["newly_confirmed"].value == len(holes[request.partition_key])
