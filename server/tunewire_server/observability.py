"""Prometheus metrics, on their own port and in a registry per server (tests run several at once)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

from tunewire_server.jobs.states import JobState
from tunewire_server.protocol import TrainLog

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _JobStates:
    """Jobs by state and the queue length, read from the store at scrape time."""

    def __init__(self, count: Callable[[JobState], int]) -> None:
        self._count = count

    def collect(self):
        jobs = GaugeMetricFamily("tunewire_jobs", "Jobs by state.", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], self._count(state))
        yield jobs
        yield GaugeMetricFamily("tunewire_queue_length", "Jobs waiting to run.", value=self._count(JobState.QUEUED))


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_submitted = Counter("tunewire_jobs_submitted", "SubmitJob calls by outcome.", ["outcome"],
                                      registry=r)
        self.job_duration = Histogram("tunewire_job_duration_seconds", "Wall time from start to end of a job.",
                                      ["state"], buckets=DURATION_BUCKETS, registry=r)
        self.steps_per_second = Gauge("tunewire_training_steps_per_second", "Optimizer steps per second of the "
                                      "running job, between its last two logs.", registry=r)
        self.tokens_per_second = Gauge("tunewire_training_tokens_per_second", "Tokens per second of the "
                                       "running job (SFT).", registry=r)
        self.events_streamed = Counter("tunewire_events_streamed", "Job events sent to StreamMetrics clients.",
                                       registry=r)
        self.open_streams = Gauge("tunewire_open_streams", "Open StreamMetrics and PredictStream calls.",
                                  registry=r)
        self.predict_latency = Histogram("tunewire_predict_latency_seconds", "Predict latency by RPC.", ["rpc"],
                                         buckets=LATENCY_BUCKETS, registry=r)
        self._last_log: tuple[float, float] | None = None  # (time, step)
        self._http = None

    def watch_store(self, count: Callable[[JobState], int]) -> None:
        self.registry.register(_JobStates(count))

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics; returns the bound port (port 0 picks a free one)."""
        self._http, _thread = start_http_server(port, addr=host, registry=self.registry)
        return self._http.server_port

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()

    def train_log(self, log: TrainLog) -> None:
        """Update the running job's step and token rates from its train log."""
        now, step = time.monotonic(), log.step
        if isinstance(step, (int, float)):
            if self._last_log is not None and step > self._last_log[1] and now > self._last_log[0]:
                self.steps_per_second.set((step - self._last_log[1]) / (now - self._last_log[0]))
            self._last_log = (now, step)
        tps = log.tokens_per_second
        if tps is not None and math.isfinite(tps):
            self.tokens_per_second.set(tps)

    def job_ended(self, state: JobState, started_at: float | None, ended_at: float) -> None:
        if started_at is not None:
            self.job_duration.labels(state.value).observe(max(ended_at - started_at, 0.0))
        self._last_log = None
        self.steps_per_second.set(0)
        self.tokens_per_second.set(0)
