"""The FastAPI app: ``create_app(settings, services)``.

Routers live one per concern in ``crypto_pipelines.api.routes`` (ingest, reads, catalog and
universe, stream control, monitoring); every route but ``/health`` requires a key (``auth.require_key``). The app owns its metrics
registry, request budget, group committer and lineage coalescer (``app.state``), started and
stopped with the app's lifespan, so two apps in one process share nothing.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from crypto_pipelines.api.auth import RequestBudget
from crypto_pipelines.api.committer import GroupCommitter
from crypto_pipelines.api.errors import install_error_handlers
from crypto_pipelines.api.lineage import LineageCoalescer
from crypto_pipelines.api.metrics import ApiMetrics
from crypto_pipelines.api.routes import catalog, ingest, monitoring, reads, stream
from crypto_pipelines.api.services import ApiServices
from crypto_pipelines.api.settings import ApiSettings

log = logging.getLogger(__name__)

DESCRIPTION = """\
Validated bulk ingestion into the same tables, lineage and checks as the orchestrated data;
catalog and universe management; stream control; reads of stored and latest data; monitoring.

Every route but `/health` needs `Authorization: Bearer <key>` (keys from
`CRYPTO_PIPELINES_API_KEYS` or `CRYPTO_PIPELINES_API_KEYS_FILE`). Timestamps are epoch
milliseconds UTC; time ranges are half-open (`start <= ts < end`).
"""


def create_app(settings: ApiSettings, services: ApiServices) -> FastAPI:
    lineage = (
        LineageCoalescer(services.lineage, settings.lineage_every_s)
        if services.lineage is not None
        else None
    )
    committer = GroupCommitter(services.store, window_s=settings.commit_window_s)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        committer.start()
        if lineage is not None:
            lineage.start()
        try:
            yield
        finally:
            await committer.close()
            if lineage is not None:
                lineage.close()

    app = FastAPI(
        title="crypto_pipelines API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry hooks look up the providers on every request (a tenth
        # of a single-candle POST's time); /metrics is this service's monitoring.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.services = services
    app.state.metrics = ApiMetrics()
    app.state.budget = RequestBudget(settings.rate_per_s, settings.burst)
    app.state.committer = committer
    app.state.lineage = lineage
    install_error_handlers(app)
    monitoring.install(app)
    for module in (ingest, reads, catalog, stream, monitoring):
        app.include_router(module.router)
    return app
