"""The code location's root: it only assembles what ``crypto_pipelines.defs`` builds from the
universe file (``CRYPTO_PIPELINES_UNIVERSE``; a malformed one, or one asking a venue for what
it does not offer, fails the load, naming the file, key and reason)."""

from crypto_pipelines.defs.build import build_definitions
from crypto_pipelines.defs.universe_check import load_checked_universe

defs = build_definitions(load_checked_universe())
