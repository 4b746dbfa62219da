"""ccxt's markets kept between runs, so a run does not ask the exchange for them again.

Every run used to start with ``load_markets``: three requests on Binance (spot, USDⓈ-M and
COIN-M ``exchangeInfo``, megabytes of JSON), and under faults the request most likely to
fail a run before it fetched anything. ``<exchange>/markets`` refreshes them daily; in
between, a run takes them from this cache when they are fresh (``max_age_s``, default a day)
and asks the exchange only when they are missing, stale, or lack a symbol asked for (a
market listed since).

One JSON file per exchange, endpoint (live, or the replay exchange's address) and ccxt
version (its market structure changes between versions), next to the rate budgets. It is a
cache: a file that cannot be read is ignored and replaced at the next load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import ccxt

from crypto_pipelines.exchanges.budget import budget_dir

log = logging.getLogger(__name__)

MAX_AGE_ENV: Final = "CRYPTO_PIPELINES_MARKETS_MAX_AGE_S"
DEFAULT_MAX_AGE_S: Final = 24 * 3600.0
_ATTRIBUTE: Final = "_crypto_pipelines_markets_cache"


def max_age_s() -> float:
    """``$CRYPTO_PIPELINES_MARKETS_MAX_AGE_S`` (0 turns the cache off), else a day."""
    raw = os.environ.get(MAX_AGE_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_AGE_S
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise ValueError(f"{MAX_AGE_ENV}={raw!r} is not a number of seconds") from None


class MarketsCache:
    """The markets file of one exchange and endpoint (``replay_url`` None: live)."""

    def __init__(
        self, exchange_id: str, replay_url: str | None = None, directory: Path | None = None
    ) -> None:
        folder = directory if directory is not None else budget_dir(replay_url)
        endpoint = hashlib.sha1((replay_url or "live").encode()).hexdigest()[:12]
        self.path = folder / f"markets-{exchange_id}-{endpoint}-ccxt{ccxt.__version__}.json"

    def attach(self, client: Any, max_age: float | None = None) -> bool:
        """Give ``client`` the cached markets when fresh (True), and remember this cache on
        it so that ``save`` after a real load and ``reload_for`` find it."""
        setattr(client, _ATTRIBUTE, self)
        age_limit = max_age_s() if max_age is None else max_age
        if age_limit <= 0:
            return False
        try:
            saved = json.loads(self.path.read_text())
            if time.time() - float(saved["saved_at"]) > age_limit:
                return False
            client.set_markets(saved["markets"], saved.get("currencies") or None)
        except (OSError, ValueError, KeyError, TypeError, ccxt.BaseError) as exc:
            if not isinstance(exc, FileNotFoundError):
                log.warning("markets cache %s unreadable (%s): asking the exchange", self.path, exc)
            client.markets = None
            return False
        return True

    def save(self, client: Any) -> None:
        """Write ``client``'s markets, atomically (a reader sees the old file or the new)."""
        payload = {
            "saved_at": time.time(),
            "markets": client.markets,
            "currencies": getattr(client, "currencies", None),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        try:
            with os.fdopen(handle, "w") as out:
                json.dump(payload, out, default=str)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def cache_of(client: Any) -> MarketsCache | None:
    """The cache attached to ``client`` (``MarketsCache.attach``), if any."""
    found = getattr(client, _ATTRIBUTE, None)
    return found if isinstance(found, MarketsCache) else None
