"""The SQL tables are derived from the Pandera models: same columns, key, nullability."""

from __future__ import annotations

import pandera.dtypes as pa_dtypes
import pytest
import sqlalchemy as sa

from crypto_pipelines.domain.schemas import DATASETS
from crypto_pipelines.storage.schema import SOURCE_COLUMN, has_source, metadata, sql_type, table_for


def test_one_table_per_dataset() -> None:
    assert set(metadata.tables) == set(DATASETS) | {
        "gaps",
        "rejected_rows",
        "coverage",
        "universe_changes",
    }  # bookkeeping


@pytest.mark.parametrize("name", list(DATASETS))
def test_table_matches_model(name: str) -> None:
    dataset, table = DATASETS[name], table_for(name)
    provenance = (SOURCE_COLUMN,) if has_source(dataset) else ()
    assert tuple(table.columns.keys()) == dataset.columns + provenance
    assert tuple(c.name for c in table.primary_key.columns) == dataset.key
    for column_name, column in dataset.schema.columns.items():
        sql_column = table.c[column_name]
        assert sql_column.nullable == (bool(column.nullable) and column_name not in dataset.key)
        assert type(sql_column.type) is type(sql_type(column.dtype))
    assert table.dialect_options["sqlite"]["with_rowid"] is False


def test_market_tables_record_their_source_and_the_catalog_does_not() -> None:
    sourced = {name for name, dataset in DATASETS.items() if has_source(dataset)}
    assert sourced == {"ohlcv", "trades", "funding_rates", "open_interest", "order_book_snapshots"}
    assert table_for("ohlcv").c[SOURCE_COLUMN].nullable
    assert SOURCE_COLUMN not in table_for("crypto_pairs").c


def test_public_column_types() -> None:
    ohlcv = table_for("ohlcv")
    assert isinstance(ohlcv.c.ts.type, sa.BigInteger)
    assert all(
        isinstance(ohlcv.c[c].type, sa.Double) for c in ("open", "high", "low", "close", "volume")
    )
    assert isinstance(ohlcv.c.exchange.type, sa.String)
    assert isinstance(table_for("crypto_pairs").c.active.type, sa.Boolean)
    assert isinstance(table_for("crypto_perps").c.funding_interval_ms.type, sa.BigInteger)


def test_trades_index_on_series_and_time() -> None:
    (index,) = table_for("trades").indexes
    assert [c.name for c in index.columns] == ["exchange", "symbol", "ts"]


def test_unknown_types_and_tables_are_refused() -> None:
    with pytest.raises(TypeError, match="no SQL type"):
        sql_type(pa_dtypes.DateTime())
    with pytest.raises(ValueError, match="unknown dataset 'candles'"):
        table_for("candles")
