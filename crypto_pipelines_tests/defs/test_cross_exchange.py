"""The ``cross_exchange`` check on real candles from the replay exchange: the synthetic
venues track each other within a few bps, so it passes; one venue's candles moved by 1% with
SQL give a WARN on that venue listing exactly those candles, and on no other venue."""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest

from crypto_pipelines.defs.checks.cross_exchange import (
    CROSS_EXCHANGE_CHECK,
    MAX_BPS_ENV,
    CrossExchangeResource,
    cross_exchange_checks,
    cross_exchange_resource,
)
from crypto_pipelines.defs.universe_sync import sync_symbol_partitions
from crypto_pipelines_tests.defs.conftest import DAY_MS, START_MS, ReplayWorld
from crypto_pipelines_tests.defs.quality_helpers import Quality, evaluations, meta

DAY2_MS = START_MS + DAY_MS
SPOT = {
    "binance": "BTC/USDT",
    "okx": "BTC/USDT",
    "bybit": "BTC/USDT",
    "coinbaseexchange": "BTC/USD",
}


def _key(exchange: str) -> str:
    """The month partition of the tape's candles (candles are partitioned monthly)."""
    return f"2024-01-01|{SPOT[exchange]}"


@pytest.fixture
def spot(replay_world: ReplayWorld, db_url: str) -> Iterator[Quality]:
    """The tape's 1m BTC spot candles (one month partition) from all four venues."""
    with dg.instance_for_test() as instance:
        sync_symbol_partitions(instance, replay_world.universe)
        quality = Quality(replay_world, instance, db_url)
        for exchange in SPOT:
            asset = (exchange, "ohlcv_1m")
            assert quality.materialize([asset], [], _key(exchange)).success
        yield quality


def _run(quality: Quality) -> dict[str, dg.AssetCheckEvaluation]:
    found = {}
    for exchange in SPOT:
        check = quality.check(CROSS_EXCHANGE_CHECK, exchange, "ohlcv_1m")
        result = quality.run_checks([check], _key(exchange))
        assert result.success  # WARN never fails a run
        (found[exchange],) = evaluations(
            result, CROSS_EXCHANGE_CHECK, exchange, "ohlcv_1m"
        ).values()
    return found


def _closes(quality: Quality, exchange: str) -> dict[int, float]:
    frame = quality.read(
        "ohlcv",
        exchange=exchange,
        symbol=SPOT[exchange],
        timeframe="1m",
        start_ts=DAY2_MS,
        end_ts=DAY2_MS + DAY_MS,
    )
    return dict(zip(frame["ts"].tolist(), frame["close"].tolist(), strict=True))


def test_every_ohlcv_asset_has_a_non_blocking_check_against_its_peers(
    replay_world: ReplayWorld,
) -> None:
    checks = cross_exchange_checks(replay_world.universe)
    specs = {spec.asset_key: spec for check in checks for spec in check.check_specs}
    exchanges = replay_world.universe.exchanges
    assert set(specs) == {
        dg.AssetKey([exchange, f"ohlcv_{tf}"]) for exchange in exchanges for tf in ("1m", "1h")
    }
    spec = specs[dg.AssetKey(["okx", "ohlcv_1m"])]
    assert not spec.blocking and spec.name == CROSS_EXCHANGE_CHECK
    assert {dep.asset_key for dep in spec.additional_deps} == {
        dg.AssetKey([exchange, "ohlcv_1m"]) for exchange in ("binance", "bybit", "coinbaseexchange")
    }


def test_venues_that_track_each_other_pass(spot: Quality) -> None:
    for exchange, evaluation in _run(spot).items():
        assert evaluation.passed, exchange
        assert meta(evaluation, "offending_candles") == 0
        assert 0 < meta(evaluation, "max_deviation_bps") < 50  # USD vs USDT: tens of bps
        assert meta(evaluation, "candles_compared") > 1000
        others = {f"{e} {s}" for e, s in SPOT.items() if e != exchange}
        assert set(meta(evaluation, "compared_with")) == others


def test_one_venue_moved_by_one_percent_warns_with_exactly_those_candles(spot: Quality) -> None:
    everywhere = set.intersection(*(set(_closes(spot, e)) for e in SPOT))
    window = sorted(everywhere)[200:230]  # candles every venue has: the median decides
    okx_before = _closes(spot, "okx")
    listed = ", ".join(str(int(ts)) for ts in window)
    spot.sql(
        "UPDATE ohlcv SET open = open * 1.01, high = high * 1.01, low = low * 1.01,"
        " close = close * 1.01 WHERE exchange = 'okx' AND symbol = 'BTC/USDT'"
        f" AND timeframe = '1m' AND ts IN ({listed})"
    )
    okx_after = _closes(spot, "okx")
    assert [ts for ts in okx_after if okx_after[ts] != okx_before[ts]] == window

    found = _run(spot)
    okx = found.pop("okx")
    assert not okx.passed and okx.severity == dg.AssetCheckSeverity.WARN
    assert meta(okx, "offending_candles") == len(window)
    assert 80 < meta(okx, "max_deviation_bps") < 130  # 100 bps plus its own few bps
    offending = meta(okx, "offending")
    assert [row["ts"] for row in offending] == window[:20]  # the sample: the first 20
    first = offending[0]
    assert first["exchange"] == "okx" and first["symbol"] == "BTC/USDT"
    assert first["close"] == pytest.approx(okx_before[window[0]] * 1.01)
    assert set(first["closes"]) == {f"{e} {s}" for e, s in SPOT.items()}
    assert "| okx | BTC/USDT |" in meta(okx, "offending_table")
    for exchange, evaluation in found.items():
        assert evaluation.passed, exchange

    # A threshold above the move passes again (the resource is the configuration).
    spot.max_bps = 150
    assert all(e.passed for e in _run(spot).values())


def test_threshold_from_the_environment_is_validated() -> None:
    assert cross_exchange_resource({}).max_deviation_bps == 50
    assert cross_exchange_resource({MAX_BPS_ENV: " 75 "}).max_deviation_bps == 75
    for bad in ("abc", "0", "-5", "20000", "nan"):
        with pytest.raises(ValueError, match=MAX_BPS_ENV):
            cross_exchange_resource({MAX_BPS_ENV: bad})
    with pytest.raises(ValueError):
        CrossExchangeResource(max_deviation_bps=0)
