"""API lineage on a real Dagster instance: a POST's committed rows show up as
materializations of the asset partitions they fall in (one per partition per report), with
their source, so the partitions grid, checks and sensors see API-ingested data."""

from __future__ import annotations

from datetime import date

import dagster as dg

from crypto_pipelines.api import ApiServices, ApiSettings
from crypto_pipelines.defs.api_services import DagsterLineage
from crypto_pipelines.domain.universe import ExchangeUniverse, Universe
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.api.conftest import DESK, serve_api

DAY = 86_400_000
T0 = 1_706_659_200_000  # 2024-01-31 00:00 UTC


def test_posted_candles_materialize_their_partitions(tmp_path: object) -> None:
    universe = Universe(
        source="replay",
        exchanges={
            "binance": ExchangeUniverse(
                symbols=("BTC/USDT",), timeframes=("1h",), start=date(2024, 1, 1), funding=False
            )
        },
    )
    rows = [[T0 + i * 3_600_000, 10.0, 11.0, 9.0, 10.5, 1.0] for i in range(48)]  # Jan 31, Feb 1
    rows.append([T0 + 70 * DAY, 10.0, 11.0, 9.0, 10.5, 1.0])  # one in April, none in March
    body = {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1h", "rows": rows}
    with dg.instance_for_test() as instance:
        lineage = DagsterLineage(universe, instance=lambda: instance)
        assert lineage.check() is None
        with MarketStore.open(f"sqlite:///{tmp_path}/market.db") as store:
            services = ApiServices(store=store, universe=universe, lineage=lineage)
            settings = ApiSettings(keys=(DESK,), lineage_every_s=30)
            with serve_api(settings, services) as api, api.client() as client:
                assert client.post("/v1/ohlcv", json=body).status_code == 201
                assert client.post("/v1/ohlcv", json=body).json()["unchanged"] == 49
            # the app's shutdown flushed what was pending: one event per month partition
        key = dg.AssetKey(["binance", "ohlcv_1h"])
        partitions = instance.get_materialized_partitions(key)
        assert partitions == {"2024-01-01|BTC/USDT", "2024-02-01|BTC/USDT", "2024-04-01|BTC/USDT"}
        events = instance.fetch_materializations(key, limit=10).records
        assert len(events) == 3  # the re-sent, unchanged rows reported nothing
        written = {}
        for event in events:
            materialization = event.asset_materialization
            assert materialization is not None
            assert materialization.metadata["source"].value == "api:desk"
            written[str(materialization.partition)] = materialization.metadata["rows_written"].value
        assert written == {
            "2024-01-01|BTC/USDT": 24,
            "2024-02-01|BTC/USDT": 24,
            "2024-04-01|BTC/USDT": 1,
        }
