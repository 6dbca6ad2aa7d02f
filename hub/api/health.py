"""Liveness and readiness for orchestrators: open endpoints that reveal nothing about the record."""
from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from hub.bus.metrics import exposition

router = APIRouter()


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """The process is up and serving HTTP."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Ready when the database answers; 503 otherwise, so a load balancer stops sending work."""
    try:
        async with request.app.state.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:  # any failure to reach the database means not ready
        return JSONResponse({"status": "unavailable", "database": type(exc).__name__}, status_code=503)
    return JSONResponse({"status": "ready", "database": "ok"})


@router.get("/metrics")
async def metrics() -> Response:
    """Prometheus text format: the pipeline's counters when `ipc-hub up` runs the workers here."""
    body, content_type = exposition()
    return Response(body, media_type=content_type)
