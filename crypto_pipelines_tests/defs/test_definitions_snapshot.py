"""A snapshot of what the code location shows in the Dagster UI, checked in as plain text.

The definitions are built from the universe file by code spread over many modules (assets,
checks, sensors, schedules, partitions, freshness, pools). A change to any of them can change
what users see (an asset's partitions, a check turned blocking, a sensor's interval) without
any test failing. Rendering the definitions of the default universe to
``snapshots/definitions.txt``, one sorted line per item, puts every such change into the diff
of the change that makes it, where a reviewer sees it. A mismatch fails with a unified diff;
an intended change is accepted by regenerating the file (``UPDATE_COMMAND``) and committing it.

Only public Dagster APIs are read (nothing from ``dagster._...``), and only values that do not
vary between machines or runs (no paths, timestamps, object ids, descriptions or resource
configuration).
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import dagster as dg
import pytest
import yaml

from crypto_pipelines.domain.universe import UNIVERSE_ENV, default_universe_path

REPO_ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = Path(__file__).resolve().parent / "snapshots" / "definitions.txt"
UPDATE_ENV = "CRYPTO_PIPELINES_UPDATE_SNAPSHOTS"
UPDATE_COMMAND = (
    f"{UPDATE_ENV}=1 .venv/bin/pytest crypto_pipelines_tests/defs/test_definitions_snapshot.py"
)
PROJECT_ENV_PREFIX = "CRYPTO_PIPELINES_"
HEADER = (
    "# What the crypto_pipelines code location defines for the default universe, one line per\n"
    "# item (test_definitions_snapshot.py). Do not edit; regenerate with:\n"
    f"#   {UPDATE_COMMAND}\n"
)
HIDDEN_JOB_PREFIX = "__"
"""Dagster's implicit jobs (``__ASSET_JOB``, ``__anonymous_asset_job_<schedule>``): the UI
hides them, and their targets are rendered on the schedule or sensor that owns them."""
KIND_TAG_PREFIX = "dagster/kind/"
CADENCES = {
    "0 * * * *": "hourly",
    "0 0 * * *": "daily",
    "0 0 * * 0": "weekly",
    "0 0 1 * *": "monthly",
}
DEFAULT_DATE_FORMAT = "%Y-%m-%d"


# --- rendering ------------------------------------------------------------------------------


def render_definitions(defs: dg.Definitions) -> str:
    """The snapshot text of ``defs``: one line per asset, check, sensor, schedule, job,
    resource and the executor, sorted (so the order definitions are built in does not matter
    and an added item is one added line)."""
    assets_defs = _assets_defs(defs)
    # The repository Dagster builds from ``defs`` (what the UI lists): its schedules are
    # resolved (``defs.schedules`` may hold unresolved partitioned ones) and it names every
    # job, including those sensors and schedules bring.
    repository = defs.get_repository_def()
    lines = {
        *_asset_lines(defs, assets_defs),
        *_check_lines(defs),
        *_sensor_lines(repository, assets_defs),
        *_schedule_lines(repository, assets_defs),
        *_job_lines(defs, repository, assets_defs),
        *_resource_lines(defs),
        *_executor_lines(defs),
    }
    return HEADER + "".join(f"{line}\n" for line in sorted(lines))


def _assets_defs(defs: dg.Definitions) -> list[dg.AssetsDefinition]:
    """Every ``AssetsDefinition`` passed to ``defs`` (checks definitions are a subclass and
    may be passed as assets too; they own no asset keys, so including them is harmless)."""
    passed = [*(defs.assets or []), *(defs.asset_checks or [])]
    return [item for item in passed if isinstance(item, dg.AssetsDefinition)]


def _asset_lines(defs: dg.Definitions, assets_defs: Sequence[dg.AssetsDefinition]) -> Iterator[str]:
    """An asset's specs as the UI resolves them (``resolve_all_asset_specs``: default group
    filled in, undefined dependencies as external assets); the pool and backfill policy live
    on the ``AssetsDefinition`` that computes it, found by key."""
    computed_by = {key: assets_def for assets_def in assets_defs for key in assets_def.keys}
    for spec in defs.resolve_all_asset_specs():
        assets_def = computed_by.get(spec.key)
        fields = [
            f"group={spec.group_name}",
            f"partitions={describe_partitions(spec.partitions_def)}",
            f"pool={_pool(assets_def)}",
            f"kinds={_bracketed(spec.kinds)}",
            f"tags={_tags(spec.tags)}",
            f"backfill={_backfill(assets_def)}",
            f"freshness={describe_freshness(spec.freshness_policy)}",
            f"deps={_bracketed(_dep(dep) for dep in spec.deps)}",
            # Keys only: values can be large (column schemas, checked by the schema checks) or
            # machine-specific (code references hold absolute paths).
            f"metadata={_bracketed(spec.metadata)}",
        ]
        if spec.automation_condition is not None:
            fields.append(f"automation={_automation(spec.automation_condition)}")
        if spec.owners:
            fields.append(f"owners={_bracketed(spec.owners)}")
        if spec.code_version is not None:
            fields.append(f"code_version={spec.code_version}")
        yield _line("asset", spec.key.to_user_string(), fields)


def _check_lines(defs: dg.Definitions) -> Iterator[str]:
    """Checks passed as checks definitions and checks declared on assets (``check_specs``)."""
    for assets_def in _assets_defs(defs):
        for spec in assets_def.check_specs:
            fields = [
                f"blocking={_yes_no(spec.blocking)}",
                f"partitioned={_yes_no(spec.partitions_def is not None)}",
            ]
            if spec.additional_deps:
                extra = (dep.asset_key.to_user_string() for dep in spec.additional_deps)
                fields.append(f"additional_deps={_bracketed(extra)}")
            if spec.automation_condition is not None:
                fields.append(f"automation={_automation(spec.automation_condition)}")
            yield _line("check", f"{spec.asset_key.to_user_string()}:{spec.name}", fields)


def _sensor_lines(
    repository: dg.RepositoryDefinition, assets_defs: Sequence[dg.AssetsDefinition]
) -> Iterator[str]:
    for sensor in repository.sensor_defs:
        interval = sensor.minimum_interval_seconds
        fields = [
            f"type={sensor.sensor_type.value.lower()}",
            f"status={sensor.default_status.value}",
            f"min_interval={'default' if interval is None else f'{interval}s'}",
        ]
        if sensor.has_jobs:
            fields.append(f"jobs={_bracketed(job.name for job in sensor.jobs)}")
        elif sensor.asset_selection is not None:
            fields.append(f"assets={_resolve(sensor.asset_selection, assets_defs)}")
        else:
            fields.append("target=none")
        yield _line("sensor", sensor.name, fields)


def _schedule_lines(
    repository: dg.RepositoryDefinition, assets_defs: Sequence[dg.AssetsDefinition]
) -> Iterator[str]:
    for schedule in repository.schedule_defs:
        cron = schedule.cron_schedule
        fields = [
            f"cron={cron if isinstance(cron, str) else '; '.join(cron)}",
            f"timezone={schedule.execution_timezone or 'default'}",
            f"status={schedule.default_status.value}",
        ]
        if not schedule.has_job:
            fields.append("target=none")
        else:
            assets = _job_assets(schedule.job, assets_defs)
            hidden = schedule.job.name.startswith(HIDDEN_JOB_PREFIX)
            fields.append(f"assets={assets}" if hidden and assets else f"job={schedule.job.name}")
        yield _line("schedule", schedule.name, fields)


def _job_lines(
    defs: dg.Definitions,
    repository: dg.RepositoryDefinition,
    assets_defs: Sequence[dg.AssetsDefinition],
) -> Iterator[str]:
    """The jobs the UI lists: every job of the repository (those passed to ``defs`` and those
    sensors and schedules bring), less Dagster's hidden implicit ones. An asset job shows the
    assets it selects, read from its definition as written (the repository holds it resolved,
    which has no public selection)."""
    known: dict[str, Any] = {job.name: job for job in defs.jobs or []}
    for sensor in repository.sensor_defs:
        if sensor.has_jobs:
            known.update((job.name, job) for job in sensor.jobs)
    for schedule in repository.schedule_defs:
        if schedule.has_job:
            known[schedule.job.name] = schedule.job
    for name in repository.job_names:
        if name.startswith(HIDDEN_JOB_PREFIX):
            continue
        assets = _job_assets(known.get(name), assets_defs)
        yield _line("job", name, [] if assets is None else [f"assets={assets}"])


def _resource_lines(defs: dg.Definitions) -> Iterator[str]:
    """Keys and classes only: resource configuration holds URLs and paths of the machine."""
    for key, resource in (defs.resources or {}).items():
        yield _line("resource", key, [f"class={type(resource).__name__}"])


def _executor_lines(defs: dg.Definitions) -> Iterator[str]:
    executor = defs.executor
    if executor is not None:
        yield _line("executor", getattr(executor, "name", type(executor).__name__), [])


def describe_partitions(partitions_def: dg.PartitionsDefinition | None) -> str:
    """E.g. ``multi(date=daily from 2024-01-01 end_offset=1, symbol=dynamic binance_symbols)``."""
    if partitions_def is None:
        return "none"
    if isinstance(partitions_def, dg.MultiPartitionsDefinition):
        dimensions = ", ".join(
            f"{dimension.name}={describe_partitions(dimension.partitions_def)}"
            for dimension in partitions_def.partitions_defs
        )
        return f"multi({dimensions})"
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition):
        cron = partitions_def.cron_schedule
        text = f"{CADENCES.get(cron, f'cron({cron})')} from {_moment(partitions_def.start)}"
        if partitions_def.end is not None:
            text += f" to {_moment(partitions_def.end)}"
        text += f" end_offset={partitions_def.end_offset}"
        if partitions_def.timezone != "UTC":
            text += f" timezone={partitions_def.timezone}"
        if partitions_def.fmt != DEFAULT_DATE_FORMAT:
            text += f" fmt={partitions_def.fmt}"
        return text
    if isinstance(partitions_def, dg.DynamicPartitionsDefinition):
        return f"dynamic {partitions_def.name}"
    if isinstance(partitions_def, dg.StaticPartitionsDefinition):
        return f"static{_bracketed(partitions_def.get_partition_keys(), sort=False)}"
    return type(partitions_def).__name__


def describe_freshness(policy: dg.FreshnessPolicy | None) -> str:
    """The time-window and cron policies by their public fields (their classes are not
    exported, so they are told apart by those fields)."""
    if policy is None:
        return "none"
    fail_window = getattr(policy, "fail_window", None)
    if fail_window is not None:
        warn_window = getattr(policy, "warn_window", None)
        warn = "none" if warn_window is None else _duration(warn_window.to_timedelta())
        return f"time_window(fail={_duration(fail_window.to_timedelta())}, warn={warn})"
    deadline_cron = getattr(policy, "deadline_cron", None)
    lower_bound = getattr(policy, "lower_bound_delta", None)
    if deadline_cron is not None and isinstance(lower_bound, timedelta):
        timezone = getattr(policy, "timezone", "UTC")
        return f"cron({deadline_cron}, lower_bound={_duration(lower_bound)}, timezone={timezone})"
    return type(policy).__name__


def _line(kind: str, name: str, fields: Sequence[str]) -> str:
    return " | ".join([f"{kind} {name}", *fields])


def _bracketed(items: Iterable[Any], *, sort: bool = True) -> str:
    texts = [str(item) for item in items]
    return f"[{', '.join(sorted(texts) if sort else texts)}]"


def _tags(tags: Mapping[str, str]) -> str:
    """Tags but the ``dagster/kind/...`` ones, which are shown as ``kinds``."""
    shown = (
        f"{key}={value}" if value else key
        for key, value in tags.items()
        if not key.startswith(KIND_TAG_PREFIX)
    )
    return "{" + ", ".join(sorted(shown)) + "}"


def _dep(dep: dg.AssetDep) -> str:
    key = dep.asset_key.to_user_string()
    mapping = dep.partition_mapping
    return key if mapping is None else f"{key}(mapping={type(mapping).__name__})"


def _pool(assets_def: dg.AssetsDefinition | None) -> str:
    if assets_def is None or not assets_def.is_executable:
        return "none"
    pools = sorted(assets_def.node_def.pools)
    return ",".join(pools) if pools else "none"


def _backfill(assets_def: dg.AssetsDefinition | None) -> str:
    policy = None if assets_def is None else assets_def.backfill_policy
    if policy is None:
        return "none"
    if policy.max_partitions_per_run is None:
        return "single_run"
    return f"multi_run({policy.max_partitions_per_run})"


def _automation(condition: dg.AutomationCondition) -> str:
    return getattr(condition, "name", None) or type(condition).__name__


def _resolve(selection: dg.AssetSelection, assets_defs: Sequence[dg.AssetsDefinition]) -> str:
    return _bracketed(key.to_user_string() for key in selection.resolve(assets_defs))


def _job_assets(job: Any, assets_defs: Sequence[dg.AssetsDefinition]) -> str | None:
    """The assets an asset job (``define_asset_job``, or the implicit job of a schedule or
    sensor that targets assets) selects; None for a job that is not an asset job."""
    selection = getattr(job, "selection", None)
    if not isinstance(selection, dg.AssetSelection):
        return None
    return _resolve(selection, assets_defs)


def _moment(moment: datetime) -> str:
    if (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0):
        return moment.date().isoformat()
    return moment.replace(tzinfo=None).isoformat()


def _duration(delta: timedelta) -> str:
    """``15m``, ``1d6h``: readable, and exact to the second."""
    seconds = int(delta.total_seconds())
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


# --- loading the code location --------------------------------------------------------------


def code_location_module_name() -> str:
    """The module ``dagster dev`` loads (``[tool.dagster] module_name``), so the snapshot is of
    what the UI shows even if the code location's root moves."""
    with (REPO_ROOT / "pyproject.toml").open("rb") as file:
        return str(tomllib.load(file)["tool"]["dagster"]["module_name"])


