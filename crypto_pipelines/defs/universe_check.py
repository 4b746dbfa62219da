"""Checking a universe against what each venue offers, where a universe is loaded to run it.

The domain checks a universe file's syntax only (``domain.universe``): it imports no exchange
code. Whether each exchange is one the loader knows, offers the listed timeframes, lists
perpetual swaps where the file names some, and has the market types its filters ask for is
a question for the venue registry (``exchanges.venues.VENUES``). It is asked here, by the code
location (``crypto_pipelines.definitions``) and by ``crypto-pipelines partitions sync``, so a
universe naming something a venue cannot do is still refused before anything runs, with a
message naming the file, the key and the reason.
"""

from __future__ import annotations

from pathlib import Path

from crypto_pipelines.domain.universe import Universe, UniverseError, load_universe, universe_path
from crypto_pipelines.exchanges.venues import VENUES


def venue_problems(universe: Universe) -> list[str]:
    """``key: reason`` for everything the universe asks of an exchange that its venue cannot
    give (empty when the venues can serve it all)."""
    problems: list[str] = []
    for name, exchange in universe.exchanges.items():
        venue = VENUES.get(name)
        if venue is None:
            known = ", ".join(sorted(VENUES))
            problems.append(f"exchanges.{name}: unknown exchange (supported: {known})")
            continue
        unsupported = [t for t in exchange.timeframes if t not in venue.timeframes]
        if unsupported:
            problems.append(
                f"exchanges.{name}.timeframes: {name} has no {', '.join(unsupported)} candles"
            )
        if exchange.perpetuals and "swap" not in venue.market_types:
            problems.append(
                f"exchanges.{name}.symbols: {name} lists no perpetual swaps: "
                f"{', '.join(exchange.perpetuals)}"
            )
        if exchange.open_interest and venue.open_interest is None:
            problems.append(
                f"exchanges.{name}.open_interest: {name} publishes no open interest history"
            )
        filters = exchange.filters
        if filters is not None and not set(filters.types) <= venue.market_types:
            wrong = sorted(set(filters.types) - venue.market_types)
            problems.append(
                f"exchanges.{name}.filters.types: {name} lists no {', '.join(wrong)} markets"
            )
    return problems


def check_venues(universe: Universe, path: Path | str) -> Universe:
    """``universe`` (read from ``path``) if its venues can serve it, else UniverseError naming
    the file and every problem."""
    problems = venue_problems(universe)
    if problems:
        raise UniverseError(f"{path}: {'; '.join(problems)}")
    return universe


def load_checked_universe(path: Path | str | None = None) -> Universe:
    """``load_universe(path)`` checked against the venue registry: what the code location and
    the CLI run. Raises UniverseError naming the file, key and reason."""
    chosen = universe_path(path)
    return check_venues(load_universe(chosen), chosen)
