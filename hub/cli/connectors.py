"""`ipc-hub connector hl7v2`: the HL7 v2 MLLP listener wired to Kafka (and the bus journal on
the embedded default) and its dedupe table; `ipc-hub up` runs it as a child process.

Each accepted message becomes an Envelope on the inbound topic; the sender's AA goes out only
after Kafka acknowledged it (acks=all). Accepted messages are remembered in PostgreSQL
(`connectors.hl7v2.dedupe`) with when each was first received, so a restarted connector, or
another one, answers a resend as one and publishes it again under the first copy's received-at
(the recorder takes it as the same statement: nothing new is written)."""
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
from hub.bus.journal import AsyncJournal
from hub.bus.produce import EnvelopeProducer
from hub.bus.topics import Topics, ensure_topics
from hub.cli.background import serve_until_signalled
from hub.cli.common import bus_settings, database_url, journal_enabled, kafka_bootstrap, locate_data_dir
from hub.config import Settings
from hub.runtime.embedded import EmbeddedError, ensure_port_free

log = logging.getLogger("hub")

# Connectors in a CLI module of their own: name → module whose run(args, settings) serves it.
CONNECTORS = {"mod": "hub.cli.mod_handover", "la": "hub.cli.la_extracts", "statements": "hub.cli.statements",
              "children": "hub.cli.children"}


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
                     started: Callable[[int], None] | None = None, *, journal: bool = False) -> None:
    """Listen until `stop` is set, then stop taking connections and close the open ones."""
    from connectors.hl7v2 import MllpServer
    from connectors.hl7v2.dedupe import PostgresDedupe

    context = tls_context(settings)
    held = AsyncJournal(database_url) if journal else None
    # A millisecond of linger: concurrent senders' records share a produce request; each sender
    # waits for its ACK anyway, so this is latency only.
    producer = EnvelopeProducer(dataclasses.replace(bus, linger_ms=1), "ipc-hub-mllp", journal=held)
    dedupe = PostgresDedupe(database_url)
    try:
        await dedupe.open()
        if held is not None:
            await held.open()

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
        if held is not None:
            await held.close()


def cmd_connector(args: argparse.Namespace, settings: Settings) -> None:
    """One connector as its own process (production runs several behind a TCP load balancer)."""
    if args.options and args.name not in ("la", "statements", "children"):  # only these take arguments (import, watch)
        if args.options[0] not in ("-h", "--help"):
            args.connector_parser.error("unrecognized arguments: " + " ".join(args.options))
        return args.connector_parser.print_help()
    if args.name in CONNECTORS:
        return importlib.import_module(CONNECTORS[args.name]).run(args, settings)
    check_mllp_port(settings)
    tls_context(settings)  # a bad TLS setting fails before anything starts
    settings = locate_data_dir(settings, must_exist=False)
    with ExitStack() as stack:
        url = database_url(settings, stack)
        bootstrap = kafka_bootstrap(settings, stack)
        bus = bus_settings(settings, bootstrap)
        ensure_topics(bootstrap, Topics(bus.topic_prefix), bus.partitions, bus.max_message_bytes)
        journal = journal_enabled(settings)
        if settings.worker_http_port:  # /metrics (messages by ACK code) beside the listener
            from hub.bus.metrics import serve_health

            server = serve_health(settings.http_host, settings.worker_http_port, lambda: True, lambda: True)
            stack.callback(server.shutdown)

        serve_until_signalled(lambda stop: serve_mllp(settings, url, bus, stop, journal=journal))


def _add_connector(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "connector", help="run a source connector (hl7v2: ADT over MLLP; mod: MOD handovers; la: council CSV)",
        description="Run one source connector. hl7v2: an MLLP listener on HUB_MLLP_HOST:HUB_MLLP_PORT "
        "(default 127.0.0.1:2575) for HL7 v2 ADT messages (v2.3 to 2.8). Each accepted message is "
        "published to Kafka (HUB_KAFKA_BOOTSTRAP) and acknowledged AA only once Kafka holds it; "
        "malformed messages get AE, other message types and unknown events AR, each with an ERR "
        "segment; a resent message is acknowledged as a resend and published again, which changes "
        "nothing already recorded (accepted messages are remembered in HUB_DATABASE_URL). TLS when HUB_MLLP_TLS_CERT and HUB_MLLP_TLS_KEY are set; "
        "HUB_MLLP_MAX_MESSAGE_SIZE (bytes) and HUB_MLLP_IDLE_TIMEOUT (seconds) bound each "
        "connection. `ipc-hub up` runs this listener too. mod: POST /handover on "
        "HUB_MOD_HOST:HUB_MOD_PORT for defence clients' MOD transition handover documents, and the "
        "drop folder HUB_MOD_DROP_DIR (connectors/mod/README.md). la: `import FILE...` or `watch` "
        "for local authority CSV extracts (connectors/la/README.md). statements: `import FILE...` or "
        "`watch` for direct payment and support service statements and providers' invoices "
        "(connectors/statements/README.md). children: `import FILE...` or `watch` for a council's "
        "children's extract: SEN2-shaped EHC requests and plans, children in need and looked-after episodes "
        "(connectors/children/README.md). All publish to Kafka before they answer.")
    p.add_argument("name", choices=["hl7v2", *CONNECTORS], help="which connector")
    p.add_argument("options", nargs=argparse.REMAINDER, help="the connector's own arguments (la, statements, children: import FILE... | watch)")
    p.set_defaults(handler=cmd_connector, connector_parser=p)


PARSERS: list[Callable[[argparse._SubParsersAction], None]] = [_add_connector]
