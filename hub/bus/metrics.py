"""Prometheus metrics shared by every worker (and served by the API process too), and the small
HTTP server a worker process answers /metrics, /healthz and /readyz on."""
from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

MESSAGES_IN = Counter("ipc_messages_in", "Records a worker consumed", ["worker", "topic"])
MESSAGES_OUT = Counter("ipc_messages_out", "Records a worker produced", ["worker", "topic"])
DEAD_LETTERS = Counter("ipc_dead_letters", "Records sent to the dead-letter topic", ["worker", "reason"])
RETRIES = Counter("ipc_transient_retries", "Batches retried after a transient failure", ["worker"])
BATCH_SECONDS = Histogram("ipc_batch_seconds", "Time to process one polled batch, commit included",
                          ["worker"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
LATENCY_SECONDS = Histogram("ipc_record_latency_seconds",
                            "From the record's Kafka timestamp to its offset commit", ["worker"],
                            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
LAG = Gauge("ipc_consumer_lag", "Records produced to a partition and not yet committed by the group",
            ["worker", "topic", "partition"])
PUBLISHED_EVENTS = Counter("ipc_record_events_published", "Change events the outbox relay published")


def exposition(others: list[bytes] | None = None) -> tuple[bytes, str]:
    """The metrics in Prometheus text format, and its content type; with `others` (other
    processes' expositions: the workers under `ipc-hub up`), their samples merged in, family by
    family, so the result is still one valid exposition."""
    local = generate_latest()
    if not others:
        return local, CONTENT_TYPE_LATEST
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.registry import CollectorRegistry

    families: dict[str, object] = {}
    for text in [local, *others]:
        for family in text_string_to_metric_families(text.decode()):
            if family.name in families:
                families[family.name].samples.extend(family.samples)
            else:
                families[family.name] = family

    class Merged:
        def collect(self):
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Merged())
    return generate_latest(registry), CONTENT_TYPE_LATEST


def serve_health(host: str, port: int, alive: Callable[[], bool], ready: Callable[[], bool]) -> ThreadingHTTPServer:
    """/metrics, /healthz and /readyz for a worker process, on a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/metrics":
                body, ctype = exposition()
                self._send(200, body, ctype)
            elif self.path in ("/healthz", "/readyz"):
                ok = alive() if self.path == "/healthz" else ready()
                status = "ok" if ok else "unavailable"
                self._send(200 if ok else 503, json.dumps({"status": status}).encode(), "application/json")
            else:
                self._send(404, b"{}", "application/json")

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # no access log
            return

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address) -> None:
            # A prober that gave up (the supervisor waits 1 s) leaves a broken pipe: nothing to
            # report, and socketserver's default would print a traceback into the worker's log.
            return

    server = Server((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="worker-http", daemon=True).start()
    return server
