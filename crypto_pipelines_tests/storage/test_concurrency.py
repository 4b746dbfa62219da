"""Several processes writing one database at once (Dagster runs steps in separate processes):
no 'database is locked', no lost rows, and concurrent first-time migrations are safe."""

from __future__ import annotations

import multiprocessing
import traceback
from multiprocessing.synchronize import Barrier

import numpy as np
import pandas as pd

from crypto_pipelines.storage import MarketStore, make_engine

T0 = 1_704_067_200_000
MIN = 60_000
BATCHES = 25
ROWS = 4_000


def _batch(worker: int, index: int) -> pd.DataFrame:
    # Both workers write the shared series over the same keys (conflicts) and one of their own.
    shared_ts = T0 + (index * ROWS + np.arange(ROWS, dtype=np.int64)) * MIN
    own_ts = shared_ts
    price = 100.0 + worker
    frames = [
        pd.DataFrame({"symbol": "BTC/USDT", "ts": shared_ts}),
        pd.DataFrame({"symbol": f"W{worker}/USDT", "ts": own_ts}),
    ]
    frame = pd.concat(frames, ignore_index=True)
    return frame.assign(
        exchange="binance",
        timeframe="1m",
        open=price,
        high=price + 1,
        low=price - 1,
        close=price,
        volume=1.0,
    )[["exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]]


def _writer(url: str, worker: int, barrier: Barrier, errors: multiprocessing.Queue[str]) -> None:
    try:
        barrier.wait(timeout=60)
        engine = make_engine(url)
        store = MarketStore(engine)  # both migrate a fresh database at the same moment
        for index in range(BATCHES):
            store.upsert("ohlcv", _batch(worker, index))
            store.count("ohlcv", symbol="BTC/USDT")  # readers interleave with the writer
        engine.dispose()
    except BaseException:  # reported to the parent, which fails the test with the traceback
        errors.put(f"worker {worker}:\n{traceback.format_exc()}")


def test_two_processes_write_at_once(db_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    errors: multiprocessing.Queue[str] = context.Queue()
    workers = [context.Process(target=_writer, args=(db_url, n, barrier, errors)) for n in (1, 2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=240)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert not failures, "\n".join(failures)
    assert [p.exitcode for p in workers] == [0, 0]
    engine = make_engine(db_url)
    try:
        store = MarketStore(engine, migrate=False)
        assert store.count("ohlcv", symbol="BTC/USDT") == BATCHES * ROWS
        assert (
            store.count("ohlcv", symbol="W1/USDT")
            == store.count("ohlcv", symbol="W2/USDT")
            == BATCHES * ROWS
        )
        closes = set(store.read("ohlcv", symbol="BTC/USDT")["close"].unique())
        assert closes <= {101.0, 102.0}  # every row is one writer's, never a mix
    finally:
        engine.dispose()
