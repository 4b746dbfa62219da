"""The layers import only downwards: ``domain`` nothing of the project's other packages nor of
Dagster, ``exchanges`` no storage, and the exchange client not the replay server (which every
run worker would otherwise load: uvicorn, starlette). Each check imports the modules in a
fresh interpreter and lists what ``sys.modules`` holds, so a transitive import counts too."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys

import crypto_pipelines.domain
import crypto_pipelines.exchanges
from crypto_pipelines.domain.universe import SOURCE_ENV, UNIVERSE_ENV

_LIST_IMPORTED = (
    "import importlib, json, sys\n"
    "for name in sys.argv[2:]:\n"
    "    importlib.import_module(name)\n"
    "exec(sys.argv[1])\n"
    "print(json.dumps(sorted(sys.modules)))\n"
)


def imported_by(*modules: str, then: str = "") -> set[str]:
    """Every module loaded by importing ``modules`` in a fresh interpreter and then running
    the code ``then`` (imports made inside functions count only once they run)."""
    done = subprocess.run(
        [sys.executable, "-c", _LIST_IMPORTED, then, *modules],
        env={k: v for k, v in os.environ.items() if k not in (UNIVERSE_ENV, SOURCE_ENV)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def under(loaded: set[str], *packages: str) -> list[str]:
    return sorted(m for m in loaded if any(m == p or m.startswith(f"{p}.") for p in packages))


def test_the_domain_imports_no_other_layer_and_no_dagster() -> None:
    modules = [
        f"crypto_pipelines.domain.{info.name}"
        for info in pkgutil.iter_modules(crypto_pipelines.domain.__path__)
    ]
    assert "crypto_pipelines.domain.universe" in modules
    # loading and validating a universe runs its validators, where an import could hide
    then = "from crypto_pipelines.domain.universe import load_universe; load_universe()"
    loaded = imported_by(*modules, then=then)
    layers = ("exchanges", "storage", "replay", "defs")
    assert under(loaded, *(f"crypto_pipelines.{layer}" for layer in layers), "dagster") == []


def test_the_exchanges_import_no_storage_and_no_dagster() -> None:
    """Writing is the ingestion core's (``crypto_pipelines.ingest``): no module of the
    exchanges package reaches the store."""
    modules = [
        f"crypto_pipelines.exchanges.{info.name}"
        for info in pkgutil.walk_packages(
            crypto_pipelines.exchanges.__path__, onerror=lambda _name: None
        )
    ]
    assert "crypto_pipelines.exchanges.loader" in modules
    assert "crypto_pipelines.exchanges.ingest" not in modules  # moved to crypto_pipelines.ingest
    loaded = imported_by(*modules)
    assert under(loaded, "crypto_pipelines.storage", "crypto_pipelines.defs", "dagster") == []


def test_the_ingestion_core_imports_no_dagster() -> None:
    loaded = imported_by("crypto_pipelines.ingest")
    assert under(loaded, "crypto_pipelines.defs", "dagster") == []
    assert "crypto_pipelines.storage.store" in loaded


def test_the_exchange_client_does_not_load_the_replay_server() -> None:
    loaded = imported_by("crypto_pipelines.exchanges.client")
    assert under(loaded, "uvicorn", "starlette", "crypto_pipelines.replay") == []
    # the URL rule is still there for it, and the old import path still works
    assert "crypto_pipelines.exchanges.routing" in loaded
    from crypto_pipelines.exchanges import routing
    from crypto_pipelines.replay import routing as replay_routing

    assert replay_routing.point_ccxt_at is routing.point_ccxt_at
    assert replay_routing.REPLAY_URL_ENV == routing.REPLAY_URL_ENV == "CRYPTO_PIPELINES_REPLAY_URL"


def test_the_api_imports_no_dagster() -> None:
    """The API talks to Dagster only through the services its server wires in
    (``crypto_pipelines.defs.api_services``, ``api_stream_control``)."""
    import crypto_pipelines.api

    modules = [
        info.name
        for info in pkgutil.walk_packages(
            crypto_pipelines.api.__path__, prefix="crypto_pipelines.api.", onerror=lambda _n: None
        )
    ]
    assert "crypto_pipelines.api.routes.ingest" in modules
    loaded = imported_by(*modules)
    assert under(loaded, "crypto_pipelines.defs", "dagster") == []
