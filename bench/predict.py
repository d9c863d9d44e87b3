"""Predict: requests/s and latency at 1, 8 and 32 concurrent clients, for a classifier and a generator.

Three jobs are trained on the server first: a classifier on tiny-bert (2 layers, hidden 32: a forward
pass costs well under a millisecond, so the RPC path dominates), one on small-bert (4 layers, hidden 256:
the forward pass dominates, as with a real model) and an SFT job on tiny-llama. Then, for each model and
level, bench/predict_clients.py (its own process) runs C clients, each its own
connection, each sending single-input Predict requests back to back for --duration seconds. The
classifier gets short reviews; the generator a counting prompt, greedy, --max-new-tokens tokens.

The inference worker's micro-batching settings (predict_batch_window_ms, predict_max_batch) are printed
as the server resolves them; pass --server-arg=--predict-max-batch=16 (etc.) to try others.
Goal: at 32 clients at least 5x the one-client throughput, for the classifier (both are reported).

The "getjob" rows are the same clients calling GetJob instead (no inference worker involved): the
requests/s that the SDK, gRPC and the control plane allow on this machine, a ceiling for any Predict.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from assets import ensure_models, write_datasets  # noqa: E402
from environment import BENCH, PYTHON, bench_env, install_signal_exit, log, scratch_dir  # noqa: E402
from results import markdown_table, save_results  # noqa: E402
from runs import run_job  # noqa: E402

import tunewire  # noqa: E402
from tests.support.server_process import ServerProcess  # noqa: E402
from tests.support.specs import classification_spec, sft_spec  # noqa: E402

GOAL_SPEEDUP = 5.0
# model key -> (what predict_clients sends, the job that serves it)
CLIENT_KIND = {"classifier": "classifier", "classifier_small": "classifier", "generator": "generator"}
LABELS = {"classifier": "classifier (tiny-bert)", "classifier_small": "classifier (small-bert)",
          "generator": "generator (tiny-llama)", "getjob": "GetJob, no inference"}
BATCH_SETTINGS = ("predict_batch_window_ms", "predict_max_batch")


def batching_settings(server_args: list[str], env: dict) -> dict:
    """The micro-batching settings the server will run with (its own flag/env/default resolution), or
    "not a setting of this server" where the server has none."""
    from tunewire_server.config import load_settings

    settings = load_settings(server_args, env)
    return {name: getattr(settings, name, "not a setting of this server") for name in BATCH_SETTINGS}


def run_clients(server: ServerProcess, job_id: str, kind: str, concurrency: int, duration: float,
                max_new_tokens: int, work: Path, env: dict) -> dict:
    out = work / f"predict-{kind}-{concurrency}.json"
    cmd = [PYTHON, str(BENCH / "predict_clients.py"), "--address", server.address, "--job", job_id, "--kind",
           CLIENT_KIND.get(kind, kind),
           "--concurrency", str(concurrency), "--duration", str(duration), "--max-new-tokens", str(max_new_tokens),
           "--out", str(out)]
    subprocess.run(cmd, env=env, check=True, timeout=duration + 600)
    return json.loads(out.read_text())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 s per level: a smoke check")
    p.add_argument("--levels", default="1,8,32", help="concurrent clients (default 1,8,32)")
    p.add_argument("--duration", type=float, default=15, help="seconds per level (default 15)")
    p.add_argument("--max-new-tokens", type=int, default=16, help="generator: tokens per request (default 16)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--models", default="classifier,classifier_small,generator",
                   help="any of classifier, classifier_small, generator")
    p.add_argument("--no-ceiling", dest="ceiling", action="store_false", help="skip the GetJob rows (the "
                   "RPC ceiling: the same clients calling GetJob, no inference)")
    p.add_argument("--server-arg", action="append", default=[], help="extra tunewire-server flag (repeatable), "
                   "e.g. --server-arg=--predict-max-batch=16")
    args = p.parse_args()
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    kinds = [k.strip() for k in args.models.split(",") if k.strip()]
    if args.quick:
        args.duration = min(args.duration, 3)
    install_signal_exit()

    models = ensure_models(args.threads)
    work = scratch_dir("predict")
    write_datasets(work / "server" / "datasets")
    env = bench_env(args.threads)
    try:
        batching = batching_settings(args.server_arg, env)
    except (ValueError, SystemExit) as exc:
        batching = {"error": str(exc)}
    log("micro-batching settings:", batching)
    results: dict[str, list[dict] | str] = {}
    with ServerProcess(work / "server", models, *args.server_arg, threads=args.threads,
                       env=env) as server, \
            tunewire.Client(server.address, timeout=120) as client:
        jobs: dict[str, str] = {}
        for kind in kinds:
            if kind == "generator" and importlib.util.find_spec("tunewire_server.worker.training.sft") is None:
                results[kind] = "n/a: this server has no SFT worker"
                continue
            spec = {"classifier": lambda: classification_spec(100),
                    "classifier_small": lambda: classification_spec(30, model="small-bert"),
                    "generator": lambda: sft_spec(100)}[kind]()
            try:
                jobs[kind] = run_job(client, spec)["job_id"]
            except RuntimeError as exc:
                results[kind] = f"n/a: the {kind} job failed: {exc}"[:500]
        server.wait_warm_worker()  # the next job's worker imports after the last job: not while measuring
        if args.ceiling and jobs:
            kinds.append("getjob")
            jobs["getjob"] = next(iter(jobs.values()))
        for kind, job_id in jobs.items():
            results[kind] = []
            for c in levels:
                r = run_clients(server, job_id, kind, c, args.duration, args.max_new_tokens, work, env)
                log(f"{kind}, {c} clients: {r['requests_per_s']} req/s, p50 {r['latency_ms']['p50']} ms, "
                    f"p99 {r['latency_ms']['p99']} ms, errors {r['errors']}")
                results[kind].append(r)

    headers = ["model", "clients", "requests/s", "x one client", "p50 ms", "p90 ms", "p99 ms", "errors",
               "tokens/request"]
    rows, summary = [], []
    for kind in kinds:
        rs = results.get(kind)
        if not isinstance(rs, list):
            rows.append([LABELS[kind], "", rs, "", "", "", "", "", ""])
            summary.append({"figure": f"predict {LABELS[kind]}: 32 clients vs 1", "value": rs, "goal":
                            f">= {GOAL_SPEEDUP:.0f}x" if kind != "generator" else "", "met": None})
            continue
        base = next((r["requests_per_s"] for r in rs if r["concurrency"] == 1), None)
        for r in rs:
            r["speedup"] = round(r["requests_per_s"] / base, 2) if base else None
            lat = r["latency_ms"]
            rows.append([LABELS[kind], r["concurrency"], r["requests_per_s"], r["speedup"], lat["p50"], lat["p90"],
                         lat["p99"], r["errors"], r["mean_tokens"] if kind == "generator" else ""])
        top = max(rs, key=lambda r: r["concurrency"])
        if kind in ("classifier", "classifier_small"):
            met = top["speedup"] is not None and top["speedup"] >= GOAL_SPEEDUP and top["errors"] == 0
            summary.append({"figure": f"predict {LABELS[kind]}: {top['concurrency']} clients vs 1 (throughput)",
                            "value": f"{top['speedup']}x ({top['requests_per_s']} req/s)",
                            "goal": f">= {GOAL_SPEEDUP:.0f}x", "met": met})
        elif kind == "generator":
            summary.append({"figure": f"predict {LABELS[kind]}: {top['concurrency']} clients vs 1 (throughput)",
                            "value": f"{top['speedup']}x ({top['requests_per_s']} req/s)", "goal": "", "met": None})
        else:
            best = max(rs, key=lambda r: r["requests_per_s"])
            summary.append({"figure": "RPC ceiling: GetJob, no inference (req/s, best level)",
                            "value": f"{best['requests_per_s']} ({best['concurrency']} clients)", "goal": "",
                            "met": None})
    print("## Predict: single-input requests from concurrent clients\n")
    print("micro-batching: " + ", ".join(f"{k} = {v}" for k, v in batching.items()) + "\n")
    print(markdown_table(headers, rows))
    print()
    path = save_results("predict", {"quick": args.quick, "threads": args.threads, "duration_s": args.duration,
                                    "max_new_tokens": args.max_new_tokens, "server_args": args.server_arg,
                                    "batching": batching, "results": results, "summary": summary})
    log("results in", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
