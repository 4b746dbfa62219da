"""Routes: the instrument catalog (``/v1/catalog``): assets, spot pairs and perpetual swaps,
one record at a time. The universe's routes (``routes.universe``) hang off ``router`` too,
as the app includes one router per module.

The answer models (``catalog_models``) hold the Pandera models' columns in order, with their
types and nullability (``crypto_pipelines_tests/api/test_catalog.py`` fails when they drift
apart). A ``PUT`` is
checked in the order that names the broken rule best: pydantic (types, no NaN/infinity, epoch
milliseconds), path against body, the dataset's Pandera model (its rule names), the domain
dataclass; ``MarketStore.upsert_instruments`` then validates again and writes, adding the
currencies a market references to the assets. Store calls block: the endpoints are plain
functions, run in FastAPI's thread pool.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final, TypeVar

import pandas as pd
from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel

from crypto_pipelines.api.auth import require_key
from crypto_pipelines.api.catalog_models import (
    AssetRecord,
    PairBody,
    PairRecord,
    PerpBody,
    PerpRecord,
)
from crypto_pipelines.api.errors import ApiError, ErrorBody, RowError, refusals
from crypto_pipelines.api.routes.universe import router as universe_router
from crypto_pipelines.domain.instruments import CryptoAsset, CryptoPair, CryptoPerp, InstrumentError
from crypto_pipelines.domain.schemas import get_dataset
from crypto_pipelines.domain.symbols import SymbolError, parse_symbol
from crypto_pipelines.domain.validation import DatasetValidationError, rule_keys, validate_frame
from crypto_pipelines.storage.store import MarketStore

routes = APIRouter(prefix="/v1/catalog", tags=["catalog"])
KEY: Final = [Depends(require_key)]
"""Every route's key check (none of them uses the key beyond that)."""

ASSETS: Final = "crypto_assets"
PAIRS: Final = "crypto_pairs"
PERPS: Final = "crypto_perps"

ERRORS: Final = refusals(_422="invalid record: each error names field and rule")
ONE: Final[dict[int | str, dict[str, Any]]] = {
    **ERRORS,
    404: {"model": ErrorBody, "description": "not in the catalog"},
}
"""The refusals of a ``GET`` of one record."""


