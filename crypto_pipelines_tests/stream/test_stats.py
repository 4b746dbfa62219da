"""Partition counts are kept only for a consumer that drains them (the Dagster job): the CLI
turns them off, or a long run would keep an entry per series and day."""

from crypto_pipelines.stream import StreamStats

KEY = ("trades", "binance", "BTC/USDT", "", 1_704_067_200_000)


def test_touched_partitions_are_kept_and_drained() -> None:
    stats = StreamStats()
    stats.touch(KEY, 3, 1_704_067_200_500)
    stats.touch(KEY, 2, 1_704_067_200_400)
    assert stats.drain_touched() == {KEY: [5, 1_704_067_200_500]}
    assert stats.drain_touched() == {}


def test_without_a_consumer_nothing_is_kept() -> None:
    stats = StreamStats(track_partitions=False)
    stats.touch(KEY, 3, 1_704_067_200_500)
    assert stats.touched == {}
