"""N StreamMetrics subscribers on one job, in their own process (a helper of streaming.py and control_plane.py).

Each subscriber is its own tunewire.AsyncClient (its own connection), follows the job from seq 0 and
records, for every event, the time it came out of the SDK's iterator. Prints `ready` on stdout once every
subscriber has received an event (its stream is open and following), then runs until every stream ends
(the job is terminal) or --timeout passes, and writes a JSON summary to --out:

- latency (receive time minus the event's time) of the events the training callback timed
  (train logs, eval results, checkpoints), in ms: p50, p90, p99, max, over all subscribers;
- whether every subscriber got every seq from 1 to the last exactly once, in order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from array import array
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from runs import event_epoch  # noqa: E402
from stats import percentile  # noqa: E402

import tunewire  # noqa: E402

WORKER_TIMED = ("TrainLog", "EvalResult", "CheckpointSaved")


LIVE: dict[str, float] = {}  # wall and CPU time when the first event timed by the worker arrived


class Record:
    """One subscriber's received events, in flat arrays: tens of thousands of tuples would be objects the
    garbage collector scans again and again, pauses that belong to this harness, not to what it measures."""

    def __init__(self) -> None:
        self.seq, self.recv, self.at, self.kind = array("q"), array("d"), array("d"), array("b")

    def append(self, seq: int, recv: float, at: float, kind: str) -> None:
        self.seq.append(seq)
        self.recv.append(recv)
        self.at.append(at)
        self.kind.append(KINDS.index(kind))

    def __iter__(self):
        return ((q, r, a, KINDS[k]) for q, r, a, k in zip(self.seq, self.recv, self.at, self.kind, strict=True))

    def __len__(self) -> int:
        return len(self.seq)

    def __getitem__(self, i: int):
        return self.seq[i], self.recv[i], self.at[i], KINDS[self.kind[i]]


KINDS = ("StateChange", "TrainLog", "EvalResult", "CheckpointSaved")


async def subscriber(address: str, job_id: str, first: asyncio.Event, record: Record) -> None:
    async with tunewire.AsyncClient(address) as client:
        async for event in client.stream_metrics(job_id):
            now = time.time()
            record.append(event.seq, now, event_epoch(event), event.kind)
            if not LIVE and event.kind in WORKER_TIMED:
                LIVE.update(wall=now, cpu=time.process_time())
            if not first.is_set():
                first.set()


async def main_async(args) -> dict:
    records = [Record() for _ in range(args.n)]
    firsts = [asyncio.Event() for _ in range(args.n)]
    tasks = [asyncio.create_task(subscriber(args.address, args.job, firsts[i], records[i])) for i in range(args.n)]
    opened = time.time()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(f.wait() for f in firsts)), args.timeout)
    ready_at = time.time()
    connected = sum(f.is_set() for f in firsts)
    print("ready", connected, flush=True)
    done, pending = await asyncio.wait(tasks, timeout=args.timeout)
    cpu_busy = ((time.process_time() - LIVE["cpu"]) / max(time.time() - LIVE["wall"], 1e-9)) if LIVE else 0.0
    for task in pending:
        task.cancel()
    errors = [repr(t.exception()) for t in done if t.exception() is not None]

    last = max((r[-1][0] for r in records if r), default=0)
    expected = list(range(1, last + 1))
    complete = sum(1 for r in records if [x[0] for x in r] == expected)
    latencies, live_events, replayed = [], 0, 0
    first_recv, last_recv = float("inf"), 0.0
    for r in records:
        for _seq, recv, at, kind in r:
            if kind not in WORKER_TIMED:
                continue
            first_recv, last_recv = min(first_recv, recv), max(last_recv, recv)
            if at < ready_at:  # sent before every stream was open: replayed to some, not live
                replayed += 1
                continue
            live_events += 1
            latencies.append((recv - at) * 1000)
    worker_times = sorted({at for r in records for _, _, at, kind in r if kind in WORKER_TIMED})
    produced_per_s = (len(worker_times) - 1) / (worker_times[-1] - worker_times[0]) if len(worker_times) > 1 else 0
    received = sum(len(r) for r in records)
    if os.environ.get("TUNEWIRE_BENCH_DUMP"):  # every record, for a closer look
        Path(os.environ["TUNEWIRE_BENCH_DUMP"]).write_text(json.dumps([list(r) for r in records]))
    return {
        "subscribers": args.n,
        "client_cpu_share": round(cpu_busy, 3),  # of one core, while the job ran
        "connected": connected,
        "connect_seconds": round(ready_at - opened, 3),
        "last_seq": last,
        "complete_subscribers": complete,
        "lost_or_repeated": args.n - complete,
        "pending_at_timeout": len(pending),
        "errors": errors[:5],
        "events_received": received,
        "worker_events": len(worker_times),
        "worker_events_per_s": round(produced_per_s, 1),
        # worker events delivered to all subscribers together, per second of the live window
        "deliveries_per_s": round(live_events / (last_recv - first_recv), 1) if last_recv > first_recv else 0,
        "latency_samples": len(latencies),
        "latency_samples_ms": [round(x, 3) for x in latencies],
        "replayed_samples_excluded": replayed,
        "latency_ms": {p: round(percentile(latencies, q), 2) for p, q in
                       (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))} if latencies else {},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", required=True)
    p.add_argument("--job", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--raw", action="store_true", help="also write every latency sample (to merge processes)")
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    if not args.raw:
        result.pop("latency_samples_ms")
    Path(args.out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
