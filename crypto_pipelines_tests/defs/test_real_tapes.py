"""Real recorded tapes (../shared/tapes/real) through the real Dagster assets, on all four
exchanges, into SQLite and PostgreSQL.

Each case backfills a partition range of one series in one run (as a backfill does), with
the asset's ``schema`` and ``gaps`` checks, from a replay exchange serving the real tapes.
Candles of every timeframe and funding rates are partitioned by month, trades by day, so a
case's range is the months (or days) the tape touches, or part of them. The expectation is
the tape itself, read with plain pandas: the stored rows must be exactly the tape's rows
inside the materialized partitions (candles the exchange does not have stay absent, values
bit for bit, nothing outside the partitions), every partition's ``schema`` check passes, the
``gaps`` check counts exactly the tape's missing candles (trade ids; for candles, through the
end of the closed window, since the exchange answered it whole), and a second run of the
same range writes nothing and changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date

import dagster as dg
import pandas as pd
import pytest

from crypto_pipelines.defs.build import build_assets
from crypto_pipelines.defs.checks.gaps import gaps_checks
from crypto_pipelines.defs.checks.schema import schema_checks
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
from crypto_pipelines.domain.universe import ExchangeUniverse, Universe
from crypto_pipelines.replay import ReplayServer
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.conftest import REAL_TAPES, require_shared

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
STEP_MS = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000}
TAPE_FILES = {"trades": "trades.csv", "funding_rates": "funding.csv"}
COLUMNS = {
    "ohlcv": ["ts", "open", "high", "low", "close", "volume"],
    "trades": ["trade_id", "ts", "side", "price", "amount"],
    "funding_rates": ["ts", "rate"],
}


@dataclass(frozen=True)
class Case:
    """One series of a real tape and the range of date partitions to backfill."""

    exchange: str
    symbol: str
    asset: str  # ohlcv_<tf>, trades or funding_rates
    first: str  # first date partition (a month's 1st for monthly partitions)
    last: str  # last date partition

    def __str__(self) -> str:
        return f"{self.exchange}-{self.symbol}-{self.asset}-{self.first}..{self.last}"

    @property
    def timeframe(self) -> str | None:
        return self.asset.removeprefix("ohlcv_") if self.asset.startswith("ohlcv_") else None

    @property
    def dataset(self) -> str:
        return "ohlcv" if self.timeframe else self.asset

    @property
    def monthly(self) -> bool:
        """Candles (every timeframe) and funding rates are monthly; trades are daily."""
        return self.dataset in ("ohlcv", "funding_rates")

    @property
    def tape_file(self) -> str:
        folder = self.symbol.replace("/", "_").replace(":", "_")
        name = TAPE_FILES.get(self.asset, f"{self.asset}.csv")
        return f"{self.exchange}/{folder}/{name}"

    def partition_keys(self) -> list[str]:
        dates = pd.date_range(self.first, self.last, freq="MS" if self.monthly else "D")
        return [f"{d.date().isoformat()}|{self.symbol}" for d in dates]

    def window_ms(self) -> tuple[int, int]:
        """[start, end) of the materialized partitions, in ms (UTC)."""
        start = pd.Timestamp(self.first, tz="UTC")
        last = pd.Timestamp(self.last, tz="UTC")
        end = last + (pd.offsets.MonthBegin(1) if self.monthly else pd.Timedelta(days=1))
        return start.value // 1_000_000, end.value // 1_000_000


CASES = [
    # October 2019 holds the whole tape (10-11 to 10-13 11:19): 1,091 minutes without trades
    # inside it, and the rest of the month missing at the exchange
    Case("binance", "XRP/ETH", "ohlcv_1m", "2019-10-01", "2019-10-01"),
    Case("binance", "XRP/ETH", "trades", "2019-10-11", "2019-10-13"),  # 12,477 aggTrades
    Case("binance", "XRP/USDT:USDT", "ohlcv_1h", "2021-11-01", "2021-12-01"),  # December empty
    Case("binance", "XRP/USDT:USDT", "funding_rates", "2021-11-01", "2021-12-01"),  # both hold rows
    # the window starts a month into the tape (11-18 to 12-18): November's rows stay unstored
    Case("binance", "XRP/USDT:USDT", "funding_rates", "2021-12-01", "2021-12-01"),
    # January 2018 holds the 5m tapes (01-10 to 01-30 04:50): two missing candles inside
    # OKX's and Bybit's, none inside Coinbase's, and the month's tail missing at the exchange
    Case("okx", "DASH/BTC", "ohlcv_5m", "2018-01-01", "2018-01-01"),
    Case("bybit", "BTC/USDT:USDT", "ohlcv_1h", "2021-11-01", "2021-12-01"),  # volume is nan
    Case("bybit", "ZEC/BTC", "ohlcv_5m", "2018-01-01", "2018-01-01"),
    Case("coinbaseexchange", "ETC/BTC", "ohlcv_5m", "2018-01-01", "2018-01-01"),
]


def tape_rows(case: Case) -> pd.DataFrame:
    """The expectation, from the tape alone: its rows inside the window (closed candles)."""
    path = require_shared(REAL_TAPES / case.tape_file)
    frame = pd.read_csv(path)
    start, end = case.window_ms()
    now = int(time.time() * 1000)
    step = STEP_MS[case.timeframe] if case.timeframe else 0
    frame = frame[(frame["ts"] >= start) & (frame["ts"] < end) & (frame["ts"] + step <= now)]
    frame = frame.rename(columns={"id": "trade_id"})
    if case.dataset == "trades":
        frame["trade_id"] = frame["trade_id"].astype(str)
    return normalized(frame, case)


def normalized(frame: pd.DataFrame, case: Case) -> pd.DataFrame:
    sort = "trade_id" if case.dataset == "trades" else "ts"
    return frame[COLUMNS[case.dataset]].sort_values(sort).reset_index(drop=True)


def stored_rows(db_url: str, case: Case) -> pd.DataFrame:
    """Everything stored for the series, not only the window: nothing may leak outside it."""
    with MarketStore.open(db_url) as store:
        frame = store.read(
            case.dataset, exchange=case.exchange, symbol=case.symbol, timeframe=case.timeframe
        )
    return normalized(frame, case)


def missing_in(tape: pd.DataFrame, case: Case) -> int:
    """Trade ids absent between the tape's first and last trade in the window; candles absent
    from the tape's first one to the window's end (every window here is closed, and a tape
    that ends before it leaves the tail of the last partition missing at the exchange)."""
    if case.dataset == "trades":
        ids = tape["trade_id"].astype(int)
        return int(ids.max() - ids.min() + 1 - len(ids))
    step = STEP_MS[case.timeframe or ""]
    end = case.window_ms()[1]
    return int((end - 1 - tape["ts"].min()) // step + 1 - len(tape))


@dataclass
class Backfill:
    case: Case
    instance: dg.DagsterInstance
    targets: list[dg.AssetsDefinition | dg.AssetChecksDefinition]
    resources: dict[str, object]

    def run(self) -> dg.ExecuteInProcessResult:
        keys = self.case.partition_keys()
        return dg.materialize(
            self.targets,
            instance=self.instance,
            resources=self.resources,
            tags={RANGE_START: keys[0], RANGE_END: keys[-1]},
        )


@contextmanager
def backfill(case: Case, server_url: str, db_url: str) -> Iterator[Backfill]:
    """The real asset of ``case`` and its checks, on a real instance with the symbol synced."""
    config = ExchangeUniverse(
        symbols=(case.symbol,),
        timeframes=(case.timeframe or "1d",),
        start=date.fromisoformat(case.first),
        trades=case.dataset == "trades",
        funding=case.dataset == "funding_rates",
    )
    universe = Universe(source="replay", exchanges={case.exchange: config})
    key = dg.AssetKey([case.exchange, case.asset])
    asset = next(a for a in build_assets(universe) if a.key == key)
    checks = [
        c
        for c in [*schema_checks(universe), *gaps_checks(universe)]
        if any(k.asset_key == key for k in c.check_keys)
    ]
    resources: dict[str, object] = {
        "exchanges": ExchangesResource(source="replay", replay_url=server_url),
        "market_store": MarketStoreResource(db_url=db_url, source="replay"),
    }
    with dg.instance_for_test() as instance:
        sync_symbol_partitions(instance, universe)
        yield Backfill(case, instance, [asset, *checks], resources)


def evaluations(
    result: dg.ExecuteInProcessResult, check: str
) -> dict[str, dg.AssetCheckEvaluation]:
    found = {}
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.check_name == check:
            assert evaluation.partition is not None and evaluation.partition not in found
            found[evaluation.partition] = evaluation
    return found


def metadata_int(metadata: Mapping[str, dg.MetadataValue], key: str) -> int:
    value = metadata[key].value
    assert isinstance(value, int), (key, value)
    return value


def rows_written(result: dg.ExecuteInProcessResult) -> int:
    """The run's ``run_rows_written`` (on its first partition), checked against the sum of
    its partitions' own ``rows_written``."""
    metas = [e.materialization.metadata for e in result.get_asset_materialization_events()]
    assert metas
    (totals,) = [m for m in metas if "run_rows_written" in m]
    total = metadata_int(totals, "run_rows_written")
    assert sum(metadata_int(m, "rows_written") for m in metas) == total
    return total


