"""The API's stream control (``crypto_pipelines.api.services.StreamControl``) through
Dagster's GraphQL API: the webserver at ``CRYPTO_PIPELINES_DAGSTER_URL``.

The stream is the job ``market_stream`` (``crypto_pipelines.defs.stream``). Starting it here
submits a run exactly as the UI would (``DagsterGraphQLClient.submit_job_execution``), so the
run is queued, launched by the daemon and seen in the UI like any other; stopping terminates
it (``terminate_run``), which the op answers by flushing and closing before it ends.

Finding the active run needs a query the client has no method for (runs of a job by status):
it is sent through gql, the GraphQL library the client itself is built on, to the same URL.
The stream's statistics are what its op logs (``stream statistics: {json}``, every
``report_every_s`` and once more at the end, ``final stream statistics: ...``): read back
from the run's event log, from where the previous call stopped (a cursor per run), so a
stream running for days costs each status call only the events since the last one.

One lock serialises the calls of one process: two concurrent starts cannot both find no run
and both submit one (across processes, the daemon's ``market_stream_supervisor`` and other API
workers, that remains possible; stop terminates every active run).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError
from gql import Client, GraphQLRequest
from gql.transport.requests import RequestsHTTPTransport

from crypto_pipelines.api.services import StreamConflict, StreamUnavailable
from crypto_pipelines.defs.stream import ACTIVE, STREAM_JOB

OP: Final = "run_market_stream"
STATS_MARKER: Final = "stream statistics: "
"""What precedes the statistics' JSON in the op's log messages (``defs.stream._report``)."""
STARTED_BY_TAG: Final = "crypto_pipelines/started_by"
EVENTS_PAGE: Final = 1_000
ACTIVE_STATUSES: Final = [status.value for status in ACTIVE]
CANCELING: Final = "CANCELING"

RUNS_QUERY: Final = """
query StreamRuns($filter: RunsFilter, $limit: Int) {
  runsOrError(filter: $filter, limit: $limit) {
    __typename
    ... on Runs { results { runId status creationTime startTime } }
    ... on InvalidPipelineRunsFilterError { message }
    ... on PythonError { message }
  }
}
"""
LOGS_QUERY: Final = """
query StreamLogs($runId: ID!, $afterCursor: String, $limit: Int) {
  logsForRun(runId: $runId, afterCursor: $afterCursor, limit: $limit) {
    __typename
    ... on EventConnection {
      cursor
      hasMore
      events { __typename ... on MessageEvent { message timestamp } }
    }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
  }
}
"""


@dataclass
class _Seen:
    """How far the log of one run was read, and the latest statistics found in it."""

    cursor: str | None = None
    statistics: dict[str, Any] | None = None
    at: float | None = None


def parse_statistics(message: str) -> dict[str, Any] | None:
    """The statistics in one of the op's log messages, or None for any other message."""
    head, marker, rest = message.partition(STATS_MARKER)
    if not marker or head not in ("", "final "):
        return None
    try:
        found, _end = json.JSONDecoder().raw_decode(rest)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


