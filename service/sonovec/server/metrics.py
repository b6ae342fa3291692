"""Prometheus metrics, on a registry per service instance (several servers can share a process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from sonovec.server.batcher import BatchStats

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_WINDOWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_SECONDS = (0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sonovec_requests", "Requests by method and outcome.", ["method", "code"], registry=r
        )
        self.latency = Histogram(
            "sonovec_request_seconds",
            "Request latency, end to end.",
            ["method"],
            buckets=_LATENCY,
            registry=r,
        )
        self.queue_wait = Histogram(
            "sonovec_queue_wait_seconds",
            "Time windows wait in the batch queue.",
            ["model"],
            buckets=_LATENCY,
            registry=r,
        )
        self.batch_windows = Histogram(
            "sonovec_batch_windows", "Windows per model call.", ["model", "op"], buckets=_WINDOWS, registry=r
        )
        self.batch_audio = Histogram(
            "sonovec_batch_audio_seconds",
            "Audio seconds per model call.",
            ["model", "op"],
            buckets=_SECONDS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "sonovec_model_call_seconds",
            "Duration of one model call.",
            ["model", "op"],
            buckets=_LATENCY,
            registry=r,
        )
        self.audio_processed = Counter(
            "sonovec_audio_processed_seconds",
            "Audio seconds run through the model.",
            ["model", "op"],
            registry=r,
        )
        self.queue_depth_seconds = Gauge(
            "sonovec_queue_depth_seconds", "Audio seconds waiting in the batch queue.", registry=r
        )
        self.queue_depth_windows = Gauge(
            "sonovec_queue_depth_windows", "Windows waiting in the batch queue.", registry=r
        )
        self.cache = Counter(
            "sonovec_cache_requests", "Embedding cache lookups by result.", ["backend", "result"], registry=r
        )
        self.cache_bytes = Counter(
            "sonovec_cache_bytes",
            "Bytes read from and written to the cache.",
            ["backend", "direction"],
            registry=r,
        )
        self.map_cache = Counter(
            "sonovec_map_cache_requests",
            "Explorer map and cluster cache lookups by kind (map, clusters) and result (hit, miss).",
            ["kind", "result"],
            registry=r,
        )
        self.cache_errors = Counter(
            "sonovec_cache_errors",
            "Cache operations that failed (the cache was bypassed).",
            ["backend"],
            registry=r,
        )
        self.weights = Gauge(
            "sonovec_model_info",
            "Loaded models (value 1), with weights fingerprint and whether pretrained.",
            ["model", "backend", "device", "fingerprint", "pretrained"],
            registry=r,
        )
        self.ready = Gauge("sonovec_ready", "1 when models are loaded and warm.", registry=r)
        self.memory_inflight = Gauge(
            "sonovec_memory_inflight_bytes",
            "Bytes held by requests in flight (bodies and decoded audio), against the budget.",
            registry=r,
        )
        self.memory_budget = Gauge(
            "sonovec_memory_budget_bytes", "The memory budget of requests in flight.", registry=r
        )
        self.refused = Counter(
            "sonovec_admission_refused",
            "Requests refused at admission, by reason: memory (budget full), queue_cost (audio "
            "seconds queued), queue_wait (projected wait over the bound), deadline (the request's own).",
            ["reason"],
            registry=r,
        )
        self.projected_wait = Gauge(
            "sonovec_queue_projected_wait_seconds",
            "Queued audio seconds over the measured throughput: how long a new request would wait.",
            registry=r,
        )
        self.throughput = Gauge(
            "sonovec_engine_throughput_audio_seconds_per_second",
            "Audio seconds per second the engine achieves (all workers; moving average).",
            registry=r,
        )

    def watch_queue(self, seconds: Callable[[], float], windows: Callable[[], float]) -> None:
        self.queue_depth_seconds.set_function(seconds)
        self.queue_depth_windows.set_function(windows)

    def observe_batch(self, stats: BatchStats) -> None:
        labels = (stats.key.model, stats.key.op)
        self.batch_windows.labels(*labels).observe(stats.size)
        self.batch_audio.labels(*labels).observe(stats.cost)
        self.model_seconds.labels(*labels).observe(stats.run_seconds)
        self.audio_processed.labels(*labels).inc(stats.cost)
        wait = self.queue_wait.labels(stats.key.model)
        for seconds in stats.queue_waits:
            wait.observe(seconds)
