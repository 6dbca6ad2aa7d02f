"""Running a connector's asyncio server: on a thread of its own inside `ipc-hub up`, or as a
process's main loop until it is signalled."""
from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable
from contextlib import ExitStack

# serve(stop, started): runs until `stop` is set, calling `started(port)` once it listens.
Serve = Callable[[asyncio.Event, Callable[[int], None]], Awaitable[None]]


def serve_on_thread(name: str, serve: Serve, stack: ExitStack, *, start_timeout_s: float = 60) -> None:
    """Start `serve` on a thread with its own event loop and return once it listens; a failure to
    start is raised here, in the starting thread. The stack stops it (and waits for it) on exit."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(serve(stop, lambda _: ready.set()))
        except BaseException as exc:  # noqa: BLE001 - reported to the starting thread below
            failure.append(exc)
            ready.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    ready.wait(start_timeout_s)
    if failure:
        raise failure[0]

    def stop_serving() -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
        thread.join(15)

    stack.callback(stop_serving)


def serve_until_signalled(serve: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run `serve(stop)` as the process's main loop; SIGTERM or Ctrl-C sets `stop`, so the
    server finishes what it holds (acknowledgements owed, files claimed) before it exits."""
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(stop)

    asyncio.run(main())
