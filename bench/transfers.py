"""Transfers: a dataset upload and a model download of 1 GiB over loopback, against `cp` of the same file.

Upload: a JSONL file of --size-mib MiB (rows {"id", "text" of about --row-bytes bytes, "label"}: a file the
arrival validation accepts; generated once into bench/.cache/transfers/) sent with the SDK's
`client.upload_dataset` to a real server on 127.0.0.1 that this script starts. The time is the call's, as
a user sees it, split by the progress callback's moments: the client's sha256 pre-pass and StartUpload
(up to the first callback), the stream (to the callback after the last chunk), and the server's finish
(fsync, sha256 check, the rows of the validation report not yet read, rename, record: the report of a
JSONL/CSV/TSV upload is built by a check process while the bytes arrive, datasets/arrival.py). The
one-pass report alone (`datasets.report.build_report`, the same readers) is also timed in this process on
the same file. bench/results/transfers-before-speedup.json keeps the run before that change.

Download: a real 1 GiB model. A one-layer BERT whose vocabulary is oversized (vocab x 1024 fp32 embeddings
make the weights file the size asked; built once into the cache) is fine-tuned by a real classification
job of one step, whose final model (model.safetensors of about --size-mib MiB, plus config and tokenizer)
is fetched with `client.download(job_id, dest)`. The split: to the manifest (the first progress callback;
the server verifies the folder first) and the stream. The server's streaming reader
(`models.reader.read_chunks`, 1 MiB chunks, no gRPC) is also timed on the downloaded weights file
(the same bytes, in the page cache).

Reference: `cp` of the same file to the same disk, then `sync FILE` (an fsync of the copy): both the
upload (its seal) and the download (before its rename) fsync what they write, so cp + sync is the like
figure; cp alone (into the page cache) is shown too. The source file is in the page cache for every
side alike (nothing drops caches: the machine is shared). MB/s are 10^6 bytes a second.

Memory: VmRSS of the server process and of every process under it, sampled every --sample-ms ms during
each transfer; the growth is the peak less the value just before (the goal's figure is the server
process's; the growth with its children, the upload's check process among them, is shown beside). The
server runs with --warm-worker false, so no idle worker imports while an upload is measured. CPU seconds
of each transfer: the server's own, its check process's (a child it has waited for), the client's.

Resume: the upload of the same file (its dataset deleted first) with a progress callback that raises at
half the file, which breaks the stream; then a second call with the same upload id. The chunk bytes each
call sends are counted in the client (core.Upload.requests, wrapped).

Goals (issue 14): MB/s at least 40 % of cp + sync; server RSS growth under 64 MB; the resumed call sends
only what the server did not hold. --quick: a 128 MiB file and model, one run each.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from assets import write_datasets  # noqa: E402
from environment import CACHE, PYTHON, bench_env, install_signal_exit, log, scratch_dir  # noqa: E402
from results import markdown_table, save_results  # noqa: E402
from stats import median  # noqa: E402

import tunewire  # noqa: E402
from tests.support.procs import children, cpu_ticks, rss_mb  # noqa: E402
from tests.support.server_process import ServerProcess  # noqa: E402
from tests.support.specs import classification_spec  # noqa: E402
from tunewire import _core as core  # noqa: E402

MIB = 1024 * 1024
MB = 1e6
GOAL_RATIO = 0.40
GOAL_RSS_MB = 64.0
TRANSFER_CACHE = CACHE / "transfers"
MODEL_NAME = "big-vocab-bert"
HIDDEN = 1024
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu", "good", "bad", "great", "awful", "fine"]


# --- inputs, built once --------------------------------------------------------------------------------------

def dataset_file(size: int, row_bytes: int) -> Path:
    """A JSONL file of exactly `size` bytes: rows {"id", "text", "label"} of about `row_bytes` bytes each,
    the last row's text cut to fit."""
    path = TRANSFER_CACHE / f"upload-{size // MIB}MiB-rows{row_bytes}.jsonl"
    if path.is_file() and path.stat().st_size == size:
        return path
    log(f"writing {path} ({size // MIB} MiB)")
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(row_bytes // 6))[: row_bytes - 40] for _ in range(997)]
    TRANSFER_CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    written, n = 0, 0
    with open(tmp, "w", encoding="ascii") as f:
        while True:
            label = "positive" if n % 2 else "negative"
            line = f'{{"id": {n}, "text": "{texts[n % len(texts)]}", "label": "{label}"}}\n'
            if written + len(line) + 60 > size:  # the last row: its text fills the bytes left exactly
                head = f'{{"id": {n}, "label": "{label}", "text": "'
                fill = size - written - len(head) - 3
                f.write(head + ("x" * fill) + '"}\n')
                break
            f.write(line)
            written += len(line)
            n += 1
    os.replace(tmp, path)
    return path


def _build_model(path: Path, vocab: int) -> None:
    """Runs in a child process (it imports torch): a one-layer BERT with `vocab` x HIDDEN embeddings."""
    import torch
    from transformers import BertConfig, BertModel

    from tests import tiny

    torch.manual_seed(0)
    tokenizer = tiny.build_tokenizer(tiny.POSITIVE + tiny.NEGATIVE + tiny.FILLER)
    config = BertConfig(vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=64)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


def model_root(size: int, threads: int) -> Path:
    """bench/.cache/transfers/models-<size>/big-vocab-bert, whose model.safetensors is about `size` bytes."""
    root = TRANSFER_CACHE / f"models-{size // MIB}MiB"
    if not (root / MODEL_NAME / "config.json").is_file():
        vocab = max(1024, size // (4 * HIDDEN) - 4096)  # the rest of the weights are about 4096 rows' worth
        log(f"building {MODEL_NAME} (vocab {vocab}) into {root}")
        subprocess.run([PYTHON, str(Path(__file__).resolve()), "build-model", str(root / MODEL_NAME), str(vocab)],
                       check=True, env=bench_env(threads), timeout=900)
    return root


# --- measuring -----------------------------------------------------------------------------------------------

class RssSampler:
    """VmRSS of a process and of every process under it, every `interval` seconds, in a thread."""

    def __init__(self, pid: int, interval: float) -> None:
        self.pid, self.interval = pid, interval
        self.base_server = self.base_total = 0.0
        self.peak_server = self.peak_total = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _tree(self) -> list[int]:
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += children(pid)
        return found

    def _sample(self) -> tuple[float, float]:
        server = rss_mb(self.pid) or 0.0
        total = server + sum(rss_mb(p) or 0.0 for p in self._tree()[1:])
        return server * MIB / MB, total * MIB / MB  # MB (10^6), like the goal

    def __enter__(self) -> RssSampler:
        self.cpu_before, self.client_cpu_before = self.cpu_s(), time.process_time()
        self.own_before, self.reaped_before = _own_and_reaped_s(self.pid)
        self.base_server, self.base_total = self._sample()
        self.peak_server, self.peak_total = self.base_server, self.base_total
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            server, total = self._sample()
            self.samples += 1
            self.peak_server, self.peak_total = max(self.peak_server, server), max(self.peak_total, total)

    def __exit__(self, *exc) -> None:
        self.server_cpu = self.cpu_s() - self.cpu_before
        own, reaped = _own_and_reaped_s(self.pid)
        # The check process has ended (and was waited for) by now: its CPU is the server's reaped
        # children's, which cpu_s() (the live tree) no longer sees.
        self.server_own_cpu, self.children_cpu = own - self.own_before, reaped - self.reaped_before
        self.client_cpu = time.process_time() - self.client_cpu_before
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def cpu_s(self) -> float:
        """CPU seconds (user + system) used so far by the process and the processes under it now."""
        return sum(cpu_ticks(p) or 0 for p in self._tree()) / os.sysconf("SC_CLK_TCK")

    def figures(self) -> dict:
        return {"rss_server_before_mb": round(self.base_server, 1), "rss_server_peak_mb": round(self.peak_server, 1),
                "rss_growth_server_mb": round(self.peak_server - self.base_server, 1),
                "rss_growth_total_mb": round(self.peak_total - self.base_total, 1), "rss_samples": self.samples,
                "server_cpu_s": round(self.server_cpu, 2), "server_own_cpu_s": round(self.server_own_cpu, 2),
                "server_children_cpu_s": round(self.children_cpu, 2), "client_cpu_s": round(self.client_cpu, 2)}


def _own_and_reaped_s(pid: int) -> tuple[float, float]:
    """CPU seconds of the process itself (utime + stime) and of its children it has waited for (cutime +
    cstime), from /proc/<pid>/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


class Moments:
    """A progress callback that notes when it was first called and when `done` first reached the total."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.first = self.whole = None
        self.stop_at = stop_at

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        self.first = self.first or now
        if done >= total and self.whole is None:
            self.whole = now
        if self.stop_at is not None and done >= self.stop_at:
            raise InterruptedError(f"cut by the benchmark at {done} bytes")


SENT: list[int] = [0]  # chunk bytes the SDK yielded, over the calls since the last reset


def _count_chunks() -> None:
    """Wrap core.Upload.requests so that every chunk's bytes are counted as the SDK hands them to gRPC."""
    original = core.Upload.requests

    def requests(self, offset):
        for message in original(self, offset):
            if message.HasField("chunk"):
                SENT[0] += len(message.chunk.data)
            yield message

    core.Upload.requests = requests


def copy_times(src: Path, dst: Path) -> dict:
    """`cp src dst` alone, then `sync dst` (an fsync of the copy): seconds of each."""
    dst.unlink(missing_ok=True)
    t0 = time.monotonic()
    subprocess.run(["cp", str(src), str(dst)], check=True)
    t1 = time.monotonic()
    subprocess.run(["sync", str(dst)], check=True)
    t2 = time.monotonic()
    dst.unlink()
    return {"cp_s": t1 - t0, "cp_sync_s": t2 - t0}


def cp_figures(src: Path, scratch: Path, runs: int) -> dict:
    times = [copy_times(src, scratch / "cp-copy") for _ in range(runs)]
    size = src.stat().st_size
    cp, cp_sync = median([t["cp_s"] for t in times]), median([t["cp_sync_s"] for t in times])
    return {"runs": runs, "cp_s": [round(t["cp_s"], 3) for t in times],
            "cp_sync_s": [round(t["cp_sync_s"], 3) for t in times],
            "cp_mb_s": round(size / cp / MB, 1), "cp_sync_mb_s": round(size / cp_sync / MB, 1)}


# --- the three measurements -----------------------------------------------------------------------------------

def measure_upload(client, server, path: Path, interval: float, chunk_size: int = core.UPLOAD_CHUNK) -> dict:
    size = path.stat().st_size
    moments = Moments()
    SENT[0] = 0
    with RssSampler(server.pid, interval) as rss:
        t0 = time.monotonic()
        dataset = client.upload_dataset(path, progress=moments, upload_id=f"bench-{time.time_ns()}",
                                        chunk_size=chunk_size)
        took = time.monotonic() - t0
    client.delete_dataset(dataset.id)
    first, whole = moments.first or t0, moments.whole or t0 + took
    return {"chunk_bytes": chunk_size, "seconds": round(took, 3), "mb_s": round(size / took / MB, 1),
            "rows": dataset.report.num_rows,
            "sent_bytes": SENT[0], "hash_and_start_s": round(first - t0, 3), "stream_s": round(whole - first, 3),
            "stream_mb_s": round(size / max(whole - first, 1e-9) / MB, 1),
            "server_finish_s": round(t0 + took - whole, 3), **rss.figures()}


def measure_report(path: Path) -> dict:
    """The arrival validation alone (the server's build_report), in this process, and the client's sha256."""
    from tunewire_server.datasets.report import build_report

    t0 = time.monotonic()
    report = build_report(path, "jsonl")
    t1 = time.monotonic()
    core.sha256_of(path)
    t2 = time.monotonic()
    size = path.stat().st_size
    return {"rows": report.num_rows, "build_report_s": round(t1 - t0, 3),
            "build_report_mb_s": round(size / (t1 - t0) / MB, 1),
            "build_report_us_per_row": round((t1 - t0) / report.num_rows * 1e6, 2),
            "client_sha256_s": round(t2 - t1, 3), "client_sha256_mb_s": round(size / (t2 - t1) / MB, 1)}


def measure_resume(client, path: Path) -> dict:
    size = path.stat().st_size
    upload_id = f"bench-resume-{time.time_ns()}"
    SENT[0] = 0
    cut = None
    try:
        client.upload_dataset(path, progress=Moments(stop_at=size // 2), upload_id=upload_id)
    except Exception as exc:  # noqa: BLE001 - the cut: the SDK reports the broken stream as an error
        cut = f"{type(exc).__name__}: {str(exc)[:120]}"
    first_sent = SENT[0]
    held = client._unary(core.Upload(path, upload_id=upload_id).start(), 30)[0]
    SENT[0] = 0
    t0 = time.monotonic()
    dataset = client.upload_dataset(path, upload_id=upload_id)
    took = time.monotonic() - t0
    second_sent = SENT[0]
    client.delete_dataset(dataset.id)
    return {"size_bytes": size, "first_call_sent_bytes": first_sent, "held_after_cut_bytes": held,
            "second_call_sent_bytes": second_sent, "total_sent_bytes": first_sent + second_sent,
            "second_call_s": round(took, 3), "first_call_error": cut,
            "only_the_rest": cut is not None and second_sent == size - held and 0 < held < size}


def train_big_model(client, server, size: int) -> str:
    spec = classification_spec(1, logging_steps=1, model=MODEL_NAME)
    t0 = time.monotonic()
    job = client.submit(spec)
    final = client.wait(job.id, raise_on_failure=False)
    if final.state.value != "SUCCEEDED":
        raise RuntimeError(f"the {MODEL_NAME} job ended {final.state.value}: {final.error}\n{server.log_tail()}")
    log(f"trained {MODEL_NAME} (1 step) in {time.monotonic() - t0:.1f} s: job {job.id}")
    return job.id


def measure_download(client, server, job_id: str, dest: Path, interval: float, chunk_size: int = 0) -> dict:
    shutil.rmtree(dest, ignore_errors=True)
    moments = Moments()
    with RssSampler(server.pid, interval) as rss:
        t0 = time.monotonic()
        model = client.download(job_id, dest, progress=moments, chunk_size=chunk_size)
        took = time.monotonic() - t0
    first = moments.first or t0
    weights = max(model.files, key=lambda f: f.size_bytes)
    return {"chunk_bytes": chunk_size or 1 * MIB, "seconds": round(took, 3),
            "mb_s": round(model.total_bytes / took / MB, 1), "total_bytes": model.total_bytes, "files": len(model.files),
            "largest_file": weights.path, "largest_file_bytes": weights.size_bytes,
            "to_manifest_s": round(first - t0, 3), "stream_s": round(t0 + took - first, 3),
            "stream_mb_s": round(model.total_bytes / max(t0 + took - first, 1e-9) / MB, 1), **rss.figures()}


def measure_reader(path: Path) -> dict:
    """The server's streaming reader (read_chunks, default chunk) over one file, without gRPC."""
    from tunewire_server.models.layout import Form, Which
    from tunewire_server.models.manifest import FileEntry, Manifest
    from tunewire_server.models.reader import read_chunks

    size = path.stat().st_size
    manifest = Manifest("bench", Which(), Form.AS_TRAINED, None, path.parent,
                        (FileEntry(path.name, size, "0" * 64),))
    t0 = time.monotonic()
    got = sum(len(c) for c in read_chunks(manifest, path.name))
    took = time.monotonic() - t0
    assert got == size
    return {"bytes": size, "seconds": round(took, 3), "mb_s": round(size / took / MB, 1)}


# --- the run -------------------------------------------------------------------------------------------------

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a 128 MiB file and model, one run each: a smoke check")
    p.add_argument("--size-mib", type=int, default=1024, help="upload file and model weights size (default 1024)")
    p.add_argument("--row-bytes", type=int, default=1024, help="bytes of a JSONL row of the upload (default 1024)")
    p.add_argument("--runs", type=int, default=3, help="uploads and downloads measured (default 3)")
    p.add_argument("--cp-runs", type=int, default=3, help="cp + sync runs per file (default 3)")
    p.add_argument("--sample-ms", type=float, default=50.0, help="RSS sampling interval (default 50 ms)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the training worker (default 1)")
    p.add_argument("--big-chunk-mib", type=int, default=4, help="also one upload and one download with chunks "
                   "of this many MiB (the server's largest; default 4; 0: skip), beside the SDK's default 1 MiB")
    p.add_argument("--results-name", default="transfers", help="bench/results/<name>.json (default transfers)")
    p.add_argument("--no-download", action="store_true", help="uploads only")
    p.add_argument("--no-resume", action="store_true", help="skip the cut-and-resume upload")
    args = p.parse_args()
    if args.quick:
        args.size_mib, args.runs, args.cp_runs = min(args.size_mib, 128), 1, 1
    size = args.size_mib * MIB
    interval = args.sample_ms / 1000.0
    install_signal_exit()
    _count_chunks()

    data = dataset_file(size, args.row_bytes)
    models = None if args.no_download else model_root(size, args.threads)
    work = scratch_dir("transfers")
    write_datasets(work / "server" / "datasets")
    env = bench_env(args.threads)
    out: dict = {"loadavg_at_start": [round(x, 2) for x in os.getloadavg()], "quick": args.quick, "size_bytes": size, "row_bytes": args.row_bytes, "threads": args.threads}

    log("validation report and sha256 alone on", data)
    out["validation"] = measure_report(data)
    log("cp of the upload file:", out.setdefault("cp_upload", cp_figures(data, work, args.cp_runs)))
    with ServerProcess(work / "server", models, "--warm-worker", "false", threads=args.threads, env=env) as server, \
            tunewire.Client(server.address, timeout=600) as client:
        log("server up at", server.address)
        out["uploads"] = []
        for i in range(args.runs):
            r = measure_upload(client, server, data, interval)
            out["uploads"].append(r)
            log(f"upload {i + 1}/{args.runs}: {r}")
        if args.big_chunk_mib:
            out["uploads_big_chunks"] = [measure_upload(client, server, data, interval, args.big_chunk_mib * MIB)]
            log(f"upload, {args.big_chunk_mib} MiB chunks: {out['uploads_big_chunks'][0]}")
        if not args.no_resume:
            out["resume"] = measure_resume(client, data)
            log("resume:", out["resume"])
        if models is not None:
            job_id = train_big_model(client, server, size)
            dest = work / "download"
            out["downloads"] = []
            for i in range(args.runs):
                r = measure_download(client, server, job_id, dest, interval)
                out["downloads"].append(r)
                log(f"download {i + 1}/{args.runs}: {r}")
            if args.big_chunk_mib:
                out["downloads_big_chunks"] = [measure_download(client, server, job_id, dest, interval,
                                                                args.big_chunk_mib * MIB)]
                log(f"download, {args.big_chunk_mib} MiB chunks: {out['downloads_big_chunks'][0]}")
            weights = dest / out["downloads"][0]["largest_file"]
            out["cp_model"] = cp_figures(weights, work, args.cp_runs)
            log("cp of the weights file:", out["cp_model"])
            out["reader"] = measure_reader(weights)
            log("streaming reader:", out["reader"])

    print_and_save(out, args.results_name)
    return 0


def print_and_save(out: dict, results_name: str) -> None:
    rows, summary = [], []
    v = out["validation"]

    def side(name: str, runs: list[dict], cp: dict, extra: str, judged: bool = True) -> None:
        best = max(runs, key=lambda r: r["mb_s"])
        extra += (f"; CPU s: server {runs[0]['server_own_cpu_s']} (+ check process "
                  f"{runs[0]['server_children_cpu_s']}), client {runs[0]['client_cpu_s']}")
        mb_s = median([r["mb_s"] for r in runs])
        # The goal is the server process's growth (the bytes are streamed, never held). The upload's check
        # process is apart: its memory is shown beside (bounded by its block size, whatever the file's size).
        growth = max(r["rss_growth_server_mb"] for r in runs)
        total = max(r["rss_growth_total_mb"] for r in runs)
        ratio = mb_s / cp["cp_sync_mb_s"]
        rows.append([name, len(runs), mb_s, best["stream_mb_s"], cp["cp_sync_mb_s"], cp["cp_mb_s"],
                     f"{ratio:.2f}", f">= {GOAL_RATIO}", ratio >= GOAL_RATIO, growth, growth < GOAL_RSS_MB, total, extra])
        if not judged:
            return
        summary.append({"figure": f"{name} MB/s / cp+sync MB/s ({out['size_bytes'] // MIB} MiB)",
                        "value": f"{mb_s:.0f} / {cp['cp_sync_mb_s']:.0f} = {ratio:.2f}",
                        "goal": f">= {GOAL_RATIO}", "met": ratio >= GOAL_RATIO})
        summary.append({"figure": f"server RSS growth during {name} (MB)", "value": f"{growth:.1f}",
                        "goal": f"< {GOAL_RSS_MB:.0f}", "met": growth < GOAL_RSS_MB})

    u = out["uploads"][0]
    side("upload", out["uploads"], out["cp_upload"],
         f"hash+start {u['hash_and_start_s']} s, stream {u['stream_s']} s, server finish {u['server_finish_s']} s")
    if "uploads_big_chunks" in out:
        b = out["uploads_big_chunks"][0]
        side(f"upload, {b['chunk_bytes'] // MIB} MiB chunks", out["uploads_big_chunks"], out["cp_upload"],
             f"stream {b['stream_s']} s, server finish {b['server_finish_s']} s", judged=False)
    if "downloads" in out:
        d = out["downloads"][0]
        side("download", out["downloads"], out["cp_model"],
             f"to manifest {d['to_manifest_s']} s, stream {d['stream_s']} s; reader alone {out['reader']['mb_s']} MB/s")
    if "downloads_big_chunks" in out:
        b = out["downloads_big_chunks"][0]
        side(f"download, {b['chunk_bytes'] // MIB} MiB chunks", out["downloads_big_chunks"], out["cp_model"],
             f"to manifest {b['to_manifest_s']} s, stream {b['stream_s']} s", judged=False)
    print(f"## Transfers over loopback: {out['size_bytes'] // MIB} MiB (medians; MB = 10^6 bytes)\n")
    print(markdown_table(["transfer", "runs", "MB/s", "stream MB/s (best)", "cp+sync MB/s", "cp MB/s", "ratio",
                          "goal", "met", "server RSS growth MB", "< 64", "with children MB", "split (first run)"], rows))
    print(f"\nvalidation alone (build_report): {v['build_report_s']} s for {v['rows']} rows "
          f"({v['build_report_mb_s']} MB/s, {v['build_report_us_per_row']} us/row); "
          f"client sha256 {v['client_sha256_s']} s ({v['client_sha256_mb_s']} MB/s)")
    if "resume" in out:
        r = out["resume"]
        print(f"resume: cut at half; first call sent {r['first_call_sent_bytes']} bytes, server held "
              f"{r['held_after_cut_bytes']}, second call sent {r['second_call_sent_bytes']} "
              f"(size {r['size_bytes']}; only the rest: {r['only_the_rest']})")
        summary.append({"figure": "resumed upload sends only the rest (bytes)",
                        "value": f"{r['second_call_sent_bytes']} of {r['size_bytes']}",
                        "goal": "= size - held", "met": r["only_the_rest"]})
    print()
    path = save_results(results_name, {**out, "summary": summary})
    log("results in", path)


if __name__ == "__main__":
    if sys.argv[1:2] == ["build-model"]:
        _build_model(Path(sys.argv[2]), int(sys.argv[3]))
    else:
        sys.exit(main())
