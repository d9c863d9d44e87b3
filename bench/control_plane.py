"""Control plane: start to SERVING, idle memory, and memory with 200 open streams.

Start: from just before spawning `tunewire-server` (the installed script, a fresh data directory each
run) to the first grpc.health.v1 Check that answers SERVING (polled every 5 ms on a channel that
reconnects within 20 ms). Measured with the warm worker on (the default: it starts importing torch on
the other core while the server comes up) and off.

Idle memory: the server process's RSS once SERVING and its warm worker has finished importing (the warm
worker is a separate process; its RSS is reported on its own), and whether libtorch is mapped into the
server (it must never be). With streams: RSS of the server with --streams StreamMetrics calls open (from
another process, each its own connection) on a running job.
Goals: start under 1 s, idle under 120 MB.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from assets import ensure_models, write_datasets  # noqa: E402
from environment import BENCH, PYTHON, bench_env, install_signal_exit, log, scratch_dir  # noqa: E402
from results import markdown_table, save_results  # noqa: E402
from stats import median, rounded  # noqa: E402

import tunewire  # noqa: E402
from tests.support.procs import maps_torch, rss_mb  # noqa: E402
from tests.support.server_process import ServerProcess  # noqa: E402
from tests.support.specs import classification_spec  # noqa: E402
from tunewire import JobState  # noqa: E402

GOAL_START_S = 1.0
GOAL_IDLE_MB = 120.0


def start_once(work: Path, models: Path, threads: int, *extra: str) -> tuple[float, ServerProcess]:
    server = ServerProcess(work, models, *extra, threads=threads, env=bench_env(threads),
                           console_script=True).start()
    return server.serving_at - server.started_at, server


def sample_rss(pid: int, seconds: float = 2.0) -> float:
    """The highest RSS seen over `seconds` (sampled every 0.2 s)."""
    best = 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        best = max(best, rss_mb(pid) or 0.0)
        time.sleep(0.2)
    return best


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 starts each: a smoke check")
    p.add_argument("--runs", type=int, default=5, help="server starts per configuration (default 5)")
    p.add_argument("--streams", type=int, default=200, help="open StreamMetrics calls (default 200)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if args.quick:
        args.runs = min(args.runs, 2)
    install_signal_exit()

    models = ensure_models(args.threads)
    work = scratch_dir("control_plane")
    env = bench_env(args.threads)

    starts: dict[str, list[float]] = {"warm worker on": [], "warm worker off": []}
    idle: list[dict] = []
    for i in range(args.runs):
        for label, extra in (("warm worker on", ()), ("warm worker off", ("--warm-worker", "false"))):
            seconds, server = start_once(work / f"start-{i}-{'on' if not extra else 'off'}", models, args.threads,
                                         *extra)
            try:
                starts[label].append(seconds)
                if not extra:
                    server.wait_warm_worker()
                    time.sleep(1.0)
                    warm = server.training_workers()
                    idle.append({"server_rss_mb": rss_mb(server.pid),
                                 "warm_worker_rss_mb": rss_mb(warm[0]) if warm else None,
                                 "torch_in_server": maps_torch(server.pid)})
            finally:
                server.stop()
            log(f"start {i + 1}/{args.runs} ({label}): SERVING after {seconds:.3f} s")

    # memory with open streams on a running job
    data = work / "streams"
    write_datasets(data / "datasets")
    with ServerProcess(data, models, threads=args.threads, env=env) as server, \
            tunewire.Client(server.address, timeout=120) as client:
        server.wait_warm_worker()
        time.sleep(1.0)
        before = rss_mb(server.pid)
        job = client.submit(classification_spec(1_000_000, logging_steps=50))
        deadline = time.monotonic() + 120
        while client.get(job.id).state != JobState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
        running = sample_rss(server.pid, 1.0)
        out = work / "streams.json"
        proc = subprocess.Popen([PYTHON, str(BENCH / "subscribers.py"), "--address", server.address, "--job", job.id,
                                 "--n", str(args.streams), "--out", str(out), "--timeout", "300"],
                                stdout=subprocess.PIPE, text=True, env=env)
        try:
            line = proc.stdout.readline().split()
            if not line or line[0] != "ready":
                raise RuntimeError(f"the subscribers did not connect: {line}")
            connected = int(line[1])
            time.sleep(1.0)
            with_streams = sample_rss(server.pid, 3.0)
            client.cancel(job.id)
            proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        after = sample_rss(server.pid, 1.0)
    streams = {"streams": args.streams, "connected": connected, "idle_rss_mb": before, "job_running_rss_mb": running,
               "with_streams_rss_mb": with_streams, "after_streams_closed_rss_mb": after,
               "per_stream_kb": round((with_streams - running) * 1024 / max(connected, 1), 1)}

    start_on = median(starts["warm worker on"])
    start_off = median(starts["warm worker off"])
    idle_rss = median([x["server_rss_mb"] for x in idle])
    warm_rss = median([x["warm_worker_rss_mb"] for x in idle if x["warm_worker_rss_mb"]])
    torch_loaded = any(x["torch_in_server"] for x in idle)
    rows = [
        ["start -> SERVING (warm worker on)", f"{start_on:.3f} s", f"< {GOAL_START_S:.0f} s", start_on < GOAL_START_S],
        ["start -> SERVING (warm worker off)", f"{start_off:.3f} s", f"< {GOAL_START_S:.0f} s",
         start_off < GOAL_START_S],
        ["server RSS, idle", f"{idle_rss:.1f} MB", f"< {GOAL_IDLE_MB:.0f} MB", idle_rss < GOAL_IDLE_MB],
        ["libtorch mapped in the server", torch_loaded, "no", not torch_loaded],
        ["warm worker RSS (separate process)", f"{warm_rss:.1f} MB", "", ""],
        ["server RSS, job running", f"{running:.1f} MB", "", ""],
        [f"server RSS, job running + {connected} open streams", f"{with_streams:.1f} MB", "", ""],
        ["per open stream", f"{streams['per_stream_kb']} KB", "", ""],
    ]
    print(f"## Control plane ({args.runs} starts per configuration, medians)\n")
    print(markdown_table(["figure", "value", "goal", "met"], rows))
    print()
    summary = [
        {"figure": "start -> SERVING (s)", "value": f"{start_on:.3f}", "goal": f"< {GOAL_START_S:.0f}",
         "met": start_on < GOAL_START_S},
        {"figure": "control plane RSS, idle (MB)", "value": f"{idle_rss:.1f}", "goal": f"< {GOAL_IDLE_MB:.0f}",
         "met": idle_rss < GOAL_IDLE_MB},
        {"figure": f"control plane RSS, {connected} open streams (MB)", "value": f"{with_streams:.1f}", "goal": "",
         "met": None},
    ]
    path = save_results("control_plane", {
        "quick": args.quick, "runs": args.runs,
        "start_s": {k: rounded(v, 4) for k, v in starts.items()},
        "start_median_s": {"warm worker on": round(start_on, 4), "warm worker off": round(start_off, 4)},
        "idle": idle, "idle_rss_median_mb": round(idle_rss, 1), "warm_worker_rss_median_mb": round(warm_rss, 1),
        "streams": streams, "summary": summary})
    log("results in", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
