"""The universe sensor with filters, on a real instance, a real store and the replay exchange:
markets the filters select from the stored listing join the partitions (ranked by the volumes
``<exchange>/markets`` recorded), markets that leave the selection are removed, delisted or
inactive ones never join, and a bad filter configuration is refused naming its key."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest

from crypto_pipelines.defs.partitions import perps_partitions_name, symbols_partitions_name
from crypto_pipelines.defs.resources import ExchangesResource, MarketStoreResource
from crypto_pipelines.defs.universe_check import load_checked_universe
from crypto_pipelines.defs.universe_sync import (
    sync_symbol_partitions,
    universe_partitions_sensor,
)
from crypto_pipelines.domain.instruments import CryptoPair
from crypto_pipelines.domain.listings import VOLUME_RANKING_METADATA
from crypto_pipelines.domain.universe import Universe, UniverseError, load_universe
from crypto_pipelines.replay import Tape
from crypto_pipelines.replay.synth import SynthSpec, write_synthetic_tape
from crypto_pipelines.storage.store import MarketStore
from crypto_pipelines_tests.conftest import free_port
from crypto_pipelines_tests.defs.automation import (
    Exchange,
    asset_of,
    at,
    replay_exchange,
    resources,
    write_universe,
)
from crypto_pipelines_tests.defs.conftest import START

SPOT_USDT = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
LISTED = (*SPOT_USDT, "ETH/BTC", "SOL/USDC", "BTC/USDT:USDT")
NOW = at(1, 18)
PARTITIONS = symbols_partitions_name("binance")
PERPS = perps_partitions_name("binance")


@pytest.fixture(scope="module")
def listing_tape(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tape]:
    root = tmp_path_factory.mktemp("listing")
    spec = SynthSpec(
        exchanges=("binance",),
        symbols={"binance": LISTED},
        timeframes=("1m",),
        start=START,
        days=1,
        seed=5,
        trades=False,
        books=False,
        funding=False,
    )
    write_synthetic_tape(root, spec)
    tape = Tape.load(root)
    yield tape
    tape.close()


@pytest.fixture
def exchange(listing_tape: Tape) -> Iterator[Exchange]:
    with replay_exchange(listing_tape, NOW) as ex:
        yield ex


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def _universe(path: Path, body: str) -> Universe:
    return write_universe(path, {"binance": f"timeframes: [1h]\nstart: 2024-01-01\n{body}"})


def _tick(
    universe: Universe, instance: dg.DagsterInstance, run_resources: dict[str, object]
) -> tuple[set[str], set[str]]:
    """One evaluation; its partition requests are applied as the daemon applies them.
    Returns (added, removed) of ``binance_symbols``; ``binance_perps`` must follow it with
    the perpetual swaps only."""
    sensor = universe_partitions_sensor(universe)
    with dg.build_sensor_context(instance=instance, resources=run_resources) as context:
        result = sensor(context)
    if isinstance(result, dg.SkipReason):
        return set(), set()
    assert isinstance(result, dg.SensorResult)
    added: set[str] = set()
    removed: set[str] = set()
    for request in result.dynamic_partitions_requests or []:
        name = request.partitions_def_name
        assert name in (PARTITIONS, PERPS)
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(name, list(request.partition_keys))
            if name == PARTITIONS:
                added |= set(request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(name, key)
            if name == PARTITIONS:
                removed |= set(request.partition_keys)
    perps = {s for s in instance.get_dynamic_partitions(PARTITIONS) if ":" in s}
    assert set(instance.get_dynamic_partitions(PERPS)) == perps
    return added, removed


def _tape_usd_volume(tape: Tape, symbol: str) -> float:
    """24h quote volume from the tape's candles up to "now", as an exchange ticker reports it."""
    series = tape.exchanges["binance"].symbols[symbol].ohlcv["1m"]
    rows = series.between(NOW - 86_400_000 + 1, NOW, 10**6)
    return float(sum(Decimal(c.volume) * Decimal(c.close) for c in rows))


