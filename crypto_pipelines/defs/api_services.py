"""The API's lineage (``crypto_pipelines.api.services.LineageReporter``): runless
materializations on the instance under ``DAGSTER_HOME``. The API package itself imports no
Dagster; its server (``crypto_pipelines.api.serve``) wires this in, and stream control from
``crypto_pipelines.defs.api_stream_control``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dagster as dg

from crypto_pipelines.api.services import IngestedSpan
from crypto_pipelines.defs.partitions import DATE, SYMBOL, symbols_partitions_name
from crypto_pipelines.domain.universe import Universe


class DagsterLineage:
    """Reports API-ingested spans as materializations of their partitions, with the rows,
    time range and source as metadata (one event per partition per report)."""

    def __init__(
        self,
        universe: Universe,
        instance: Callable[[], dg.DagsterInstance] = dg.DagsterInstance.get,
    ) -> None:
        self.universe = universe
        self._instance_factory = instance
        self._instance: dg.DagsterInstance | None = None

    def instance(self) -> dg.DagsterInstance:
        if self._instance is None:
            self._instance = self._instance_factory()
        return self._instance

    def report(self, spans: Sequence[IngestedSpan]) -> int:
        instance = self.instance()
        events = 0
        for span in spans:
            series = span.series
            spec = series.spec
            timeframe = series.timeframe_or_none
            config = self.universe.exchanges.get(series.exchange)
            start = config.start.isoformat() if config is not None else "1970-01-01"
            first_key = start[:7] + "-01" if spec.is_monthly(timeframe) else start
            if span.period < first_key:  # before the asset's first partition: none to mark
                continue
            asset = dg.AssetKey([series.exchange, spec.asset_name(timeframe)])
            instance.report_runless_asset_event(
                dg.AssetMaterialization(
                    asset_key=asset,
                    partition=dg.MultiPartitionKey({DATE: span.period, SYMBOL: series.symbol}),
                    description=f"ingested through the API ({span.source})",
                    metadata={
                        "source": span.source,
                        "rows_written": dg.MetadataValue.int(span.rows),
                        "first_ts": dg.MetadataValue.timestamp(span.first_ts / 1000),
                        "last_ts": dg.MetadataValue.timestamp(span.last_ts / 1000),
                    },
                )
            )
            events += 1
        return events

    def partitioned_symbols(self, exchange: str) -> Sequence[str] | None:
        """The keys of ``<exchange>_symbols``, which the universe sensor keeps equal to the
        effective universe, filters included; None when the instance cannot be read."""
        try:
            return self.instance().get_dynamic_partitions(symbols_partitions_name(exchange))
        except Exception:  # an unusable instance: the API falls back to the stored markets
            return None

    def check(self) -> str | None:
        try:
            self.instance().get_runs_count()
        except Exception as exc:  # any failure is the answer /health reports
            return f"Dagster instance unusable: {exc}"
        return None
