"""The ingestion core: the one write path every source of market data feeds.

``Sink`` validates a batch by its dataset's Pandera model, stores the valid rows, quarantines
the invalid ones in ``rejected_rows`` and records coverage, all in one transaction;
``load_series`` fetches from an exchange what coverage lacks and writes it through a sink.
The REST loader uses both today; the stream and the ingestion API feed the same sink.
Plain Python: no Dagster.
"""

from crypto_pipelines.ingest.load import FETCHERS, LoadReport, grid_slots, load_series
from crypto_pipelines.ingest.sink import BatchReport, Sink, key_text

__all__ = ["FETCHERS", "BatchReport", "LoadReport", "Sink", "grid_slots", "key_text", "load_series"]