def _created(model: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """A ``PUT``'s answers besides 200 (replaced): 201 with the same record."""
    return {**ERRORS, 201: {"model": model, "description": "created"}}


Record = TypeVar("Record", bound=BaseModel)
_KINDS: Final[dict[str, type[Any]]] = {ASSETS: CryptoAsset, PAIRS: CryptoPair, PERPS: CryptoPerp}
"""Each table's domain dataclass."""


def _store(request: Request) -> MarketStore:
    store: MarketStore = request.app.state.services.store
    return store


def _invalid(errors: list[RowError]) -> ApiError:
    return ApiError(422, "invalid record; nothing was stored", reason="invalid", errors=errors)


def _records(frame: pd.DataFrame, model: type[Record]) -> list[Record]:
    """The frame's rows as ``model``; missing values (NaN, <NA>) as None."""
    columns = {
        name: [None if pd.isna(value) else value for value in frame[name].astype(object).tolist()]
        for name in frame.columns
    }
    return [
        model.model_validate(dict(zip(columns, values, strict=True)))
        for values in zip(*columns.values(), strict=True)
    ]


def _matches_nothing(*values: str | None) -> bool:
    """Whether a filter value is one no stored text can equal: PostgreSQL text holds no NUL
    character (and refuses one as a parameter), so such a filter matches nothing, as on
    SQLite, instead of failing."""
    return any(value is not None and "\x00" in value for value in values)


def _listing(
    store: MarketStore, dataset: str, model: type[Record], exchange: str | None
) -> list[Record]:
    if _matches_nothing(exchange):
        return []
    return _records(store.read(dataset, exchange=exchange), model)


def _one(store: MarketStore, dataset: str, model: type[Record], **where: str) -> Record | None:
    if _matches_nothing(*where.values()):
        return None
    if dataset == ASSETS:
        frame = _asset_frame(store, where["code"])
    else:
        frame = store.read(dataset, exchange=where["exchange"], symbol=where["symbol"])
    found = _records(frame, model)
    return found[0] if found else None


def _asset_frame(store: MarketStore, code: str | None = None) -> pd.DataFrame:
    """``crypto_assets`` (a few thousand codes at most: read whole, the store filters by
    exchange and symbol only)."""
    frame = store.read(ASSETS)
    return frame if code is None else frame[frame["code"] == code]


def _found(store: MarketStore, dataset: str, model: type[Record], **where: str) -> Record:
    """The stored record, or 404 naming it."""
    found = _one(store, dataset, model, **where)
    if found is None:
        named = " ".join(where.values())
        raise ApiError(404, f"{named!r} is not in {dataset}", reason="not_found")
    return found


def _mismatches(rule: str, values: dict[str, Any], expected: dict[str, str | None]) -> None:
    """422 naming each field sent with a value other than ``expected``: a key field must
    equal the path's (``path_mismatch``), a currency the symbol's (``matches_symbol``: ETH as
    the base of BTC/USDT is a typo, not a wish)."""
    errors = [
        RowError(field=name, rule=rule, message=f"{values[name]!r} is not {want!r}")
        for name, want in expected.items()
        if values.get(name) is not None and values[name] != want
    ]
    if errors:
        raise _invalid(errors)


def _parsed_symbol(symbol: str, *, swap: bool) -> dict[str, str | None]:
    """The currencies of the path's symbol, which must be of the table's kind."""
    try:
        parsed = parse_symbol(symbol)
    except SymbolError as exc:
        raise _invalid(
            [RowError(field="symbol", rule="symbol_unified", message=str(exc))]
        ) from None
    if (parsed.settle is not None) != swap:
        rule = "symbol_is_swap" if swap else "symbol_is_spot"
        message = f"{symbol!r} is not a {'swap' if swap else 'spot'} symbol"
        raise _invalid([RowError(field="symbol", rule=rule, message=message)])
    parts: dict[str, str | None] = {"base": parsed.base, "quote": parsed.quote}
    return {**parts, "settle": parsed.settle} if swap else parts


def _validate(dataset: str, row: dict[str, Any]) -> None:
    """The row against the dataset's Pandera model, each failure as field and rule."""
    ds = get_dataset(dataset)
    try:
        validate_frame(ds, pd.DataFrame([row], columns=list(ds.columns)))
    except DatasetValidationError as exc:
        cases = exc.failure_cases
        errors: dict[tuple[str | None, str], RowError] = {}
        columns, values = cases["column"], cases["failure_case"]
        for key, column, case in zip(rule_keys(ds, cases), columns, values, strict=True):
            if key in ds.rules:  # a value rule, of a column or of the whole row
                field, rule = (str(column) if str(column) in ds.columns else None), key
            else:  # structural, named "column:check" (base:not_nullable)
                field, _, rule = key.partition(":")
            errors.setdefault(
                (field, rule),
                RowError(
                    field=field, rule=rule, message=f"{field or 'record'}: {case!r} breaks {rule}"
                ),
            )
        raise _invalid(list(errors.values())) from None


def _built(kind: type[Any], row: dict[str, Any]) -> Any:
    """The domain dataclass of ``row``: the rules the Pandera model has no column check for.
    Its message names the field but no rule; the first column it mentions is reported."""
    try:
        return kind(**row)
    except InstrumentError as exc:
        message = str(exc)
        named = [c for c in row if re.search(rf"\b{re.escape(c)}\b", message)]
        field = named[0] if named else None
        raise _invalid([RowError(field=field, rule="instrument", message=message)]) from None


def _put(
    store: MarketStore,
    response: Response,
    dataset: str,
    row: dict[str, Any],
    model: type[Record],
    where: dict[str, str],
) -> Record:
    """Validate ``row``, build its dataclass and upsert it; 201 when it was not stored
    before, else 200 (decided inside the write's transaction: two first PUTs of one record
    get one 201); the record as stored."""
    _validate(dataset, row)
    item = _built(_KINDS[dataset], row)
    created = store.put_instrument(item)
    stored = _one(store, dataset, model, **where)
    assert stored is not None  # just written, in a committed transaction
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return stored


def _put_listing(
    request: Request,
    response: Response,
    dataset: str,
    body: PairBody | PerpBody,
    where: dict[str, str],
    model: type[Record],
) -> Record:
    values = body.model_dump()
    _mismatches("path_mismatch", values, dict(where))
    parts = _parsed_symbol(where["symbol"], swap=dataset == PERPS)
    _mismatches("matches_symbol", values, parts)
    row = {**values, **where, **parts}
    if dataset == PERPS and row["linear"] is None:
        row["linear"] = row["settle"] == row["quote"]
    return _put(_store(request), response, dataset, row, model, where)


# --- assets ------------------------------------------------------------------------------


@routes.get("/assets", dependencies=KEY, response_model=list[AssetRecord], responses=ERRORS)
def list_assets(request: Request) -> list[AssetRecord]:
    """Every currency code in the catalog, sorted: those put here and the currencies of
    every stored market."""
    return _records(_asset_frame(_store(request)), AssetRecord)


@routes.get("/assets/{code}", dependencies=KEY, response_model=AssetRecord, responses=ONE)
def get_asset(request: Request, code: str) -> AssetRecord:
    """One currency code of the catalog (``BTC``); 404 when it is not there."""
    return _found(_store(request), ASSETS, AssetRecord, code=code)


@routes.put(
    "/assets/{code}", dependencies=KEY, response_model=AssetRecord, responses=_created(AssetRecord)
)
def put_asset(request: Request, response: Response, code: str) -> AssetRecord:
    """Create (201) or keep (200) a currency code (the path is the whole record: no body).
    Refused with 422 when the code breaks the ``crypto_assets`` model (each error names
    field and rule); nothing is stored then."""
    return _put(_store(request), response, ASSETS, {"code": code}, AssetRecord, {"code": code})


# --- pairs and perps ---------------------------------------------------------------------


@routes.get("/pairs", dependencies=KEY, response_model=list[PairRecord], responses=ERRORS)
def list_pairs(
    request: Request,
    exchange: Annotated[str | None, Query(description="only this exchange's")] = None,
) -> list[PairRecord]:
    """Spot markets, by exchange and symbol; ``exchange`` keeps one exchange's."""
    return _listing(_store(request), PAIRS, PairRecord, exchange)


@routes.get(
    "/pairs/{exchange}/{symbol:path}", dependencies=KEY, response_model=PairRecord, responses=ONE
)
def get_pair(request: Request, exchange: str, symbol: str) -> PairRecord:
    """One spot market (``/v1/catalog/pairs/binance/BTC/USDT``: the symbol's '/' as is);
    404 when it is not in the catalog."""
    return _found(_store(request), PAIRS, PairRecord, exchange=exchange, symbol=symbol)


@routes.put(
    "/pairs/{exchange}/{symbol:path}",
    dependencies=KEY,
    response_model=PairRecord,
    responses=_created(PairRecord),
)
def put_pair(
    request: Request, response: Response, exchange: str, symbol: str, body: PairBody
) -> PairRecord:
    """Create (201) or replace (200) a spot market; its currencies join the assets. The
    body replaces the whole record (omitted fields become unknown). Refused with 422, nothing
    stored, for a symbol that is not a spot one, a body whose exchange or symbol differs from
    the path's (``path_mismatch``) or whose currencies differ from the symbol's
    (``matches_symbol``), and for values the ``crypto_pairs`` model refuses (each error names
    field and rule)."""
    where = {"exchange": exchange, "symbol": symbol}
    return _put_listing(request, response, PAIRS, body, where, PairRecord)


@routes.get("/perps", dependencies=KEY, response_model=list[PerpRecord], responses=ERRORS)
def list_perps(
    request: Request,
    exchange: Annotated[str | None, Query(description="only this exchange's")] = None,
) -> list[PerpRecord]:
    """Perpetual swaps, by exchange and symbol; ``exchange`` keeps one exchange's."""
    return _listing(_store(request), PERPS, PerpRecord, exchange)


@routes.get(
    "/perps/{exchange}/{symbol:path}", dependencies=KEY, response_model=PerpRecord, responses=ONE
)
def get_perp(request: Request, exchange: str, symbol: str) -> PerpRecord:
    """One perpetual swap (``/v1/catalog/perps/binance/BTC/USDT:USDT``); 404 when it is not
    in the catalog."""
    return _found(_store(request), PERPS, PerpRecord, exchange=exchange, symbol=symbol)


@routes.put(
    "/perps/{exchange}/{symbol:path}",
    dependencies=KEY,
    response_model=PerpRecord,
    responses=_created(PerpRecord),
)
def put_perp(
    request: Request, response: Response, exchange: str, symbol: str, body: PerpBody
) -> PerpRecord:
    """Create (201) or replace (200) a perpetual swap; its currencies join the assets.
    ``linear`` defaults to settled in the quote currency. Refused with 422, nothing stored,
    for a symbol that is not a swap one, a body that contradicts the path or the symbol's
    currencies (``path_mismatch``, ``matches_symbol``), and for values the ``crypto_perps``
    model refuses (each error names field and rule)."""
    where = {"exchange": exchange, "symbol": symbol}
    return _put_listing(request, response, PERPS, body, where, PerpRecord)


router = APIRouter()
"""What the app includes: the catalog routes, then the universe's."""
router.include_router(routes)
router.include_router(universe_router)
