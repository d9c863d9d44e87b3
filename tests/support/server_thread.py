"""A TunewireServer inside the test process, on its own event loop in a background thread."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path


class ServerThread:
    """A TunewireServer on its own event loop in a background thread."""

    def __init__(self, settings) -> None:
        from tunewire_server.api.server import TunewireServer

        self.settings = settings
        self.server = TunewireServer(settings)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._server_stopped = False

    def start(self) -> ServerThread:
        self._thread.start()
        port = asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(30)
        self.address = f"127.0.0.1:{port}"
        return self

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop_server(self) -> None:
        """Stop the server but keep its loop thread: worker children die with the thread that started
        them (PR_SET_PDEATHSIG), so this shows what the server itself ended."""
        if not self._server_stopped:
            self._server_stopped = True
            self.run(self.server.stop(grace=1), timeout=60)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self.stop_server()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def make_settings(data_dir: Path, models_root: Path, **overrides):
    """Settings for a test server: 127.0.0.1, any free port, one torch thread, metrics on a free port."""
    from tunewire_server.config import Settings

    overrides.setdefault("metrics_port", 0)
    overrides.setdefault("http_port", -1)  # the OpenAI face only where a test asks for it (http_port=0)
    return Settings(host="127.0.0.1", port=0, data_dir=data_dir, model_root=models_root, torch_threads=1,
                    **overrides)
