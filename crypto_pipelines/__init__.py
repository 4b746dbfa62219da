"""crypto_pipelines: crypto market data as Dagster assets, with an offline replay exchange.

Plain-Python cores live in ``domain``, ``exchanges``, ``storage``, ``stream``, ``api`` and
``replay``; the Dagster layer in ``defs`` wires them into assets and automation.
"""

__version__ = "0.1.0"
