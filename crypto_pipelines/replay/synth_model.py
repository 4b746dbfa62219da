"""The market model behind synthetic tapes: prices, activity, gaps, trades, books, funding
(open interest: ``synth_open_interest``).

Everything is integer counts of a market's tick (prices) or step (amounts) so that candles
aggregate exactly and render without float noise. Randomness is drawn one UTC-relative day
at a time from a generator seeded by (seed, purpose, day): a series draws the same numbers
whatever chunking writes it, and a shorter tape is a prefix of a longer one with the same
seed. Each purpose has its own stream, so turning trades or books off leaves prices alone.

Price model, per minute:
- a shared *market factor*: fat-tailed shocks (Student t, 5 dof) whose scale follows a
  log-volatility AR(1) (half-life about 2 h). That is a stochastic-volatility cousin of
  GARCH(1,1) with the same clustering, chosen because an AR(1) runs vectorized in numpy
  while a GARCH recursion needs a Python loop per minute;
- each *asset* (BTC, ETH, ...) moves with the market factor (correlation 0.8) plus its own
  shocks, scaled by its daily volatility and an intraday/weekend seasonality, and reverts
  very slowly (half-life a year) to its starting level, so benchmark tapes spanning years
  stay at plausible prices;
- each *venue series* is the pair's path (base over quote) plus a fixed per-venue basis
  and a fast mean-reverting deviation of about 1 bp, so the same pair on two venues stays
  within a few bps, as the cross-exchange checks expect.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from crypto_pipelines.domain.timeframes import DAY_MS, HOUR_MS
from crypto_pipelines.replay.synth_format import CandleArrays, IntArray

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

MINUTES_PER_DAY = 1440
FUNDING_MS = 8 * HOUR_MS

# (starting USD price, daily volatility) of assets the generator knows; other currencies get
# a level derived from their name and a generic volatility.
ASSETS: dict[str, tuple[float, float]] = {
    "BTC": (42000.0, 0.025),
    "ETH": (2300.0, 0.032),
    "SOL": (100.0, 0.05),
    "BNB": (310.0, 0.03),
    "XRP": (0.62, 0.035),
    "DOGE": (0.09, 0.045),
    "ADA": (0.6, 0.04),
    "LTC": (72.0, 0.035),
}
# Currencies treated as constant-priced in USD (stablecoins and fiat).
STABLE: dict[str, float] = {
    "USD": 1.0,
    "USDT": 1.0,
    "USDC": 1.0,
    "FDUSD": 1.0,
    "BUSD": 1.0,
    "DAI": 1.0,
    "TUSD": 1.0,
    "EUR": 1.09,
    "GBP": 1.27,
}
RHO = 0.8  # asset correlation with the market factor
T_DOF = 5.0
VOL_PHI = 0.995  # log-volatility AR(1) per minute
VOL_SD = 0.5  # stationary sd of log-volatility
REVERT_PHI = 1.0 - math.log(2) / (365 * MINUTES_PER_DAY)
DEV_PHI = 0.9  # venue deviation AR(1) per minute
DEV_SD = 1.0e-4  # stationary sd of the venue deviation (1 bp)
SWAP_PREMIUM = 1.0e-4
FUNDING_MEAN = 1.0e-4
FUNDING_PHI = 0.85
FUNDING_SD = 5.0e-5
FUNDING_VENUE_SD = 1.0e-5
MEDIAN_NOTIONAL_USD = {"spot": 2000.0, "swap": 5000.0}
VENUE_ACTIVITY = {"binance": 1.0, "okx": 0.7, "bybit": 0.7, "coinbaseexchange": 0.5}


def asset_level(currency: str) -> tuple[float, float]:
    """(USD level, daily volatility) of a currency; unknown names get a stable made-up
    level between 0.1 and 100000 so that any symbol a user asks for can be generated."""
    if currency in STABLE:
        return STABLE[currency], 0.0
    if currency in ASSETS:
        return ASSETS[currency]
    crc = zlib.crc32(currency.encode())
    return 10 ** ((crc % 600) / 100 - 1), 0.05


def stream(seed: int, key: str, day: int) -> np.random.Generator:
    """The random stream of one purpose on one day."""
    return np.random.Generator(
        np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(key.encode()), day]))
    )


def daily(
    seed: int,
    key: str,
    d0: int,
    d1: int,
    draw: Callable[[np.random.Generator, int], npt.NDArray[np.generic]],
) -> npt.NDArray[np.generic]:
    """``draw(rng, day)`` for each day in [d0, d1), concatenated."""
    return np.concatenate([draw(stream(seed, key, d), d) for d in range(d0, d1)])


def ar1(shocks: FloatArray, phi: float, x0: float) -> FloatArray:
    """x[t] = phi * x[t-1] + shocks[t] starting after x0, without a Python loop per step:
    in a block, x[t] = phi**t * (phi * x0 + cumsum(shocks * phi**-t)). Blocks are short
    enough that phi**-t stays far from overflow."""
    out = np.empty_like(shocks)
    block = max(1, len(shocks) if phi >= 1.0 else int(30.0 / -math.log(phi)))
    x = x0
    for i in range(0, len(shocks), block):
        e = shocks[i : i + block]
        t = np.arange(len(e), dtype=np.float64)
        pw = phi**t
        seg = pw * (phi * x + np.cumsum(e / pw))
        out[i : i + block] = seg
        x = float(seg[-1])
    return out


def _t_shocks(rng: np.random.Generator, n: int) -> FloatArray:
    return rng.standard_t(T_DOF, n) / math.sqrt(T_DOF / (T_DOF - 2.0))


def seasonality(minute_ts: IntArray) -> tuple[FloatArray, FloatArray]:
    """(volatility, activity) multipliers by time of day and week: busiest around the US
    open (15:00 UTC), quietest around 03:00 UTC, quieter at weekends."""
    hour = (minute_ts % DAY_MS) / HOUR_MS
    wave = np.cos(2 * np.pi * (hour - 15.0) / 24.0)
    weekday = ((minute_ts // DAY_MS) + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    weekend = weekday >= 5
    vol = (1.0 + 0.3 * wave) * np.where(weekend, 0.75, 1.0)
    activity = (1.0 + 0.6 * wave) * np.where(weekend, 0.6, 1.0)
    return vol, activity


@dataclass
class Instrument:
    """One market as the model needs it: ticks and steps as floats for the arithmetic."""

    exchange: str
    symbol: str
    base: str
    quote: str
    kind: str  # "spot" | "linear" | "inverse"
    tick: float
    step: float
    min_steps: int
    contract_size: float


@dataclass
class MarketState:
    """The shared market factor of one tape; every series rebuilds it from the seed."""

    seed: int
    log_vol: float = 0.0

    def chunk(self, d0: int, d1: int) -> tuple[FloatArray, FloatArray]:
        """(shocks, volatility multiplier with mean about 1) for each minute."""
        shocks = daily(self.seed, "market:z", d0, d1, lambda r, _d: _t_shocks(r, MINUTES_PER_DAY))
        innov_sd = VOL_SD * math.sqrt(1.0 - VOL_PHI**2)
        innov = daily(
            self.seed, "market:vol", d0, d1, lambda r, _d: r.normal(0.0, innov_sd, MINUTES_PER_DAY)
        )
        log_vol = ar1(innov.astype(np.float64), VOL_PHI, self.log_vol)
        self.log_vol = float(log_vol[-1])
        return shocks.astype(np.float64), np.exp(log_vol - VOL_SD**2 / 2.0)


@dataclass
class AssetState:
    """One currency's USD log price path; constant for stablecoins and fiat."""

    seed: int
    currency: str
    level: float = field(init=False)
    daily_vol: float = field(init=False)
    deviation: float = 0.0

    def __post_init__(self) -> None:
        self.level, self.daily_vol = asset_level(self.currency)

    def chunk(
        self, d0: int, d1: int, market: tuple[FloatArray, FloatArray], vol_season: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """(log price at each minute's end, per-minute volatility)."""
        n = (d1 - d0) * MINUTES_PER_DAY
        if self.daily_vol == 0.0:
            return np.full(n, math.log(self.level)), np.zeros(n)
        own = daily(
            self.seed, f"asset:{self.currency}", d0, d1, lambda r, _d: _t_shocks(r, MINUTES_PER_DAY)
        )
        shocks, vol_mult = market
        sigma = self.daily_vol / math.sqrt(MINUTES_PER_DAY) * vol_season * vol_mult
        returns = sigma * (RHO * shocks + math.sqrt(1.0 - RHO**2) * own.astype(np.float64))
        path = ar1(returns, REVERT_PHI, self.deviation)
        self.deviation = float(path[-1])
        return math.log(self.level) + path, sigma


@dataclass
class ChunkData:
    """What one series produced for one chunk of days; trade/book/funding arrays are empty
    when the spec turns them off."""

    candles: CandleArrays
    trades: tuple[IntArray, IntArray, IntArray, IntArray, IntArray] | None = None
    books: tuple[IntArray, IntArray, IntArray, IntArray, IntArray] | None = None
    funding: tuple[IntArray, IntArray] | None = None
    #: ts, contracts in amount steps, quote value in units of the model's value_decimals
    open_interest: tuple[IntArray, IntArray, IntArray] | None = None


@dataclass
class ModelOptions:
    """The spec's knobs the model reads (kept apart from SynthSpec to avoid an import cycle)."""

    seed: int
    start_ms: int
    trades: bool
    books: bool
    funding: bool
    gap_rate: float
    outages_per_day: float
    trades_per_minute: float
    book_every_minutes: int
    book_depth: int
    open_interest: bool = True
