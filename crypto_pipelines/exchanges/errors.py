"""Errors the exchange loader raises, each naming the exchange, symbol and range at fault.

ccxt's own classes still reach the caller for what the caller did wrong (``BadSymbol``,
``BadRequest``: re-raised with that context prepended, class unchanged, so ``except
ccxt.BadSymbol`` keeps working). The classes here cover what ccxt has no name for: an answer
that breaks the exchange's documented contract, retries that ran out, a request the venue
cannot serve at all.
"""

from __future__ import annotations


class FetchError(Exception):
    """Base of the loader's own errors."""


class RetriesExhausted(FetchError):
    """A retryable failure (timeout, rate limit, exchange unavailable) outlived the retry
    budget, or the exchange asked us to wait longer than we are willing to."""


class InvalidResponse(FetchError):
    """An exchange answer that is unsorted, outside the requested range, misaligned,
    duplicated or holds impossible numbers: storing it would corrupt the history."""


class UnsupportedRequest(FetchError, ValueError):
    """Asked for something the venue does not offer (a timeframe, funding on a spot-only
    exchange, an option market)."""
