"""The replay exchange: the four venues' public REST APIs served from a tape, offline.

Public API: ``Tape`` (load and validate a tape), ``ReplayServer`` (serve it from Python),
``FaultConfig`` (fault injection) and ``point_ccxt_at`` (route a stock ccxt client to it).
"""

from crypto_pipelines.replay.clock import ReplayClock
from crypto_pipelines.replay.faults import FaultConfig
from crypto_pipelines.replay.routing import REPLAY_URL_ENV, point_ccxt_at, replay_url_from_env
from crypto_pipelines.replay.server import ReplayServer
from crypto_pipelines.replay.tape import Tape, TapeError

__all__ = [
    "REPLAY_URL_ENV",
    "FaultConfig",
    "ReplayClock",
    "ReplayServer",
    "Tape",
    "TapeError",
    "point_ccxt_at",
    "replay_url_from_env",
]
