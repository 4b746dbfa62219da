"""Tests of crypto_pipelines.storage (every backend test runs on SQLite and PostgreSQL)."""
