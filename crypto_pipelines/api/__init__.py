"""The ingestion and control API (FastAPI): ``crypto-pipelines api`` serves
``crypto_pipelines.api:app``.

``app`` is built on first access (module ``__getattr__``), from the environment, so importing
this package has no side effects; ``create_app`` builds one from explicit settings and
services (tests, embedding).
"""

from __future__ import annotations

from typing import Any

from crypto_pipelines.api.factory import create_app
from crypto_pipelines.api.services import ApiServices
from crypto_pipelines.api.settings import ApiConfigError, ApiSettings

__all__ = ["ApiConfigError", "ApiServices", "ApiSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from crypto_pipelines.api.serve import app_from_env

        return app_from_env()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
