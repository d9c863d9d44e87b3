"""The webhook dispatcher: an asyncio task in the control plane that claims due deliveries from the store
(the outbox) and sends them, each attempt on a thread of a small pool (never on the event loop), signed
anew; a failed attempt is retried with backoff until the retry window closes, then marked failed.

Claims hold a delivery for the attempt's timeout and a margin (Store.claim_deliveries), so with several
replicas on PostgreSQL each delivery is sent by one replica at a time, and one a dead replica held is sent
again once that lease passes. A stopping server releases its claims. A delivery keeps its webhook-id on
every attempt: a receiver that answered too late for us and gets it again can tell.

The outbox's own writes (claims, results) run on a thread, not through Store.write: they never queue
behind the job core's writes, and a claim that finds nothing due (a write of nothing) never tells the
store it can write again while its disk is full (Store.writable, which health follows).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from concurrent.futures import ThreadPoolExecutor

import structlog

from tunewire_server.config import Settings
from tunewire_server.store.base import Store, WebhookDelivery
from tunewire_server.webhooks.backoff import Backoff
from tunewire_server.webhooks.endpoints import parse_urls
from tunewire_server.webhooks.payloads import WebhookOutbox
from tunewire_server.webhooks.sender import post
from tunewire_server.webhooks.signing import Signer

log = structlog.get_logger("tunewire.webhooks")

MAX_IN_FLIGHT = 8  # attempts at once (threads of the sending pool)
CLAIM_MARGIN_S = 30.0  # a claim outlives its attempt's timeout by this much


class WebhookDispatcher:
    """Sends the store's due webhook deliveries. `install()` before the job core writes (so every event's
    deliveries are enqueued with it), `start()` / `stop()` with the server."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.urls = parse_urls(settings.webhook_urls)
        self._settings = settings
        self._store = store
        self._signer = Signer(settings.webhook_signing_secret())
        self._backoff = Backoff(settings.webhook_retry_base_s, settings.webhook_retry_max_s,
                                settings.webhook_retry_window_s)
        self._owner = settings.replica_id
        self._lease_s = settings.webhook_timeout_s + CLAIM_MARGIN_S
        self._pool: ThreadPoolExecutor | None = None
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._in_flight: set[asyncio.Task] = set()
        self._stopping = False

    def install(self) -> None:
        """Have the store enqueue deliveries with the events that announce them."""
        self._store.set_outbox(WebhookOutbox(self.urls, self._poke))

    async def start(self) -> None:
        """Start sending; with one process per store (SQLite), claims a previous process left are due now."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._pool = ThreadPoolExecutor(max_workers=MAX_IN_FLIGHT, thread_name_prefix="tunewire-webhook")
        if not self._store.shared:
            await asyncio.to_thread(self._store.release_deliveries, None)
        self._task = asyncio.create_task(self._run(), name="tunewire-webhooks")
        log.info("webhooks on", endpoints=len(self.urls))

    async def stop(self) -> None:
        """Stop sending: attempts under way are abandoned (their deliveries stay pending, due at once)."""
        if self._task is None:
            return
        self._stopping = True
        assert self._wake is not None
        self._wake.set()
        await asyncio.gather(self._task, return_exceptions=True)  # ends after the claim it may be making
        self._task = None
        for task in self._in_flight:
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        with contextlib.suppress(Exception):  # the store may be out of reach: the claims then run out
            await asyncio.to_thread(self._store.release_deliveries, self._owner)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _poke(self) -> None:
        """A delivery was enqueued (called from the store's writer thread): look now, not at the next poll."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._stopping:
            self._wake.clear()
            free = MAX_IN_FLIGHT - len(self._in_flight)
            claimed: list[WebhookDelivery] = []
            if free > 0:
                try:
                    claimed = await asyncio.to_thread(self._store.claim_deliveries, self._owner, self._lease_s, free)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the store is out of reach: look again at the next poll
                    log.warning("could not claim webhook deliveries", error=str(exc)[:200])
            if self._stopping:
                return  # what it just claimed is released by stop()
            for delivery in claimed:
                task = asyncio.create_task(self._deliver(delivery))
                self._in_flight.add(task)
                task.add_done_callback(self._done)
            if claimed and len(claimed) == free:
                await self._wake.wait()  # every slot busy: an attempt's end (or a poke) frees one
                continue
            if not claimed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._settings.webhook_poll_s)

    def _done(self, task: asyncio.Task) -> None:
        self._in_flight.discard(task)
        if self._wake is not None:
            self._wake.set()

    async def _deliver(self, d: WebhookDelivery) -> None:
        """One attempt of `d` (claimed), then its result stored."""
        if d.url not in self.urls:  # the operator removed the endpoint since it was enqueued
            await self._finish(d, "failed", error="the endpoint is no longer configured (webhook_urls)")
            log.warning("webhook dropped: endpoint no longer configured", delivery_id=d.id, event_id=d.event_id)
            return
        headers = self._signer.headers(d.event_id, d.body)
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._pool, post, d.url, d.body, headers,
                                            self._settings.webhook_timeout_s)
        bound = log.bind(delivery_id=d.id, event_id=d.event_id, type=d.event_type, job_id=d.job_id,
                         url=d.url, attempt=d.attempts)
        if result.ok:
            await self._finish(d, "delivered")
            bound.info("webhook delivered", status=result.status)
            return
        wait = self._backoff.next_retry(d.attempts, d.created_at, time.time())
        if wait is None:
            await self._finish(d, "failed", error=result.error)
            bound.error("webhook delivery failed: gave up after the retry window", error=result.error,
                        window_s=self._settings.webhook_retry_window_s)
        else:
            await self._finish(d, "pending", retry_in_s=wait, error=result.error)
            bound.warning("webhook attempt failed; will retry", error=result.error, retry_in_s=round(wait, 3))

    async def _finish(self, d: WebhookDelivery, state: str, *, retry_in_s: float = 0.0, error: str = "") -> None:
        try:
            held = await asyncio.to_thread(self._store.finish_delivery, d.id, self._owner, d.attempts, state,
                                           retry_in_s=retry_in_s, error=error)
        except Exception as exc:  # not stored: the claim runs out and the delivery is sent again
            log.warning("could not store a webhook attempt's result", delivery_id=d.id, error=str(exc)[:200])
            return
        if not held:
            log.warning("a webhook claim ran out before its attempt ended", delivery_id=d.id)


def dispatcher_for(settings: Settings, store: Store) -> WebhookDispatcher | None:
    """The dispatcher for these settings, installed in the store; None when no endpoint is configured."""
    if not parse_urls(settings.webhook_urls):
        return None
    dispatcher = WebhookDispatcher(settings, store)
    dispatcher.install()
    return dispatcher
