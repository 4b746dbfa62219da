"""Loading a whole tape folder: every file validated before anything is served."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from crypto_pipelines.domain.symbols import SymbolError, dir_to_symbol, parse_symbol
from crypto_pipelines.replay.tape.errors import TapeError
from crypto_pipelines.replay.tape.markets import MarketSpec, build_market, read_markets_json
from crypto_pipelines.replay.tape.series import (
    BookSeries,
    CandleSeries,
    FundingSeries,
    OpenInterestSeries,
    TradeSeries,
)

_OHLCV_RE = re.compile(r"^ohlcv_([0-9]+[smhdwM])\.csv(\.gz)?$")
_SAMPLE = 500


@dataclass
class SymbolTape:
    """What a tape holds for one symbol on one exchange."""

    symbol: str
    ohlcv: dict[str, CandleSeries] = field(default_factory=dict)
    trades: TradeSeries | None = None
    funding: FundingSeries | None = None
    open_interest: OpenInterestSeries | None = None
    book: BookSeries | None = None

    def first_ts(self) -> int | None:
        firsts = [s.first_ts for s in self.ohlcv.values()]
        if self.trades is not None:
            firsts.append(self.trades.first_ts)
        known = [t for t in firsts if t is not None]
        return min(known) if known else None

    def close(self) -> None:
        for series in self.ohlcv.values():
            series.close()
        for other in (self.trades, self.funding, self.open_interest, self.book):
            if other is not None:
                other.close()


@dataclass
class ExchangeTape:
    """One exchange's folder: its markets and per-symbol series."""

    exchange: str
    markets: dict[str, MarketSpec]
    symbols: dict[str, SymbolTape]

    def market(self, symbol: str) -> MarketSpec | None:
        return self.markets.get(symbol)

    def series(self, symbol: str) -> SymbolTape:
        return self.symbols.get(symbol) or SymbolTape(symbol)


@dataclass
class Tape:
    """A loaded tape. ``Tape.load`` refuses a malformed tape with a TapeError that names the
    file, line and problem; nothing is served from a tape that failed to load."""

    root: Path
    exchanges: dict[str, ExchangeTape]

    @classmethod
    def load(cls, root: Path | str) -> Tape:
        root = Path(root)
        if not root.is_dir():
            raise TapeError(root, "tape folder does not exist")
        exchanges: dict[str, ExchangeTape] = {}
        try:
            for folder in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
                if not folder.is_dir():
                    raise TapeError(
                        folder, "unexpected file at the top of a tape (want exchange folders)"
                    )
                exchanges[folder.name] = _load_exchange(folder)
        except BaseException:
            for loaded in exchanges.values():
                for sym in loaded.symbols.values():
                    sym.close()
            raise
        if not exchanges:
            raise TapeError(root, "tape holds no exchange folder")
        return cls(root, exchanges)

    def exchange(self, exchange: str) -> ExchangeTape | None:
        return self.exchanges.get(exchange)

    def close(self) -> None:
        for exchange in self.exchanges.values():
            for symbol in exchange.symbols.values():
                symbol.close()


def _load_exchange(folder: Path) -> ExchangeTape:
    markets_path = folder / "markets.json"
    entries = read_markets_json(markets_path) if markets_path.exists() else {}
    symbols: dict[str, SymbolTape] = {}
    try:
        for sub in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
            if sub.name == "markets.json":
                continue
            if not sub.is_dir():
                raise TapeError(sub, "unexpected file (want markets.json or symbol folders)")
            try:
                symbol = dir_to_symbol(sub.name)
            except SymbolError as exc:
                raise TapeError(sub, f"unknown symbol folder: {exc}") from exc
            symbols[symbol] = SymbolTape(symbol)
            _load_symbol(sub, symbols[symbol])
    except BaseException:
        for sym in symbols.values():
            sym.close()
        raise
    markets = {
        symbol: build_market(
            symbol,
            entries.get(symbol),
            *_samples(symbols[symbol]) if symbol in symbols else ([], []),
            symbols[symbol].first_ts() if symbol in symbols else None,
        )
        for symbol in sorted(set(entries) | set(symbols))
    }
    return ExchangeTape(folder.name, markets, symbols)


def _load_symbol(folder: Path, into: SymbolTape) -> None:
    for path in sorted(p for p in folder.iterdir() if not p.name.startswith(".")):
        name = path.name
        match = _OHLCV_RE.match(name)
        if match:
            timeframe = match.group(1)
            if timeframe in into.ohlcv:
                raise TapeError(path, f"second file for timeframe {timeframe}")
            into.ohlcv[timeframe] = CandleSeries(path, timeframe)
        elif name in ("trades.csv", "trades.csv.gz"):
            _once(path, into.trades)
            into.trades = TradeSeries(path)
        elif name in ("funding.csv", "funding.csv.gz"):
            _once(path, into.funding)
            into.funding = FundingSeries(path)
        elif name in ("open_interest.csv", "open_interest.csv.gz"):
            if parse_symbol(into.symbol).market_type != "swap":
                raise TapeError(
                    path,
                    f"open interest exists for perpetual swaps only; {into.symbol} is a spot "
                    "symbol folder",
                )
            _once(path, into.open_interest)
            into.open_interest = OpenInterestSeries(path)
        elif name in ("book.jsonl", "book.jsonl.gz"):
            _once(path, into.book)
            into.book = BookSeries(path)
        else:
            raise TapeError(
                path,
                "unknown tape file (want ohlcv_<timeframe>.csv, trades.csv, funding.csv, "
                "open_interest.csv, book.jsonl, optionally .gz)",
            )


def _once(path: Path, existing: object) -> None:
    if existing is not None:
        raise TapeError(path, "both a plain and a .gz version of this file")


def _samples(symbol: SymbolTape) -> tuple[list[str], list[str]]:
    """Price and amount strings from the head and tail of the symbol's data, to derive tick
    and step sizes without reading whole files."""
    prices: list[str] = []
    amounts: list[str] = []
    if symbol.trades is not None and len(symbol.trades):
        n = len(symbol.trades)
        for t in symbol.trades.rows(0, min(n, _SAMPLE)) + symbol.trades.rows(
            max(0, n - _SAMPLE), n
        ):
            prices.append(t.price)
            amounts.append(t.amount)
    for series in symbol.ohlcv.values():
        n = len(series)
        for c in series.rows(0, min(n, _SAMPLE)) + series.rows(max(0, n - _SAMPLE), n):
            prices.extend((c.open, c.high, c.low, c.close))
        if not amounts:
            amounts.extend(c.volume for c in series.rows(0, min(n, _SAMPLE)))
    return prices, amounts
