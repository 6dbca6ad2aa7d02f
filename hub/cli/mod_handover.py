"""`ipc-hub connector mod`: the MOD transition handover feed (HTTPS POST and, when
HUB_MOD_DROP_DIR is set, a watched drop folder) wired to Kafka, and `serve_mod` for running
it inside another command's event loop (as `ipc-hub up` runs the MLLP listener).

Bearer tokens are checked against the hub's JWKS, fetched once at start from HUB_AUTH_JWKS_URL
(default: the issuer's /.well-known/jwks.json), so the connector needs no database of its own;
on the embedded default it writes the bus journal (hub/bus/journal.py) in the hub's database."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from hub.auth.tokens import TokenVerifier
from hub.bus.kafka import BusSettings
from hub.bus.journal import AsyncJournal
from hub.bus.produce import EnvelopeProducer
from hub.bus.topics import Topics, ensure_topics
from hub.cli.background import serve_on_thread, serve_until_signalled
from hub.cli.common import bus_settings, database_url, journal_enabled, kafka_bootstrap, locate_data_dir
from hub.config import Settings
from hub.runtime.embedded import EmbeddedError, ensure_port_free

log = logging.getLogger("hub")


def jwks_url(settings: Settings) -> str:
    return settings.auth_jwks_url or f"{settings.token_issuer()}/.well-known/jwks.json"


def fetch_jwks(url: str) -> dict[str, Any]:
    """The JWKS document at `url`; EmbeddedError (a clear start-up failure) when it cannot be read."""
    import httpx

    try:
        response = httpx.get(url, timeout=10)
        response.raise_for_status()
        jwks = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise EmbeddedError(f"cannot read the token keys from {url} ({type(exc).__name__}): "
                            "check HUB_AUTH_JWKS_URL") from None
    if not isinstance(jwks, dict) or not jwks.get("keys"):
        raise EmbeddedError(f"{url} holds no JWKS keys: check HUB_AUTH_JWKS_URL")
    return jwks


def tls_files(settings: Settings) -> dict[str, str]:
    """uvicorn's TLS arguments from HUB_MOD_TLS_CERT and HUB_MOD_TLS_KEY (both or neither)."""
    cert, key = settings.mod_tls_cert, settings.mod_tls_key
    if cert is None and key is None:
        return {}
    if cert is None or key is None:
        raise EmbeddedError("set both HUB_MOD_TLS_CERT and HUB_MOD_TLS_KEY for HTTPS, or neither")
    for path in (cert, key):
        if not path.is_file():
            raise EmbeddedError(f"the MOD connector's TLS file {path} does not exist")
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}


class _EmbeddedServer:
    """uvicorn serving the endpoint inside the caller's event loop: the caller owns signals and
    stopping, and learns the bound port (useful with port 0)."""

    def __init__(self, app: Any, settings: Settings) -> None:
        import uvicorn

        listening = self.listening = asyncio.Event()

        class Server(uvicorn.Server):
            def capture_signals(self):  # the caller's stop event decides when to stop
                return contextlib.nullcontext()

            async def startup(self, sockets=None) -> None:
                await super().startup(sockets)
                listening.set()

        config = uvicorn.Config(app, host=settings.mod_host, port=settings.mod_port, lifespan="off",
                                log_level="warning", access_log=False, server_header=False,
                                **tls_files(settings))
        self.server = Server(config)

    async def serve(self, stop: asyncio.Event, started: Callable[[int], None] | None) -> None:
        task = asyncio.create_task(self.server.serve())
        waiting = asyncio.create_task(self.listening.wait())
        await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if not self.server.started:
            waiting.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise EmbeddedError("the MOD connector could not listen on HUB_MOD_HOST:HUB_MOD_PORT")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        log.info("MOD handover endpoint on %s:%d%s", self.server.config.host, port,
                 " (TLS)" if self.server.config.ssl_certfile else "")
        if started is not None:
            started(port)
        try:
            await stop.wait()
        finally:
            self.server.should_exit = True
            await task


async def serve_mod(settings: Settings, bus: BusSettings, stop: asyncio.Event,
                    started: Callable[[int], None] | None = None, *, jwks: dict[str, Any] | None = None,
                    journal_url: str | None = None) -> None:
    """Serve POST /handover (and watch HUB_MOD_DROP_DIR) until `stop` is set. `jwks` replaces the
    fetch from HUB_AUTH_JWKS_URL (for a caller that holds the keys already)."""
    from connectors.mod import DropFolder, Intake, create_app

    keys = jwks if jwks is not None else await asyncio.to_thread(fetch_jwks, jwks_url(settings))
    verifier = TokenVerifier(keys, issuer=settings.token_issuer(), audience=settings.token_audience())
    held = AsyncJournal(journal_url) if journal_url else None
    if held is not None:
        await held.open()
    # No linger: each sender waits for Kafka's acknowledgement.
    producer = EnvelopeProducer(dataclasses.replace(bus, linger_ms=0), "ipc-hub-mod", journal=held)
    try:
        intake = Intake(producer.send, settings.mod_source)
        server = _EmbeddedServer(create_app(intake, verifier, settings.mod_max_body_bytes), settings)
        tasks = []
        if settings.mod_drop_dir is not None:
            folder = DropFolder(settings.mod_drop_dir, intake, max_bytes=settings.mod_max_body_bytes)
            tasks.append(asyncio.create_task(folder.run(stop, settings.mod_poll_interval_s)))
            log.info("MOD handover drop folder watched: %s", settings.mod_drop_dir)
        try:
            await server.serve(stop, started)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await asyncio.get_running_loop().run_in_executor(None, producer.close)
        if held is not None:
            await held.close()


def start_mod(settings: Settings, bootstrap: str, stack: ExitStack, jwks: dict[str, Any] | None = None) -> None:
    """For `ipc-hub up`: the connector on a thread with its own event loop, stopped with the stack."""
    bus = bus_settings(settings, bootstrap)
    serve_on_thread("mod-handover", lambda stop, started: serve_mod(settings, bus, stop, started, jwks=jwks), stack)


def run(args: argparse.Namespace, settings: Settings) -> None:
    """`ipc-hub connector mod` as its own process (production runs several behind a load balancer;
    they may share one drop folder)."""
    ensure_port_free(settings.mod_host, settings.mod_port, "HUB_MOD_PORT")
    tls_files(settings)  # a bad TLS setting, or keys that cannot be read, fail before anything starts
    jwks = fetch_jwks(jwks_url(settings))
    settings = locate_data_dir(settings, must_exist=False)
    with ExitStack() as stack:
        bootstrap = kafka_bootstrap(settings, stack)
        bus = bus_settings(settings, bootstrap)
        ensure_topics(bootstrap, Topics(bus.topic_prefix), bus.partitions, bus.max_message_bytes)
        url = database_url(settings, stack) if journal_enabled(settings) else None

        serve_until_signalled(lambda stop: serve_mod(settings, bus, stop, jwks=jwks, journal_url=url))
