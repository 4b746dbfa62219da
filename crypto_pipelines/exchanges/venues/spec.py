"""The shape of a venue entry: what one exchange offers and how its REST API is asked.

Every per-exchange difference the loader has to respect lives in one frozen ``VenueSpec`` of
plain data: which ccxt implicit method serves each market kind, the parameter names, whether
time bounds are inclusive, which rows a full range answers (the oldest or the newest), where
the rows sit in the answer and which column holds what. The loader (``paging``, ``parse``,
``trades``) is written once against this shape, as freqtrade's ``exchange/`` and cryptofeed
do: adding a venue is adding an entry, not branches.

Mappings are ``MappingProxyType`` views so that a spec is immutable all the way down.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from crypto_pipelines.domain.timeframes import HOUR_MS

MarketKind = Literal["spot", "linear", "inverse"]
"""How a market is traded, which decides the endpoint: spot, or a perpetual swap margined in
the quote currency (linear) or in the base currency (inverse)."""

K = TypeVar("K")
V = TypeVar("V")


def frozen(mapping: Mapping[K, V]) -> Mapping[K, V]:
    """A read-only view of a copy: venue data must not change after import."""
    return MappingProxyType(dict(mapping))


class Anchor(Enum):
    """Which rows an exchange answers when a range holds more than one page."""

    OLDEST = "oldest"  # the first ``limit`` rows from the start: page forward from the last row
    NEWEST = "newest"  # the last ``limit`` rows before the end: ask windows no larger than a page


class TimeFormat(Enum):
    MS = "ms"  # integer milliseconds since the epoch
    ISO = "iso"  # ISO 8601 text with milliseconds and Z (Coinbase)


class TradesPaging(Enum):
    """How a venue lets a client walk its trade history (see ``exchanges.trades``)."""

    FROM_ID = "from_id"  # Binance aggTrades: ``fromId`` forward, ids ascending
    BACKWARD = "backward"  # OKX history-trades: ``after`` a ts, then ``after`` an id, newest first
    ID_CURSORS = "id_cursors"  # Coinbase: ``after`` = older, ``before`` = newer trade ids
    RECENT_ONLY = "recent_only"  # Bybit: the latest trades only, no history at all


class Quirk(Enum):
    """Behaviour worth a name: it explains a choice in the loader or a gap in the data."""

    OMITS_EMPTY_CANDLES = "omits_empty_candles"
    """A bucket without trades has no candle by design (Coinbase); a gap is not an outage."""
    NEWEST_FIRST = "newest_first"
    """Rows arrive newest first (OKX, Bybit, Coinbase); the loader reverses them."""
    EXCLUSIVE_TIME_BOUNDS = "exclusive_time_bounds"
    """``before``/``after`` exclude their own value (OKX)."""
    RECENT_CANDLES_ENDPOINT = "recent_candles_endpoint"
    """The main candle endpoint holds only the latest bars; older ones need another (OKX)."""
    RANGE_OVER_LIMIT_REFUSED = "range_over_limit_refused"
    """A range longer than one page is refused with an error, not clamped (Coinbase)."""
    TIME_WINDOW_RETURNS_LAST_ROWS = "time_window_returns_last_rows"
    """A trade time window with more than ``limit`` trades answers its last ones (Binance
    aggTrades), so trades are paged by id, never by time."""
    MAKER_SIDE = "maker_side"
    """Public trades report the maker's side (Coinbase); the loader reports the taker's."""
    CONTRACT_TRADE_SIZES = "contract_trade_sizes"
    """Swap trade sizes are in contracts, not base currency (OKX), as ccxt reports them."""
    NO_TRADE_HISTORY = "no_trade_history"
    """Only the latest trades are public (Bybit): history cannot be backfilled."""
    SECONDS_TIMESTAMPS = "seconds_timestamps"
    """Candle times are unix seconds (Coinbase)."""


@dataclass(frozen=True, slots=True)
class RangeQuery:
    """One time-ranged, paged endpoint: how to ask it for rows in ``[start, end)``."""

    method: str  # ccxt implicit method, e.g. ``publicGetKlines``
    max_rows: int  # most rows one answer holds (what we ask for)
    anchor: Anchor
    start_param: str
    end_param: str
    limit_param: str | None = "limit"  # None: the venue takes no row count (Coinbase)
    exclusive_bounds: bool = False  # True: start/end exclude their value (OKX before/after)
    time_format: TimeFormat = TimeFormat.MS
    recent_rows: int | None = None  # the endpoint holds only this many newest rows
    #: NEWEST: a range wider than a page is answered (clamped), so gaps can be crossed with
    #: growing ranges (OKX); False where it is refused (Coinbase) or undocumented
    wide_ranges: bool = False
    extra: tuple[tuple[str, str], ...] = ()  # constant parameters


@dataclass(frozen=True, slots=True)
class CandleColumns:
    """Positions in a candle row (every venue sends candles as arrays)."""

    ts: int
    open: int
    high: int
    low: int
    close: int
    volume: Mapping[MarketKind, int]  # base-currency volume: its slot differs by market kind


@dataclass(frozen=True, slots=True)
class OhlcvSpec:
    queries: Mapping[MarketKind, tuple[RangeQuery, ...]]  # preferred first (see recent_rows)
    interval_param: str
    intervals: Mapping[str, str]  # ccxt timeframe -> the venue's interval code
    rows_path: tuple[str, ...]  # keys leading to the row list in the answer
    columns: CandleColumns
    newest_first: bool
    ts_unit_ms: int = 1  # 1000 when candle times are seconds


@dataclass(frozen=True, slots=True)
class TradeFields:
    """Keys of a trade object and how to read them."""

    id: str
    ts: str
    price: str
    amount: str
    side: str
    sides: Mapping[Any, str]  # raw side value -> taker side ("buy"/"sell")
    ts_format: TimeFormat = TimeFormat.MS


@dataclass(frozen=True, slots=True)
class TradesSpec:
    paging: TradesPaging
    methods: Mapping[MarketKind, str]
    max_rows: Mapping[MarketKind, int]
    rows_path: tuple[str, ...]
    fields: TradeFields
    newest_first: bool
    limit_param: str = "limit"
    #: FROM_ID: the id to start from, and the (inclusive) end time that finds the last trade
    #: before the range; BACKWARD: the (exclusive) end time of a window's first page
    from_id_param: str | None = None
    end_time_param: str | None = None
    #: BACKWARD / ID_CURSORS: the id cursors (older than / newer than an id)
    older_than_id_param: str | None = None
    newer_than_id_param: str | None = None
    #: BACKWARD: constant parameters selecting paging by time or by id (OKX ``type``)
    by_time_extra: tuple[tuple[str, str], ...] = ()
    by_id_extra: tuple[tuple[str, str], ...] = ()
    #: BACKWARD: how much time is gathered (newest first) before it is yielded oldest first
    window_ms: int = HOUR_MS
    #: trade ids are consecutive integers per market (Binance aggTrades), so a missing id is a
    #: missing trade and the ``gaps`` check can report id ranges
    sequential_ids: bool = False


@dataclass(frozen=True, slots=True)
class FundingSpec:
    interval_ms: int  # the usual funding interval (windows of NEWEST queries are sized by it)
    queries: Mapping[MarketKind, RangeQuery]
    rows_path: tuple[str, ...]
    ts_field: str
    rate_fields: tuple[str, ...]  # the first non-empty one is the rate (OKX: realizedRate)
    newest_first: bool


@dataclass(frozen=True, slots=True)
class WsFundingSpec:
    """The perpetuals' stream of the announced funding rate (and mark price) that ccxt.pro
    offers on a venue: the watch method, and where the structure's ``info`` (the venue's own
    message) keeps the rate announced for the next settlement, that settlement's time and the
    mark price. The stream stores no announced rate: when the next funding time moves on, the
    settled rate is fetched over REST (``stream.funding``)."""

    method: str  # ccxt.pro method, called with one symbol
    rate: str
    next_time: str  # epoch ms of the settlement the announced rate is for
    mark: str | None = None  # None: this channel carries no mark price


class OpenInterestValue(Enum):
    """Where the quote-currency value of open interest comes from."""

    FIELD = "field"  # the venue reports it (``OpenInterestSpec.value_field``)
    #: contracts x ccxt's ``contractSize``: exact for inverse contracts, whose size is quote
    #: currency (Binance COIN-M reports the base-coin value instead, Bybit none at all)
    CONTRACT_NOTIONAL = "contract_notional"
    NONE = "none"  # not reported: NaN


@dataclass(frozen=True, slots=True)
class OpenInterestSpec:
    """Open-interest history of perpetual swaps: contracts outstanding per period, and their
    value in the quote currency where the venue reports or implies it."""

    period_ms: int  # the period loaded (5 minutes); NEWEST windows are sized by it
    period_param: str
    period_code: str  # the venue's code for ``period_ms``
    queries: Mapping[MarketKind, RangeQuery]
    #: the parameter naming the instrument and the keys leading to its value in ccxt's market
    #: (Binance COIN-M asks for the ``pair``, not the market id)
    instrument: Mapping[MarketKind, tuple[str, tuple[str, ...]]]
    rows_path: tuple[str, ...]
    ts_field: str | int  # a key of a row object, or a position in a row array
    amount_field: str | int  # contracts outstanding
    value_field: str | int | None
    value: Mapping[MarketKind, OpenInterestValue]
    newest_first: bool
    #: how far back the venue keeps the history (Binance: 30 days); None: no documented limit
    history_ms: int | None = None


@dataclass(frozen=True, slots=True)
class RateBudget:
    """One of the exchange's published request budgets, shared by every process on the
    machine, or behind one egress IP through Redis (``exchanges.budget``). ``costs`` is what each ccxt implicit method draws from it
    (Binance weights; 1 elsewhere); methods not listed do not draw on this budget. Where the
    exchange prices a request by its ``limit`` parameter (Binance futures klines),
    ``limit_costs`` holds ``(highest limit, cost)`` steps, ascending, and ``costs`` the price
    of a request without ``limit``. A budget counted per IP *and* instrument or endpoint is
    kept per IP here: stricter than the exchange, never looser."""

    name: str
    capacity: int
    window_ms: int
    scope: str  # what the exchange counts per: "IP", "IP and endpoint", ...
    costs: Mapping[str, int]
    limit_costs: Mapping[str, tuple[tuple[int, int], ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def cost(self, method: str, params: Mapping[str, Any] | None = None) -> int:
        """What one request of ``method`` with ``params`` draws (0: not on this budget)."""
        steps = self.limit_costs.get(method)
        limit = (params or {}).get("limit")
        if steps and limit is not None:
            for highest, cost in steps:
                if int(limit) <= highest:
                    return cost
            return steps[-1][1]
        return self.costs.get(method, 0)


@dataclass(frozen=True, slots=True)
class VenueSpec:
    id: str  # ccxt exchange id
    market_types: frozenset[str]  # of "spot", "swap"
    symbol_param: str  # the parameter that carries ccxt's market id
    market_params: Mapping[MarketKind, tuple[tuple[str, str], ...]]  # e.g. Bybit's category
    ohlcv: OhlcvSpec
    trades: TradesSpec
    funding: FundingSpec | None
    quirks: frozenset[Quirk]
    rate_budgets: tuple[RateBudget, ...]
    ccxt_options: Mapping[str, Any]  # merged into the ccxt client's options (make_client)
    #: a header holding the epoch ms when a rate-limit window resets (besides Retry-After)
    rate_limit_reset_header: str | None = None
    #: the implicit methods ccxt's ``load_markets`` sends with ``ccxt_options`` (one entry
    #: per request) and the one behind ``fetch_time``: they draw on the budgets too
    markets_requests: tuple[str, ...] = ()
    time_request: str | None = None
    #: None: the venue publishes no open-interest history (no perpetuals: Coinbase)
    open_interest: OpenInterestSpec | None = None
    #: merged into the ccxt.pro client's options (``make_stream_client``): the streams that
    #: match what the REST loader stores (Binance: aggTrade ids, as its REST trades)
    ws_options: Mapping[str, Any] = field(default_factory=dict)
    #: the fixed depths of the venue's book channels (Bybit ``orderbook.<n>``), smallest
    #: first: the stream watches the smallest that holds the levels it stores; empty: no
    #: limit is passed (``stream.books.watch_limit`` says why per venue)
    ws_book_depths: tuple[int, ...] = ()
    #: the book channel is served to signed subscriptions only (Coinbase Exchange ``level2``)
    ws_book_signed: bool = False
    #: the announced funding and mark price of perpetuals over WebSocket (None: no perpetuals)
    ws_funding: WsFundingSpec | None = None

    @property
    def timeframes(self) -> tuple[str, ...]:
        return tuple(self.ohlcv.intervals)

    def has(self, quirk: Quirk) -> bool:
        return quirk in self.quirks

    @property
    def trade_history(self) -> bool:
        """Whether public trades can be loaded for a past window over REST. Not on Bybit (the
        newest 60 spot or 1,000 swap trades are all it serves): there the stream is the only
        source of trades (``defs.stream_fed``)."""
        return self.trades.paging is not TradesPaging.RECENT_ONLY

    @property
    def funding_interval_ms(self) -> int | None:
        return self.funding.interval_ms if self.funding else None

    @property
    def open_interest_period_ms(self) -> int | None:
        """The period of the open interest loaded (None: the venue has none)."""
        return self.open_interest.period_ms if self.open_interest else None

    def max_candles_per_request(self, kind: MarketKind) -> dict[str, int]:
        """Rows one candle request may return, by ccxt method (OKX has two endpoints)."""
        return {q.method: q.max_rows for q in self.ohlcv.queries.get(kind, ())}
