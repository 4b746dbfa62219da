"""One venue series of a synthetic tape (e.g. binance BTC/USDT:USDT), chunk by chunk.

With trades on, every trade is generated first (times, taker sides, prices on a Brownian
bridge between the minute's start and end prices, sizes on the amount step) and the 1m
candles are *derived* from them, so candles and trades can never disagree and a minute
without trades is a missing candle. With trades off (benchmark tapes), 1m candles are drawn
directly, vectorized, from the same price path. Missing minutes come from rare quiet
minutes per series plus a few multi-minute outages per exchange, shared by its symbols.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import numpy as np

from crypto_pipelines.domain.timeframes import MINUTE_MS
from crypto_pipelines.replay.synth_format import CandleArrays, IntArray
from crypto_pipelines.replay.synth_model import (
    DEV_PHI,
    DEV_SD,
    FUNDING_MEAN,
    FUNDING_MS,
    FUNDING_PHI,
    FUNDING_SD,
    FUNDING_VENUE_SD,
    MEDIAN_NOTIONAL_USD,
    MINUTES_PER_DAY,
    RHO,
    SWAP_PREMIUM,
    VENUE_ACTIVITY,
    AssetState,
    BoolArray,
    ChunkData,
    FloatArray,
    Instrument,
    MarketState,
    ModelOptions,
    ar1,
    daily,
    seasonality,
    stream,
)
from crypto_pipelines.replay.synth_open_interest import OpenInterestModel

_FUNDING_UNIT = 1e8  # funding rates are written with 8 decimals
_FUNDING_CAP = 0.0075
_MAX_STEPS = 10**15  # keeps any amount far from int64 overflow


def _empty_candles() -> CandleArrays:
    e = np.empty(0, dtype=np.int64)
    return (e, e, e, e, e, e)


class SeriesModel:
    """State carried from chunk to chunk for one (exchange, symbol)."""

    def __init__(self, opts: ModelOptions, inst: Instrument) -> None:
        self.opts = opts
        self.inst = inst
        self.key = f"{inst.exchange}:{inst.symbol}"
        seed = opts.seed
        self.market = MarketState(seed)
        self.base = AssetState(seed, inst.base)
        self.quote = AssetState(seed, inst.quote)
        premium = SWAP_PREMIUM if inst.kind != "spot" else 0.0
        self.basis = float(stream(seed, f"basis:{self.key}", 0).normal(0.0, 0.5e-4)) + premium
        self.deviation = 0.0
        self.last_log: float | None = None
        self.next_id = 100_000_000 + zlib.crc32(self.key.encode()) % 900_000_000
        self.funding_state = 0.0
        self.open_interest = OpenInterestModel(seed, inst, self.key)
        symbol_factor = 1.5 if inst.kind != "spot" else 1.0
        symbol_factor *= {"BTC": 1.0, "ETH": 0.8}.get(inst.base, 0.4)
        self.rate = opts.trades_per_minute * VENUE_ACTIVITY.get(inst.exchange, 0.5) * symbol_factor
        self.notional = MEDIAN_NOTIONAL_USD["spot" if inst.kind == "spot" else "swap"]

    # -- the path ----------------------------------------------------------------------------
    def chunk(self, d0: int, d1: int) -> ChunkData:
        """Candles (and trades, books, funding as configured) for days [d0, d1)."""
        opts = self.opts
        n = (d1 - d0) * MINUTES_PER_DAY
        minute_ts = (
            opts.start_ms + (d0 * MINUTES_PER_DAY + np.arange(n, dtype=np.int64)) * MINUTE_MS
        )
        vol_season, activity = seasonality(minute_ts)
        market = self.market.chunk(d0, d1)
        log_base, sig_base = self.base.chunk(d0, d1, market, vol_season)
        log_quote, sig_quote = self.quote.chunk(d0, d1, market, vol_season)
        sigma = np.sqrt(
            np.maximum(sig_base**2 + sig_quote**2 - 2 * RHO * sig_base * sig_quote, 0.0)
        )
        innov_sd = DEV_SD * math.sqrt(1.0 - DEV_PHI**2)
        innov = daily(
            opts.seed,
            f"dev:{self.key}",
            d0,
            d1,
            lambda r, _d: r.normal(0.0, innov_sd, MINUTES_PER_DAY),
        )
        deviation = ar1(innov.astype(np.float64), DEV_PHI, self.deviation)
        self.deviation = float(deviation[-1])
        log_end = log_base - log_quote + self.basis + deviation
        first = log_end[0] if self.last_log is None else self.last_log
        log_start = np.concatenate(([first], log_end[:-1]))
        self.last_log = float(log_end[-1])
        empty = self._empty(d0, d1)
        lam = self.rate * activity * market[1] ** 0.7
        usd_base = np.exp(log_base)
        out = ChunkData(_empty_candles())
        if opts.trades:
            out.candles, out.trades = self._trades(
                d0, d1, minute_ts, log_start, log_end, sigma, lam, usd_base, empty
            )
        else:
            out.candles = self._candles(
                d0, d1, minute_ts, log_start, log_end, sigma, lam, usd_base, empty
            )
        if opts.books:
            out.books = self._books(d0, d1, minute_ts, log_start, usd_base)
        if opts.funding and self.inst.kind != "spot":
            out.funding = self._funding(d0, d1, minute_ts)
        if opts.open_interest and self.inst.kind != "spot":
            out.open_interest = self.open_interest.chunk(d0, d1, minute_ts, log_start, usd_base)
        return out

    def _empty(self, d0: int, d1: int) -> BoolArray:
        """Minutes with no trades: rare quiet minutes of this series, and outages of its
        exchange (drawn from the exchange's stream, so all its symbols go dark together)."""
        rate = self.opts.gap_rate
        quiet = daily(
            self.opts.seed,
            f"quiet:{self.key}",
            d0,
            d1,
            lambda r, _d: r.random(MINUTES_PER_DAY) < rate,
        )
        per_day = self.opts.outages_per_day

        def outages(r: np.random.Generator, _d: int) -> BoolArray:
            mask = np.zeros(MINUTES_PER_DAY, dtype=np.bool_)
            count = int(r.poisson(per_day))
            for begin, length in zip(
                r.integers(0, MINUTES_PER_DAY, count), r.integers(3, 21, count), strict=True
            ):
                mask[begin : begin + length] = True
            return mask

        outage = daily(self.opts.seed, f"outage:{self.inst.exchange}", d0, d1, outages)
        return np.asarray(quiet, dtype=np.bool_) | np.asarray(outage, dtype=np.bool_)

    def _steps(self, base_amount: FloatArray, price: FloatArray) -> IntArray:
        """Amounts in the market's unit (base currency, or contracts for swaps) as step counts
        of at least the minimum amount."""
        inst = self.inst
        if inst.kind == "spot":
            units = base_amount
        elif inst.kind == "linear":
            units = base_amount / inst.contract_size
        else:  # inverse: contracts of contract_size quote currency
            units = base_amount * price / inst.contract_size
        steps = np.rint(units / inst.step)
        return np.clip(steps, inst.min_steps, _MAX_STEPS).astype(np.int64)

    def _ticks(self, log_price: FloatArray) -> IntArray:
        return np.maximum(np.rint(np.exp(log_price) / self.inst.tick), 1).astype(np.int64)

    # -- trades and the candles derived from them ---------------------------------------------
    def _trades(
        self,
        d0: int,
        d1: int,
        minute_ts: IntArray,
        log_start: FloatArray,
        log_end: FloatArray,
        sigma: FloatArray,
        lam: FloatArray,
        usd_base: FloatArray,
        empty: BoolArray,
    ) -> tuple[CandleArrays, tuple[IntArray, IntArray, IntArray, IntArray, IntArray]]:
        seed = self.opts.seed

        def count(r: np.random.Generator, d: int) -> IntArray:
            i = (d - d0) * MINUTES_PER_DAY
            return np.asarray(
                1 + r.poisson(np.maximum(lam[i : i + MINUTES_PER_DAY] - 1.0, 0.0)), dtype=np.int64
            )

        counts = np.asarray(daily(seed, f"count:{self.key}", d0, d1, count), dtype=np.int64)
        counts[empty] = 0
        parts: list[tuple[IntArray, FloatArray, FloatArray, FloatArray, FloatArray]] = []
        for d in range(d0, d1):
            i = (d - d0) * MINUTES_PER_DAY
            total = int(counts[i : i + MINUTES_PER_DAY].sum())
            r = stream(seed, f"trades:{self.key}", d)
            parts.append(
                (
                    r.integers(0, MINUTE_MS, total, dtype=np.int64),
                    r.standard_normal(total),
                    r.standard_normal(MINUTES_PER_DAY),
                    r.random(total),
                    r.standard_normal(total),
                )
            )
        raw_offsets, bridge_n, end_n, side_u, size_n = (
            np.concatenate(p) for p in zip(*parts, strict=True)
        )
        total = len(raw_offsets)
        if total == 0:
            e = np.empty(0, dtype=np.int64)
            return _empty_candles(), (e, e, e, e, e)
        minute = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
        offsets = np.sort(minute * MINUTE_MS + raw_offsets) - minute * MINUTE_MS
        busy = np.flatnonzero(counts)
        busy_counts = counts[busy]
        starts = np.cumsum(busy_counts) - busy_counts
        ends = starts + busy_counts - 1
        # Brownian bridge from the minute's start to its end price, sampled at trade times.
        u = offsets / MINUTE_MS
        u_prev = np.concatenate(([0.0], u[:-1]))
        u_prev[starts] = 0.0
        dw = np.sqrt(u - u_prev) * bridge_n
        cum = np.cumsum(dw)
        w = cum - np.repeat(cum[starts] - dw[starts], busy_counts)
        w_end = np.repeat(w[ends] + np.sqrt(1.0 - u[ends]) * end_n[busy], busy_counts)
        x = (
            log_start[minute]
            + u * (log_end[minute] - log_start[minute])
            + sigma[minute] * (w - u * w_end)
        )
        # Takers lean with the move; buyers lift the ask, sellers hit the bid.
        buy = side_u < np.where(dw > 0, 0.7, 0.3)
        mid = np.exp(x) / self.inst.tick
        price = np.maximum(np.where(buy, np.ceil(mid), np.floor(mid)), 1).astype(np.int64)
        amount = self._steps(self.notional / usd_base[minute] * np.exp(1.2 * size_n), np.exp(x))
        ids = self.next_id + np.arange(total, dtype=np.int64)
        self.next_id += total
        trades = (minute_ts[minute] + offsets, ids, (~buy).astype(np.int64), price, amount)
        candles: CandleArrays = (
            minute_ts[busy],
            price[starts],
            np.maximum.reduceat(price, starts),
            np.minimum.reduceat(price, starts),
            price[ends],
            np.add.reduceat(amount, starts),
        )
        return candles, trades

    # -- candles without trades (benchmark tapes) ---------------------------------------------
    def _candles(
        self,
        d0: int,
        d1: int,
        minute_ts: IntArray,
        log_start: FloatArray,
        log_end: FloatArray,
        sigma: FloatArray,
        lam: FloatArray,
        usd_base: FloatArray,
        empty: BoolArray,
    ) -> CandleArrays:
        draws = daily(
            self.opts.seed,
            f"candles:{self.key}",
            d0,
            d1,
            lambda r, _d: r.standard_normal((MINUTES_PER_DAY, 4)),
        ).astype(np.float64)
        log_open = log_start + 0.1 * sigma * draws[:, 0]
        top = np.maximum(log_open, log_end) + 0.5 * sigma * np.abs(draws[:, 1])
        bottom = np.minimum(log_open, log_end) - 0.5 * sigma * np.abs(draws[:, 2])
        o, c = self._ticks(log_open), self._ticks(log_end)
        h = np.maximum(np.maximum(o, c), self._ticks(top))
        lo = np.minimum(np.minimum(o, c), self._ticks(bottom))
        base_volume = lam * 1.5 * self.notional / usd_base * np.exp(0.6 * draws[:, 3])
        v = self._steps(base_volume, np.exp(log_end))
        keep = ~empty
        return (minute_ts[keep], o[keep], h[keep], lo[keep], c[keep], v[keep])

    # -- order books ---------------------------------------------------------------------------
    def _books(
        self, d0: int, d1: int, minute_ts: IntArray, log_start: FloatArray, usd_base: FloatArray
    ) -> tuple[IntArray, IntArray, IntArray, IntArray, IntArray]:
        """Snapshots on the book grid around the price prevailing at each mark: spread of one
        tick mostly, levels one or a few ticks apart, depth growing away from the touch."""
        every = self.opts.book_every_minutes * MINUTE_MS
        depth = self.opts.book_depth
        marks = np.flatnonzero(minute_ts % every == 0)
        draws: list[tuple[IntArray, IntArray, FloatArray]] = []
        for d in range(d0, d1):
            lo = (d - d0) * MINUTES_PER_DAY
            count = int(np.count_nonzero((marks >= lo) & (marks < lo + MINUTES_PER_DAY)))
            r = stream(self.opts.seed, f"book:{self.key}", d)
            extra = np.where(r.random(count) < 0.3, r.integers(1, 4, count), 0)
            gaps = 1 + r.poisson(0.4, (count, 2, max(depth - 1, 0)))
            sizes = r.standard_normal((count, 2, depth))
            draws.append(
                (np.asarray(extra, dtype=np.int64), np.asarray(gaps, dtype=np.int64), sizes)
            )
        extra, gaps, sizes = (np.concatenate(p) for p in zip(*draws, strict=True))
        spread = 1 + extra
        mid = np.exp(log_start[marks]) / self.inst.tick
        bid0 = np.floor(mid).astype(np.int64) - (spread - 1) // 2
        ask0 = bid0 + spread
        zero = np.zeros((len(marks), 1), dtype=np.int64)
        bids = bid0[:, None] - np.concatenate((zero, np.cumsum(gaps[:, 0], axis=1)), axis=1)
        asks = ask0[:, None] + np.concatenate((zero, np.cumsum(gaps[:, 1], axis=1)), axis=1)
        scale = (
            2.0
            * self.notional
            / usd_base[marks][:, None]
            * (1.0 + 0.15 * np.arange(depth))[None, :]
        )
        price = np.exp(log_start[marks])[:, None]
        bid_amt = self._steps(scale * np.exp(0.9 * sizes[:, 0]), price)
        ask_amt = self._steps(scale * np.exp(0.9 * sizes[:, 1]), price)
        return minute_ts[marks], bids, bid_amt, asks, ask_amt

    # -- funding -------------------------------------------------------------------------------
    def _funding(self, d0: int, d1: int, minute_ts: IntArray) -> tuple[IntArray, IntArray]:
        """Rates at 00:00, 08:00 and 16:00 UTC: a persistent AR(1) around 0.01% shared by the
        asset across venues, plus a little venue noise; in units of 1e-8."""
        marks = np.flatnonzero(minute_ts % FUNDING_MS == 0)
        seed = self.opts.seed
        innov_sd = FUNDING_SD * math.sqrt(1.0 - FUNDING_PHI**2)

        def per_day(sd: float) -> Callable[[np.random.Generator, int], FloatArray]:
            def draw(r: np.random.Generator, d: int) -> FloatArray:
                lo = (d - d0) * MINUTES_PER_DAY
                count = int(np.count_nonzero((marks >= lo) & (marks < lo + MINUTES_PER_DAY)))
                return r.normal(0.0, sd, count)

            return draw

        common_innov = daily(seed, f"funding:{self.inst.base}", d0, d1, per_day(innov_sd))
        venue = daily(seed, f"funding-venue:{self.key}", d0, d1, per_day(FUNDING_VENUE_SD))
        common = ar1(common_innov.astype(np.float64), FUNDING_PHI, self.funding_state)
        if len(common):
            self.funding_state = float(common[-1])
        rate = np.clip(
            FUNDING_MEAN + common + venue.astype(np.float64), -_FUNDING_CAP, _FUNDING_CAP
        )
        return minute_ts[marks], np.rint(rate * _FUNDING_UNIT).astype(np.int64)
