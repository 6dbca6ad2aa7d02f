"""Liveness and readiness for orchestrators: open endpoints that reveal nothing about the record."""
from __future__ import annotations

import asyncio

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
    """Ready when the database answers and, under `ipc-hub up`, every supervised worker and
    connector is running and ready (a stopped, restarting or stuck one is named); 503
    otherwise, so a load balancer stops sending work and an operator sees what is wrong."""
    body: dict = {"status": "ready", "database": "ok"}
    ok = True
    try:
        async with request.app.state.pool.connection(timeout=2) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:  # any failure to reach the database means not ready
        body["database"] = type(exc).__name__
        ok = False
    pipeline = getattr(request.app.state, "pipeline_status", None)
    if pipeline is not None:
        body["processes"] = pipeline()
        ok = ok and all(p["ready"] for p in body["processes"].values())
    if not ok:
        body["status"] = "unavailable"
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text format: this process's requests by route template, and under `ipc-hub
    up` the supervised workers' counters merged in."""
    children = getattr(request.app.state, "pipeline_metrics", None)
    others = await asyncio.to_thread(children) if children is not None else None
    body, content_type = exposition(others)
    return Response(body, media_type=content_type)
