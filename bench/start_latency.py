"""Start latency: SubmitJob to the first training step, on a warm server.

"First training step" is the first train log (logging_first_step: logged right after optimizer step 1);
its time is the worker's callback time, so the figure is the time from just before SubmitJob to the end
of step 1 in the worker. The breakdown: submit -> RUNNING (validation, queueing; the control plane's
time) and RUNNING -> first step (the worker reads the job, loads data and model, builds the Trainer,
runs step 1).

Compared with: the same server without a warm worker (--warm-worker false: a fresh worker pays the
imports), and the plain script (process start -> first step logged), run in rounds. Tiny classification
(BERT) and SFT (Llama) jobs of --steps steps. Goal: warm under 1.5 s for a tiny model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from assets import ensure_models, write_datasets  # noqa: E402
from environment import bench_env, install_signal_exit, log, scratch_dir  # noqa: E402
from results import markdown_table, save_results  # noqa: E402
from runs import plain_command, run_job  # noqa: E402
from stats import median, rounded  # noqa: E402

import tunewire  # noqa: E402
from tests.support.server_process import ServerProcess  # noqa: E402
from tests.support.specs import classification_spec, sft_spec  # noqa: E402

GOAL_S = 1.5


def plain_first_step(cmd: list[str], env: dict, marker: Path, timeout: float = 600) -> dict:
    import subprocess

    marker.unlink(missing_ok=True)
    started = time.time()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"plain script failed:\n{proc.stderr[-3000:]}")
    return {"first_step_s": float(marker.read_text()) - started}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 rounds: a smoke check")
    p.add_argument("--runs", type=int, default=5, help="rounds (warm, cold, plain) per task (default 5)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tasks", default="classification,sft")
    p.add_argument("--steps", type=int, default=5)
    args = p.parse_args()
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.quick:
        args.runs = min(args.runs, 2)
    install_signal_exit()

    models = ensure_models(args.threads)
    work = scratch_dir("start_latency")
    env = bench_env(args.threads)
    results = []
    warm = ServerProcess(work / "warm", models, threads=args.threads, env=env)
    cold = ServerProcess(work / "cold", models, "--warm-worker", "false", threads=args.threads,
                         env=env)
    datasets = write_datasets(work / "warm" / "datasets")
    write_datasets(work / "cold" / "datasets")
    with warm, cold, tunewire.Client(warm.address, timeout=120) as wc, \
            tunewire.Client(cold.address, timeout=120) as cc:
        for task in tasks:
            spec = (classification_spec if task == "classification" else sft_spec)(args.steps, logging_steps=1)
            model = models / ("tiny-bert" if task == "classification" else "tiny-llama")
            train_file = datasets / ("sentiment.jsonl" if task == "classification" else "text.jsonl")
            runs: dict[str, list[dict]] = {"warm": [], "cold": [], "plain": []}
            for i in range(args.runs):
                for side in ("warm", "cold", "plain"):
                    warm.wait_warm_worker()  # nobody shares the CPU with an importing worker
                    if side == "plain":
                        marker = work / "first-step"
                        cmd = plain_command(task, model=model, train_file=train_file,
                                            output_dir=work / "plain" / f"{task}-{i}", max_steps=args.steps,
                                            logging_steps=1, first_step_file=marker)
                        r = plain_first_step(cmd, env, marker)
                    else:
                        j = run_job(wc if side == "warm" else cc, spec)
                        r = {"first_step_s": j["first_step"] - j["submitted"],
                             "to_running_s": j["running"] - j["submitted"],
                             "running_to_first_step_s": j["first_step"] - j["running"],
                             "first_step_received_s": j["first_step_received"] - j["submitted"]}
                    runs[side].append(r)
                    log(f"{task} round {i + 1}/{args.runs} {side}: first step after {r['first_step_s']:.3f} s")
            entry = {"task": task, "steps": args.steps, "runs": args.runs}
            for side, rs in runs.items():
                entry[side] = {key: rounded([r[key] for r in rs], 4) for key in rs[0]}
                entry[side + "_median_s"] = round(median([r["first_step_s"] for r in rs]), 3)
            for key in ("to_running_s", "running_to_first_step_s", "first_step_received_s"):
                entry["warm_median_" + key] = round(median(entry["warm"][key]), 3)
            results.append(entry)

    headers = ["task", "rounds", "warm server s", "submit->RUNNING s", "RUNNING->step 1 s", "step 1 at client s",
               "no warm worker s", "plain script s", "goal", "met"]
    rows, summary = [], []
    for r in results:
        met = r["warm_median_s"] < GOAL_S
        rows.append([r["task"], r["runs"], r["warm_median_s"], r["warm_median_to_running_s"],
                     r["warm_median_running_to_first_step_s"], r["warm_median_first_step_received_s"],
                     r["cold_median_s"], r["plain_median_s"], f"< {GOAL_S}", met])
        summary.append({"figure": f"submit -> first step, warm server, {r['task']} (s)",
                        "value": f"{r['warm_median_s']:.3f}", "goal": f"< {GOAL_S}", "met": met})
    print("## Start latency: submit -> first training step (medians)\n")
    print(markdown_table(headers, rows))
    print()
    path = save_results("start_latency", {"quick": args.quick, "threads": args.threads, "tasks": results,
                                          "summary": summary})
    log("results in", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
