"""Comparing the shape of a replay response with a recorded exchange response.

"Shape" is the key structure and the JSON value types (string, number, bool, null, list,
object), recursively; list items are compared position by position.
Values themselves differ (other instruments, other times) and are not compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crypto_pipelines_tests.conftest import CCXT_STATIC, require_shared


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    raise TypeError(type(value))


def shape_differences(
    recorded: Any, replayed: Any, path: str = "$", *, allow_extra_keys: bool = True
) -> list[str]:
    """Every place where ``replayed`` does not have ``recorded``'s shape. Missing keys and type
    mismatches are differences; extra keys in the replay are allowed unless told otherwise.
    An empty recorded list, or a recorded null, constrains nothing below it."""
    if recorded is None:
        return []
    rtype, ptype = json_type(recorded), json_type(replayed)
    if rtype == "string" and ptype == "number" and _numeric_text(recorded):
        # ccxt's static fixtures store some numeric fields as strings (their note says so),
        # e.g. Binance's aggTrades id "a"; the exchange itself sends a number there.
        return []
    if rtype != ptype:
        return [f"{path}: recorded {rtype}, replayed {ptype} ({replayed!r:.60})"]
    out: list[str] = []
    if isinstance(recorded, dict):
        for key, value in recorded.items():
            if key not in replayed:
                out.append(f"{path}.{key}: missing in replay")
            else:
                out.extend(
                    shape_differences(
                        value, replayed[key], f"{path}.{key}", allow_extra_keys=allow_extra_keys
                    )
                )
        if not allow_extra_keys:
            out.extend(f"{path}.{key}: not in recording" for key in replayed if key not in recorded)
    elif isinstance(recorded, list) and recorded and replayed:
        # Positional: a kline row is a tuple of mixed types; rows of a list share a shape,
        # so items past the recording's length are held to its last item.
        for index, item in enumerate(replayed[:50]):
            template = recorded[min(index, len(recorded) - 1)]
            out.extend(
                shape_differences(
                    template, item, f"{path}[{index}]", allow_extra_keys=allow_extra_keys
                )
            )
    return out


def _numeric_text(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def recorded_responses(exchange: str) -> dict[str, list[dict[str, Any]]]:
    """``methods`` of the ccxt static response extract for ``exchange`` (skips without ../shared)."""
    path: Path = require_shared(
        CCXT_STATIC / f"ccxt_static_response_{exchange}__marketdata_extract.json"
    )
    return json.loads(path.read_text())["methods"]