def load_code_location() -> dg.Definitions:
    """The code location's ``defs``, built afresh by executing its module in a new module
    object: the cached ``crypto_pipelines.definitions`` may have been imported by another
    test under other environment variables, and is left untouched."""
    spec = importlib.util.find_spec(code_location_module_name())
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    defs = module.defs
    assert isinstance(defs, dg.Definitions)
    return defs


@pytest.fixture
def project_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``CRYPTO_PIPELINES_*`` variable of the developer's shell or CI reaches the build
    (``CRYPTO_PIPELINES_UNIVERSE``, ``_SOURCE`` and any later override), so the code location
    loads the default universe file as it ships; the update switch stays readable."""
    for name in list(os.environ):
        if name.startswith(PROJECT_ENV_PREFIX) and name != UPDATE_ENV:
            monkeypatch.delenv(name)
    return monkeypatch


# --- tests ----------------------------------------------------------------------------------


def test_definitions_match_snapshot(project_env: pytest.MonkeyPatch) -> None:
    """The checked-in snapshot is what the code location defines; with
    ``CRYPTO_PIPELINES_UPDATE_SNAPSHOTS=1`` the snapshot is rewritten instead."""
    rendered = render_definitions(load_code_location())
    if os.environ.get(UPDATE_ENV, "") not in ("", "0"):
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(rendered, encoding="utf-8", newline="\n")
        return
    if not SNAPSHOT.exists():
        pytest.fail(f"{SNAPSHOT} is missing; create it with:\n  {UPDATE_COMMAND}")
    expected = SNAPSHOT.read_text(encoding="utf-8")
    if rendered != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                rendered.splitlines(keepends=True),
                fromfile=f"{SNAPSHOT.relative_to(REPO_ROOT)} (checked in)",
                tofile="rendered from the code location",
            )
        )
        pytest.fail(
            "The code location's definitions differ from the snapshot:\n\n"
            f"{diff}\n"
            "If the change is intended, regenerate the snapshot and commit it:\n"
            f"  {UPDATE_COMMAND}",
            pytrace=False,
        )


def test_rendering_follows_the_universe(project_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The renderer is not vacuous: it shows the default universe's 1m candles of Binance
    with their checks and partitions, and a universe with one timeframe fewer renders
    differently, by exactly that asset and what hangs on it."""
    default = render_definitions(load_code_location())
    lines = default.splitlines()

    def line_of(prefix: str) -> str:
        found = [line for line in lines if line.startswith(f"{prefix} | ")]
        assert len(found) == 1, f"no single line for {prefix!r} in:\n{default}"
        return found[0]

    ohlcv = line_of("asset binance/ohlcv_1m")
    assert (
        "partitions=multi(date=monthly from 2024-01-01 end_offset=1, "
        "symbol=dynamic binance_symbols)" in ohlcv
    )
    assert "group=binance" in ohlcv and "deps=[binance/markets]" in ohlcv
    assert "backfill=single_run" in ohlcv and "freshness=time_window(" in ohlcv
    assert "partitioned=yes" in line_of("check binance/ohlcv_1m:gaps")
    assert "blocking=yes" in line_of("check binance/ohlcv_1m:schema")
    line_of("asset binance/ohlcv_1h")

    universe = yaml.safe_load(default_universe_path().read_text(encoding="utf-8"))
    timeframes = universe["exchanges"]["binance"]["timeframes"]
    assert "1h" in timeframes
    timeframes.remove("1h")
    narrower = tmp_path / "universe.yaml"
    narrower.write_text(yaml.safe_dump(universe), encoding="utf-8")
    project_env.setenv(UNIVERSE_ENV, str(narrower))

    changed = render_definitions(load_code_location())
    assert changed != default
    removed = set(lines) - set(changed.splitlines())
    assert "asset binance/ohlcv_1h" in {line.split(" | ")[0] for line in removed}
    # Its checks, its place in jobs, schedules and sensors and in other assets' checks go too.
    assert not any("binance/ohlcv_1h" in line for line in changed.splitlines())
