"""The API service's settings, from the environment (and the command line's flags).

Keys come from ``CRYPTO_PIPELINES_API_KEYS`` (comma-separated) and/or the file named by
``CRYPTO_PIPELINES_API_KEYS_FILE`` (one key per line, ``#`` comments). A key is ``name:secret``
or a bare ``secret`` (then named ``key-`` plus the first 8 hex digits of its SHA-256, stable
across restarts and never the secret itself). The name is what stored rows carry as their
source (``api:<name>``) and what the logs and metrics show.

No key configured is refused (``ApiConfigError``) unless ``insecure_dev`` is set: the service
fails closed.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from crypto_pipelines.domain.redis_url import redis_url_from_env

KEYS_ENV: Final = "CRYPTO_PIPELINES_API_KEYS"
KEYS_FILE_ENV: Final = "CRYPTO_PIPELINES_API_KEYS_FILE"
MAX_BODY_ENV: Final = "CRYPTO_PIPELINES_API_MAX_BODY_BYTES"
MAX_ROWS_ENV: Final = "CRYPTO_PIPELINES_API_MAX_ROWS"
RATE_ENV: Final = "CRYPTO_PIPELINES_API_RATE_PER_S"
LINEAGE_ENV: Final = "CRYPTO_PIPELINES_API_LINEAGE_EVERY_S"
DAGSTER_URL_ENV: Final = "CRYPTO_PIPELINES_DAGSTER_URL"

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class ApiConfigError(ValueError):
    """Settings the service cannot start with; the message names the variable or file."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    name: str
    secret: str = field(repr=False)

    @property
    def source(self) -> str:
        """What rows this key ingests record as their source."""
        return f"api:{self.name}"


def parse_key(text: str, where: str) -> ApiKey:
    """``name:secret`` or ``secret``; ``where`` names the variable or file line in errors."""
    text = text.strip()
    name, sep, secret = text.partition(":")
    if not sep:
        name, secret = f"key-{hashlib.sha256(text.encode()).hexdigest()[:8]}", text
    if not _NAME.fullmatch(name):
        raise ApiConfigError(
            f"{where}: key name {name!r} must be 1-64 letters, digits, '_', '.' or '-'"
        )
    if len(secret) < 16:
        raise ApiConfigError(f"{where}: the secret of key {name!r} is shorter than 16 characters")
    return ApiKey(name, secret)


def load_keys(env: Mapping[str, str]) -> tuple[ApiKey, ...]:
    """Every configured key; an ``ApiConfigError`` for a malformed one or a repeated name."""
    keys: list[ApiKey] = []
    for i, part in enumerate(p for p in env.get(KEYS_ENV, "").split(",") if p.strip()):
        keys.append(parse_key(part, f"{KEYS_ENV} (key {i + 1})"))
    path_text = env.get(KEYS_FILE_ENV, "").strip()
    if path_text:
        path = Path(path_text).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ApiConfigError(f"{KEYS_FILE_ENV}={path}: cannot read: {exc}") from exc
        for number, line in enumerate(lines, start=1):
            if line.strip() and not line.lstrip().startswith("#"):
                keys.append(parse_key(line, f"{path}:{number}"))
    names = [key.name for key in keys]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ApiConfigError(f"API key names used more than once: {', '.join(repeated)}")
    return tuple(keys)


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ApiConfigError(f"{name}={text!r} is not a number") from None
    if value <= 0:
        raise ApiConfigError(f"{name}={text!r} must be positive")
    return value


@dataclass(frozen=True)
class ApiSettings:
    """Everything the app needs besides its services (store, lineage, stream control).

    ``rate_per_s``/``burst``: each key's request budget (a token bucket per key in each
    worker process). ``lineage_every_s``: how often accepted batches are reported to Dagster
    (at most one event per partition per interval)."""

    keys: tuple[ApiKey, ...] = ()
    insecure_dev: bool = False
    max_body_bytes: int = 50 * 1024 * 1024
    max_rows: int = 100_000
    rate_per_s: float = 2_000.0
    burst: float = 4_000.0
    lineage_every_s: float = 10.0
    commit_window_s: float = 0.002
    """How long the group committer waits for more requests to share a transaction."""
    dagster_url: str = "http://127.0.0.1:3000"
    redis_url: str | None = None

    def __post_init__(self) -> None:
        if not self.keys and not self.insecure_dev:
            raise ApiConfigError(
                f"no API key configured: set {KEYS_ENV} (comma-separated, name:secret) or "
                f"{KEYS_FILE_ENV}, or pass --insecure-dev to serve without authentication "
                "(development only)"
            )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, insecure_dev: bool = False
    ) -> ApiSettings:
        env = os.environ if env is None else env
        rate = _number(env, RATE_ENV, cls.rate_per_s)
        return cls(
            keys=load_keys(env),
            insecure_dev=insecure_dev,
            max_body_bytes=int(_number(env, MAX_BODY_ENV, cls.max_body_bytes)),
            max_rows=int(_number(env, MAX_ROWS_ENV, cls.max_rows)),
            rate_per_s=rate,
            burst=rate * 2,
            lineage_every_s=_number(env, LINEAGE_ENV, cls.lineage_every_s),
            dagster_url=env.get(DAGSTER_URL_ENV, "").strip() or cls.dagster_url,
            redis_url=redis_url_from_env(env),
        )
