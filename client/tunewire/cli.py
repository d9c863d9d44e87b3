"""`tunewire`: submit, watch, list, inspect, cancel, pause, resume, query and delete fine-tuning jobs,
upload datasets and download models, from a shell.

The server address comes from --address or TUNEWIRE_ADDRESS (default localhost:50051).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from tunewire.client import Client
from tunewire.errors import TunewireError
from tunewire.spec import SpecError
from tunewire.types import (
    Classification,
    Estimate,
    EvalResult,
    Job,
    JobState,
    StateChange,
    TrainingStopped,
    TrainLog,
)

EXIT_OK, EXIT_JOB_FAILED, EXIT_ERROR = 0, 1, 2


def _console():
    try:
        from rich.console import Console
    except ImportError:
        sys.exit('the tunewire CLI needs rich: pip install "tunewire[cli]"')
    return Console(), Console(stderr=True)


# a classifier's confusion matrix and per-class precision/recall: too many for one line (per-class F1 stays)
_NOT_ON_ONE_LINE = ("cm_", "precision_", "recall_")


def _fmt_metrics(metrics: dict[str, float]) -> str:
    keep = [k for k in ("loss", "accuracy", "f1", "mean_token_accuracy") if k in metrics]
    keep += [k for k in sorted(metrics) if k not in keep and k not in
             ("runtime", "samples_per_second", "steps_per_second", "epoch")
             and not k.startswith(_NOT_ON_ONE_LINE)]
    return "  ".join(f"{k}={metrics[k]:.4g}" for k in keep)


def _job_dict(job: Job) -> dict:
    from google.protobuf import json_format

    return {
        "id": job.id, "state": job.state.value, "progress": job.progress, "attempts": job.attempts,
        "created": job.created.isoformat() if job.created else None,
        "started": job.started.isoformat() if job.started else None,
        "ended": job.ended.isoformat() if job.ended else None,
        "error": job.error.__dict__ if job.error else None, "metrics": job.metrics, "last_seq": job.last_seq,
        "seed": job.seed,
        "spec": json_format.MessageToDict(job.spec, preserving_proto_field_name=True),
    }


def _fmt_stopped(data: TrainingStopped) -> str:
    """One line for a TrainingStopped event."""
    head = "stopped early" if data.stopped_early else "training ended"
    line = f"{head} @ step {data.step}/{data.max_steps}: {data.reason}; final model from step {data.kept_step}"
    if data.metric and data.best_value is not None:
        line += f" (best eval {data.metric} {data.best_value:.4g})"
    return line


def watch(client: Client, job_id: str, after_seq: int = 0) -> int:
    """Follow a job with a progress bar; print eval results and the outcome. Exit 0 iff it SUCCEEDED."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    from tunewire.charts import sparkline

    out, _ = _console()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[trend]}"), TextColumn("{task.fields[status]}"))
    losses: list[float] = []  # the train loss so far, drawn as a sparkline beside the bar
    with Progress(*columns, console=out, transient=False) as progress:
        bar = progress.add_task(job_id, total=1.0, status="", trend="")
        for event in client.stream_metrics(job_id, after_seq=after_seq):
            data = event.data
            if isinstance(data, StateChange):
                progress.update(bar, status=data.state.value)
                if data.state in (JobState.PAUSING, JobState.PAUSED) or (
                        data.state == JobState.QUEUED and event.seq > 1):  # paused, resumed or retried
                    progress.console.print(f"{data.state.value}: {data.message}"
                                           + (f"  (tunewire resume {job_id})" if data.state == JobState.PAUSED
                                              else ""))
                if data.state.terminal:
                    if data.state == JobState.SUCCEEDED:
                        progress.update(bar, completed=1.0)
                    break
            elif isinstance(data, TrainLog):
                status = f"step {data.step}/{data.max_steps}  epoch {data.epoch:.2f}"
                if data.loss is not None:
                    losses.append(data.loss)
                    status += f"  loss {data.loss:.4f}"
                if data.tokens_per_second:
                    status += f"  {data.tokens_per_second:.0f} tok/s"
                progress.update(bar, completed=data.progress, status=status, trend=sparkline(losses))
            elif isinstance(data, EvalResult):
                progress.console.print(f"eval @ step {data.step} (epoch {data.epoch:.2f}): {_fmt_metrics(data.metrics)}")
            elif isinstance(data, TrainingStopped):
                progress.console.print(_fmt_stopped(data))
    job = client.get(job_id)
    if job.state == JobState.SUCCEEDED:
        out.print(f"[green]{job.id} SUCCEEDED[/green]  {_fmt_metrics(job.metrics)}")
        return EXIT_OK
    reason = f": {job.error.code}: {job.error.message}" if job.error else ""
    out.print(f"[red]{job.id} {job.state.value}{reason}[/red]")
    return EXIT_JOB_FAILED


