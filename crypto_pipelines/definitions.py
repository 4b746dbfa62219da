"""The code location's root: it only assembles what ``crypto_pipelines.defs`` defines."""

import dagster as dg

defs = dg.Definitions()
