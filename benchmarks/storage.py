"""Storage upsert throughput: ``MarketStore.upsert`` of a million 1m candles.

Target (issue 3): well over 100,000 rows/s into SQLite on this machine. The end-to-end
load target is 100k candles/s including fetching, so storage has to be several times
faster than that. Measured per backend:

* one call of 1,000,000 rows, validated (what a bulk back-fill does);
* the same rows again (a re-run: every row conflicts and nothing changes);
* 100 calls of 10,000 rows (what steady incremental loading does);
* Pandera validation alone, per 100,000 rows (its share of the above).

PostgreSQL runs too when ``CRYPTO_PIPELINES_TEST_PG_URL`` is set, in a scratch schema
that is dropped afterwards.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd

from benchmarks.common import Result
from crypto_pipelines.domain.validation import validate_frame
from crypto_pipelines.storage import MarketStore, make_engine
from crypto_pipelines.storage.engine import normalize_url

T0 = 1_577_836_800_000  # 2020-01-01
MIN = 60_000
TARGET = 100_000
PG_URL_ENV = "CRYPTO_PIPELINES_TEST_PG_URL"


def candle_frame(n: int, symbols: int = 4, seed: int = 1) -> pd.DataFrame:
    """``n`` valid 1m candles spread over ``symbols`` series."""
    rng = np.random.default_rng(seed)
    per = n // symbols
    price = 30_000 + rng.normal(0, 5, per * symbols).cumsum()
    spread = rng.random(per * symbols)
    return pd.DataFrame(
        {
            "exchange": "binance",
            "symbol": np.repeat([f"C{i}/USDT" for i in range(symbols)], per),
            "timeframe": "1m",
            "ts": T0 + np.tile(np.arange(per, dtype=np.int64), symbols) * MIN,
            "open": price,
            "high": price + spread,
            "low": price - spread,
            "close": price,
            "volume": rng.random(per * symbols) * 10,
        }
    )


@contextmanager
def _sqlite_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{tmp}/market.db"


@contextmanager
def _postgres_url(base: str) -> Iterator[str]:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = make_engine(base)
    with admin.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        url = normalize_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def _backend(name: str, url: str, frame: pd.DataFrame, small: list[pd.DataFrame]) -> list[Result]:
    engine = make_engine(url)
    try:
        store = MarketStore(engine)
        n = len(frame)
        bulk = _timed(lambda: store.upsert("ohlcv", frame))
        again = _timed(lambda: store.upsert("ohlcv", frame))
        assert store.count("ohlcv") == n
        incremental = _timed(lambda: [store.upsert("ohlcv", part) for part in small])
        rows_small = sum(len(part) for part in small)
        return [
            Result(
                "storage_upsert",
                f"{name}: 1,000,000 new candles, one validated call",
                n / bulk,
                "rows/s",
                f">= {TARGET:,}",
                n / bulk >= TARGET,
                {"seconds": bulk, "rows": n},
            ),
            Result(
                "storage_upsert",
                f"{name}: same rows again (all conflicts, no change)",
                n / again,
                "rows/s",
                details={"seconds": again},
            ),
            Result(
                "storage_upsert",
                f"{name}: {len(small)} calls of {len(small[0]):,} new rows",
                rows_small / incremental,
                "rows/s",
                f">= {TARGET:,}",
                rows_small / incremental >= TARGET,
                {"seconds": incremental},
            ),
        ]
    finally:
        engine.dispose()


def upsert_throughput(n_rows: int = 1_000_000) -> list[Result]:
    frame = candle_frame(n_rows)
    later = candle_frame(n_rows, seed=2)
    later["ts"] += (n_rows // 4) * MIN  # after the bulk rows: new keys
    small = [later.iloc[i : i + 10_000] for i in range(0, n_rows, 10_000)]
    validate_frame("ohlcv", frame.iloc[:100_000])  # warm-up
    validation = min(_timed(lambda: validate_frame("ohlcv", frame)) for _ in range(3))
    results = [
        Result(
            "storage_upsert",
            "Pandera validation of candles, per 100,000 rows",
            validation / (n_rows / 100_000) * 1000,
            "ms",
            details={"rows/s": n_rows / validation},
        )
    ]
    with _sqlite_url() as url:
        results += _backend("SQLite", url, frame, small)
    pg = os.environ.get(PG_URL_ENV, "").strip()
    if pg:
        with _postgres_url(pg) as url:
            results += _backend("PostgreSQL", url, frame, small)
    return results
