"""The venues the replay exchange speaks, chosen from a registry by ccxt id."""

from __future__ import annotations

from functools import cache

from crypto_pipelines.replay.venues.base import Venue


@cache
def venue_classes() -> dict[str, type[Venue]]:
    """Venue classes by tape folder name (imported on first use, not at import time)."""
    from crypto_pipelines.replay.venues.binance import Binance
    from crypto_pipelines.replay.venues.bybit import Bybit
    from crypto_pipelines.replay.venues.coinbaseexchange import CoinbaseExchange
    from crypto_pipelines.replay.venues.okx import Okx

    classes: tuple[type[Venue], ...] = (Binance, Okx, Bybit, CoinbaseExchange)
    return {cls.name: cls for cls in classes}


def venue_for(ccxt_id: str) -> str | None:
    """The tape folder a ccxt exchange id is served from (``binanceusdm`` -> ``binance``)."""
    for name, cls in venue_classes().items():
        if ccxt_id == name or ccxt_id in cls.aliases:
            return name
    return None
