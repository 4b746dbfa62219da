"""The universe: which exchanges, symbols, timeframes and datasets the pipelines cover.

Read from the YAML file named by ``CRYPTO_PIPELINES_UNIVERSE`` (default: the documented
``default_universe.yaml`` shipped in this package). Validation is pydantic's, so a malformed
file is refused when the code location loads with a message naming the file, the key (its
path in the YAML, ``exchanges.binance.start``) and the reason. Every value, dates included,
goes through pydantic: YAML's own date parsing would otherwise fail on ``2024-13-45`` before
any key is known.

The checks here need no exchange (syntax, and a start not in the future); whether each
exchange offers what the file asks for is checked against the venue registry by the layers
that load a universe to run it (``crypto_pipelines.defs.universe_check``), so the domain
imports no exchange code.
"""

from __future__ import annotations

import difflib
import os
import types
from collections.abc import Iterable
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crypto_pipelines.domain.datasets import MARKET_DATASETS, MarketDataset
from crypto_pipelines.domain.symbols import SymbolError, parse_symbol
from crypto_pipelines.domain.timeframes import TimeframeError, timeframe_ms
from crypto_pipelines.domain.universe_options import IncrementalSettings, ListingFilters

UNIVERSE_ENV = "CRYPTO_PIPELINES_UNIVERSE"
SOURCE_ENV = "CRYPTO_PIPELINES_SOURCE"

Source = Literal["live", "replay"]


class UniverseError(ValueError):
    """A universe file that cannot be used; the message names the file, key and reason."""


class ExchangeUniverse(BaseModel):
    """One exchange's part of the universe."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbols: tuple[str, ...] = ()
    timeframes: tuple[str, ...] = ("1m", "1h", "1d")
    start: date = date(2024, 1, 1)
    trades: bool = False
    funding: bool = True
    open_interest: bool = False
    filters: ListingFilters | None = None
    incremental: IncrementalSettings = IncrementalSettings()

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for symbol in value:
            try:
                parse_symbol(symbol)
            except SymbolError as exc:
                raise ValueError(str(exc)) from None
        if len(set(value)) != len(value):
            raise ValueError("symbols are listed more than once")
        return value

    @field_validator("timeframes")
    @classmethod
    def _timeframes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for timeframe in value:
            try:
                timeframe_ms(timeframe)
            except TimeframeError as exc:
                raise ValueError(str(exc)) from None
        return tuple(sorted(set(value), key=timeframe_ms))

    @field_validator("start")
    @classmethod
    def _start(cls, value: date) -> date:
        # A future start has no partition to run until that day: refused rather than left
        # to show as an exchange with nothing to load (a typo such as 2204 for 2024).
        today = datetime.now(UTC).date()
        if value > today:
            raise ValueError(
                f"{value.isoformat()} is in the future (today is {today.isoformat()} UTC): "
                "start must be a day that has begun"
            )
        return value

    @model_validator(mode="after")
    def _symbols_or_filters(self) -> ExchangeUniverse:
        if not self.symbols and self.filters is None:
            raise ValueError("give symbols, filters or both")
        return self

    @property
    def start_ms(self) -> int:
        return int(
            datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC).timestamp()
            * 1000
        )

    @property
    def perpetuals(self) -> tuple[str, ...]:
        return tuple(s for s in self.symbols if parse_symbol(s).settle is not None)

    @property
    def may_list_perpetuals(self) -> bool:
        """Whether perpetual swaps can be among the symbols: listed ones, or via the filters
        (decides whether a funding-rates asset is built)."""
        return bool(self.perpetuals) or (self.filters is not None and "swap" in self.filters.types)

    def enables(self, flag: str | None) -> bool:
        """Whether the dataset enabled by universe key ``flag`` (``trades``, ``funding``,
        ``open_interest``; None: always, as candles) is loaded for this exchange."""
        return flag is None or bool(getattr(self, flag))

    def series_datasets(self) -> list[tuple[MarketDataset, str | None]]:
        """Every (dataset, timeframe) this exchange loads: one asset each, in registry order
        (candles once per timeframe). Perpetuals-only datasets only where perpetuals can be
        among the symbols."""
        found: list[tuple[MarketDataset, str | None]] = []
        for spec in MARKET_DATASETS.values():
            if not self.enables(spec.universe_flag):
                continue
            if "spot" not in spec.market_types and not self.may_list_perpetuals:
                continue
            timeframes: tuple[str | None, ...] = self.timeframes if spec.per_timeframe else (None,)
            found.extend((spec, timeframe) for timeframe in timeframes)
        return found


class Universe(BaseModel):
    """What the pipelines cover, checked without any exchange (symbols, timeframes, filters,
    a start not in the future).

    Whether each exchange offers it is a question for the venue registry in
    ``crypto_pipelines.exchanges``, which the domain does not import: the layers that load
    a universe to run it check that."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: Source = "live"
    exchanges: dict[str, ExchangeUniverse] = Field(min_length=1)


