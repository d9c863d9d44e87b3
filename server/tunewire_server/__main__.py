"""`tunewire-server`: run the control plane until SIGTERM or SIGINT (`tunewire-server migrate-store ...`: copy a
one box's SQLite store and artifacts into PostgreSQL and the shared artifact store, store/migrate.py)."""

from __future__ import annotations

import asyncio
import signal
import sys

from tunewire_server import logs, malloc
from tunewire_server.config import Settings, load_settings


async def serve(settings: Settings) -> None:
    from tunewire_server.api.server import TunewireServer

    logs.configure(settings.log_format, settings.log_level)
    server = TunewireServer(settings)
    # Before start: health answers SERVING while start() is still bringing up the HTTP face, and a SIGTERM
    # then (a rollout right after the startup probe) must end in the same clean stop, not the default kill.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["migrate-store"]:  # one box to many: store/migrate.py
        from tunewire_server.store.migrate import main as migrate_store

        sys.exit(migrate_store(args[1:]))
    try:
        settings = load_settings(argv)
        malloc.tune()  # transfer chunks stay on the heap (malloc.py)
        _runner(settings.event_loop)(serve(settings))
    except ValueError as exc:  # bad settings, a `store` that cannot be opened included
        print(f"tunewire-server: {exc}", file=sys.stderr)
        sys.exit(2)


def _runner(event_loop: str):
    """uvloop where it is installed (the `server` extra has it on Linux and macOS): each streamed event,
    unary call and worker message costs the loop less, about a fifth less CPU per delivered event."""
    if event_loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if event_loop == "uvloop":
                raise ValueError("event_loop is uvloop, but uvloop is not installed") from None
        else:
            return uvloop.run
    return asyncio.run


if __name__ == "__main__":
    main()
