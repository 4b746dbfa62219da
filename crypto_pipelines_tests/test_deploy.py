"""The deployment files (``deploy/``, ``dagster.postgres.yaml``) against what they must agree
with: the package (pyproject's code location, the Celery queues the code routes steps to), each
other (ports, hosts, image, databases, instance settings mirrored in the Helm values) and Dagster
itself (the instance file opened on a real PostgreSQL, a run stored through it).

The images are not built here (no Docker daemon is assumed); ``docker compose config`` runs where
the compose plugin is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import pytest
import yaml
from sqlalchemy.pool import NullPool

from crypto_pipelines.defs.executor import worker_queues
from crypto_pipelines.domain.universe import default_universe_path, load_universe
from crypto_pipelines.storage.engine import make_engine, normalize_url
from crypto_pipelines_tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
WORKSPACE = DEPLOY / "workspace.grpc.yaml"
HELM_VALUES = DEPLOY / "helm" / "values.yaml"
PG_INSTANCE = ROOT / "dagster.postgres.yaml"
LOCAL_INSTANCE = ROOT / "dagster.yaml"
PG_URL_ENV = "CRYPTO_PIPELINES_TEST_PG_URL"
DAGSTER_HOME_IN_IMAGE = "/opt/dagster/dagster_home"

# Services that run this project's image and talk to its databases and broker.
APP_SERVICES = ("code", "webserver", "daemon", "worker-1", "worker-2", "api")
DAGSTER_PG_VARS = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_DB")


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    lines = (line.strip() for line in text.splitlines())
    return [
        (parts[0].upper(), parts[1] if len(parts) > 1 else "")
        for parts in (line.split(None, 1) for line in lines if line and not line.startswith("#"))
    ]


def dockerfile_cmd() -> list[str]:
    cmds = [args for name, args in dockerfile_instructions() if name == "CMD"]
    assert len(cmds) == 1, "one CMD"
    return json.loads(cmds[0])  # exec form: a JSON array


def option(argv: list[str], *names: str) -> str:
    """The value following the first of ``names`` in a command line."""
    for i, arg in enumerate(argv[:-1]):
        if arg in names:
            return argv[i + 1]
    raise AssertionError(f"none of {names} in {argv}")


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_serves_the_code_location_of_pyproject(pyproject: dict[str, Any]) -> None:
    cmd = dockerfile_cmd()
    assert cmd[:3] == ["dagster", "api", "grpc"]
    assert option(cmd, "-m", "--module-name") == pyproject["tool"]["dagster"]["module_name"]
    assert option(cmd, "-h", "--host") == "0.0.0.0"  # reachable from other containers


def test_dockerfile_image_is_slim_non_root_with_the_postgres_instance() -> None:
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    users = [args for name, args in instructions if name == "USER"]
    assert users and users[-1] not in ("root", "0"), "the last USER must not be root"
    envs = " ".join(args for name, args in instructions if name == "ENV")
    assert f"DAGSTER_HOME={DAGSTER_HOME_IN_IMAGE}" in envs
    copies = [args.split() for name, args in instructions if name == "COPY"]
    assert ["dagster.postgres.yaml", f"{DAGSTER_HOME_IN_IMAGE}/dagster.yaml"] in copies
    installs = [args for name, args in instructions if name == "RUN" and "pip install" in args]
    assert installs and all("[dev]" not in args for args in installs), "no dev extras"
    # Every file the image copies exists and is not excluded by the build's ignore file.
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8")
    for source, *_ in (c[:-1] for c in copies):
        assert (ROOT / source).exists(), source
        assert f"!{source.rstrip('/')}" in ignored.replace("/\n", "\n"), source


# --- compose.yaml -------------------------------------------------------------------------


def test_compose_has_the_deployment_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "rabbitmq", "redis", *APP_SERVICES}
    assert services["postgres"]["image"].split(":")[1] == "16"
    assert services["rabbitmq"]["image"] == "rabbitmq:3-management"
    assert services["redis"]["image"].split(":")[1] == "7"


def test_compose_images_and_builds_are_valid(compose: dict[str, Any], pyproject: dict) -> None:
    version = pyproject["project"]["version"]
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["image"] == f"crypto-pipelines:{version}", name
        build = service["build"]
        context = (COMPOSE.parent / build["context"]).resolve()
        assert context == ROOT, name
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE, name
    for name in ("postgres", "rabbitmq", "redis"):
        assert re.fullmatch(r"[a-z0-9]+:[\w.-]+", compose["services"][name]["image"]), name
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):  # a bind mount of a file of ours
                assert (COMPOSE.parent / source).exists(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)


def test_compose_healthchecks_gate_the_services_that_need_them(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "rabbitmq", "redis", "code", "webserver"):
        assert services[name]["healthcheck"]["test"], name
    for name, service in services.items():
        for dependency, how in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            if how["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], (name, dependency)
    for name in APP_SERVICES:
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("code", "worker-1", "worker-2"):  # they submit or consume Celery tasks
        assert services[name]["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
    for name in ("webserver", "daemon"):  # they load the workspace from the code location
        assert services[name]["depends_on"]["code"]["condition"] == "service_healthy"


def test_every_app_service_shares_the_environment(compose: dict[str, Any]) -> None:
    shared = compose["x-env"]
    for name in (*DAGSTER_PG_VARS, "DAGSTER_PG_PASSWORD", "CRYPTO_PIPELINES_DB_URL"):
        assert shared[name], name
    for key in ("EXECUTOR", "CELERY_BROKER", "CELERY_BACKEND", "REDIS_URL", "EGRESS_ID"):
        assert shared[f"CRYPTO_PIPELINES_{key}"], key
    assert shared["CRYPTO_PIPELINES_EXECUTOR"] == "celery"
    for name in APP_SERVICES:
        environment = compose["services"][name]["environment"]
        assert {k: environment.get(k) for k in shared} == shared, name


def test_compose_addresses_name_its_own_services_and_databases(compose: dict) -> None:
    services, shared = compose["services"], compose["x-env"]
    postgres_env = services["postgres"]["environment"]
    created = re.findall(
        r"CREATE DATABASE (\w+)", (DEPLOY / "postgres-init.sql").read_text(encoding="utf-8")
    )
    databases = {postgres_env["POSTGRES_DB"], *created}
    assert shared["DAGSTER_PG_HOST"] in services
    assert shared["DAGSTER_PG_DB"] in databases
    assert shared["DAGSTER_PG_USER"] == postgres_env["POSTGRES_USER"]
    assert shared["DAGSTER_PG_PASSWORD"] == postgres_env["POSTGRES_PASSWORD"]
    market = urlsplit(shared["CRYPTO_PIPELINES_DB_URL"])
    assert market.scheme == "postgresql+psycopg"
    assert market.hostname in services and market.path.lstrip("/") in databases
    # Dagster's storage and the market store both keep an `alembic_version` table.
    assert market.path.lstrip("/") != shared["DAGSTER_PG_DB"]
    for key in ("CELERY_BROKER", "CELERY_BACKEND", "REDIS_URL"):
        assert urlsplit(shared[f"CRYPTO_PIPELINES_{key}"]).hostname in services, key
    broker = urlsplit(shared["CRYPTO_PIPELINES_CELERY_BROKER"])
    rabbit_env = services["rabbitmq"]["environment"]
    assert broker.username == rabbit_env["RABBITMQ_DEFAULT_USER"]
    assert broker.password == rabbit_env["RABBITMQ_DEFAULT_PASS"]
    dagster_url = urlsplit(services["api"]["environment"]["CRYPTO_PIPELINES_DAGSTER_URL"])
    webserver_cmd = services["webserver"]["command"]
    assert dagster_url.hostname == "webserver"
    assert str(dagster_url.port) == option(webserver_cmd, "-p", "--port")


def test_webserver_and_daemon_load_the_code_location_over_grpc(
    compose: dict[str, Any], pyproject: dict[str, Any]
) -> None:
    services = compose["services"]
    (entry,) = load_yaml(WORKSPACE)["load_from"]
    server = entry["grpc_server"]
    assert server["host"] in services and "command" not in services[server["host"]]
    # The code service runs the image's CMD: its port is the workspace's.
    assert str(server["port"]) == option(dockerfile_cmd(), "-p", "--port")
    assert server["location_name"] == pyproject["tool"]["dagster"]["code_location_name"]
    copied = [args.split() for name, args in dockerfile_instructions() if name == "COPY"]
    assert ["deploy/workspace.grpc.yaml", "/opt/dagster/workspace.yaml"] in copied
    assert services["webserver"]["command"][0] == "dagster-webserver"
    assert services["daemon"]["command"][:2] == ["dagster-daemon", "run"]
    for name in ("webserver", "daemon"):
        assert option(services[name]["command"], "-w", "--workspace") == (
            "/opt/dagster/workspace.yaml"
        )


def test_workers_consume_every_queue_the_code_routes_to(compose: dict[str, Any]) -> None:
    """The exchanges of the universe the compose file runs (the packaged default): a step
    routed to a queue no worker consumes would wait forever."""
    assert compose["x-env"]["CRYPTO_PIPELINES_UNIVERSE"] in ("", "${CRYPTO_PIPELINES_UNIVERSE:-}")
    universe = load_universe(default_universe_path())
    consumed: set[str] = set()
    for name in ("worker-1", "worker-2"):
        command = compose["services"][name]["command"]
        assert command[:2] == ["crypto-pipelines", "worker"], name
        consumed |= set(option(command, "--queues").split(","))
    assert consumed == set(worker_queues(universe.exchanges))


def test_docker_compose_config_validates_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no output"])[0]
        pytest.skip(f"the docker compose plugin is not installed: {reason}")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=DEPLOY,
    )
    assert result.returncode == 0, result.stderr


# --- the production instance --------------------------------------------------------------


def test_pg_instance_keeps_the_local_instance_pools_and_monitoring() -> None:
    production, local = load_yaml(PG_INSTANCE), load_yaml(LOCAL_INSTANCE)
    assert production["concurrency"]["pools"] == local["concurrency"]["pools"]
    assert production["run_monitoring"] == local["run_monitoring"]
    assert production["run_queue"] == local["run_queue"]
    assert production["telemetry"] == {"enabled": False}
    assert "run_launcher" not in production  # DefaultRunLauncher; the Helm chart sets its own


@pytest.fixture
def pg_database() -> Iterator[Mapping[str, str]]:
    """DAGSTER_PG_* for a database created for this test on the test server (Dagster's tables
    and `alembic_version` must not meet the market store's), dropped afterwards."""
    base = os.environ.get(PG_URL_ENV)
    if not base:
        pytest.skip(f"{PG_URL_ENV} is not set")
    url = normalize_url(base)
    name = f"deploy_{uuid.uuid4().hex[:12]}"
    admin = make_engine(base, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield {
            "DAGSTER_PG_HOST": url.host or "127.0.0.1",
            "DAGSTER_PG_PORT": str(url.port or 5432),
            "DAGSTER_PG_USER": url.username or "postgres",
            "DAGSTER_PG_PASSWORD": url.password or "",
            "DAGSTER_PG_DB": name,
        }
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.dispose()


def test_pg_instance_opens_on_postgres_and_stores_a_run(
    pg_database: Mapping[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file as a deployment uses it: $DAGSTER_HOME/dagster.yaml, DAGSTER_PG_* set."""
    for key, value in pg_database.items():
        monkeypatch.setenv(key, value)
    shutil.copy(PG_INSTANCE, tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    config = load_yaml(PG_INSTANCE)

    @dg.asset
    def probe() -> int:
        return 1

    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_launcher).__name__ == "DefaultRunLauncher"
        assert instance.get_runs_count() == 0
        assert dg.materialize([probe], instance=instance).success
        assert instance.get_runs_count() == 1

        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        assert (
            instance.run_coordinator.dequeue_interval_seconds
            == (config["run_queue"]["dequeue_interval_seconds"])
        )
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config is not None
        assert (
            concurrency.run_queue_config.max_concurrent_runs
            == (config["concurrency"]["runs"]["max_concurrent_runs"])
        )
        assert concurrency.pool_config.default_pool_limit == 1
        assert str(concurrency.pool_config.pool_granularity.value) == "op"
        assert instance.run_monitoring_enabled
        assert (
            instance.run_monitoring_start_timeout_seconds
            == (config["run_monitoring"]["start_timeout_seconds"])
        )
        assert instance.get_settings("sensors") == config["sensors"]
        # Retention as the instance holds it (its per-status view takes Dagster's private
        # InstigatorType and TickStatus enums; the settings are the public face of the same).
        retention = instance.get_settings("retention")
        assert retention == config["retention"]
        sensor_days = retention["sensor"]["purge_after_days"]
        assert set(sensor_days) == {"skipped", "success", "failure", "started"}
        assert sensor_days["skipped"] < retention["schedule"]["purge_after_days"]


def with_option(argv: list[str], name: str, value: str) -> list[str]:
    """``argv`` with the value after ``name`` replaced."""
    i = argv.index(name)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


def wait_until(check: Callable[[], bool], process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 90
    while not check():
        assert process.poll() is None, f"{what} exited with {process.returncode}"
        assert time.monotonic() < deadline, f"{what} not up within 90 s"
        time.sleep(0.5)


def test_webserver_loads_the_code_location_served_over_grpc(
    compose: dict[str, Any],
    pg_database: Mapping[str, str],
    tmp_path: Path,
) -> None:
    """The image's processes on this machine, started with their own command lines (the
    Dockerfile's CMD, the compose webserver's and healthcheck's) with only addresses changed:
    the code location serves over gRPC in the compose environment (Celery executor), and the
    webserver reading the gRPC workspace loads it with its jobs."""
    bin_dir = Path(sys.executable).parent
    grpc_port, web_port = str(free_port()), str(free_port())
    shutil.copy(PG_INSTANCE, tmp_path / "dagster.yaml")
    workspace = load_yaml(WORKSPACE)
    workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=int(grpc_port))
    (tmp_path / "workspace.yaml").write_text(yaml.safe_dump(workspace), encoding="utf-8")
    shared = compose["x-env"]
    env = {
        **os.environ,
        **pg_database,
        "DAGSTER_HOME": str(tmp_path),
        "CRYPTO_PIPELINES_EXECUTOR": shared["CRYPTO_PIPELINES_EXECUTOR"],
        "CRYPTO_PIPELINES_RATE_BUDGET_DIR": str(tmp_path / "rate_budgets"),
    }

    def start(argv: list[str], log: str) -> subprocess.Popen:
        argv = [str(bin_dir / argv[0]), *argv[1:]]
        with (tmp_path / log).open("wb") as out:
            return subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=out, stderr=out)

    code_cmd = with_option(with_option(dockerfile_cmd(), "-h", "127.0.0.1"), "-p", grpc_port)
    health_cmd = with_option(
        compose["services"]["code"]["healthcheck"]["test"][1:], "-p", grpc_port
    )
    web_cmd = compose["services"]["webserver"]["command"]
    web_cmd = with_option(with_option(web_cmd, "-h", "127.0.0.1"), "-p", web_port)
    web_cmd = with_option(web_cmd, "-w", str(tmp_path / "workspace.yaml"))
    processes: list[subprocess.Popen] = []
    try:
        processes.append(code := start(code_cmd, "code.log"))
        health = [str(bin_dir / health_cmd[0]), *health_cmd[1:]]
        wait_until(
            lambda: subprocess.run(health, env=env, capture_output=True).returncode == 0,
            code,
            "the code location",
        )
        processes.append(web := start(web_cmd, "webserver.log"))
        base = f"http://127.0.0.1:{web_port}"

        def answers() -> bool:
            try:
                with urllib.request.urlopen(f"{base}/server_info", timeout=2):
                    return True
            except OSError:
                return False

        wait_until(answers, web, "the webserver")
        query = (
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
            "locationOrLoadError { __typename ... on RepositoryLocation { repositories "
            "{ jobs { name } } } ... on PythonError { message } } } } } }"
        )
        request = urllib.request.Request(
            f"{base}/graphql",
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            entries = json.load(response)["data"]["workspaceOrError"]["locationEntries"]
        (entry,) = entries
        assert entry["name"] == workspace["load_from"][0]["grpc_server"]["location_name"]
        location = entry["locationOrLoadError"]
        assert location["__typename"] == "RepositoryLocation", location
        jobs = {job["name"] for repo in location["repositories"] for job in repo["jobs"]}
        assert "markets_refresh" in jobs
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- Helm values --------------------------------------------------------------------------


def test_helm_values_deploy_this_image_and_code_location(
    compose: dict[str, Any], pyproject: dict[str, Any]
) -> None:
    values = load_yaml(HELM_VALUES)
    user = values["dagster-user-deployments"]
    assert user["enabled"] is True
    (deployment,) = user["deployments"]
    image = deployment["image"]
    compose_name, compose_tag = compose["services"]["code"]["image"].split(":")
    assert image["repository"].rsplit("/", 1)[-1] == compose_name
    assert str(image["tag"]) == compose_tag == pyproject["project"]["version"]
    args = deployment["dagsterApiGrpcArgs"]
    assert option(args, "-m", "--module-name") == pyproject["tool"]["dagster"]["module_name"]
    env = deployment["env"]
    assert set(DAGSTER_PG_VARS) <= set(env)
    assert env["DAGSTER_PG_HOST"] == values["postgresql"]["postgresqlHost"]
    assert env["DAGSTER_PG_DB"] == values["postgresql"]["postgresqlDatabase"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    secrets = {s["name"] for s in deployment["envSecrets"]}
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert {s["name"] for s in launcher["envSecrets"]} == secrets


def test_helm_values_mirror_the_pg_instance() -> None:
    """The chart writes its own dagster.yaml: the same queue, pools, monitoring and retention
    (only the start timeout differs: a pod may pull its image first)."""
    values, instance = load_yaml(HELM_VALUES), load_yaml(PG_INSTANCE)
    daemon = values["dagsterDaemon"]
    queued = daemon["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued["dequeueIntervalSeconds"] == instance["run_queue"]["dequeue_interval_seconds"]
    concurrency = values["concurrency"]
    assert concurrency["enabled"] is True
    assert (
        concurrency["runs"]["maxConcurrentRuns"]
        == (instance["concurrency"]["runs"]["max_concurrent_runs"])
    )
    assert concurrency["pools"] == {
        "granularity": instance["concurrency"]["pools"]["granularity"],
        "defaultLimit": instance["concurrency"]["pools"]["default_limit"],
    }
    monitoring, expected = daemon["runMonitoring"], instance["run_monitoring"]
    pairs = {
        "enabled": "enabled",
        "cancelTimeoutSeconds": "cancel_timeout_seconds",
        "maxResumeRunAttempts": "max_resume_run_attempts",
        "pollIntervalSeconds": "poll_interval_seconds",
        "freeSlotsAfterRunEndSeconds": "free_slots_after_run_end_seconds",
    }
    assert {k: monitoring[k] for k in pairs} == {k: expected[v] for k, v in pairs.items()}
    assert monitoring["startTimeoutSeconds"] >= expected["start_timeout_seconds"]
    assert daemon["sensors"] == {
        "useThreads": instance["sensors"]["use_threads"],
        "numWorkers": instance["sensors"]["num_workers"],
    }
    retention = values["retention"]
    assert retention["enabled"] is True
    for kind in ("sensor", "schedule"):
        assert retention[kind]["purgeAfterDays"] == instance["retention"][kind]["purge_after_days"]
    assert values["telemetry"] == instance["telemetry"]