ESTIMATE_TIMEOUT_S = 300.0  # an estimate loads the job's tokenizer and data and may time a few training steps


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "unknown"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def print_estimate(estimate: Estimate) -> None:
    """The estimate as a readable table (rich)."""
    from rich.table import Table

    out, _ = _console()
    e, m = estimate, estimate.memory
    table = Table(title="estimate", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    rows = [
        ("rows", f"{e.train_rows} train, {e.eval_rows} eval"),
        ("train tokens", f"{e.train_tokens} (p50 {e.token_length_p50}, p95 {e.token_length_p95}, "
                         f"max {e.token_length_max} per row)"),
        ("max_length", f"{e.max_length} ({e.truncated_rows} rows longer)"),
        ("steps", f"{e.steps_per_epoch} per epoch, {e.total_steps} in all"),
        ("parameters", f"{m.trainable_parameters:,} trained of {m.total_parameters:,}"),
        ("memory", f"weights {_size(m.weights_bytes)}, gradients {_size(m.gradients_bytes)}, optimizer "
                   f"{_size(m.optimizer_bytes)}, activations {_size(m.activations_bytes)}, overhead "
                   f"{_size(m.overhead_bytes)}"),
        ("peak memory", f"{_size(m.total_bytes)} of {_size(e.device_memory_bytes)} on {e.device}"),
        ("fits", "[green]yes[/green]" if e.fits else "[red]no[/red]"),
    ]
    if not e.fits:
        rows.append(("would fit", f"per-device batch size {e.suggested_batch_size or 'none'}; "
                                  f"max_length {e.suggested_max_length or 'none'} at this batch size"))
    rows.append(("time", f"{_duration(e.estimated_seconds)} ({e.time_basis})"))
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)
    for note in e.notes:
        out.print(f"note: {note}", highlight=False)


def _estimate_dict(estimate: Estimate) -> dict:
    import dataclasses

    return dataclasses.asdict(estimate)


def cmd_estimate(client: Client, args) -> int:
    estimate = client.estimate(args.spec, timeout=max(args.timeout, ESTIMATE_TIMEOUT_S))
    if args.json:
        print(json.dumps(_estimate_dict(estimate)))
    else:
        print_estimate(estimate)
    return EXIT_OK


def cmd_submit(client: Client, args) -> int:
    if args.dry_run:
        return cmd_estimate(client, args)
    out, _ = _console()
    job = client.submit(args.spec, request_id=args.request_id or "")
    if args.json:
        print(json.dumps(_job_dict(job)))
    else:
        out.print(f"submitted [bold]{job.id}[/bold] ({job.state.value})")
    return watch(client, job.id) if args.watch else EXIT_OK


