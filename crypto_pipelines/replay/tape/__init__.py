"""The tape: recorded market data the replay exchange serves (``shared/tape-format.md``)."""

from crypto_pipelines.replay.tape.errors import TapeError
from crypto_pipelines.replay.tape.markets import MarketSpec
from crypto_pipelines.replay.tape.series import (
    BookSeries,
    BookSnapshot,
    Candle,
    CandleSeries,
    FundingRate,
    FundingSeries,
    OpenInterest,
    OpenInterestSeries,
    Trade,
    TradeSeries,
)
from crypto_pipelines.replay.tape.tape import ExchangeTape, SymbolTape, Tape

__all__ = [
    "BookSeries",
    "BookSnapshot",
    "Candle",
    "CandleSeries",
    "ExchangeTape",
    "FundingRate",
    "FundingSeries",
    "MarketSpec",
    "OpenInterest",
    "OpenInterestSeries",
    "SymbolTape",
    "Tape",
    "TapeError",
    "Trade",
    "TradeSeries",
]
