-- Run once by the postgres image when its data volume is new: the market data's database, next
-- to Dagster's (POSTGRES_DB). Apart because both keep their schema version in `alembic_version`.
CREATE DATABASE market;
