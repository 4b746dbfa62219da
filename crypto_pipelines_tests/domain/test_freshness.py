"""Freshness windows from timeframes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from crypto_pipelines.domain.freshness import freshness_windows
from crypto_pipelines.domain.timeframes import TimeframeError


@pytest.mark.parametrize(
    ("timeframe", "warn", "fail"),
    [
        ("1m", timedelta(minutes=5), timedelta(minutes=15)),
        ("5m", timedelta(minutes=25), timedelta(minutes=75)),
        ("15m", timedelta(minutes=75), timedelta(minutes=225)),
        ("1h", timedelta(hours=2), timedelta(hours=7)),
        ("4h", timedelta(hours=5), timedelta(hours=10)),
        ("1d", timedelta(hours=25), timedelta(hours=30)),
        ("1w", timedelta(days=7, hours=1), timedelta(days=7, hours=6)),
        ("1M", timedelta(days=31, hours=1), timedelta(days=31, hours=6)),
    ],
)
def test_windows(timeframe: str, warn: timedelta, fail: timedelta) -> None:
    windows = freshness_windows(timeframe)
    assert (windows.warn, windows.fail) == (warn, fail)
    assert timedelta(minutes=1) <= windows.warn < windows.fail  # what Dagster requires


@pytest.mark.parametrize("timeframe", ["", "1x", "0m", "M", "0M"])
def test_not_a_timeframe(timeframe: str) -> None:
    with pytest.raises(TimeframeError):
        freshness_windows(timeframe)
