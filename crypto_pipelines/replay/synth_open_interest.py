"""Open interest of a synthetic perpetual: a snapshot every 5 minutes (``open_interest.csv``).

The notional held open wanders around a level that depends on the asset and the venue (a few
billion USD for BTC on Binance, less elsewhere) as a slowly mean-reverting log AR(1) (half-life
two days, about 15% spread), drawn per day from its own stream like every other series, so a
tape is deterministic per seed and a shorter tape is a prefix of a longer one. Contracts are
that notional divided by a contract's USD worth at the snapshot's price, on the market's
amount step; the value is contracts x contract size x price in the quote currency for linear
swaps and contracts x contract size for inverse ones (their contracts are sized in it).
"""

from __future__ import annotations

import math

import numpy as np

from crypto_pipelines.domain.timeframes import DAY_MS, MINUTE_MS
from crypto_pipelines.replay.synth_format import IntArray
from crypto_pipelines.replay.synth_model import (
    MINUTES_PER_DAY,
    STABLE,
    VENUE_ACTIVITY,
    FloatArray,
    Instrument,
    ar1,
    daily,
)

PERIOD_MS = 5 * MINUTE_MS
#: USD held open in a venue's perpetual at full activity; other assets get the default
NOTIONAL_USD = {"BTC": 5.0e9, "ETH": 2.5e9}
_DEFAULT_NOTIONAL_USD = 5.0e7
_PHI = 1.0 - math.log(2) / (2 * DAY_MS / PERIOD_MS)
_SD = 0.15
_MAX_STEPS = 10**15  # keeps amounts far from int64 overflow

OpenInterestArrays = tuple[IntArray, IntArray, IntArray]


class OpenInterestModel:
    """State carried from chunk to chunk for one perpetual's open interest."""

    def __init__(self, seed: int, inst: Instrument, key: str) -> None:
        self.seed = seed
        self.inst = inst
        self.key = key
        self.state = 0.0
        activity = VENUE_ACTIVITY.get(inst.exchange, 0.5)
        self.level_usd = NOTIONAL_USD.get(inst.base, _DEFAULT_NOTIONAL_USD) * activity
        #: fraction digits of the value: cents in a fiat or stablecoin quote, else 8
        self.value_decimals = 2 if inst.quote in STABLE else 8

    def chunk(
        self, d0: int, d1: int, minute_ts: IntArray, log_price: FloatArray, usd_base: FloatArray
    ) -> OpenInterestArrays:
        """(ts, contracts in amount steps, quote value in units of ``value_decimals``) at
        each 5-minute mark of days [d0, d1); ``log_price`` is the log quote price and
        ``usd_base`` the base's USD price at the start of each minute."""
        marks = np.flatnonzero(minute_ts % PERIOD_MS == 0)
        innov_sd = _SD * math.sqrt(1.0 - _PHI**2)

        def draw(r: np.random.Generator, d: int) -> FloatArray:
            lo = (d - d0) * MINUTES_PER_DAY
            count = int(np.count_nonzero((marks >= lo) & (marks < lo + MINUTES_PER_DAY)))
            return r.normal(0.0, innov_sd, count)

        innov = daily(self.seed, f"oi:{self.key}", d0, d1, draw).astype(np.float64)
        x = ar1(innov, _PHI, self.state)
        if len(x):
            self.state = float(x[-1])
        inst = self.inst
        price = np.exp(log_price[marks])
        quote_usd = usd_base[marks] / price
        size = inst.contract_size
        contract_usd = size * usd_base[marks] if inst.kind == "linear" else size * quote_usd
        contracts = self.level_usd * np.exp(x) / contract_usd
        steps = np.clip(np.rint(contracts / inst.step), 1, _MAX_STEPS).astype(np.int64)
        held = steps * inst.step * size
        value = held * price if inst.kind == "linear" else held
        units = np.rint(value * 10**self.value_decimals).astype(np.int64)
        return minute_ts[marks], steps, units