def cmd_jobs(client: Client, args) -> int:
    from rich.table import Table

    out, _ = _console()
    jobs = list(client.list_jobs(states=args.state or None, limit=args.limit))
    if args.json:
        print(json.dumps([_job_dict(j) for j in jobs]))
        return EXIT_OK
    table = Table("ID", "STATE", "TASK", "BASE MODEL", "PROGRESS", "CREATED", "METRICS")
    for job in jobs:
        table.add_row(job.id, job.state.value, job.spec.WhichOneof("task") or "", job.spec.base_model,
                      f"{job.progress:.0%}", job.created.strftime("%Y-%m-%d %H:%M:%S") if job.created else "",
                      _fmt_metrics(job.metrics))
    out.print(table)
    return EXIT_OK


def cmd_get(client: Client, args) -> int:
    job = client.get(args.job)
    print(json.dumps(_job_dict(job), indent=None if args.json else 2))
    return EXIT_OK


def cmd_cancel(client: Client, args) -> int:
    out, _ = _console()
    job = client.cancel(args.job)
    out.print(f"{job.id}: {job.state.value}")
    return EXIT_OK


def cmd_pause(client: Client, args) -> int:
    out, _ = _console()
    job = client.pause(args.job)
    out.print(f"{job.id}: {job.state.value}")
    return EXIT_OK


def cmd_resume(client: Client, args) -> int:
    out, _ = _console()
    job = client.resume(args.job)
    out.print(f"{job.id}: {job.state.value}")
    return EXIT_OK


def cmd_watch(client: Client, args) -> int:
    return watch(client, args.job, args.after_seq)


def cmd_plot(client: Client, args) -> int:
    from tunewire.charts import MissingPlotting, history, plot

    out, err = _console()
    try:
        path = plot(history(client, args.job), args.output, metrics=args.metric or None)
    except MissingPlotting as e:
        err.print(f"[red]{e}[/red]")
        return EXIT_ERROR
    except ValueError as e:
        err.print(f"[yellow]{e}[/yellow]")
        return EXIT_ERROR
    out.print(f"wrote {path}")
    return EXIT_OK


def cmd_predict(client: Client, args) -> int:
    from rich.markup import escape
    from rich.table import Table

    out, _ = _console()
    gen = {k: v for k, v in (("max_new_tokens", args.max_new_tokens), ("temperature", args.temperature),
                             ("top_p", args.top_p), ("top_k", args.top_k), ("seed", args.seed)) if v is not None}
    if args.do_sample:
        gen["do_sample"] = True
    if args.stop:
        gen["stop"] = args.stop
    prompts = args.text
    if args.chat:  # each text is one user turn, rendered with the model's chat template
        system = [{"role": "system", "content": args.system}] if args.system else []
        prompts = [[*system, {"role": "user", "content": t}] for t in args.text]
    if args.stream:
        for text, prompt in zip(args.text, prompts, strict=True):
            if not args.json:
                out.print(f"[bold]> {escape(text)}[/bold]")
            parts = []
            for delta in client.predict_stream(args.job, prompt, **gen):
                parts.append(delta)
                if not args.json:
                    print(delta, end="", flush=True)
            print(json.dumps({"text": "".join(parts)}) if args.json else "\n")
        return EXIT_OK
    predictions = client.predict(args.job, prompts, **gen)
    if args.json:
        print(json.dumps([p.__dict__ for p in predictions]))
        return EXIT_OK
    if predictions and isinstance(predictions[0], Classification):
        table = Table("TEXT", "LABEL", "SCORE", "ALL SCORES")
        for text, p in zip(args.text, predictions, strict=True):
            table.add_row(text if len(text) < 70 else text[:67] + "...", p.label, f"{p.score:.3f}",
                          "  ".join(f"{k}={v:.3f}" for k, v in p.scores.items()))
        out.print(table)
    else:
        for text, p in zip(args.text, predictions, strict=True):
            out.print(f"[bold]> {escape(text)}[/bold]")
            out.print(p.text + "\n", markup=False, highlight=False)
    return EXIT_OK


