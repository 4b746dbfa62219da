"""The recorder's client is made by the project's client factory and carries the exchange's
request budget shared by every process on the machine (``exchanges.budget``): each request a
recording sends is paid into the budget file in ``$CRYPTO_PIPELINES_RATE_BUDGET_DIR`` (set
by the tests' conftest), where a pipeline's budget on the same exchange sees it."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from crypto_pipelines.exchanges.budget import RATE_BUDGET_DIR_ENV, SharedBudget, attached
from crypto_pipelines.exchanges.venues import get_venue
from crypto_pipelines.replay import ReplayClock, ReplayServer
from crypto_pipelines.replay.record import make_exchange, record_tape
from crypto_pipelines_tests.replay.record_helpers import LINEAR, NOW, SINCE, SPOT, write_source

#: Bybit prices every market-data request at 1 unit, except the order book, which the
#: pipelines never fetch and the venue's budgets do not price (so it draws nothing)
UNPRICED = "/v5/market/orderbook"


class Waited(Exception):
    """Raised instead of sleeping: the budget had no room."""


def _refuse_to_wait(seconds: float) -> None:
    raise Waited(seconds)


def _requests_served(server: ReplayServer, exchange: str) -> dict[str, int]:
    with urllib.request.urlopen(server.url + "/_replay/stats") as response:
        stats = json.loads(response.read())
    return {path: c["requests"] for path, c in stats["exchanges"][exchange].items()}


def _record(client: Any, out: Path, symbols: list[str]) -> None:
    client.rateLimit = 1  # ccxt's own spacing (per process, not shared): slow, not tested here
    record_tape(client, out, symbols, ["1h"], SINCE, retry_delay_s=0)


def test_every_request_the_recorder_sends_is_paid_for(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_source(source, "bybit", [SPOT, LINEAR])
    with ReplayServer(source, clock=ReplayClock(NOW, speed=0)) as server:
        client = make_exchange("bybit", server.url)
        budget = attached(client)
        assert budget is not None
        assert client.urls["api"]["public"].startswith(f"{server.url}/bybit/")
        _record(client, tmp_path / "out", ["BTC/USDT", "BTC/USDT:USDT"])
        served = _requests_served(server, "bybit")
    assert served[UNPRICED] == 2  # one book per symbol
    assert sum(budget.spent.values()) == sum(served.values()) - served[UNPRICED] > 10
    assert "fetch2" not in vars(client)  # the client is left as it was made
    budget.close()


def test_a_pipeline_on_the_same_exchange_sees_what_the_recorder_spent(tmp_path: Path) -> None:
    """Binance's spot weight (a 60 s window, so the check does not race the clock): a budget
    on the machine's file with exactly what the recorder spent as its room finds the window
    full, as a pipeline's process would; one on a file of its own does not."""
    source = tmp_path / "source"
    write_source(source, "binance", [SPOT])
    with ReplayServer(source, clock=ReplayClock(NOW, speed=0)) as server:
        client = make_exchange("binance", server.url)
        budget = attached(client)
        machine = SharedBudget.for_venue("binance", replay_url=server.url)
        assert budget is not None and budget.path == machine.path
        assert budget.path.parent == Path(os.environ[RATE_BUDGET_DIR_ENV])  # conftest's
        _record(client, tmp_path / "out", ["BTC/USDT"])
    spot = next(b for b in get_venue("binance").rate_budgets if b.name == "spot request weight")
    spent = budget.spent[spot.name]
    assert spent > 20  # markets (20), time, candles, trades
    margin = (spent + 0.5) / spot.capacity
    pipeline = SharedBudget([spot], machine.path, margin=margin, sleep=_refuse_to_wait)
    with pytest.raises(Waited):
        pipeline.acquire("publicGetTime")
    alone = SharedBudget([spot], tmp_path / "own.sqlite", margin=margin, sleep=_refuse_to_wait)
    assert alone.acquire("publicGetTime").cost == 1
    for each in (budget, machine, pipeline, alone):
        each.close()


def test_binance_futures_ids_record_on_binances_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ccxt's ``binanceusdm`` is not a venue of the pipelines, but the same exchange: its
    requests draw on Binance's budget (its weights name the futures endpoints)."""
    monkeypatch.setenv(RATE_BUDGET_DIR_ENV, str(tmp_path))
    client = make_exchange("binanceusdm", "http://127.0.0.1:8765")
    budget = attached(client)
    assert budget is not None
    assert budget.path == tmp_path / "binance-replay-127_0_0_1_8765.sqlite"
    assert budget.costs("fapiPublicGetKlines", {"limit": 1000}) == {"USDⓈ-M request weight": 5}
    assert attached(make_exchange("kraken", "http://127.0.0.1:8765")) is None  # no venue