def default_universe_path() -> Path:
    return Path(str(resources.files("crypto_pipelines.domain").joinpath("default_universe.yaml")))


def universe_path(path: Path | str | None = None) -> Path:
    """The file ``load_universe(path)`` reads: ``path``, else ``$CRYPTO_PIPELINES_UNIVERSE``,
    else the default (so callers that check more can name the same file)."""
    return Path(path or os.environ.get(UNIVERSE_ENV) or default_universe_path())


def load_universe(path: Path | str | None = None) -> Universe:
    """The universe from ``path``, else ``$CRYPTO_PIPELINES_UNIVERSE``, else the default;
    ``$CRYPTO_PIPELINES_SOURCE`` overrides the file's ``source``. Checks the file only (no
    venue): see ``Universe``. Raises UniverseError naming the file, the key and the reason."""
    chosen = universe_path(path)
    try:
        raw = yaml.load(chosen.read_text(encoding="utf-8"), Loader=_UniverseLoader)
    except OSError as exc:
        raise UniverseError(f"{chosen}: cannot read universe file: {exc}") from exc
    except yaml.YAMLError as exc:
        raise UniverseError(f"{chosen}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise UniverseError(
            f"{chosen}: a universe is a mapping with 'exchanges' (and optionally 'source')"
        )
    override = os.environ.get(SOURCE_ENV)
    if override:
        raw = {**raw, "source": override.strip()}
    try:
        return Universe.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            _problem(dict(err), from_env=bool(override)) for err in exc.errors(include_url=False)
        )
        raise UniverseError(f"{chosen}: {problems}") from None


class _UniverseLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that hands a date it cannot build (``2024-13-45``) on as its text.

    PyYAML builds dates while parsing, where an impossible one raises a bare ``ValueError``
    naming neither file nor key; as text it reaches pydantic, which refuses it at its key."""


def _timestamp_or_text(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> object:
    try:
        return yaml.SafeLoader.construct_yaml_timestamp(loader, node)
    except (ValueError, AttributeError):  # AttributeError: an explicit !!timestamp on non-dates
        return loader.construct_scalar(node)


_UniverseLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_or_text)


def _problem(err: dict[str, Any], *, from_env: bool) -> str:
    """One pydantic error as ``key: reason``, with the value given when it is a scalar and
    the keys allowed where an unknown one was found (with the likeliest one meant)."""
    loc = tuple(err["loc"])
    key = ".".join(str(part) for part in loc) or "universe"
    if loc == ("source",) and from_env:
        key = f"source (from ${SOURCE_ENV})"
    if err["type"] == "extra_forbidden":
        allowed = _keys_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f", did you mean {close[0]!r}?" if close else ""
        listed = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return f"{key}: unknown key{hint}{listed}"
    reason = str(err["msg"]).removeprefix("Value error, ")
    given = err.get("input")
    if isinstance(given, date):
        given = given.isoformat()
    if isinstance(given, str | int | float) and str(given) not in reason:
        reason = f"{reason} (got {given!r})"
    return f"{key}: {reason}"


def _keys_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys the universe allows at ``loc`` (a path of pydantic's error locations)."""
    current: Any = Universe
    for part in loc:
        model = _model_in(current)
        if model is not None:
            field = model.model_fields.get(str(part))
            if field is None:
                return []
            current = field.annotation
        elif get_origin(current) is dict:
            current = get_args(current)[1]
        else:
            return []
    model = _model_in(current)
    return list(model.model_fields) if model is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model ``annotation`` is, or holds as an option (``ListingFilters | None``)."""
    if get_origin(annotation) in (Union, types.UnionType):
        return next((m for m in map(_model_in, get_args(annotation)) if m is not None), None)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def with_changes(universe: Universe, changes: Iterable[tuple[str, str, str]]) -> Universe:
    """``universe`` with run-time changes applied: ``(exchange, symbol, action)`` triples,
    ``add`` appending a symbol to a configured exchange's explicit symbols and ``remove``
    dropping one (also one the file lists: the file is the base, never rewritten). A change
    for an exchange the universe does not configure is ignored (the API refuses those)."""
    added: dict[str, list[str]] = {}
    removed: dict[str, set[str]] = {}
    for exchange, symbol, action in changes:
        if action == "add":
            added.setdefault(exchange, []).append(symbol)
        elif action == "remove":
            removed.setdefault(exchange, set()).add(symbol)
    exchanges = {}
    for name, config in universe.exchanges.items():
        gone = removed.get(name, set())
        symbols = [s for s in config.symbols if s not in gone]
        symbols += [s for s in added.get(name, ()) if s not in symbols and s not in gone]
        if tuple(symbols) != config.symbols:  # model_copy: an exchange may end up empty
            config = config.model_copy(update={"symbols": tuple(symbols)})
        exchanges[name] = config
    return universe.model_copy(update={"exchanges": exchanges})
