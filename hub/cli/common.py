"""What every `ipc-hub` command needs: where the hub's data folder and services are (found, or
started for the command's lifetime), the bus settings, and serving the API. The command modules
import this; `main.py` only assembles the commands, so nothing imports back into it."""
from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from typing import Any
from contextlib import ExitStack
from pathlib import Path

from hub.bus.kafka import BusSettings
from hub.config import Settings
from hub.runtime.embedded import (
    EmbeddedError,
    EmbeddedKafka,
    EmbeddedPostgres,
    ensure_port_free,
    running_postgres_url,
)
from hub.runtime.logs import allow_terms

log = logging.getLogger("hub")


def _registry() -> Path:
    """Where running hubs say which data folder they use (one file per `ipc-hub up` process)."""
    return Path(tempfile.gettempdir()) / f"ipc-hub-{os.getuid()}" / "running"


def register_running(settings: Settings) -> Callable[[], None]:
    """`ipc-hub up` writes where its data folder is, so commands run elsewhere find it; returns
    the function that removes the entry again."""
    folder = _registry()
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    entry = folder / f"{os.getpid()}.json"
    entry.write_text(json.dumps({"pid": os.getpid(), "data_dir": str(settings.data_dir.resolve())}))
    return lambda: entry.unlink(missing_ok=True)


def running_hubs() -> list[Path]:
    """Data folders of the `ipc-hub up` processes alive now."""
    found = []
    for entry in sorted(_registry().glob("*.json")) if _registry().is_dir() else []:
        try:
            info = json.loads(entry.read_text())
            os.kill(int(info["pid"]), 0)
        except (OSError, ValueError, KeyError):
            entry.unlink(missing_ok=True)  # a hub that died without cleaning up
            continue
        found.append(Path(info["data_dir"]))
    return found


def locate_data_dir(settings: Settings, *, must_exist: bool) -> Settings:
    """The data folder a command works on. HUB_DATA_DIR or HUB_DATABASE_URL set: as given.
    Otherwise ./.hub-data if it holds a database, else the one running hub's folder; with
    `must_exist`, no folder found is a clear refusal rather than a new, empty database."""
    if "HUB_DATA_DIR" in os.environ or settings.database_url:
        return settings
    if (settings.data_dir / "postgres" / "PG_VERSION").exists():
        return settings
    hubs = running_hubs()
    if len(hubs) == 1:
        allow_terms([hubs[0]])
        log.info("using the running hub's data folder %s", hubs[0])
        return settings.model_copy(update={"data_dir": hubs[0]})
    if len(hubs) > 1:
        raise EmbeddedError("several hubs are running (" + ", ".join(map(str, hubs)) + "): set HUB_DATA_DIR "
                            "to the one meant")
    if must_exist:
        raise EmbeddedError(f"no hub data folder here ({settings.data_dir.resolve()}) and no running hub: "
                            "start `ipc-hub up`, run from the folder it runs in, or set HUB_DATA_DIR or "
                            "HUB_DATABASE_URL")
    return settings


def database_url(settings: Settings, stack: ExitStack, started: list | None = None) -> str:
    """HUB_DATABASE_URL; else the embedded PostgreSQL a running `ipc-hub up` has in the data
    folder (left running); else one of our own that stops with us."""
    if settings.database_url:
        return settings.database_url
    running = running_postgres_url(settings.data_dir)
    if running:
        return running
    server = EmbeddedPostgres(settings.data_dir)
    url = server.start()
    stack.callback(server.stop)
    if started is not None:
        started.append(server)
    log.info("embedded PostgreSQL running in %s", server.pgdata)
    return url


def kafka_bootstrap(settings: Settings, stack: ExitStack) -> str:
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    broker = EmbeddedKafka(settings.embedded_kafka_port, settings.data_dir / "log")
    bootstrap = broker.start()
    stack.callback(broker.stop)
    allow_terms([bootstrap])
    log.info("embedded Kafka-protocol broker (Tansu) on %s", bootstrap)
    return bootstrap


def bus_settings(settings: Settings, bootstrap: str) -> BusSettings:
    """The bus settings; on the embedded Tansu broker (no HUB_KAFKA_BOOTSTRAP) with the timeouts
    left at their defaults, the shorter ones Tansu allows, so workers join in about a second."""
    session, heartbeat = settings.kafka_session_timeout_ms, settings.kafka_heartbeat_interval_ms
    defaults = Settings.model_fields
    if (not settings.kafka_bootstrap or settings.bus_journal == "on") and (session, heartbeat) == (
            defaults["kafka_session_timeout_ms"].default, defaults["kafka_heartbeat_interval_ms"].default):
        session, heartbeat = 2000, 500
    return BusSettings(
        bootstrap=bootstrap, topic_prefix=settings.topic_prefix, partitions=settings.topic_partitions,
        session_timeout_ms=session, heartbeat_interval_ms=heartbeat,
        max_poll_records=settings.kafka_max_poll_records,
        max_message_bytes=settings.kafka_max_message_bytes,
        dlq_max_consecutive=settings.dlq_max_consecutive, retry_max_delay_s=settings.retry_max_delay_s,
    )


def journal_enabled(settings: Settings) -> bool:
    """HUB_BUS_JOURNAL: `auto` keeps the journal on the embedded broker (memory only) and leaves
    it off for a configured Kafka (replicated); `on` and `off` force it."""
    if settings.bus_journal == "auto":
        return not settings.kafka_bootstrap
    return settings.bus_journal == "on"


def serve_api(settings: Settings, database_url: str, banner: Callable[[], None] | None = None,
              extra_ready: Callable[[], dict] | None = None,
              extra_metrics: Callable[[], list[bytes]] | None = None) -> None:
    import uvicorn

    from hub.api.app import create_app
    from hub.runtime.process import settle_heap

    ensure_port_free(settings.http_host, settings.http_port, "HUB_HTTP_PORT")
    common = dict(host=settings.http_host, port=settings.http_port, loop="uvloop", http="httptools",
                  log_level=settings.log_level, access_log=False, server_header=False, log_config=None)
    if settings.http_workers > 1:
        # Worker processes build their own app from the environment.
        os.environ["HUB_DATABASE_URL"] = database_url
        uvicorn.run("hub.api.app:app_from_environment", factory=True, workers=settings.http_workers,
                    **common)
        return
    app = create_app(settings, database_url)
    if extra_ready is not None:
        app.state.pipeline_status = extra_ready
    if extra_metrics is not None:
        app.state.pipeline_metrics = extra_metrics
    settle_heap()
    server = uvicorn.Server(uvicorn.Config(app, **common))
    if banner is not None:
        original_startup = server.startup

        async def startup(sockets=None):
            await original_startup(sockets)
            if server.started:
                banner()

        server.startup = startup
    server.run()


def on_database(settings: Settings, work: Callable[..., Any]) -> Any:
    """Run `work(conn)` (a coroutine function) on an autocommit connection to the hub's database:
    HUB_DATABASE_URL, or the running hub's, found as `locate_data_dir` finds it."""
    import asyncio

    from psycopg import AsyncConnection

    async def go(url: str) -> Any:
        async with await AsyncConnection.connect(url, autocommit=True) as conn:
            return await work(conn)

    with ExitStack() as stack:
        return asyncio.run(go(database_url(locate_data_dir(settings, must_exist=True), stack)))
