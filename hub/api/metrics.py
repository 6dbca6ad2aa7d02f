"""What every request gets on the way in, outermost, so refusals (401, 413, 429) count too: an
id (a new UUID, answered as `X-Request-ID` and attached to every log line the request causes,
hub.runtime.logs), and its place in /metrics: requests by route *template* (`/fhir/{type}/{id}`,
never a concrete path, which would name resources and grow without bound), method and status,
and their duration. A pure ASGI middleware."""
from __future__ import annotations

import time
import uuid

from prometheus_client import Counter, Histogram

from hub.runtime import logs

REQUESTS = Counter("ipc_http_requests", "HTTP requests answered", ["route", "method", "status"])
DURATION = Histogram("ipc_http_request_seconds", "Time to answer an HTTP request", ["route", "method"],
                     buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
UNMATCHED = "unmatched"


class RequestMetrics:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]
        request_id = str(uuid.uuid4())

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            with logs.bound(request_id=request_id):
                await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            method = scope.get("method", "")
            REQUESTS.labels(template, method, str(status[0])).inc()
            DURATION.labels(template, method).observe(time.perf_counter() - started)