class DagsterStreamControl:
    """Starts, stops and describes ``market_stream`` runs on the Dagster webserver at
    ``url`` (``http[s]://host[:port][/prefix]``)."""

    def __init__(self, url: str, *, timeout_s: int = 15) -> None:
        self.url = url.rstrip("/")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"Dagster URL {url!r}: expected http[s]://host[:port][/prefix]")
        self._client = DagsterGraphQLClient(
            parts.hostname,
            port_number=parts.port,
            use_https=parts.scheme == "https",
            timeout=timeout_s,
            path_prefix=parts.path.rstrip("/"),
        )
        self._queries = Client(
            transport=RequestsHTTPTransport(url=f"{self.url}/graphql", timeout=timeout_s)
        )
        self._lock = threading.Lock()
        self._seen: dict[str, _Seen] = {}

    # -- StreamControl ------------------------------------------------------------------

    def start(self, config: Mapping[str, Any] | None) -> Mapping[str, Any]:
        with self._lock:
            active = self._runs(ACTIVE_STATUSES)
            if active:
                run = active[0]
                raise StreamConflict(
                    f"{STREAM_JOB} run {run['runId']} is {run['status']}: stop it first"
                )
            run_config = {"ops": {OP: {"config": dict(config)}}} if config else None
            try:
                run_id = self._client.submit_job_execution(
                    STREAM_JOB, run_config=run_config, tags={STARTED_BY_TAG: "api"}
                )
            except DagsterGraphQLClientError as exc:
                raise self._unavailable("cannot submit the stream job", exc) from None
            return self._state(run_id, running=True)

    def stop(self) -> Mapping[str, Any]:
        with self._lock:
            active = self._runs(ACTIVE_STATUSES)
            to_stop = [run for run in active if run["status"] != CANCELING]
            if not to_stop:
                detail = (
                    f"{STREAM_JOB} run {active[0]['runId']} is already stopping"
                    if active
                    else f"no {STREAM_JOB} run is active"
                )
                raise StreamConflict(detail)
            for run in to_stop:
                try:
                    self._client.terminate_run(run["runId"])
                except DagsterGraphQLClientError as exc:
                    raise self._unavailable(f"cannot terminate run {run['runId']}", exc) from None
            return self._state(to_stop[0]["runId"], running=None)

    def status(self) -> Mapping[str, Any]:
        with self._lock:
            active = self._runs(ACTIVE_STATUSES)
            if active:
                return self._state(active[0]["runId"], running=True)
            latest = self._runs(None)
            if not latest:
                return {"running": False, "job": STREAM_JOB}
            return self._state(latest[0]["runId"], running=False)

    # -- Dagster ------------------------------------------------------------------------

    def _unavailable(self, what: str, exc: Exception) -> StreamUnavailable:
        """The refusal naming the URL, what failed and why (the transport's error when the
        client wrapped one, e.g. ``ConnectionError``)."""
        text = " ".join(str(arg) for arg in exc.args).strip() or "no message"
        kind = type(exc.__cause__ or exc).__name__
        return StreamUnavailable(
            f"Dagster at {self.url}: {what}: {kind}: {text.splitlines()[0][:300]}"
        )

    def _query(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        try:
            return self._queries.execute(GraphQLRequest(query, variable_values=variables))
        except Exception as exc:  # connection refused, HTTP error, GraphQL error
            raise self._unavailable("query failed", exc) from None

    def _runs(self, statuses: list[str] | None) -> list[dict[str, Any]]:
        """Runs of the stream job, newest first (active ones first when several)."""
        run_filter: dict[str, Any] = {"pipelineName": STREAM_JOB}
        if statuses is not None:
            run_filter["statuses"] = statuses
        answer = self._query(RUNS_QUERY, {"filter": run_filter, "limit": 5})["runsOrError"]
        if answer["__typename"] != "Runs":
            raise StreamUnavailable(f"Dagster at {self.url}: runs query: {answer['message']}")
        runs: list[dict[str, Any]] = answer["results"]
        return runs

    def _state(self, run_id: str, *, running: bool | None) -> dict[str, Any]:
        """The run's status (``get_run_status``), start time and latest statistics;
        ``running`` None: decided by the status."""
        try:
            status = self._client.get_run_status(run_id).value
        except DagsterGraphQLClientError as exc:
            raise self._unavailable(f"cannot read run {run_id}", exc) from None
        run = self._query(RUNS_QUERY, {"filter": {"runIds": [run_id]}, "limit": 1})
        found = run["runsOrError"].get("results") or [{}]
        seen = self._statistics(run_id)
        return {
            "running": status in ACTIVE_STATUSES if running is None else running,
            "job": STREAM_JOB,
            "run_id": run_id,
            "status": status,
            "started_at": found[0].get("startTime") or found[0].get("creationTime"),
            "run_url": f"{self.url}/runs/{run_id}",
            "statistics": seen.statistics,
            "statistics_at": seen.at,
        }

    def _statistics(self, run_id: str) -> _Seen:
        """The run's latest statistics, reading its log from where the last call stopped
        (only the latest run's cursor is kept)."""
        seen = self._seen.get(run_id) or _Seen()
        self._seen = {run_id: seen}
        while True:
            answer = self._query(
                LOGS_QUERY, {"runId": run_id, "afterCursor": seen.cursor, "limit": EVENTS_PAGE}
            )["logsForRun"]
            if answer["__typename"] != "EventConnection":
                raise StreamUnavailable(
                    f"Dagster at {self.url}: log of run {run_id}: {answer.get('message')}"
                )
            for event in answer["events"]:
                found = parse_statistics(event.get("message") or "")
                if found is not None:
                    seen.statistics = found
                    seen.at = int(event["timestamp"]) / 1000
            seen.cursor = answer["cursor"]
            if not answer["hasMore"] or not answer["events"]:
                return seen
