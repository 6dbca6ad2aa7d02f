"""A real hub API on a real socket (uvicorn in a background thread) over the session's
embedded PostgreSQL. Tests talk to it with httpx over HTTP, as any client would."""
from __future__ import annotations

import socket
import threading

import httpx
import pytest
import uvicorn

from hub.api.app import create_app
from hub.config import Settings

MAX_BODY = 2_000_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _SignallingServer(uvicorn.Server):
    """uvicorn that tells the test when it is listening, so no test waits by sleeping."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets)
        self.ready.set()


@pytest.fixture(scope="session")
def hub_url(pg_url: str) -> str:
    port = free_port()
    settings = Settings(database_url=pg_url, http_port=port, max_body_bytes=MAX_BODY,
                        default_page_size=20, max_page_size=100, db_pool_min=1, db_pool_max=8)
    app = create_app(settings, pg_url)
    server = _SignallingServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                              loop="asyncio"))
    thread = threading.Thread(target=server.run, name="hub-api", daemon=True)
    thread.start()
    if not server.ready.wait(30):
        raise RuntimeError("the hub API did not start within 30 s")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture()
def fhir(hub_url: str):
    with httpx.Client(base_url=f"{hub_url}/fhir", timeout=30,
                      headers={"Accept": "application/fhir+json"}) as client:
        yield client
