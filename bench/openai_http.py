"""The OpenAI-compatible HTTP face against gRPC: chat-completion requests/s and latency at 1 and 32 concurrent
clients, and the time from fine_tuning.jobs.create to the job's first metrics event on a warm server.

A server (its own process, HTTP face on) gets a chat JSONL uploaded with the `openai` package and trains
tiny-llama on it through fine_tuning.jobs.create. Then, for each level, C clients send one chat request
after another for --duration seconds: C `openai.AsyncOpenAI` clients calling chat.completions.create, and
C `tunewire.AsyncClient`s calling Predict with the same conversation, both greedy with --max-tokens new
tokens, both served by the same inference worker (its micro-batching). The clients run in a process of
their own (this file with --load), as bench/predict_clients.py does. A third row sends the same HTTP
request from aiohttp, a light client: the face's own cost, apart from the openai package's. Each row also
gives the CPU per request of the control plane (the server process alone) and of the client process: on a
small machine the client's CPU competes with the server's. Goal: the HTTP face costs under 15 % of gRPC's
throughput.

Create-to-first-metrics: after the warm worker is ready, a job is created (logging every step) and its
events are listed every 10 ms until a `metrics` event shows; the job is then cancelled. --repeats times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from assets import ensure_models  # noqa: E402
from environment import BENCH, PYTHON, bench_env, install_signal_exit, log, scratch_dir  # noqa: E402
from results import markdown_table, save_results  # noqa: E402
from stats import percentile  # noqa: E402

GOAL_COST = 0.15  # the HTTP face may cost at most this fraction of gRPC's throughput
TOKEN = "bench-openai-token"
MESSAGES = [{"role": "user", "content": "what color is the cat?"}]


# --- the load (run in its own process with --load) -------------------------------------------------------


async def _client_loop(face: str, target: str, model: str, max_tokens: int, start: asyncio.Event,
                       end_at: list[float], out: dict) -> None:
    if face == "http":
        import openai

        client = openai.AsyncOpenAI(base_url=target, api_key=TOKEN, max_retries=0, timeout=120)

        async def call():
            r = await client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=max_tokens,
                                                     temperature=0)
            return r.usage.completion_tokens
    elif face == "http-raw":  # the same HTTP request from a light client: what the face costs without openai's
        import aiohttp

        client = aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"})
        body = json.dumps({"model": model, "messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0})

        async def call():
            async with client.post(f"{target}/chat/completions", data=body,
                                   headers={"Content-Type": "application/json"}) as r:
                r.raise_for_status()
                return (await r.json())["usage"]["completion_tokens"]
    else:
        import tunewire

        client = tunewire.AsyncClient(target, token=TOKEN, timeout=120)
        await client.__aenter__()

        async def call():
            r = await client.predict(model, [MESSAGES], max_new_tokens=max_tokens)
            return r[0].num_tokens
    try:
        await call()  # connection up, model loaded
        out["warm"] += 1
        await start.wait()
        while True:
            t0 = time.perf_counter()
            if t0 >= end_at[0]:
                return
            try:
                tokens = await call()
            except Exception as exc:  # counted, not fatal: the figure says how many
                out["errors"].append(repr(exc)[:200])
                continue
            t1 = time.perf_counter()
            if t1 <= end_at[0]:
                out["latencies"].append(t1 - t0)
                out["tokens"].append(tokens)
    finally:
        if face in ("http", "http-raw"):
            await client.close()
        else:
            await client.__aexit__(None, None, None)


async def load(args) -> dict:
    out = {"latencies": [], "tokens": [], "errors": [], "warm": 0}
    start, end_at = asyncio.Event(), [float("inf")]
    tasks = [asyncio.create_task(_client_loop(args.load, args.target, args.model, args.max_tokens, start, end_at,
                                              out)) for _ in range(args.concurrency)]
    deadline = time.monotonic() + 300
    while out["warm"] < args.concurrency and time.monotonic() < deadline and not any(t.done() for t in tasks):
        await asyncio.sleep(0.01)
    t0, cpu0 = time.perf_counter(), time.process_time()
    end_at[0] = t0 + args.duration
    start.set()
    done, pending = await asyncio.wait(tasks, timeout=args.duration + 180)
    for t in pending:
        t.cancel()
    failures = [repr(t.exception())[:300] for t in done if t.exception() is not None]
    window = min(time.perf_counter(), end_at[0]) - t0
    client_cpu = time.process_time() - cpu0
    lat_ms = [x * 1000 for x in out["latencies"]]
    return {"client_cpu_ms": round(client_cpu * 1000 / max(len(lat_ms), 1), 3), "face": args.load, "concurrency": args.concurrency, "requests": len(lat_ms),
            "requests_per_s": round(len(lat_ms) / window, 2) if window > 0 else 0,
            "latency_ms": {k: round(percentile(lat_ms, q), 2) for k, q in (("p50", 50), ("p99", 99))},
            "errors": len(out["errors"]) + len(failures), "error_samples": (out["errors"] + failures)[:3],
            "mean_tokens": round(sum(out["tokens"]) / len(out["tokens"]), 2) if out["tokens"] else None}


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of one process (not its children: the control plane alone)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(face: str, target: str, model: str, concurrency: int, args, work: Path, env: dict,
             server_pid: int) -> dict:
    out = work / f"load-{face}-{concurrency}.json"
    cpu0 = cpu_seconds(server_pid)
    subprocess.run([PYTHON, str(BENCH / "openai_http.py"), "--load", face, "--target", target, "--model", model,
                    "--concurrency", str(concurrency), "--duration", str(args.duration), "--max-tokens",
                    str(args.max_tokens), "--out", str(out)], env=env, check=True, timeout=args.duration + 600)
    result = json.loads(out.read_text())
    # every request of the run (warm-up ones too) cost the control plane this much CPU, on average
    calls = result["requests"] + concurrency
    result["control_plane_cpu_ms"] = round((cpu_seconds(server_pid) - cpu0) * 1000 / max(calls, 1), 3)
    return result


# --- the driver ----------------------------------------------------------------------------------------


def chat_jsonl() -> bytes:
    from tests import tiny_lm

    return "".join(json.dumps(r) + "\n" for r in tiny_lm.chat_rows(64)).encode()


def first_metrics_s(oai, file_id: str, server) -> float:
    """Seconds from jobs.create to the first metrics event listed (10 ms polls), on a warm server."""
    server.wait_warm_worker()
    t0 = time.perf_counter()
    job = oai.fine_tuning.jobs.create(model="tiny-llama", training_file=file_id, extra_body={"tunewire": {
        "hyperparameters": {"max_steps": 200, "logging_steps": 1, "save_strategy": "no"}}})
    try:
        while True:
            events = oai.fine_tuning.jobs.list_events(job.id, limit=5).data
            if any(e.type == "metrics" for e in events):
                return time.perf_counter() - t0
            if time.perf_counter() - t0 > 300:
                raise RuntimeError(f"no metrics event from job {job.id} after 300 s")
            time.sleep(0.01)
    finally:
        oai.fine_tuning.jobs.cancel(job.id)
        while oai.fine_tuning.jobs.retrieve(job.id).model_extra["tunewire"]["state"] != "CANCELLED":
            time.sleep(0.1)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--levels", default="1,32", help="concurrent clients (default 1,32)")
    p.add_argument("--duration", type=float, default=10, help="seconds per level and face (default 10)")
    p.add_argument("--max-tokens", type=int, default=16, help="new tokens per request (default 16)")
    p.add_argument("--repeats", type=int, default=3, help="create-to-first-metrics measurements (default 3)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--load", choices=("http", "http-raw", "grpc"), help=argparse.SUPPRESS)
    p.add_argument("--target", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--concurrency", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.load:
        Path(args.out).write_text(json.dumps(asyncio.run(load(args))))
        return 0
    import openai

    from tests.support.ports import free_port
    from tests.support.server_process import ServerProcess

    install_signal_exit()
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    models = ensure_models(args.threads)
    work = scratch_dir("openai_http")
    env = bench_env(args.threads)
    http_port = free_port()
    results: dict = {"load": [], "first_metrics_s": []}
    with ServerProcess(work / "server", models, "--http-port", str(http_port), "--auth-tokens", TOKEN,
                       threads=args.threads, env=env) as server:
        base_url = f"http://127.0.0.1:{http_port}/v1"
        oai = openai.OpenAI(base_url=base_url, api_key=TOKEN, max_retries=0, timeout=120)
        upload = oai.files.create(file=("chat.jsonl", chat_jsonl()), purpose="fine-tune")
        job = oai.fine_tuning.jobs.create(model="tiny-llama", training_file=upload.id, suffix="bench",
                                          extra_body={"tunewire": {"hyperparameters": {
                                              "max_steps": 40, "save_strategy": "no"}}})
        while (job := oai.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
            time.sleep(0.5)
        if job.status != "succeeded":
            raise RuntimeError(f"the chat job ended {job.status}: {job.error}")
        log("fine-tuned", job.fine_tuned_model)
        for _ in range(args.repeats):
            results["first_metrics_s"].append(round(first_metrics_s(oai, upload.id, server), 3))
            log("create -> first metrics event:", results["first_metrics_s"][-1], "s")
        server.wait_warm_worker()  # no imports while measuring
        for c in levels:
            for face, target, model in (("grpc", server.address, job.id), ("http", base_url, job.fine_tuned_model),
                                        ("http-raw", base_url, job.fine_tuned_model)):
                r = run_load(face, target, model, c, args, work, env, server.proc.pid)
                log(f"{face}, {c} clients: {r['requests_per_s']} req/s, p50 {r['latency_ms']['p50']} ms, "
                    f"p99 {r['latency_ms']['p99']} ms, errors {r['errors']}, control plane "
                    f"{r['control_plane_cpu_ms']} ms CPU/request, client {r['client_cpu_ms']} ms CPU/request")
                results["load"].append(r)
        oai.close()

    headers = ["clients", "client", "requests/s", "p50 ms", "p99 ms", "errors", "tokens/request",
               "control-plane CPU ms/request", "client CPU ms/request", "cost vs gRPC (throughput)"]
    names = {"grpc": "tunewire.AsyncClient Predict (gRPC)", "http": "openai.AsyncOpenAI chat.completions (HTTP)",
             "http-raw": "aiohttp POST /v1/chat/completions (HTTP)"}
    rows = []
    for c in levels:
        by = {r["face"]: r for r in results["load"] if r["concurrency"] == c}
        grpc_rps = by["grpc"]["requests_per_s"]
        for face in ("grpc", "http", "http-raw"):
            r = by[face]
            cost = 1 - r["requests_per_s"] / grpc_rps if grpc_rps and face != "grpc" else None
            if cost is not None:
                results.setdefault("cost", {}).setdefault(face, {})[c] = round(cost, 3)
            rows.append([c, names[face], r["requests_per_s"], r["latency_ms"]["p50"], r["latency_ms"]["p99"],
                         r["errors"], r["mean_tokens"], r["control_plane_cpu_ms"], r["client_cpu_ms"],
                         f"{cost:.1%}" if cost is not None else ""])
    print("## The OpenAI-compatible HTTP face against gRPC Predict (tiny-llama, greedy, "
          f"{args.max_tokens} new tokens)\n")
    print(markdown_table(headers, rows))
    fm = results["first_metrics_s"]
    print(f"\nfine_tuning.jobs.create -> first metrics event (warm server): median "
          f"{sorted(fm)[len(fm) // 2]} s over {len(fm)} ({', '.join(map(str, fm))})")
    for face, costs in results.get("cost", {}).items():
        print(f"goal ({names[face]}): under {GOAL_COST:.0%} of gRPC's throughput at every level: "
              f"{all(v < GOAL_COST for v in costs.values())}")
    path = save_results("openai_http", {"threads": args.threads, "duration_s": args.duration,
                                        "max_tokens": args.max_tokens, **results})
    log("results in", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
