"""`ipc-hub connector hl7v2`: the HL7 v2 MLLP listener wired to Kafka and its dedupe table, and
the same listener on a thread of its own for `ipc-hub up`.

Each accepted message becomes an Envelope on the inbound topic; the sender's AA goes out only
after Kafka acknowledged it (acks=all). Accepted messages are remembered in PostgreSQL
(`connectors.hl7v2.dedupe`), so a restarted connector, or another one, still answers a resend
without publishing it twice."""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib
import logging
import ssl
from collections.abc import Callable
from contextlib import ExitStack

from hub.bus.envelope import Envelope
from hub.bus.kafka import BusSettings
from hub.bus.produce import EnvelopeProducer
from hub.bus.topics import Topics, ensure_topics
from hub.cli.background import serve_on_thread, serve_until_signalled
from hub.config import Settings
from hub.runtime.embedded import EmbeddedError, ensure_port_free

log = logging.getLogger("hub")

# Connectors in a CLI module of their own: name → module whose run(args, settings) serves it.
CONNECTORS = {"mod": "hub.cli.mod_handover", "la": "hub.cli.la_extracts", "statements": "hub.cli.statements"}


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """A server TLS context from HUB_MLLP_TLS_CERT and HUB_MLLP_TLS_KEY, or None when neither is set."""
    cert, key = settings.mllp_tls_cert, settings.mllp_tls_key
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise EmbeddedError("set both HUB_MLLP_TLS_CERT and HUB_MLLP_TLS_KEY for MLLP over TLS, or neither")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise EmbeddedError(f"cannot load the MLLP TLS certificate or key ({type(exc).__name__}): "
                            "check HUB_MLLP_TLS_CERT and HUB_MLLP_TLS_KEY") from None
    return context


def check_mllp_port(settings: Settings) -> None:
    ensure_port_free(settings.mllp_host, settings.mllp_port, "HUB_MLLP_PORT")


async def serve_mllp(settings: Settings, database_url: str, bus: BusSettings, stop: asyncio.Event,
                     started: Callable[[int], None] | None = None) -> None:
    """Listen until `stop` is set, then stop taking connections and close the open ones."""
    from connectors.hl7v2 import MllpServer
    from connectors.hl7v2.dedupe import PostgresDedupe

    context = tls_context(settings)
    # No linger: each sender waits for its ACK, so a record held back to fill a batch is
    # latency only (the client's I/O thread still batches whatever is waiting).
    producer = EnvelopeProducer(dataclasses.replace(bus, linger_ms=0), "ipc-hub-mllp")
    dedupe = PostgresDedupe(database_url)
    try:
        await dedupe.open()

        async def publish(message: bytes, meta: dict[str, str]) -> None:
            await producer.send(Envelope(payload=message, **meta))

        server = MllpServer(publish, dedupe=dedupe, host=settings.mllp_host, port=settings.mllp_port,
                            max_message_size=settings.mllp_max_message_size,
                            idle_timeout=settings.mllp_idle_timeout, ssl_context=context,
                            strict=settings.mllp_strict)
        port = await server.start()
        log.info("HL7 v2 MLLP listener on %s:%d%s", settings.mllp_host, port, " (TLS)" if context else "")
        if started is not None:
            started(port)
        try:
            await stop.wait()
        finally:
            await server.stop()
    finally:
        await dedupe.close()
        await asyncio.get_running_loop().run_in_executor(None, producer.close)


def start_mllp(settings: Settings, database_url: str, bootstrap: str, stack: ExitStack) -> None:
    """For `ipc-hub up`: the listener on a thread with its own event loop, stopped with the stack."""
    from hub.cli.workers import bus_settings

    bus = bus_settings(settings, bootstrap)
    serve_on_thread("mllp", lambda stop, started: serve_mllp(settings, database_url, bus, stop, started), stack)


def cmd_connector(args: argparse.Namespace, settings: Settings) -> None:
    """One connector as its own process (production runs several behind a TCP load balancer)."""
    from hub.cli.main import _database_url, _kafka_bootstrap
    from hub.cli.workers import bus_settings

    if args.options and args.name not in ("la", "statements"):  # only these take arguments (import, watch)
        if args.options[0] not in ("-h", "--help"):
            args.connector_parser.error("unrecognized arguments: " + " ".join(args.options))
        return args.connector_parser.print_help()
    if args.name in CONNECTORS:
        return importlib.import_module(CONNECTORS[args.name]).run(args, settings)
    check_mllp_port(settings)
    tls_context(settings)  # a bad TLS setting fails before anything starts
    with ExitStack() as stack:
        database_url = _database_url(settings, stack)
        bootstrap = _kafka_bootstrap(settings, stack)
        bus = bus_settings(settings, bootstrap)
        ensure_topics(bootstrap, Topics(bus.topic_prefix), bus.partitions)

        serve_until_signalled(lambda stop: serve_mllp(settings, database_url, bus, stop))


def _add_connector(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "connector", help="run a source connector (hl7v2: ADT over MLLP; mod: MOD handovers; la: council CSV)",
        description="Run one source connector. hl7v2: an MLLP listener on HUB_MLLP_HOST:HUB_MLLP_PORT "
        "(default 127.0.0.1:2575) for HL7 v2 ADT messages (v2.3 to 2.8). Each accepted message is "
        "published to Kafka (HUB_KAFKA_BOOTSTRAP) and acknowledged AA only once Kafka holds it; "
        "malformed messages get AE, other message types and unknown events AR, each with an ERR "
        "segment; a resent message is acknowledged without being published twice (remembered in "
        "HUB_DATABASE_URL). TLS when HUB_MLLP_TLS_CERT and HUB_MLLP_TLS_KEY are set; "
        "HUB_MLLP_MAX_MESSAGE_SIZE (bytes) and HUB_MLLP_IDLE_TIMEOUT (seconds) bound each "
        "connection. `ipc-hub up` runs this listener too. mod: POST /handover on "
        "HUB_MOD_HOST:HUB_MOD_PORT for defence clients' MOD transition handover documents, and the "
        "drop folder HUB_MOD_DROP_DIR (connectors/mod/README.md). la: `import FILE...` or `watch` "
        "for local authority CSV extracts (connectors/la/README.md). statements: `import FILE...` or "
        "`watch` for direct payment and support service statements and providers' invoices "
        "(connectors/statements/README.md). All publish to Kafka before they answer.")
    p.add_argument("name", choices=["hl7v2", *CONNECTORS], help="which connector")
    p.add_argument("options", nargs=argparse.REMAINDER, help="the connector's own arguments (la, statements: import FILE... | watch)")
    p.set_defaults(handler=cmd_connector, connector_parser=p)


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [_add_connector]
