"""Run every tunewire benchmark and print one summary table: figure, goal, met?

    python bench/run_all.py            # the full counts (about 37 minutes on a 2-core machine)
    python bench/run_all.py --quick    # fewer runs and shorter jobs: a smoke check (about 12 minutes)
    python bench/run_all.py --only streaming,predict

Each benchmark is its own script (bench/<name>.py, --help for its options); each prints its table and
writes bench/results/<name>.json. This script adds bench/results/summary.json with the machine. The
summary table also shows, marked "earlier", the last results of benchmarks not run this time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from environment import BENCH, PYTHON, RESULTS, install_signal_exit, log  # noqa: E402
from results import machine_info, markdown_table, save_results  # noqa: E402

ORDER = ("control_plane", "start_latency", "streaming", "predict", "overhead", "transfers")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    p.add_argument("--only", default=",".join(ORDER), help=f"comma-separated subset of {', '.join(ORDER)}")
    p.add_argument("--threads", type=int, default=1, help="torch threads for workers and plain scripts")
    args = p.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}")
    install_signal_exit()

    machine = machine_info()
    log("machine:", json.dumps(machine))
    rows, outcomes = [], {}
    t_all = time.monotonic()
    for name in names:
        cmd = [PYTHON, str(BENCH / f"{name}.py"), "--threads", str(args.threads)] + (["--quick"] if args.quick else [])
        log("running", " ".join(cmd[1:]))
        started = time.time()
        t0 = time.monotonic()
        code = subprocess.run(cmd).returncode
        took = time.monotonic() - t0
        path = RESULTS / f"{name}.json"
        if code != 0 or not path.is_file() or path.stat().st_mtime < started:
            outcomes[name] = {"status": f"failed (exit {code})", "seconds": round(took, 1)}
            rows.append([name, "benchmark failed", "", f"exit {code}", False])
            continue
        outcomes[name] = {"status": "ok", "seconds": round(took, 1)}
    for name in ORDER:  # benchmarks not run this time: their last results, marked with their date
        path = RESULTS / f"{name}.json"
        if outcomes.get(name, {}).get("status", "ok") != "ok" or not path.is_file():
            continue
        data = json.loads(path.read_text())
        label = name if name in outcomes else f"{name} (earlier: {data.get('time', '?')})"
        if data.get("quick") and not args.quick:
            label += " (--quick)"
        for item in data.get("summary", []):
            met = item.get("met")
            rows.append([label, item["figure"], item["value"], item.get("goal", ""), "" if met is None else met])

    print(f"\n## Summary{' (--quick: smoke check, not the figures)' if args.quick else ''}\n")
    print(markdown_table(["benchmark", "figure", "value", "goal", "met"], rows))
    print(f"\nmachine: {machine.get('nproc')} CPUs ({machine.get('cpu')}), {machine.get('ram_gib')} GiB RAM, "
          f"Python {machine.get('python')}, torch {machine.get('torch')}, transformers {machine.get('transformers')}, "
          f"trl {machine.get('trl')}; load average at start {machine.get('loadavg_at_start')}")
    save_results("summary", {"quick": args.quick, "threads": args.threads, "machine": machine,
                             "benchmarks": outcomes, "seconds": round(time.monotonic() - t_all, 1),
                             "rows": [dict(zip(("benchmark", "figure", "value", "goal", "met"), r, strict=True))
                                      for r in rows]})
    return 0 if all(o["status"] == "ok" for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
