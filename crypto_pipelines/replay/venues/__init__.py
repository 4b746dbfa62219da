"""The venues the replay exchange speaks, chosen from a registry by ccxt id."""

from __future__ import annotations

from functools import cache

from crypto_pipelines.replay.venues.base import Venue


@cache
def venue_classes() -> dict[str, type[Venue]]:
    """Venue classes by tape folder name (imported lazily: no import-time side effects)."""
    from crypto_pipelines.replay.venues.binance import Binance

    classes: list[type[Venue]] = [Binance]
    for module, cls_name in (
        ("okx", "Okx"),
        ("bybit", "Bybit"),
        ("coinbaseexchange", "CoinbaseExchange"),
    ):
        try:
            mod = __import__(f"crypto_pipelines.replay.venues.{module}", fromlist=[cls_name])
        except ModuleNotFoundError:
            continue
        classes.append(getattr(mod, cls_name))
    return {cls.name: cls for cls in classes}


def venue_for(ccxt_id: str) -> str | None:
    """The tape folder a ccxt exchange id is served from (``binanceusdm`` -> ``binance``)."""
    for name, cls in venue_classes().items():
        if ccxt_id == name or ccxt_id in cls.aliases:
            return name
    return None
