"""Datasets the WebSocket stream alone can fill: trades on a venue with no REST history.

Bybit serves only its newest public trades over REST (60 on a spot pair, 1,000 on a swap), so
a REST load of a past day gets nothing and one of today gets whatever the last minutes held:
``bybit/trades`` loaded that way would show partitions as materialized that hold a fraction
of the day. Such a dataset is therefore a stream-fed asset: an ``AssetSpec`` with the same
partitions and checks as its peers, materialized only by ``market_stream``'s reports (and by
the ingestion API's), never by a REST run; the load jobs, the incremental sensors and gap
repair leave it out. Whether a venue keeps a REST history is venue data
(``VenueSpec.trade_history``), not a branch per exchange.
"""

from crypto_pipelines.domain.datasets import TRADES, MarketDataset
from crypto_pipelines.domain.universe import ExchangeUniverse
from crypto_pipelines.exchanges.venues import get_venue


def is_stream_fed(exchange: str, spec: MarketDataset) -> bool:
    """Whether ``spec`` on ``exchange`` comes from the stream only."""
    return spec.name == TRADES and not get_venue(exchange).trade_history


def rest_series_datasets(
    exchange: str, config: ExchangeUniverse
) -> list[tuple[MarketDataset, str | None]]:
    """``config.series_datasets()`` without the stream-fed ones: what REST runs load."""
    return [(s, tf) for s, tf in config.series_datasets() if not is_stream_fed(exchange, s)]
