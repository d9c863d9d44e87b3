"""C concurrent Predict clients for a fixed time, in their own process (a helper of predict.py).

Each client is its own tunewire.AsyncClient (its own connection) and sends one single-input Predict
after another: a classifier gets short reviews, a generator a counting prompt with greedy decoding and
--max-new-tokens. After one untimed request per client, every client runs for --duration seconds;
requests finished in that window count. Writes a JSON summary to --out: requests/s, latency p50/p90/p99
in ms, errors, and for a generator the mean tokens generated per request. --kind getjob sends GetJob
instead: the same RPC path with no inference worker, the ceiling any Predict figure can reach here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from assets import COUNTING_PROMPT  # noqa: E402
from stats import percentile  # noqa: E402

import tunewire  # noqa: E402


def inputs_for(kind: str) -> list[str]:
    if kind == "generator":
        return [COUNTING_PROMPT]
    from tests import tiny

    return [row["text"] for row in tiny.sentiment_rows(64, seed=3)]


async def client_loop(address: str, job_id: str, texts: list[str], offset: int, kind: str, max_new_tokens: int,
                      start: asyncio.Event, end_at: list[float], out: dict) -> None:
    gen = {"max_new_tokens": max_new_tokens} if kind == "generator" else {}
    async with tunewire.AsyncClient(address, timeout=120) as client:
        if kind == "getjob":
            await client.get(job_id)
        else:
            await client.predict(job_id, [texts[offset % len(texts)]], **gen)  # connection up, model loaded
        out["warm"] += 1
        await start.wait()
        i = offset
        while True:
            t0 = time.perf_counter()
            if t0 >= end_at[0]:
                return
            try:
                if kind == "getjob":
                    result = await client.get(job_id)
                else:
                    result = await client.predict(job_id, [texts[i % len(texts)]], **gen)
            except tunewire.TunewireError as exc:
                out["errors"].append(repr(exc)[:200])
                continue
            t1 = time.perf_counter()
            if t1 <= end_at[0]:
                out["latencies"].append(t1 - t0)
                if kind == "generator":
                    out["tokens"].append(result[0].num_tokens)
            i += 1


async def run(args) -> dict:
    texts = inputs_for(args.kind)
    out = {"latencies": [], "tokens": [], "errors": [], "warm": 0}
    start = asyncio.Event()
    end_at = [float("inf")]
    tasks = [asyncio.create_task(client_loop(args.address, args.job, texts, i, args.kind, args.max_new_tokens,
                                             start, end_at, out)) for i in range(args.concurrency)]
    deadline = time.monotonic() + 300
    while out["warm"] < args.concurrency and time.monotonic() < deadline:
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    end_at[0] = t0 + args.duration
    start.set()
    done, pending = await asyncio.wait(tasks, timeout=args.duration + 180)
    for t in pending:
        t.cancel()
    failures = [repr(t.exception())[:300] for t in done if t.exception() is not None]
    window = min(time.perf_counter(), end_at[0]) - t0
    lat_ms = [x * 1000 for x in out["latencies"]]
    return {
        "kind": args.kind,
        "concurrency": args.concurrency,
        "duration_s": round(window, 3),
        "requests": len(lat_ms),
        "requests_per_s": round(len(lat_ms) / window, 2) if window > 0 else 0,
        "latency_ms": {k: round(percentile(lat_ms, q), 2) for k, q in (("p50", 50), ("p90", 90), ("p99", 99))},
        "errors": len(out["errors"]) + len(failures),
        "error_samples": (out["errors"] + failures)[:5],
        "mean_tokens": round(sum(out["tokens"]) / len(out["tokens"]), 2) if out["tokens"] else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--address", required=True)
    p.add_argument("--job", required=True)
    p.add_argument("--kind", choices=("classifier", "generator", "getjob"), required=True,
                   help="getjob: GetJob calls, no inference: the RPC ceiling of this machine")
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    Path(args.out).write_text(json.dumps(asyncio.run(run(args))))


if __name__ == "__main__":
    main()
