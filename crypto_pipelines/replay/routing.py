"""The URL rule, re-exported where it was first published.

The rule lives in ``crypto_pipelines.exchanges.routing``: every exchange client applies it,
and importing it from here would first run this package's ``__init__``, which loads the
replay server (uvicorn, starlette) into every run worker that only wants a client. Code
outside the replay exchange should import it from ``crypto_pipelines.exchanges.routing``.
"""

from crypto_pipelines.exchanges.routing import (
    REPLAY_URL_ENV,
    point_ccxt_at,
    replay_url_from_env,
    rewrite_url,
)

__all__ = ["REPLAY_URL_ENV", "point_ccxt_at", "replay_url_from_env", "rewrite_url"]
