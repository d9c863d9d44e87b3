"""The synchronous client: a shell that does blocking I/O for the logic in `tunewire._core`."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
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


class Client(core.Connection):
    """A connection to a tunewire server.

    >>> with tunewire.Client("localhost:50051") as client:
    ...     job = client.submit("job.yaml")
    ...     for event in client.stream_metrics(job.id):
    ...         print(event)
    ...     client.predict(job.id, ["a review"])

    Every unary call has a deadline (`timeout` seconds, per client or per call). Failures raise
    `tunewire.TunewireError` subclasses, never raw gRPC errors. While a call is open the channel sends
    a keepalive ping every `keepalive_s` seconds; keep it at the server's keepalive_s (default 30 s, both
    sides), since a server cuts off a client that pings much faster than it accepts.
    """

    _grpc = grpc

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _unary(self, call: core.Unary[T], timeout: float | None) -> T:
        try:
            response = getattr(self._stub, call.method)(call.request, **self._call_options(timeout))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        return call.convert(response)

    def submit(self, spec: req.SpecLike, *, request_id: str = "", timeout: float | None = None) -> Job:
        """Queue a job. `spec` is a JobSpec, a mapping, or a path to a YAML/JSON spec file.

        With `request_id`, submitting again returns the same job instead of a new one.
        """
        return self._unary(core.submit(spec, request_id), timeout)

    def estimate(self, spec: req.SpecLike, *, timeout: float | None = None) -> Estimate:
        """Validate `spec` as submit does, and estimate it without queueing anything: rows, tokens, steps,
        peak memory against the server's training device (fits or not) and time. It loads the job's
        tokenizer and data (and may time a few training steps), so give it a generous `timeout`."""
        return self._unary(core.estimate(spec), timeout)

    def get(self, job_id: str, *, timeout: float | None = None) -> Job:
        return self._unary(core.get(job_id), timeout)

    def list_jobs(self, states: Iterable[JobState | str] | None = None, *, page_size: int = 50,
                  limit: int | None = None, timeout: float | None = None) -> Iterator[Job]:
        """Jobs, newest first, fetching pages as needed."""
        pager = core.Pager(states, page_size, limit)
        while (call := pager.next_call()) is not None:
            yield from pager.take(self._unary(call, timeout))

    def cancel(self, job_id: str, *, timeout: float | None = None) -> Job:
        return self._unary(core.cancel(job_id), timeout)

    def pause(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Pause a job: a queued one is PAUSED at once; a running one goes PAUSING, saves a checkpoint at its
        next step and frees the server for the next job, then is PAUSED (its state change names the step).
        Pausing a paused job is not an error; FailedPreconditionError for a job that has ended."""
        return self._unary(core.pause(job_id), timeout)

    def resume(self, job_id: str, *, timeout: float | None = None) -> Job:
        """Queue a PAUSED job again, at the back of the queue (as a new job); it continues from the step it
        paused at. Resuming a queued or running job is not an error; FailedPreconditionError for a job that
        has ended."""
        return self._unary(core.resume(job_id), timeout)

    def stream_metrics(self, job_id: str, *, after_seq: int = 0, reconnect: bool = True) -> Iterator[JobEvent]:
        """Events with seq > after_seq, then live ones, until the job ends. A paused job's stream stays
        open (its PAUSED state change is one of the events) and goes on once it is resumed.

        If the connection drops, the stream reconnects after the last seq it delivered, so no event
        is lost or repeated.
        """
        resumer = core.StreamResumer(job_id, after_seq, reconnect)
        while True:
            call = self._stub.StreamMetrics(resumer.request(), metadata=self._metadata)
            try:
                for response in call:
                    yield from resumer.events(response)
                return
            except grpc.RpcError as exc:
                delay = resumer.retry_delay(exc.code())
                if delay is None:
                    raise from_rpc_error(exc) from None
                time.sleep(delay)
            finally:
                call.cancel()

    def wait(self, job_id: str, *, raise_on_failure: bool = True, return_when_paused: bool = False) -> Job:
        """Block until the job is terminal; raise JobFailedError unless it SUCCEEDED.

        A PAUSED job is not terminal: wait() goes on until it is resumed and ends, unless
        `return_when_paused`, which returns the PAUSED job (without raising) as soon as it is paused."""
        waiter = core.Waiter(raise_on_failure, return_when_paused)
        for event in self.stream_metrics(job_id):
            if waiter.finished(event):
                break
        return waiter.result(self.get(job_id))

    def predict(self, job_id: str, inputs: Sequence[str | Sequence[req.Message]] | str, *,
                generation: pb.GenerationParams | None = None, timeout: float | None = None,
                **generation_kwargs) -> list[Prediction]:
        """Run a succeeded job's model: one Classification or Generation per input, in order.

        Inputs are strings, or (SFT jobs) conversations as lists of {"role", "content"} dicts.
        Generation settings: `max_new_tokens`, `temperature`, `top_p`, `top_k`, `do_sample`, `stop`,
        `seed` as keyword arguments, or a prepared `generation` message.
        """
        return self._unary(core.predict(job_id, inputs, generation, generation_kwargs), timeout)

    def predict_stream(self, job_id: str, prompt: str | Sequence[req.Message], **generation_kwargs) -> Iterator[str]:
        """Yield generated text as it is produced (SFT jobs). Closing the iterator stops generation."""
        call = self._stub.PredictStream(core.predict_stream_request(job_id, prompt, generation_kwargs),
                                        metadata=self._metadata)
        try:
            for response in call:
                if text := core.text_delta(response):
                    yield text
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()

    # --- datasets ------------------------------------------------------------------------------------

    def upload_dataset(self, path: str | os.PathLike, name: str | None = None, format: str | int | None = None,
                       progress: core.Progress | None = None, *, upload_id: str | None = None,
                       label_column: str = "", chunk_size: int = core.UPLOAD_CHUNK,
                       timeout: float | None = None) -> UploadedDataset:
        """Upload a JSONL, CSV, TSV or Parquet file; returns the stored dataset with its validation report.

        `name` defaults to the file name, `format` ("jsonl", "csv", "tsv", "parquet") to what its extension
        says. `progress(done, total)` is called with byte counts as the file goes. The sha256 is computed
        first (one read of the file); a dropped connection is retried by itself from the offset the server
        holds, and so is a later call with the same `upload_id`. Bytes the server stores already are not
        sent again. `label_column`: count that column's values in the report.
        """
        upload = core.Upload(path, name, format, progress, upload_id=upload_id, label_column=label_column,
                             chunk_size=chunk_size)
        while True:
            try:
                offset, dataset = self._unary(upload.start(), timeout)
                if dataset is not None:
                    return dataset
                response = self._stub.UploadDataset(upload.requests(offset), metadata=self._metadata)
                upload.raise_callback_error()
                return UploadedDataset.from_proto(response.dataset)
            except grpc.RpcError as exc:
                upload.raise_callback_error()
                delay = upload.retry_delay(exc.code())
                if delay is None:
                    raise from_rpc_error(exc) from None
            except TunewireError as exc:  # StartUpload's failure, converted by _unary
                delay = upload.retry_delay(exc.code)
                if delay is None:
                    raise
            time.sleep(delay)

    def list_datasets(self, *, page_size: int = 50, limit: int | None = None,
                      timeout: float | None = None) -> Iterator[UploadedDataset]:
        """Uploaded datasets, newest first, fetching pages as needed."""
        pager = core.DatasetPager(page_size, limit)
        while (call := pager.next_call()) is not None:
            yield from pager.take(self._unary(call, timeout))

    def get_dataset(self, dataset_id: str, *, label_column: str = "", timeout: float | None = None) -> UploadedDataset:
        """One uploaded dataset; with `label_column`, its report counts that column's values."""
        return self._unary(core.get_dataset(dataset_id, label_column), timeout)

    def delete_dataset(self, dataset_id: str, *, timeout: float | None = None) -> bool:
        """Remove an uploaded dataset: True if it was there. FailedPreconditionError while a queued or
        running job uses it."""
        return self._unary(core.delete_dataset(dataset_id), timeout)

    # --- models out ----------------------------------------------------------------------------------

    def list_checkpoints(self, job_id: str, *, timeout: float | None = None) -> Checkpoints:
        """The job's complete checkpoints (oldest first, each with its step, epoch, time, sizes and eval
        metrics) and its final model once it succeeded."""
        return self._unary(core.list_checkpoints(job_id), timeout)

    def download(self, job_id: str, dest: str | os.PathLike, checkpoint: int | None = None, merged: bool = False,
                 progress: core.Progress | None = None, *, chunk_size: int = 0) -> DownloadedModel:
        """Download a job's final model (or the checkpoint saved at step `checkpoint`) into the folder `dest`,
        which then loads with transformers' `from_pretrained` (an adapter with peft's
        `PeftModel.from_pretrained` on its base). `merged=True`: a LoRA adapter merged into its base model
        (merged on the server on the first request, which then waits for it).

        Each file is written under a hidden partial name and renamed into place once whole and its sha256
        matches (IntegrityError otherwise). A dropped connection is resumed by itself from the bytes held,
        and so is a later call into the same folder; files already there are not fetched again.
        `progress(done, total)` is called with byte counts as the files arrive."""
        download = core.Download(job_id, dest, checkpoint, merged, progress, chunk_size=chunk_size)
        while True:
            call = self._stub.DownloadModel(download.request(), metadata=self._metadata)
            reopen = False
            try:
                for response in call:
                    if not download.take(response):
                        reopen = True
                        break
            except grpc.RpcError as exc:
                delay = download.retry_delay(exc.code())
                if delay is None:
                    raise from_rpc_error(exc) from None
                time.sleep(delay)
                continue
            finally:
                call.cancel()
                download.interrupted()
            if download.complete:
                return download.result()
            if not reopen:  # the stream ended before every file arrived
                delay = download.retry_delay(None)
                if delay is None:
                    raise TunewireError(f"the download of job {job_id} kept ending before every file arrived")
                time.sleep(delay)

    def delete_job(self, job_id: str, *, timeout: float | None = None) -> bool:
        """Delete a finished job: its checkpoints, model and logs on the server, its events and record (get()
        raises NotFoundError afterwards). True if it was there; False if there is no such job (deleting
        twice is not an error). FailedPreconditionError for a job still queued or running: cancel it first."""
        return self._unary(core.delete_job(job_id), timeout)

    def health(self, *, timeout: float = 5.0) -> bool:
        """True when the server's grpc.health.v1 service reports the job service SERVING."""
        check = self._channel.unary_unary(core.HEALTH_CHECK_METHOD, request_serializer=None,
                                          response_deserializer=None)
        try:
            answer = check(req.HEALTH_CHECK_REQUEST, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError:
            return False
        return core.is_serving(answer)