def test_top_n_by_volume_from_the_markets_asset(
    tmp_path: Path, instance: dg.DagsterInstance, exchange: Exchange, db_url: str
) -> None:
    universe = _universe(
        tmp_path / "u.yaml",
        "symbols: [BTC/USDT:USDT]\nfilters:\n  quote: [USDT]\n  types: [spot]\n  top_n_by_volume: 2",
    )
    run_resources = resources(exchange.server, db_url)
    markets = asset_of(universe, dg.AssetKey(["binance", "markets"]))
    result = dg.materialize([markets], instance=instance, resources=run_resources)
    assert result.success
    ranking = result.asset_materializations_for_node("binance__markets")[0].metadata[
        VOLUME_RANKING_METADATA
    ]
    expected = sorted(SPOT_USDT, key=lambda s: -_tape_usd_volume(exchange.server.tape, s))
    recorded = ranking.value
    assert isinstance(recorded, list)
    assert [symbol for symbol, _ in recorded] == expected  # only USDT spot markets are ranked
    for symbol, usd in recorded:
        assert usd == pytest.approx(_tape_usd_volume(exchange.server.tape, symbol), rel=1e-9)

    assert _tick(universe, instance, run_resources) == ({"BTC/USDT:USDT", *expected[:2]}, set())
    assert instance.get_dynamic_partitions(PERPS) == ["BTC/USDT:USDT"]  # funding's symbols
    assert _tick(universe, instance, run_resources) == (set(), set())

    with MarketStore.open(db_url) as store:
        # A new listing without a recorded volume cannot rank yet.
        store.upsert_instruments(
            pairs=[CryptoPair(exchange="binance", symbol="DOGE/USDT", base="DOGE", quote="USDT")]
        )
        assert _tick(universe, instance, run_resources) == (set(), set())
        # The leader is delisted: it leaves, the third takes its place.
        store.upsert_instruments(
            pairs=[
                CryptoPair(
                    exchange="binance",
                    symbol=expected[0],
                    base=expected[0].split("/")[0],
                    quote="USDT",
                    delisted_ms=NOW - 60_000,
                )
            ]
        )
    assert _tick(universe, instance, run_resources) == ({expected[2]}, {expected[0]})
    assert set(instance.get_dynamic_partitions(PARTITIONS)) == {"BTC/USDT:USDT", *expected[1:]}


def test_an_unreachable_exchange_skips_naming_it(
    tmp_path: Path, instance: dg.DagsterInstance, db_url: str
) -> None:
    """With the partitions already equal to the explicit symbols, a tick whose filtered
    exchange cannot be reached changes nothing and says why, rather than "already match"."""
    universe = _universe(tmp_path / "u.yaml", "symbols: [BTC/USDT]\nfilters:\n  quote: [USDC]")
    sync_symbol_partitions(instance, universe)
    closed = {
        "exchanges": ExchangesResource(
            source="replay", replay_url=f"http://127.0.0.1:{free_port()}"
        ),
        "market_store": MarketStoreResource(db_url=db_url, source="replay"),
    }
    sensor = universe_partitions_sensor(universe)
    with dg.build_sensor_context(instance=instance, resources=closed) as context:
        result = sensor(context)
    assert isinstance(result, dg.SkipReason)
    message = str(result.skip_message)
    assert message.startswith("binance clock unavailable, filters not applied: "), message


def _pair(symbol: str, **kw: object) -> CryptoPair:
    base, quote = symbol.split("/")
    return CryptoPair(exchange="binance", symbol=symbol, base=base, quote=quote, **kw)  # type: ignore[arg-type]


