"""The service's Prometheus metrics, in a registry of the app's own (no process-global
state: two apps in one process, as in tests, count separately)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class ApiMetrics:
    """Requests, latencies, rows ingested and rejections by reason."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "crypto_pipelines_api_requests",
            "HTTP requests answered, by route template, method and status code.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "crypto_pipelines_api_request_seconds",
            "Time from request to response, by route template.",
            ("route",),
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.rows = Counter(
            "crypto_pipelines_api_rows",
            "Rows accepted by ingestion, by dataset and outcome (inserted, updated, unchanged).",
            ("dataset", "outcome"),
            registry=self.registry,
        )
        self.rejections = Counter(
            "crypto_pipelines_api_rejections",
            "Requests refused, by reason (unauthorized, rate_limited, too_large, invalid, "
            "not_in_universe, ...).",
            ("reason",),
            registry=self.registry,
        )

    def rejected(self, reason: str) -> None:
        self.rejections.labels(reason=reason).inc()

    def ingested(self, dataset: str, inserted: int, updated: int, unchanged: int) -> None:
        for outcome, count in (
            ("inserted", inserted),
            ("updated", updated),
            ("unchanged", unchanged),
        ):
            if count:
                self.rows.labels(dataset=dataset, outcome=outcome).inc(count)
