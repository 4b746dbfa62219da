"""The request budget shared across processes (``exchanges.budget``): real processes (spawn),
a real SQLite file, and the replay exchange enforcing the venues' own limits over HTTP."""

from __future__ import annotations

import json
import multiprocessing as mp
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from crypto_pipelines.exchanges import FetchStats, RetryPolicy, get_venue, iter_ohlcv, make_client
from crypto_pipelines.exchanges.budget import (
    RATE_BUDGET_DIR_ENV,
    SharedBudget,
    attached,
    budget_path,
    grants_within,
)
from crypto_pipelines.exchanges.loader import exchange_time_ms, fetch_markets
from crypto_pipelines.exchanges.venues import VENUES, RateBudget
from crypto_pipelines.exchanges.venues.spec import frozen
from crypto_pipelines.replay import FaultConfig, ReplayServer
from crypto_pipelines_tests.exchanges.conftest import client_for
from crypto_pipelines_tests.exchanges.tapes import DAYS, MIN, SPOT, SWAP, T0, Rows

#: a budget with a short window, so that processes queue for it within a second or two
TINY = RateBudget("tiny", 10, 200, "IP", frozen({"light": 1, "heavy": 3}))
SPAWN = mp.get_context("spawn")


def _grant_worker(path: str, log: str, shared: bool, n: int, seed: int, barrier: Any) -> None:
    """Acquire ``n`` grants (every third one heavy) and append ``at_ms cost`` lines to
    ``log`` (O_APPEND: lines from several processes never interleave)."""
    budget = SharedBudget([TINY], path if shared else f"{path}.{seed}", margin=1.0)
    barrier.wait()
    lines = []
    for i in range(n):
        grant = budget.acquire("heavy" if (i + seed) % 3 == 0 else "light")
        lines.append(f"{grant.at_ms} {grant.cost}\n")
    with open(log, "a") as fh:
        fh.writelines(lines)
    budget.close()


