"""SQL storage of the market datasets (SQLAlchemy Core; SQLite or PostgreSQL), plain Python.

``make_engine``/``default_db_url`` open a database, ``MarketStore`` migrates it (Alembic,
idempotent) and upserts/reads the datasets of ``crypto_pipelines.domain.schemas.DATASETS``.
"""

from crypto_pipelines.storage.engine import default_db_url, make_engine
from crypto_pipelines.storage.migrate import upgrade
from crypto_pipelines.storage.schema import metadata, table_for
from crypto_pipelines.storage.store import MarketStore

__all__ = ["MarketStore", "default_db_url", "make_engine", "metadata", "table_for", "upgrade"]
