"""Prometheus metrics of a gateway, in a registry of its own (several gateways per process)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)


class _APICollector(Collector):
    """Gauges and counters read from the engine at scrape time, so they can never drift."""

    def __init__(self, snapshot: Callable[[], Iterable[dict[str, Any]]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        gauges = {
            "queue_depth": GaugeMetricFamily(
                "asyncnb_queue_depth", "Workloads waiting in the gateway queue", labels=["api"]
            ),
            "in_progress": GaugeMetricFamily(
                "asyncnb_in_progress", "Workloads handed to Dask and not finished", labels=["api"]
            ),
            "workers": GaugeMetricFamily(
                "asyncnb_workers", "Dask workers able to run the API", labels=["api"]
            ),
            "desired_workers": GaugeMetricFamily(
                "asyncnb_desired_workers",
                "Workers recommended for the present load",
                labels=["api"],
            ),
        }
        counters = {
            status: CounterMetricFamily(
                f"asyncnb_workloads_{status}", f"Workloads that ended {status}", labels=["api"]
            )
            for status in ("completed", "failed", "cancelled")
        }
        scaling = CounterMetricFamily(
            "asyncnb_scaling_events",
            "Changes of the API's desired worker count",
            labels=["api"],
        )
        submitted = CounterMetricFamily(
            "asyncnb_workloads_submitted",
            "Workloads accepted (and recovered after a restart)",
            labels=["api"],
        )
        by_submitter = CounterMetricFamily(
            "asyncnb_submitter_workloads",
            "Workloads per submitter (a key's name, or 'owner'), by what became of them; past "
            "50 submitters of an API, newcomers count as '(others)'",
            labels=["api", "submitted_by", "outcome"],
        )
        for row in self._snapshot():
            for name, counts in row.get("submitters", {}).items():
                for outcome, value in counts.items():
                    by_submitter.add_metric([row["name"], name, outcome], value)
            for key, gauge in gauges.items():
                gauge.add_metric([row["name"]], row[key])
            for status, counter in counters.items():
                counter.add_metric([row["name"]], row[status])
            submitted.add_metric([row["name"]], row["submitted"])
            scaling.add_metric([row["name"]], row["scaling_events"])
        yield from gauges.values()
        yield from counters.values()
        yield submitted
        yield scaling
        yield by_submitter


class GatewayMetrics:
    def __init__(self, snapshot: Callable[[], Iterable[dict[str, Any]]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_APICollector(snapshot))
        self.queue_wait = Histogram(
            "asyncnb_queue_wait_seconds",
            "Time from accepted to started on a worker",
            ["api"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.end_to_end = Histogram(
            "asyncnb_end_to_end_seconds",
            "Time from accepted to finished",
            ["api", "status"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

        self.chunk_size = Histogram(
            "asyncnb_chunk_workloads",
            "Workloads per chunk handed to Dask (one Dask task each)",
            ["api"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=self.registry,
        )

        # --durability fsync: the journal's group commits (each one fsync for every write before
        # it), observed from the committer thread; 0 in buffered mode
        self.journal_fsyncs = Counter(
            "asyncnb_journal_fsyncs",
            "fsyncs of the local journal (--durability fsync), each shared by the writes before it",
            registry=self.registry,
        )
        self.journal_fsync_seconds = Histogram(
            "asyncnb_journal_fsync_seconds",
            "Time one journal fsync (group commit) took",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
            registry=self.registry,
        )

    def journal_fsynced(self, seconds: float) -> None:
        self.journal_fsyncs.inc()
        self.journal_fsync_seconds.observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
