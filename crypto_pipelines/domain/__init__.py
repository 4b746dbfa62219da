"""Exchange-independent market concepts: symbols, timeframes, instruments."""
