"""Optional parts of an exchange's universe entry: listing filters and incremental-load settings.

``filters`` let the universe grow by itself: markets of the exchange's stored listing
(``crypto_pairs`` / ``crypto_perps``, refreshed by ``<exchange>/markets``) that match them join
the explicit ``symbols``, so a new listing is picked up without editing the file.
``incremental`` tunes the ``<exchange>_incremental_sensor``. Both are validated by pydantic
like the rest of the universe, so a bad value is refused naming its key.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crypto_pipelines.domain import checks
from crypto_pipelines.domain.symbols import SymbolError, parse_symbol

MarketType = Literal["spot", "swap"]


class ListingFilters(BaseModel):
    """Which stored markets join the universe: an active, not delisted market whose quote
    currency is in ``quote`` (any quote when omitted) and whose type is in ``types``; with
    ``top_n_by_volume`` only the N of those with the largest 24-hour volume (in USD, ranked
    when ``<exchange>/markets`` refreshes). ``exclude`` names symbols never to add."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    quote: tuple[str, ...] | None = Field(default=None, min_length=1)
    types: tuple[MarketType, ...] = Field(default=("spot", "swap"), min_length=1)
    top_n_by_volume: int | None = Field(default=None, ge=1, le=1000)
    exclude: tuple[str, ...] = ()

    @field_validator("quote")
    @classmethod
    def _quote(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        bad = [code for code in value if not checks.is_currency_code(code)]
        if bad:
            raise ValueError(f"not currency codes: {bad}")
        return tuple(dict.fromkeys(value))

    @field_validator("types")
    @classmethod
    def _types(cls, value: tuple[MarketType, ...]) -> tuple[MarketType, ...]:
        return tuple(dict.fromkeys(value))

    @field_validator("exclude")
    @classmethod
    def _exclude(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for symbol in value:
            try:
                parse_symbol(symbol)
            except SymbolError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _narrow(self) -> ListingFilters:
        # Without either, every market of the exchange (thousands on Binance) would be loaded.
        if self.quote is None and self.top_n_by_volume is None:
            raise ValueError(
                "give quote and/or top_n_by_volume, or every listed market would be added"
            )
        return self

    def matches(self, symbol: str, quote: str, market_type: str) -> bool:
        """Whether one market passes the quote, type and exclude filters (not the ranking)."""
        return (
            (self.quote is None or quote in self.quote)
            and market_type in self.types
            and symbol not in self.exclude
        )


class IncrementalSettings(BaseModel):
    """How the ``<exchange>_incremental_sensor`` keeps the exchange's series current."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    interval_seconds: int = Field(default=45, ge=30, le=3600)
    max_runs_per_tick: int = Field(default=10, ge=1, le=1000)
    max_partitions_per_run: int = Field(default=31, ge=1, le=1000)
    trades_every_seconds: int = Field(default=300, ge=60, le=86_400)
    finalize_after_seconds: int = Field(default=120, ge=0, le=86_400)
