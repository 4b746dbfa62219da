"""Serving the API: the app from the environment, and ``crypto-pipelines api``.

The Dagster-facing services (lineage, stream control) come from
``crypto_pipelines.defs.api_services``, imported here only, when a server starts: the rest of
this package imports no Dagster.
"""

from __future__ import annotations

import logging
import os
from typing import Final

from fastapi import FastAPI

from crypto_pipelines.api.factory import create_app
from crypto_pipelines.api.services import ApiServices
from crypto_pipelines.api.settings import ApiSettings
from crypto_pipelines.domain.universe import load_universe
from crypto_pipelines.storage.engine import default_db_url
from crypto_pipelines.storage.store import MarketStore

log = logging.getLogger(__name__)

INSECURE_ENV: Final = "CRYPTO_PIPELINES_API_INSECURE_DEV"
"""Set by ``crypto-pipelines api --insecure-dev`` for its worker processes."""


def settings_from_env() -> ApiSettings:
    return ApiSettings.from_env(insecure_dev=os.environ.get(INSECURE_ENV) == "1")


def services_from_env(settings: ApiSettings) -> ApiServices:
    from crypto_pipelines.defs.api_services import DagsterLineage
    from crypto_pipelines.defs.api_stream_control import DagsterStreamControl

    universe = load_universe()
    store = MarketStore.open(default_db_url(universe.source))
    return ApiServices(
        store=store,
        universe=universe,
        lineage=DagsterLineage(universe),
        stream=DagsterStreamControl(settings.dagster_url),
    )


def app_from_env() -> FastAPI:
    settings = settings_from_env()
    return create_app(settings, services_from_env(settings))