def _dataset_dict(dataset) -> dict:
    import dataclasses

    out = dataclasses.asdict(dataset)
    out["created"] = dataset.created.isoformat() if dataset.created else None
    return out


def cmd_datasets_upload(client: Client, args) -> int:
    """Upload a file with a progress bar (bytes, rate, ETA); print the stored dataset and its report."""
    out, err = _console()
    with _transfer_bar(err, args.json) as progress:
        bar = progress.add_task(os.path.basename(args.path), total=None)

        def advance(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        dataset = client.upload_dataset(args.path, name=args.name, format=args.format, progress=advance,
                                        upload_id=args.upload_id, label_column=args.label_column or "")
    if args.json:
        print(json.dumps(_dataset_dict(dataset)))
        return EXIT_OK
    report = dataset.report
    out.print(f"[green]{dataset.id}[/green]  {dataset.name}  {dataset.format}  {dataset.size_bytes} bytes  "
              f"{report.num_rows} rows", highlight=False)
    out.print("columns: " + ", ".join(f"{c.name} ({c.type})" for c in report.columns), highlight=False, markup=False)
    if report.problem_row_count:
        shown = ", ".join(f"{p.row} {p.kind.lower()}" for p in report.problem_rows[:10])
        out.print(f"[yellow]{report.problem_row_count} problem rows[/yellow]: {shown}", highlight=False)
    if report.label_counts:
        out.print(f"{report.label_column}: " + ", ".join(
            f"{'(missing)' if c.missing else c.value}={c.count}" for c in report.label_counts[:20]),
            highlight=False, markup=False)
    return EXIT_OK


def cmd_datasets_ls(client: Client, args) -> int:
    from rich.table import Table

    out, _ = _console()
    datasets = list(client.list_datasets(limit=args.limit))
    if args.json:
        print(json.dumps([_dataset_dict(d) for d in datasets]))
        return EXIT_OK
    table = Table("ID", "NAME", "FORMAT", "SIZE", "ROWS", "PROBLEM ROWS", "CREATED")
    for d in datasets:
        table.add_row(d.id, d.name, d.format, str(d.size_bytes), str(d.report.num_rows),
                      str(d.report.problem_row_count), d.created.strftime("%Y-%m-%d %H:%M:%S") if d.created else "")
    out.print(table)
    return EXIT_OK


def cmd_datasets_rm(client: Client, args) -> int:
    out, _ = _console()
    for dataset_id in args.dataset:
        deleted = client.delete_dataset(dataset_id)
        out.print(f"{dataset_id}: {'deleted' if deleted else 'not there'}", highlight=False)
    return EXIT_OK


def _transfer_bar(err, disable: bool):
    """A rich progress bar for a transfer: bytes, rate and ETA."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn())
    return Progress(*columns, console=err, transient=True, disable=disable)


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def cmd_checkpoints(client: Client, args) -> int:
    """A job's complete checkpoints and its final model."""
    from rich.table import Table

    out, _ = _console()
    listing = client.list_checkpoints(args.job)
    if args.json:
        rows = [{"step": c.step, "epoch": c.epoch, "saved": _when(c.saved), "size_bytes": c.size_bytes,
                 "download_bytes": c.download_bytes, "eval_metrics": c.eval_metrics, "adapter": c.adapter}
                for c in listing.checkpoints]
        final = listing.final
        print(json.dumps({"job_id": listing.job_id, "checkpoints": rows, "final": None if final is None else {
            "step": final.step, "saved": _when(final.saved), "size_bytes": final.size_bytes,
            "download_bytes": final.download_bytes, "metrics": final.metrics, "adapter": final.adapter,
            "merged_ready": final.merged_ready}}))
        return EXIT_OK
    table = Table("WHICH", "STEP", "EPOCH", "SAVED", "SIZE", "DOWNLOAD", "METRICS")
    for c in listing.checkpoints:
        table.add_row("checkpoint", str(c.step), "" if c.epoch is None else f"{c.epoch:.2f}", _when(c.saved),
                      str(c.size_bytes), str(c.download_bytes), _fmt_metrics(c.eval_metrics))
    if listing.final is not None:
        f = listing.final
        table.add_row("final" + (" (adapter)" if f.adapter else ""), "" if f.step is None else str(f.step), "",
                      _when(f.saved), str(f.size_bytes), str(f.download_bytes), _fmt_metrics(f.metrics))
    out.print(table)
    return EXIT_OK


def cmd_download(client: Client, args) -> int:
    """Download a job's model (or a checkpoint) into a folder with a progress bar; resumes by itself."""
    out, err = _console()
    with _transfer_bar(err, args.json) as progress:
        what = f"{args.job} " + (f"checkpoint {args.checkpoint}" if args.checkpoint is not None else "final") + \
            (" merged" if args.merged else "")
        bar = progress.add_task(what, total=None)

        def advance(done: int, total: int) -> None:
            progress.update(bar, completed=done, total=total)

        result = client.download(args.job, args.dir, checkpoint=args.checkpoint, merged=args.merged,
                                 progress=advance)
    if args.json:
        print(json.dumps({"path": str(result.path), "job_id": result.job_id, "checkpoint": result.checkpoint,
                          "merged": result.merged, "step": result.step, "total_bytes": result.total_bytes,
                          "received_bytes": result.received_bytes,
                          "files": [{"path": f.path, "size_bytes": f.size_bytes, "sha256": f.sha256}
                                    for f in result.files]}))
        return EXIT_OK
    out.print(f"[green]{result.path}[/green]: {len(result.files)} files, {result.total_bytes} bytes, "
              "every sha256 checked", highlight=False)
    return EXIT_OK


def cmd_rm(client: Client, args) -> int:
    """Delete finished jobs: their artifacts, events and records."""
    out, _ = _console()
    for job_id in args.job:
        deleted = client.delete_job(job_id)
        out.print(f"{job_id}: {'deleted' if deleted else 'not there'}", highlight=False)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunewire", description=__doc__.splitlines()[0])
    parser.add_argument("--address", default=os.environ.get("TUNEWIRE_ADDRESS", "localhost:50051"),
                        help="server host:port [env TUNEWIRE_ADDRESS]")
    parser.add_argument("--token", default=os.environ.get("TUNEWIRE_TOKEN"), help="bearer token [env TUNEWIRE_TOKEN]")
    parser.add_argument("--timeout", type=float, default=60.0, help="deadline for each call, in seconds")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("submit", help="submit a job from a YAML or JSON spec file")
    p.add_argument("spec", help="job spec file (.yaml, .yml or .json)")
    p.add_argument("--watch", action="store_true", help="follow the job until it ends")
    p.add_argument("--request-id", help="idempotency key: resubmitting returns the same job")
    p.add_argument("--json", action="store_true", help="print the job as JSON")
    p.add_argument("--dry-run", action="store_true", help="validate and estimate the job (as `tunewire estimate`); "
                   "submit nothing")
    p.set_defaults(fn=cmd_submit)

    p = sub.add_parser("estimate", help="validate a job spec file and estimate its rows, steps, peak memory (does "
                       "it fit the server?) and time; nothing is submitted")
    p.add_argument("spec", help="job spec file (.yaml, .yml or .json)")
    p.add_argument("--json", action="store_true", help="print the estimate as JSON")
    p.set_defaults(fn=cmd_estimate)

    p = sub.add_parser("watch", help="follow a job's progress until it ends")
    p.add_argument("job")
    p.add_argument("--after-seq", type=int, default=0, help="skip events up to this seq")
    p.set_defaults(fn=cmd_watch)

    p = sub.add_parser("jobs", help="list jobs, newest first")
    p.add_argument("--state", action="append", choices=[s.value for s in JobState], help="only this state (repeatable)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_jobs)

    p = sub.add_parser("get", help="show one job")
    p.add_argument("job")
    p.add_argument("--json", action="store_true", help="one line of JSON")
    p.set_defaults(fn=cmd_get)

    p = sub.add_parser("cancel", help="cancel a queued or running job")
    p.add_argument("job")
    p.set_defaults(fn=cmd_cancel)

    p = sub.add_parser("plot", help="draw a job's train/eval loss and eval metrics against steps into an image")
    p.add_argument("job")
    p.add_argument("-o", "--output", default="chart.png", help="image file (png, svg or pdf); default chart.png")
    p.add_argument("--metric", action="append", help="only these eval metrics in the lower panel (repeatable)")
    p.set_defaults(fn=cmd_plot)

    p = sub.add_parser("pause", help="pause a job: a running one saves a checkpoint and frees the server")
    p.add_argument("job")
    p.set_defaults(fn=cmd_pause)

    p = sub.add_parser("resume", help="queue a paused job again; it continues from the step it paused at")
    p.add_argument("job")
    p.set_defaults(fn=cmd_resume)

    p = sub.add_parser("predict", help="run a succeeded job's model on some texts")
    p.add_argument("job")
    p.add_argument("text", nargs="+")
    p.add_argument("--max-new-tokens", type=int)
    p.add_argument("--temperature", type=float)
    p.add_argument("--top-p", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--do-sample", action="store_true")
    p.add_argument("--stop", action="append", help="stop sequence (repeatable)")
    p.add_argument("--seed", type=int)
    p.add_argument("--chat", action="store_true", help="send each text as a user message (SFT chat models)")
    p.add_argument("--system", help="with --chat: a system message before each user message")
    p.add_argument("--stream", action="store_true", help="print text as it is generated (SFT jobs)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("datasets", help="upload, list and remove datasets")
    dsub = p.add_subparsers(dest="datasets_command", required=True)
    d = dsub.add_parser("upload", help="upload a JSONL, CSV, TSV or Parquet file (resumes by itself)")
    d.add_argument("path")
    d.add_argument("--name", help="the dataset's name (default: the file name)")
    d.add_argument("--format", choices=["jsonl", "csv", "tsv", "parquet"], help="default: from the extension")
    d.add_argument("--label-column", help="count this column's values in the report")
    d.add_argument("--upload-id", help="resume an earlier upload of the same file under this id")
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_datasets_upload)
    d = dsub.add_parser("ls", help="list uploaded datasets, newest first")
    d.add_argument("--limit", type=int, default=50)
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_datasets_ls)
    d = dsub.add_parser("rm", help="remove uploaded datasets (refused while a queued or running job uses one)")
    d.add_argument("dataset", nargs="+")
    d.set_defaults(fn=cmd_datasets_rm)

    p = sub.add_parser("checkpoints", help="list a job's complete checkpoints and its final model")
    p.add_argument("job")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_checkpoints)

    p = sub.add_parser("download", help="download a job's model (or a checkpoint) into a folder (resumes by itself)")
    p.add_argument("job")
    p.add_argument("dir", help="the folder to write (created if missing); it loads with from_pretrained")
    p.add_argument("--checkpoint", type=int, help="the checkpoint saved at this step instead of the final model")
    p.add_argument("--merged", action="store_true", help="a LoRA adapter merged into its base model")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_download)

    p = sub.add_parser("rm", help="delete finished jobs: artifacts, events and records (cancel a running one first)")
    p.add_argument("job", nargs="+")
    p.set_defaults(fn=cmd_rm)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _, err = _console()
    try:
        with Client(args.address, timeout=args.timeout, token=args.token) as client:
            return args.fn(client, args)
    except SpecError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
    except TunewireError as exc:
        err.print(f"[red]error:[/red] {exc.message}", highlight=False)
        for v in exc.violations:
            err.print(f"  - {v.field}: {v.description}", highlight=False)
    except KeyboardInterrupt:
        err.print("interrupted")
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
