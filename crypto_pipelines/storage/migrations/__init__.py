"""Alembic migrations of the market database (run by ``crypto_pipelines.storage.upgrade``)."""
