"""The asyncio client: the same calls as `tunewire.Client`, awaitable; a shell that awaits the I/O for
the logic in `tunewire._core`."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import TypeVar

import grpc

from tunewire import _core as core
from tunewire import _requests as req
from tunewire.errors import TunewireError, from_rpc_error
from tunewire.types import (
    Checkpoints,
    DownloadedModel,
    Estimate,
    Job,
    JobEvent,
    JobState,
    Prediction,
    UploadedDataset,
)
from tunewire.v1 import tuning_service_pb2 as pb

T = TypeVar("T")


class AsyncClient(core.Connection):
    """>>> async with tunewire.AsyncClient("localhost:50051") as client:
    ...     job = await client.submit(spec)
    ...     async for event in client.stream_metrics(job.id):
    ...         ...

    `keepalive_s`: seconds between keepalive pings while a call is open; keep it at the server's.
    """

    _grpc = grpc.aio

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _unary(self, call: core.Unary[T], timeout: float | None) -> T:
        try:
            response = await getattr(self._stub, call.method)(call.request, **self._call_options(timeout))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return call.convert(response)

    async def submit(self, spec: req.SpecLike, *, request_id: str = "", timeout: float | None = None) -> Job:
        return await self._unary(core.submit(spec, request_id), timeout)

    async def estimate(self, spec: req.SpecLike, *, timeout: float | None = None) -> Estimate:
        """Client.estimate's twin."""
        return await self._unary(core.estimate(spec), timeout)

    async def get(self, job_id: str, *, timeout: float | None = None) -> Job:
        return await self._unary(core.get(job_id), timeout)

    async def list_jobs(self, states: Iterable[JobState | str] | None = None, *, page_size: int = 50,
                        limit: int | None = None, timeout: float | None = None) -> AsyncIterator[Job]:
        pager = core.Pager(states, page_size, limit)
        while (call := pager.next_call()) is not None:
            for job in pager.take(await self._unary(call, timeout)):
                yield job

    async def cancel(self, job_id: str, *, timeout: float | None = None) -> Job:
        return await self._unary(core.cancel(job_id), timeout)

    async def pause(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Pause a job (Client.pause): PAUSED at once if queued; PAUSING, then PAUSED at a checkpoint if running."""
        return await self._unary(core.pause(job_id), timeout)

    async def resume(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Queue a PAUSED job again, at the back of the queue, to continue from its step (Client.resume)."""
        return await self._unary(core.resume(job_id), timeout)

    async def stream_metrics(self, job_id: str, *, after_seq: int = 0,
                             reconnect: bool = True) -> AsyncIterator[JobEvent]:
        """Events with seq > after_seq, then live ones, until the job ends (a PAUSED job's stream stays
        open); reconnects without loss."""
        resumer = core.StreamResumer(job_id, after_seq, reconnect)
        while True:
            call = self._stub.StreamMetrics(resumer.request(), metadata=self._metadata)
            try:
                async for response in call:
                    for event in resumer.events(response):
                        yield event
                return
            except grpc.RpcError as exc:
                delay = resumer.retry_delay(exc.code())
                if delay is None:
                    raise from_rpc_error(exc) from None
                await asyncio.sleep(delay)
            finally:
                call.cancel()

    async def wait(self, job_id: str, *, raise_on_failure: bool = True, return_when_paused: bool = False) -> Job:
        """Client.wait: until the job is terminal (or PAUSED, with `return_when_paused`)."""
        waiter = core.Waiter(raise_on_failure, return_when_paused)
        async for event in self.stream_metrics(job_id):
            if waiter.finished(event):
                break
        return waiter.result(await self.get(job_id))

    async def predict(self, job_id: str, inputs: Sequence[str | Sequence[req.Message]] | str, *,
                      generation: pb.GenerationParams | None = None, timeout: float | None = None,
                      **generation_kwargs) -> list[Prediction]:
        return await self._unary(core.predict(job_id, inputs, generation, generation_kwargs), timeout)

    async def predict_stream(self, job_id: str, prompt: str | Sequence[req.Message],
                             **generation_kwargs) -> AsyncIterator[str]:
        call = self._stub.PredictStream(core.predict_stream_request(job_id, prompt, generation_kwargs),
                                        metadata=self._metadata)
        try:
            async for response in call:
                if text := core.text_delta(response):
                    yield text
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    # --- datasets ------------------------------------------------------------------------------------

    async def upload_dataset(self, path: str | os.PathLike, name: str | None = None,
                             format: str | int | None = None, progress: core.Progress | None = None, *,
                             upload_id: str | None = None, label_column: str = "",
                             chunk_size: int = core.UPLOAD_CHUNK, timeout: float | None = None) -> UploadedDataset:
        """`Client.upload_dataset`, awaitable: the file is hashed and read on a thread."""
        upload = await asyncio.to_thread(core.Upload, path, name, format, progress, upload_id=upload_id,
                                         label_column=label_column, chunk_size=chunk_size)
        while True:
            try:
                offset, dataset = await self._unary(upload.start(), timeout)
                if dataset is not None:
                    return dataset
                response = await self._stub.UploadDataset(_threaded(upload.requests(offset)),
                                                          metadata=self._metadata)
                upload.raise_callback_error()
                return UploadedDataset.from_proto(response.dataset)
            except grpc.RpcError as exc:
                upload.raise_callback_error()
                delay = upload.retry_delay(exc.code())
                if delay is None:
                    raise from_rpc_error(exc) from None
            except TunewireError as exc:
                delay = upload.retry_delay(exc.code)
                if delay is None:
                    raise
            await asyncio.sleep(delay)

    async def list_datasets(self, *, page_size: int = 50, limit: int | None = None,
                            timeout: float | None = None) -> AsyncIterator[UploadedDataset]:
        pager = core.DatasetPager(page_size, limit)
        while (call := pager.next_call()) is not None:
            for dataset in pager.take(await self._unary(call, timeout)):
                yield dataset

    async def get_dataset(self, dataset_id: str, *, label_column: str = "",
                          timeout: float | None = None) -> UploadedDataset:
        return await self._unary(core.get_dataset(dataset_id, label_column), timeout)

    async def delete_dataset(self, dataset_id: str, *, timeout: float | None = None) -> bool:
        return await self._unary(core.delete_dataset(dataset_id), timeout)

    async def list_checkpoints(self, job_id: str, *, timeout: float | None = None) -> Checkpoints:
        return await self._unary(core.list_checkpoints(job_id), timeout)

    async def download(self, job_id: str, dest: str | os.PathLike, checkpoint: int | None = None,
                       merged: bool = False, progress: core.Progress | None = None, *,
                       chunk_size: int = 0) -> DownloadedModel:
        """`Client.download`, awaitable: files are written and hashed on a thread (beside the one receiving)."""
        download = core.Download(job_id, dest, checkpoint, merged, progress, chunk_size=chunk_size)
        while True:
            call = self._stub.DownloadModel(download.request(), metadata=self._metadata)
            reopen = False
            try:
                async for response in call:
                    if not await asyncio.to_thread(download.take, response):
                        reopen = True
                        break
            except grpc.RpcError as exc:
                delay = download.retry_delay(exc.code())
                if delay is None:
                    raise from_rpc_error(exc) from None
                await asyncio.sleep(delay)
                continue
            finally:
                call.cancel()
                await asyncio.to_thread(download.interrupted)  # the last write and its fsync, off the loop
            if download.complete:
                return download.result()
            if not reopen:
                delay = download.retry_delay(None)
                if delay is None:
                    raise TunewireError(f"the download of job {job_id} kept ending before every file arrived")
                await asyncio.sleep(delay)

    async def delete_job(self, job_id: str, *, timeout: float | None = None) -> bool:
        return await self._unary(core.delete_job(job_id), timeout)

    async def health(self, *, timeout: float = 5.0) -> bool:
        check = self._channel.unary_unary(core.HEALTH_CHECK_METHOD)
        try:
            answer = await check(req.HEALTH_CHECK_REQUEST, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError:
            return False
        return core.is_serving(answer)


async def _threaded(items: Iterator[T]) -> AsyncIterator[T]:
    """The items of a blocking iterator (file reads), each taken on a thread."""
    done = object()
    while (item := await asyncio.to_thread(next, items, done)) is not done:
        yield item