def test_quote_filter_adds_new_listings_and_removes_what_leaves(
    tmp_path: Path, instance: dg.DagsterInstance, exchange: Exchange, db_url: str
) -> None:
    run_resources = resources(exchange.server, db_url)
    with MarketStore.open(db_url) as store:
        store.upsert_instruments(
            pairs=[
                _pair("ETH/BTC"),
                _pair("SOL/USDC"),
                _pair("ETH/USDT"),  # quote not selected
                _pair("ADA/USDC", delisted_ms=at(1, 12)),  # delisted before "now"
                _pair("XRP/USDC", active=False),
                _pair("LTC/USDC", listed_ms=at(2)),  # listed after "now"
            ]
        )
    both = _universe(
        tmp_path / "a.yaml", "symbols: [BTC/USDT]\nfilters:\n  quote: [USDC, BTC]\n  types: [spot]"
    )
    assert _tick(both, instance, run_resources) == ({"BTC/USDT", "ETH/BTC", "SOL/USDC"}, set())

    with MarketStore.open(db_url) as store:
        store.upsert_instruments(pairs=[_pair("DOT/USDC")])
    assert _tick(both, instance, run_resources) == ({"DOT/USDC"}, set())
    # The CLI has no exchange at hand: it never removes what the filters selected.
    assert all(not r.removed for r in sync_symbol_partitions(instance, both))

    btc_only = _universe(
        tmp_path / "b.yaml", "symbols: [BTC/USDT]\nfilters:\n  quote: [BTC]\n  exclude: [ETH/BTC]"
    )
    assert _tick(btc_only, instance, run_resources) == (set(), {"ETH/BTC", "SOL/USDC", "DOT/USDC"})
    no_filters = _universe(tmp_path / "c.yaml", "symbols: [ETH/USDT]")
    assert _tick(no_filters, instance, run_resources) == ({"ETH/USDT"}, {"BTC/USDT"})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "filters:\n  quote: [USDT]\n  top_n_by_volume: 0",
            "exchanges.binance.filters.top_n_by_volume: Input should be greater than or equal to 1",
        ),
        ("filters:\n  quote: [USDT]\n  types: [futures]", "exchanges.binance.filters.types.0"),
        ("filters:\n  quote: ['US DT']", "exchanges.binance.filters.quote: not currency codes"),
        (
            "filters:\n  types: [spot]",
            "exchanges.binance.filters: give quote and/or top_n_by_volume",
        ),
        (
            "filters:\n  quote: [USDT]\n  colour: red",
            "exchanges.binance.filters.colour: unknown key (allowed: quote, types, "
            "top_n_by_volume, exclude)",
        ),
        ("filters:\n  quote: [USDT]\n  exclude: [BTCUSDT]", "exchanges.binance.filters.exclude"),
        ("timeframes: [1m]", "exchanges.binance: give symbols, filters or both"),
        (
            "symbols: [BTC/USDT]\nincremental:\n  max_runs_per_tick: 0",
            "exchanges.binance.incremental.max_runs_per_tick",
        ),
    ],
)
def test_invalid_filters_are_refused_naming_the_key(
    tmp_path: Path, body: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "exchanges:\n  binance:\n" + "".join(f"    {line}\n" for line in body.splitlines())
    )
    with pytest.raises(UniverseError) as info:
        load_universe(path)
    assert message in str(info.value), str(info.value)


def test_swap_filters_on_a_spot_only_exchange_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "exchanges:\n  coinbaseexchange:\n    filters: {quote: [USD], types: [spot, swap]}\n"
    )
    with pytest.raises(
        UniverseError,
        match=r"exchanges\.coinbaseexchange\.filters\.types: coinbaseexchange lists no swap markets",
    ):
        load_checked_universe(path)


def test_filters_with_swaps_build_a_funding_asset(tmp_path: Path) -> None:
    from crypto_pipelines.defs.build import build_assets

    universe = _universe(
        tmp_path / "u.yaml", "filters: {quote: [USDT], types: [swap], top_n_by_volume: 5}"
    )
    assert universe.exchanges["binance"].symbols == ()
    keys = {a.key for a in build_assets(universe)}
    assert dg.AssetKey(["binance", "funding_rates"]) in keys
