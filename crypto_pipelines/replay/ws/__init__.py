"""The replay exchange's WebSocket side: the venues' public market-data streams (trades,
candles, order books, and the perpetuals' mark price / funding) served from the tape along the
replay clock, for stock ccxt.pro clients.

``base`` holds the connection (subscriptions, streaming loop, faults), ``feeds`` the tape rows
as time passes, ``marks`` the mark price and funding derived from the tape, and one small
module per venue its URLs, control messages and wire formats.
"""

from __future__ import annotations

from functools import cache

from crypto_pipelines.replay.ws.base import Route, VenueSocket, WsSession

__all__ = ["Route", "VenueSocket", "WsSession", "socket_classes"]


@cache
def socket_classes() -> dict[str, type[VenueSocket]]:
    """WebSocket protocols by tape folder name (imported on first use)."""
    from crypto_pipelines.replay.ws.binance import BinanceSocket
    from crypto_pipelines.replay.ws.bybit import BybitSocket
    from crypto_pipelines.replay.ws.coinbaseexchange import CoinbaseSocket
    from crypto_pipelines.replay.ws.okx import OkxSocket

    classes: tuple[type[VenueSocket], ...] = (BinanceSocket, BybitSocket, OkxSocket, CoinbaseSocket)
    return {cls.venue_name: cls for cls in classes}
