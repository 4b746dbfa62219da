"""Coinbase Exchange's market-data feed (``ws-feed.exchange.coinbase.com``).

Channels: ``matches`` (a ``last_match`` with the latest trade on subscribing, then one
``match`` per trade; ``side`` is the maker's, the opposite of the tape's taker side, as on the
REST trades; ``sequence`` grows per product), ``heartbeat`` (every second of real time, with
the last trade id) and ``level2``/``level2_batch`` (a ``snapshot`` of the whole book, then
``l2update`` changes). Coinbase Exchange has no candle channel. Requests are
``{"type": "subscribe"|"unsubscribe", "product_ids": [...], "channels": [name | {"name",
"product_ids"}]}``; each is answered with a ``subscriptions`` message listing everything the
connection holds, or ``{"type": "error", "message": "Failed to subscribe", "reason": ...}`` for
an unknown product or channel (the request then subscribes nothing). ``level2`` needs an
authenticated request on the real exchange; the replay accepts the fields ccxt.pro signs it
with without checking them (the tape is public data).
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from crypto_pipelines.replay.tape import MarketSpec, SymbolTape, Trade
from crypto_pipelines.replay.venues.coinbaseexchange_format import iso_us
from crypto_pipelines.replay.venues.common import book_update_id
from crypto_pipelines.replay.ws.base import Route, Subscription, VenueSocket, dumps, find_market
from crypto_pipelines.replay.ws.feeds import BookFeed, TradeFeed

_CHANNELS = ("matches", "heartbeat", "level2", "level2_batch")
_MAKER_SIDE = {"buy": "sell", "sell": "buy"}


def _trade_id(trade: Trade) -> int | str:
    return int(trade.id) if trade.id.isdigit() else trade.id


def _sequence(ts: int, k: int) -> int:
    """A per-product sequence number: the trade's time in microseconds plus its rank among
    the trades of the same millisecond (the tape has no sequence of its own)."""
    return ts * 1000 + k


class CoinbaseSocket(VenueSocket):
    venue_name = "coinbaseexchange"

    @classmethod
    def accepts(cls, host: str, path: str, query: str) -> Route | None:
        return Route("feed") if host.startswith("ws-feed") and path == "/" else None

    def _fail(self, reason: str) -> dict[str, Any]:
        return {"type": "error", "message": "Failed to subscribe", "reason": reason}

    async def received(self, text: str) -> None:
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            await self.session.error({"type": "error", "message": "Malformed JSON"})
            return
        kind = request.get("type") if isinstance(request, dict) else None
        if kind not in ("subscribe", "unsubscribe"):
            await self.session.error(self._fail(f"type {kind!r} is not subscribe or unsubscribe"))
            return
        assert isinstance(request, dict)
        wanted = self._pairs(request)
        if isinstance(wanted, str):
            await self.session.error(self._fail(wanted))
            return
        if kind == "unsubscribe":
            for channel, product in wanted:
                self.session.unsubscribe(f"{channel}:{product}")
            await self.session.reply(self._subscriptions())
            return
        built: dict[str, Subscription] = {}
        for channel, product in wanted:
            key = f"{channel}:{product}"
            if key in self.session.subs or key in built:
                continue
            market = find_market(self.venue, product, "spot")
            if market is None:
                await self.session.error(self._fail(f"{product} is not a valid product"), channel)
                return
            built[key] = self._build(channel, product, market)
        for key, sub in built.items():
            self.session.subscribe(key, sub)
        await self.session.reply(self._subscriptions())
        for key in built:
            if key.startswith("matches:"):
                await self._last_match(key.split(":", 1)[1])

    def _pairs(self, request: dict[str, Any]) -> list[tuple[str, str]] | str:
        """(channel, product) pairs a request names, or the reason it is refused."""
        default = request.get("product_ids") or []
        channels = request.get("channels")
        if not isinstance(channels, list) or not isinstance(default, list):
            return "channels must be a list"
        pairs: list[tuple[str, str]] = []
        for entry in channels:
            name = entry.get("name") if isinstance(entry, dict) else entry
            products = entry.get("product_ids", default) if isinstance(entry, dict) else default
            if name not in _CHANNELS:
                return f"{name} is not a valid channel"
            if not products:
                return f"channel {name} needs product_ids"
            pairs.extend((name, str(p)) for p in products)
        return pairs

    def _subscriptions(self) -> dict[str, Any]:
        by_channel: dict[str, list[str]] = {}
        for key in self.session.subs:
            channel, product = key.split(":", 1)
            by_channel.setdefault(channel, []).append(product)
        return {
            "type": "subscriptions",
            "channels": [
                {"name": name, "product_ids": ids, "account_ids": None}
                for name, ids in by_channel.items()
            ],
        }

    async def _last_match(self, product: str) -> None:
        market = find_market(self.venue, product, "spot")
        trades = self.series(market).trades if market is not None else None
        last = trades.between(None, self.session.now_ms(), 1, newest=True) if trades else []
        if last:
            await self.session.send_data(self._match(product, last[0], 0, "last_match"), "matches")

    def _match(self, product: str, t: Trade, k: int, kind: str = "match") -> str:
        return dumps(
            {
                "type": kind,
                "trade_id": _trade_id(t),
                "maker_order_id": f"{t.id:0>12}-maker",
                "taker_order_id": f"{t.id:0>12}-taker",
                "side": _MAKER_SIDE[t.side],
                "size": t.amount,
                "price": t.price,
                "product_id": product,
                "sequence": _sequence(t.ts, k),
                "time": iso_us(t.ts),
            }
        )

    # -- channels -------------------------------------------------------------------------
    def _build(self, channel: str, product: str, market: MarketSpec) -> Subscription:
        series = self.series(market)
        start = self.session.now_ms()
        if channel == "matches":
            feed = TradeFeed(series.trades, start)
            rank = {"ts": -1, "k": 0}

            def matches(now: int) -> list[str]:
                out = []
                for t in feed.poll(now):
                    rank["k"] = rank["k"] + 1 if t.ts == rank["ts"] else 0
                    rank["ts"] = t.ts
                    out.append(self._match(product, t, rank["k"]))
                return out

            return Subscription("matches", matches)
        if channel == "heartbeat":
            return self._heartbeat(product, series)
        return self._level2(channel, product, series, start)

    def _heartbeat(self, product: str, series: SymbolTape) -> Subscription:
        due = [time.monotonic() + 1.0]

        def beat(now: int) -> list[str]:
            wall = time.monotonic()
            if wall < due[0]:
                return []
            due[0] = wall + 1.0
            trades = series.trades
            last = trades.between(None, now, 1, newest=True) if trades is not None else []
            message = {
                "type": "heartbeat",
                "last_trade_id": _trade_id(last[0]) if last else 0,
                "product_id": product,
                "sequence": _sequence(last[0].ts, 999) if last else 0,
                "time": iso_us(now),
            }
            return [dumps(message)]

        return Subscription("heartbeat", beat)

    def _level2(self, channel: str, product: str, series: SymbolTape, start: int) -> Subscription:
        feed = BookFeed(
            series.book, start, depth=None, snapshot_first=True, update_id=book_update_id
        )

        def book(now: int) -> list[str]:
            out = []
            for update in feed.poll(now):
                if update.snapshot:
                    message: dict[str, Any] = {"type": "snapshot", "product_id": product}
                    message.update(bids=update.bids, asks=update.asks)
                else:
                    changes = [["buy", p, a] for p, a in update.bids]
                    changes.extend(["sell", p, a] for p, a in update.asks)
                    message = {"type": "l2update", "product_id": product, "changes": changes}
                    message["time"] = iso_us(update.ts)
                out.append(dumps(message))
            return out

        return Subscription(channel, book)
