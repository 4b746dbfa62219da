"""The real-time stream: ccxt.pro WebSockets feeding the ingestion core (plain Python).

``StreamService`` runs one ``ExchangeStream`` per exchange and hands every batch to its
handlers; ``StoreWriter`` (always first) writes through the same sink as the REST loader.
"""

from crypto_pipelines.stream.events import StreamBatch
from crypto_pipelines.stream.service import ExchangeStream, StreamService, StreamSettings
from crypto_pipelines.stream.stats import StreamStats
from crypto_pipelines.stream.writer import Handler, StoreWriter

__all__ = [
    "ExchangeStream",
    "Handler",
    "StoreWriter",
    "StreamBatch",
    "StreamService",
    "StreamSettings",
    "StreamStats",
]
