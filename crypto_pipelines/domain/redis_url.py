"""The optional Redis: ``CRYPTO_PIPELINES_REDIS_URL`` turns on the stream's hot cache, the
exchanges' rate budgets shared across machines and the API's latest-state reads. Read here,
in the lowest layer, so every layer reads the one variable the same way."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final

REDIS_URL_ENV: Final = "CRYPTO_PIPELINES_REDIS_URL"


def redis_url_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """The configured Redis URL (``env`` defaults to the process environment); None when
    unset or blank."""
    value = (os.environ if env is None else env).get(REDIS_URL_ENV, "").strip()
    return value or None
