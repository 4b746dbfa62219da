"""Order book checks ccxt.pro leaves out, added to the stock client class.

OKX sends with every ``books`` message the CRC32 of its top 25 levels a side (``checksum``),
so a client can tell its local book went wrong even when the sequence ids follow (a level
applied wrongly, an update the venue itself mis-sequenced). ccxt.pro 4.5.90 checks OKX's
``seqId``/``prevSeqId`` but no longer the checksum (its ``watchOrderBook.checksum`` option
is gone from ``pro/okx.py``). ``with_book_checks`` returns a subclass of the stock class that
verifies it after each message, and on a mismatch does what ccxt.pro does on a sequence gap:
drops the symbol's book and its subscription and rejects the watch with ``ChecksumError``
(an ``InvalidNonce``), so the next ``watch_order_book`` subscribes again and starts from a
fresh snapshot. The option ``watchOrderBook.checksum`` (default true) turns it off.

The levels are written back as ccxt writes numbers (``number_to_string``), as ccxt.pro did
when it checked OKX's checksums: OKX writes prices and sizes without trailing zeros.
Every other venue gets its stock class.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from ccxt.base.errors import ChecksumError


def okx_checksum(exchange: Any, book: Any) -> int:
    """OKX's checksum of a ccxt book: CRC32 (signed) of ``bidPx:bidSz:askPx:askSz:...`` over
    the top 25 levels, a side with fewer levels left out past its end."""
    bids, asks = book["bids"], book["asks"]
    parts: list[str] = []
    for i in range(25):
        for side in (bids, asks):
            if i < len(side):
                parts.append(exchange.number_to_string(side[i][0]))
                parts.append(exchange.number_to_string(side[i][1]))
    return int(exchange.crc32(":".join(parts), True))


@cache
def with_book_checks(exchange_id: str, base: type) -> type:
    """The stock ccxt.pro class ``base`` of ``exchange_id``, or for OKX a subclass verifying
    book checksums."""
    if exchange_id != "okx":
        return base

    class OkxCheckedBooks(base):
        def handle_order_book_message(
            self,
            client: Any,
            message: Any,
            orderbook: Any,
            messageHash: str,  # noqa: N803 (ccxt's own parameter name)
            market: Any = None,
        ) -> Any:
            result = super().handle_order_book_message(
                client, message, orderbook, messageHash, market
            )
            expected = self.safe_integer(message, "checksum")
            if expected is None or messageHash not in client.subscriptions:
                return result  # no checksum on this channel, or the sequence already failed
            if not self.handle_option("watchOrderBook", "checksum", True):
                return result
            if okx_checksum(self, orderbook) != expected:
                symbol = orderbook.get("symbol")
                del client.subscriptions[messageHash]
                if symbol is not None:
                    self.orderbooks.pop(symbol, None)
                error = ChecksumError(f"{self.id} {self.orderbook_checksum_message(symbol)}")
                client.reject(error, messageHash)
            return result

    return OkxCheckedBooks
