"""The code location's root: it only assembles what ``crypto_pipelines.defs`` builds from the
universe file (``CRYPTO_PIPELINES_UNIVERSE``; a malformed one fails the load, naming the key)."""

from crypto_pipelines.defs.build import build_definitions
from crypto_pipelines.domain.universe import load_universe

defs = build_definitions(load_universe())
