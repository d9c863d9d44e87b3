"""`tunewire-server`: run the control plane until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal
import sys

from tunewire_server import logs
from tunewire_server.config import load_settings


async def serve(argv: list[str] | None = None) -> None:
    from tunewire_server.api.server import TunewireServer

    settings = load_settings(argv)
    logs.configure(settings.log_format, settings.log_level)
    server = TunewireServer(settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    try:
        asyncio.run(serve(argv))
    except ValueError as exc:  # bad settings
        print(f"tunewire-server: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
