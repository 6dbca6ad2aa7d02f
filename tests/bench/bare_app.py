"""The limit the hub's read is measured against: the least a FastAPI service can do to answer
`GET /Patient/{id}` from the hub's own table. One primary-key SELECT through a psycopg async
pool, the stored JSON text returned as is: no FHIR model, no headers beyond the content type,
no middleware.

Served as the hub's API is (hub/cli/main.py, hub/api/app.py): uvicorn, uvloop + httptools, one
worker process, no access log, no Server header; an autocommit psycopg pool of the same sizes
(HUB_DB_POOL_MIN/MAX, 4/16 by default).

    python -m tests.bench.bare_app --port 8081      # BENCH_DATABASE_URL=postgresql://...
"""
from __future__ import annotations

import argparse
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from psycopg_pool import AsyncConnectionPool

SQL = "SELECT content::text FROM resource WHERE res_type = 'Patient' AND res_id = %s"
NOT_FOUND = b'{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-found"}]}'


def create_app(database_url: str, pool_min: int = 4, pool_max: int = 16) -> FastAPI:
    # autocommit, as the hub's pool: a read is one round trip (no BEGIN/COMMIT around it)
    pool = AsyncConnectionPool(database_url, min_size=pool_min, max_size=pool_max, open=False,
                               kwargs={"autocommit": True})

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await pool.open(wait=True, timeout=30)
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/Patient/{res_id}")
    async def read_patient(res_id: str) -> Response:
        async with pool.connection() as conn:
            cur = await conn.execute(SQL, (res_id,))
            row = await cur.fetchone()
        if row is None or row[0] is None:
            return Response(NOT_FOUND, status_code=404, media_type="application/fhir+json")
        return Response(row[0], media_type="application/fhir+json")

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--gc-freeze", action="store_true",
                        help="settle the heap as the hub does once built (hub.runtime.process."
                             "settle_heap: gc.freeze and the hub's GC thresholds)")
    args = parser.parse_args()
    if not args.database_url:
        parser.error("give --database-url or set BENCH_DATABASE_URL")

    import uvicorn

    app = create_app(
        args.database_url,
        int(os.environ.get("HUB_DB_POOL_MIN", 4)),
        int(os.environ.get("HUB_DB_POOL_MAX", 16)),
    )
    if args.gc_freeze:
        from hub.runtime.process import settle_heap

        settle_heap()
    uvicorn.run(
        app, host=args.host, port=args.port, loop="uvloop", http="httptools", workers=1,
        log_level="warning", access_log=False, server_header=False,
    )


if __name__ == "__main__":
    main()
