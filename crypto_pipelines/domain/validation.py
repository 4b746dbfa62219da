"""Validating a batch against its dataset's model, and turning failures into counts and text.

Validation is lazy (every rule runs, every failing row is collected) because one message
listing all problems of a batch is worth more than the first of them. ``failure_counts``
reduces Pandera's failure cases to ``{rule: failing rows}``: the value rules under their own
names (``price_positive``), structural problems as ``column:check``
(``close:not_nullable``, ``volume:column_in_dataframe``, ``open:dtype('float64')``).
"""

from __future__ import annotations

from collections.abc import Collection

import pandas as pd
import pandera.errors as pa_errors

from crypto_pipelines.domain.schemas import Dataset, get_dataset

_SHOWN_ROWS = 5


class DatasetValidationError(ValueError):
    """A batch that breaks its dataset's rules. ``counts`` maps each failed rule to its
    number of failing rows, ``failure_cases`` is Pandera's table (one row per failing cell)."""

    def __init__(
        self, dataset: str, counts: dict[str, int], failure_cases: pd.DataFrame, message: str
    ):
        super().__init__(message)
        self.dataset = dataset
        self.counts = counts
        self.failure_cases = failure_cases


def validate_frame(dataset: Dataset | str, frame: pd.DataFrame) -> pd.DataFrame:
    """The batch with columns in model order and coerced dtypes; raises
    ``DatasetValidationError`` naming the dataset, the rules, the columns and the rows."""
    ds = get_dataset(dataset) if isinstance(dataset, str) else dataset
    try:
        validated = ds.schema.validate(frame, lazy=True)
    except pa_errors.SchemaErrors as exc:
        cases = exc.failure_cases
        counts = failure_counts(ds, cases)
        raise DatasetValidationError(
            ds.name, counts, cases, _message(ds, frame, cases, counts)
        ) from None
    return validated[list(ds.columns)]


def failure_counts(
    dataset: Dataset | str, failure_cases: pd.DataFrame, extra_rules: Collection[str] = ()
) -> dict[str, int]:
    """``{rule: failing rows}`` from a ``SchemaErrors.failure_cases`` table of this dataset.

    A row counts once per rule however many of its cells fail it; a failure not tied to a
    row (a missing column, a check that raised) counts as 1. ``extra_rules`` names checks
    added to the model for one validation (an audit's window rule), counted like its own."""
    ds = get_dataset(dataset) if isinstance(dataset, str) else dataset
    counts: dict[str, int] = {}
    for key, group in _by_rule(ds, failure_cases, extra_rules):
        rows = group["index"].dropna()
        counts[key] = int(rows.nunique()) if len(rows) else 1
    return dict(sorted(counts.items()))


def rule_keys(
    dataset: Dataset | str, failure_cases: pd.DataFrame, extra_rules: Collection[str] = ()
) -> list[str]:
    """The rule each row of a ``failure_cases`` table belongs to, as ``failure_counts``
    names it: a value rule by its name, a structural problem as ``column:check``."""
    ds = get_dataset(dataset) if isinstance(dataset, str) else dataset
    rules = ds.rules | frozenset(extra_rules)
    return [
        _rule_key(rules, column, check, case)
        for column, check, case in zip(
            failure_cases["column"],
            failure_cases["check"],
            failure_cases["failure_case"],
            strict=True,
        )
    ]


def _rule_key(rules: frozenset[str], column: object, check: object, failure_case: object) -> str:
    check_name = str(check)
    if check_name in rules:
        return check_name
    if check_name == "column_in_dataframe":
        column = failure_case
    return f"{column}:{check_name}"


def _by_rule(
    ds: Dataset, cases: pd.DataFrame, extra_rules: Collection[str] = ()
) -> list[tuple[str, pd.DataFrame]]:
    keys = rule_keys(ds, cases, extra_rules)
    grouped = cases.assign(_rule=keys).groupby("_rule", sort=True)
    return [(str(key), group) for key, group in grouped]


def _message(ds: Dataset, frame: pd.DataFrame, cases: pd.DataFrame, counts: dict[str, int]) -> str:
    bad_rows = _sorted(cases["index"].dropna().unique())
    lines = [f"{ds.name}: {len(counts)} rule(s) failed on {len(bad_rows)} of {len(frame)} row(s)"]
    for key, group in _by_rule(ds, cases):
        per_column = group[group["schema_context"] == "Column"]["column"]
        columns = sorted({str(c) for c in per_column if str(c) in ds.columns})
        rows = _sorted(dict.fromkeys(group["index"].dropna()))
        where = f" in {', '.join(columns)}" if columns and key in ds.rules else ""
        at = f" at rows {_labels(rows)}" if rows else f": {_short(group['failure_case'].iloc[0])}"
        lines.append(f"  {key}{where}: {counts[key]} row(s){at}")
    shown = [label for label in bad_rows[:_SHOWN_ROWS] if label in frame.index]
    if shown:
        sample = frame.loc[shown, [c for c in ds.columns if c in frame.columns]]
        lines.append("first failing rows:\n" + sample.to_string(max_colwidth=40))
    return "\n".join(lines)


def _sorted(labels: object) -> list[object]:
    items = list(labels)  # type: ignore[call-overload]
    try:
        return sorted(items)
    except TypeError:  # mixed label types: keep Pandera's order
        return items


def _labels(rows: list[object]) -> str:
    text = ", ".join(str(r) for r in rows[:_SHOWN_ROWS])
    return text + (f" ... (+{len(rows) - _SHOWN_ROWS})" if len(rows) > _SHOWN_ROWS else "")


def _short(value: object, limit: int = 120) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