def assert_schema_passed(result: dg.ExecuteInProcessResult, partitions: set[str]) -> None:
    assert result.success
    schema = evaluations(result, "schema")
    assert set(schema) == partitions
    failed = {k: e.description for k, e in schema.items() if not e.passed}
    assert not failed, failed


@pytest.mark.parametrize("case", CASES, ids=str)
def test_real_tape_backfill_stores_the_tape_exactly(
    case: Case, real_server: ReplayServer, db_url: str
) -> None:
    expected = tape_rows(case)
    assert len(expected) > 0, "the window must hold tape rows"
    with backfill(case, real_server.url, db_url) as job:
        result = job.run()
        partitions = set(case.partition_keys())
        assert_schema_passed(result, partitions)
        stored = stored_rows(db_url, case)
        pd.testing.assert_frame_equal(stored, expected, check_dtype=False, check_exact=True)
        assert rows_written(result) == len(expected)

        # the gaps check (candles, and binance's sequential aggTrade ids) counts the tape's holes
        gaps = evaluations(result, "gaps")
        if case.dataset == "funding_rates":
            assert not gaps
        else:
            assert set(gaps) == partitions
            key = "missing_ids" if case.dataset == "trades" else "missing_candles"
            counted = sum(metadata_int(e.metadata, key) for e in gaps.values())
            assert counted == missing_in(expected, case)

        again = job.run()
        assert_schema_passed(again, partitions)
        assert rows_written(again) == 0
        pd.testing.assert_frame_equal(stored_rows(db_url, case), stored, check_exact=True)
