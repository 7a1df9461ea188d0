"""Prometheus metrics of one service instance (its own registry: two apps in a process do not mix)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("latentad_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("latentad_request_latency_seconds", "request latency by endpoint", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.errors = Counter("latentad_errors", "refused or failed requests by kind", ["kind"],
                              registry=self.registry)
        self.images = Counter("latentad_images_scored", "images scored", registry=self.registry)
        self.anomalies = Counter("latentad_anomalies", "images scored above the threshold", registry=self.registry)
        self.threshold = Gauge("latentad_threshold", "the image threshold in use", registry=self.registry)
        self.window_rate = Gauge("latentad_window_anomaly_rate", "share flagged among the recent scores",
                                 registry=self.registry)
        self.window_quantile = Gauge("latentad_window_score_quantile", "quantiles of the recent scores",
                                     ["q"], registry=self.registry)
        self.drift_z = Gauge("latentad_drift_z", "rank-test statistic of the current block of scores against the "
                                                 "calibration scores (about N(0,1) without drift)",
                             registry=self.registry)
        self.drift_alarm = Gauge("latentad_drift_alarm", "1 when the last completed block's |z| exceeded its level",
                                 registry=self.registry)

    def drift(self, state: dict) -> None:
        """The drift gauges from `serve.drift.Drift.state`."""
        if state["anomaly_rate"] is not None:
            self.window_rate.set(state["anomaly_rate"])
        for q, v in state["quantiles"].items():
            self.window_quantile.labels(q).set(v)
        if state["z"] is not None:
            self.drift_z.set(state["z"])
        self.drift_alarm.set(int(state["alarm"]))

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def text(self) -> bytes:
        return generate_latest(self.registry)