def _run_grants(
    tmp_path: Path, shared: bool, processes: int = 4, n: int = 15
) -> list[tuple[int, int]]:
    log = tmp_path / f"grants-{shared}.log"
    barrier = SPAWN.Barrier(processes)
    workers = [
        SPAWN.Process(
            target=_grant_worker,
            args=(str(tmp_path / "budget.sqlite"), str(log), shared, n, seed, barrier),
        )
        for seed in range(processes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    stamps = [tuple(map(int, line.split())) for line in log.read_text().splitlines()]
    assert len(stamps) == processes * n
    return [(at, cost) for at, cost in stamps]


def test_processes_sharing_a_budget_never_exceed_it(tmp_path: Path) -> None:
    stamps = _run_grants(tmp_path, shared=True)
    # every closed interval of one window holds at most the capacity (what any of the
    # exchange's fixed windows can see, whatever their alignment)
    assert grants_within(stamps, TINY.window_ms) <= TINY.capacity
    assert sum(cost for _, cost in stamps) > 3 * TINY.capacity  # they did have to queue


def test_processes_with_budgets_of_their_own_do_exceed_it(tmp_path: Path) -> None:
    """The check above can fail: four processes with a budget each overrun a shared one."""
    stamps = _run_grants(tmp_path, shared=False)
    assert grants_within(stamps, TINY.window_ms) > TINY.capacity


def test_a_full_budget_waits_for_its_oldest_grant_to_leave_the_window(tmp_path: Path) -> None:
    budget = SharedBudget([TINY], tmp_path / "b.sqlite", margin=0.5)  # 5 units per 200 ms
    first = budget.acquire("heavy")
    second = budget.acquire("light")
    third = budget.acquire("light")  # 3 + 1 + 1 = 5: still room
    blocked = budget.acquire("light")
    assert first.waited_s == second.waited_s == third.waited_s == 0
    assert blocked.waited_s > 0
    assert first.at_ms is not None and blocked.at_ms is not None
    assert blocked.at_ms >= first.at_ms + TINY.window_ms
    assert budget.spent == {"tiny": 6}
    assert budget.acquire("unpriced").at_ms is None  # a method on no budget draws nothing
    assert budget.spent == {"tiny": 6}


def test_costs_that_can_never_fit_and_bad_margins_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dearest request"):
        SharedBudget([TINY], tmp_path / "b.sqlite", margin=0.2)  # 2 units < heavy's 3
    for margin in (0.0, 1.5):
        with pytest.raises(ValueError, match="margin"):
            SharedBudget([TINY], tmp_path / "b.sqlite", margin=margin)


# -- the venues' budgets as data ---------------------------------------------------------
def test_venue_costs() -> None:
    binance = SharedBudget.for_venue("binance", directory="/nonexistent")
    assert binance.costs("publicGetKlines", {"limit": 1000}) == {"spot request weight": 2}
    assert binance.costs("publicGetAggTrades") == {"spot request weight": 4}
    assert binance.costs("publicGetExchangeInfo") == {"spot request weight": 20}
    fapi = "USDⓈ-M request weight"
    assert binance.costs("fapiPublicGetKlines", {"limit": 1000}) == {fapi: 5}
    assert binance.costs("fapiPublicGetKlines", {"limit": 1500}) == {fapi: 10}
    assert binance.costs("fapiPublicGetKlines", {"limit": 99}) == {fapi: 1}
    assert binance.costs("fapiPublicGetKlines") == {fapi: 5}  # no limit: 500 rows
    assert binance.costs("dapiPublicGetKlines", {"limit": 200}) == {"COIN-M request weight": 2}
    assert binance.costs("fapiPublicGetFundingRate") == {"funding rate requests": 1}
    okx = SharedBudget.for_venue("okx", directory="/nonexistent")
    assert okx.costs("publicGetMarketHistoryCandles") == {"market/history-candles": 1}
    assert okx.limits()["market/history-candles"] == (19, 2_000)
    assert okx.limits()["market/candles"] == (38, 2_000)
    bybit = SharedBudget.for_venue("bybit", directory="/nonexistent")
    assert bybit.costs("publicGetV5MarketKline") == {"HTTP requests": 1}
    assert bybit.limits() == {"HTTP requests": (570, 5_000)}
    coinbase = SharedBudget.for_venue("coinbaseexchange", directory="/nonexistent")
    assert coinbase.limits() == {"public requests": (9, 1_000)}


@pytest.mark.parametrize("exchange_id", sorted(VENUES))
def test_every_request_the_loader_sends_is_priced(exchange_id: str) -> None:
    spec = get_venue(exchange_id)
    client = make_client(exchange_id, replay_url="http://127.0.0.1:9")
    methods = {q.method for queries in spec.ohlcv.queries.values() for q in queries}
    methods |= set(spec.trades.methods.values())
    methods |= {q.method for q in (spec.funding.queries.values() if spec.funding else ())}
    methods |= set(spec.markets_requests)
    assert spec.time_request is not None
    methods.add(spec.time_request)
    budget = SharedBudget.for_venue(spec, directory="/nonexistent")
    for method in sorted(methods):
        assert callable(getattr(client, method, None)), f"{method} is not a ccxt method"
        assert budget.costs(method), f"{exchange_id} {method} draws on no budget"
    for rate_budget in spec.rate_budgets:
        for method in rate_budget.costs:
            assert callable(getattr(client, method, None)), f"{method} is not a ccxt method"


# -- the loader pays for every request ----------------------------------------------------
def _served(server: ReplayServer, exchange: str | None = None) -> dict[str, Any]:
    with urllib.request.urlopen(server.url + "/_replay/stats") as response:
        stats: dict[str, Any] = json.loads(response.read())
    if exchange is None:
        return dict(stats["totals"])
    return dict(stats["exchanges"].get(exchange, {}))


@pytest.fixture
def faulty_server(tape: tuple[Path, Rows]) -> Iterator[ReplayServer]:
    """A server of its own answering a third of the requests with a rate-limit error."""
    with ReplayServer(tape[0], faults=FaultConfig(rate_limit=0.3, seed=5)) as server:
        yield server


@pytest.mark.parametrize("exchange_id", ["okx", "bybit", "coinbaseexchange"])
def test_every_request_sent_is_paid_for_retries_included(
    exchange_id: str, faulty_server: ReplayServer, tmp_path: Path
) -> None:
    """On venues where every request costs 1, the units spent equal the requests the
    exchange saw: markets, server time, candles, and the retries after refusals."""
    budget = SharedBudget.for_venue(exchange_id, replay_url=faulty_server.url, directory=tmp_path)
    client = client_for(exchange_id, faulty_server.url, rate_budget=budget)
    stats = FetchStats()
    policy = RetryPolicy(max_attempts=15, seed=1, sleep=lambda _: None)
    exchange_time_ms(client, stats=stats, policy=policy)
    symbol = SWAP.get(exchange_id, SPOT[exchange_id])
    spec = get_venue(exchange_id)
    end = T0 + 1440 * MIN
    list(iter_ohlcv(client, spec, symbol, "1m", T0, end, stats=stats, policy=policy))
    assert stats.retries > 0
    served = sum(c["requests"] for c in _served(faulty_server, exchange_id).values())
    assert sum(budget.spent.values()) == served


def test_binance_pays_its_weights(server: ReplayServer, tmp_path: Path) -> None:
    budget = SharedBudget.for_venue("binance", replay_url=server.url, directory=tmp_path)
    client = client_for("binance", server.url, rate_budget=budget)
    fetch_markets(client)
    assert budget.spent == {
        "spot request weight": 20,
        "USDⓈ-M request weight": 1,
        "COIN-M request weight": 1,
        "funding rate requests": 0,
    }
    end = T0 + DAYS * 1440 * MIN
    spot, swap = FetchStats(), FetchStats()
    list(iter_ohlcv(client, get_venue("binance"), SPOT["binance"], "1m", T0, end, stats=spot))
    list(iter_ohlcv(client, get_venue("binance"), SWAP["binance"], "1m", T0, end, stats=swap))
    assert spot.requests > 1 and swap.requests > 1
    assert budget.spent["spot request weight"] == 20 + 2 * spot.requests
    assert budget.spent["USDⓈ-M request weight"] == 1 + 5 * swap.requests  # limit 1,000


def test_make_client_attaches_the_machine_budget(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(RATE_BUDGET_DIR_ENV, str(tmp_path))
    client = make_client("okx", replay_url="http://127.0.0.1:8765", rate_budget=True)
    budget = attached(client)
    assert budget is not None
    assert budget.path == tmp_path / "okx-replay-127_0_0_1_8765.sqlite"
    assert attached(make_client("okx", replay_url="http://127.0.0.1:8765")) is None
    with pytest.raises(ValueError, match="synchronous"):
        make_client("okx", asynchronous=True, rate_budget=True)
    monkeypatch.delenv(RATE_BUDGET_DIR_ENV)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert budget_path("binance") == tmp_path / "home" / "rate_budgets" / "binance.sqlite"


# -- concurrent loaders against the exchange's own limits ---------------------------------
def _loader(url: str, budget_dir: str | None, ccxt_limiter: bool, barrier: Any, out: Any) -> None:
    """Coinbase 1m candles of the whole tape in a process of its own; reports rows or the
    error that ended the load."""
    budget = (
        SharedBudget.for_venue("coinbaseexchange", replay_url=url, directory=budget_dir)
        if budget_dir
        else False
    )
    client = make_client(
        "coinbaseexchange", replay_url=url, enable_rate_limit=ccxt_limiter, rate_budget=budget
    )
    barrier.wait()
    try:
        frames = iter_ohlcv(
            client, get_venue("coinbaseexchange"), SPOT["coinbaseexchange"], "1m",
            T0, T0 + DAYS * 1440 * MIN, stats=FetchStats(),
        )  # fmt: skip
        out.put(sum(len(frame) for frame in frames))
    except Exception as exc:  # reported to the test, which checks what the exchange saw
        out.put(f"{type(exc).__name__}: {exc}")


def _concurrent_loads(
    tape: Path, budget_dir: Path | None, ccxt_limiter: bool, processes: int = 2
) -> tuple[list[Any], dict[str, Any]]:
    with ReplayServer(tape, enforce_limits=True) as server:
        barrier, out = SPAWN.Barrier(processes), SPAWN.Queue()
        args = (server.url, str(budget_dir) if budget_dir else None, ccxt_limiter, barrier, out)
        workers = [SPAWN.Process(target=_loader, args=args) for _ in range(processes)]
        for worker in workers:
            worker.start()
        results = [out.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
        return results, _served(server)


def test_loaders_sharing_the_budget_are_never_refused(
    tape: tuple[Path, Rows], tmp_path: Path
) -> None:
    results, served = _concurrent_loads(tape[0], tmp_path, ccxt_limiter=False)
    assert results == [len(tape[1].candles)] * 2
    assert served["rate_limited"] == 0 and served["banned"] == 0
    assert served["requests"] > 2 * 10  # more than a second's worth: they had to share


@pytest.mark.parametrize("ccxt_limiter", [True, False], ids=["ccxt-limiter-each", "no-limiter"])
def test_loaders_without_the_shared_budget_are_refused(
    tape: tuple[Path, Rows], ccxt_limiter: bool
) -> None:
    """The test above can fail: each process pacing itself (ccxt's throttler, 10/s each) or
    not at all overruns Coinbase's 10 requests a second."""
    _, served = _concurrent_loads(tape[0], None, ccxt_limiter=ccxt_limiter)
    assert served["rate_limited"] > 0
