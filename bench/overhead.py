"""Overhead: the same job through tunewire and through a plain Python script, alternated.

tunewire side: a server already running, its warm worker ready; the time from just before SubmitJob to
the client's receipt of SUCCEEDED. Plain side: `python bench/plain_<task>.py` (Trainer / SFTTrainer
called the way the worker calls them: same tokenization, TrainingArguments, threads) timed as a user
experiences it, from process start (imports included) to the model saved. Before every run of either
side the warm worker has finished its imports, so neither side shares the CPU with it.

Jobs: classification (tiny BERT) and SFT (tiny Llama), each short (--short-steps) and long: a fixed
step count chosen after the short runs so that the plain script takes about a minute (--long-seconds),
or given (--long-cls-steps, --long-sft-steps). Figures: medians and the ratio
tunewire / plain. Goals: ratio <= 1.0 for short jobs, <= 1.02 for jobs of a minute or more.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from assets import ensure_models, write_datasets  # noqa: E402
from environment import bench_env, install_signal_exit, log, scratch_dir  # noqa: E402
from results import markdown_table, save_results  # noqa: E402
from runs import plain_command, run_job, run_plain  # noqa: E402
from stats import median, rounded  # noqa: E402

import tunewire  # noqa: E402
from tests.support.server_process import ServerProcess  # noqa: E402
from tests.support.specs import classification_spec, sft_spec  # noqa: E402


def long_steps(args, task: str, short: dict | None) -> int:
    """Steps of the long job: as given, or enough for the plain script to run about --long-seconds in all,
    from the speed and import time its short runs showed (the same fixed count then serves every run)."""
    given = args.long_cls_steps if task == "classification" else args.long_sft_steps
    if given:
        return given
    rate, imports = short["plain_steps_per_s_median"], median(short["plain_imports_s"])
    steps = (args.long_seconds - imports - 1.0) * rate
    return max(100, int(math.ceil(steps / 100.0)) * 100)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="2 runs each, long jobs of about 15 s: a smoke check")
    p.add_argument("--runs", type=int, default=5, help="alternated runs per side and job (default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads, server (--torch-threads) and plain "
                   "script alike (default 1)")
    p.add_argument("--tasks", default="classification,sft")
    p.add_argument("--short-steps", type=int, default=50)
    p.add_argument("--long-seconds", type=float, default=60.0, help="the long jobs' size: steps for about this "
                   "many seconds of plain script (default 60), from the speed its short runs showed")
    p.add_argument("--long-cls-steps", type=int, help="fixed steps for the long classification job instead")
    p.add_argument("--long-sft-steps", type=int, help="fixed steps for the long SFT job instead")
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--no-long", action="store_true", help="short jobs only")
    p.add_argument("--server-arg", action="append", default=[], help="extra tunewire-server flag (repeatable), "
                   "e.g. --server-arg=--training-niceness=0")
    p.add_argument("--results-name", default="overhead", help="bench/results/<name>.json (default overhead)")
    args = p.parse_args()
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if args.quick:
        args.runs = min(args.runs, 2)
        args.long_seconds = min(args.long_seconds, 15.0)
    install_signal_exit()

    models = ensure_models(args.threads)
    work = scratch_dir("overhead")
    datasets = write_datasets(work / "server" / "datasets")
    env = bench_env(args.threads)
    results = []
    with ServerProcess(work / "server", models, *args.server_arg, threads=args.threads,
                       env=env) as server, \
            tunewire.Client(server.address, timeout=120) as client:
        log("server up at", server.address)
        todo = [(task, length) for task in args.tasks for length in ("short", "long")
                if not (length == "long" and args.no_long)]
        for task, length in todo:
            short = next((r for r in results if r["task"] == task and r["length"] == "short"), None)
            steps = args.short_steps if length == "short" else long_steps(args, task, short)
            case = {"task": task, "length": length, "steps": steps, "goal": 1.0 if length == "short" else 1.02}
            make_spec = classification_spec if task == "classification" else sft_spec
            spec = make_spec(steps, logging_steps=args.logging_steps)
            model = models / ("tiny-bert" if task == "classification" else "tiny-llama")
            train_file = datasets / ("sentiment.jsonl" if task == "classification" else "text.jsonl")
            tw_runs, plain_runs = [], []
            for i in range(args.runs):
                order = ("tunewire", "plain") if i % 2 == 0 else ("plain", "tunewire")
                for side in order:
                    server.wait_warm_worker()
                    if side == "tunewire":
                        r = run_job(client, spec)
                        tw_runs.append(r)
                    else:
                        out_dir = work / "plain" / f"{task}-{case['length']}-{i}"
                        r = run_plain(plain_command(task, model=model, train_file=train_file, output_dir=out_dir,
                                                    max_steps=steps, logging_steps=args.logging_steps), env)
                        plain_runs.append(r)
                    log(f"{task} {case['length']} ({steps} steps) run {i + 1}/{args.runs} {side}: "
                        f"{r['elapsed']:.2f} s")
            tw = [r["elapsed"] for r in tw_runs]
            plain = [r["elapsed"] for r in plain_runs]
            results.append({
                **case,
                "runs": args.runs,
                "tunewire_s": rounded(tw, 3),
                "plain_s": rounded(plain, 3),
                "plain_imports_s": rounded([r["imports"] for r in plain_runs], 3),
                "plain_after_imports_s": rounded([r["after_imports"] for r in plain_runs], 3),
                # where tunewire's time goes: submit -> step 1 logged (worker clock), step 1 -> SUCCEEDED seen
                "tunewire_to_first_step_median_s": round(median([r["first_step"] - r["submitted"] for r in tw_runs]), 3),
                "tunewire_first_step_to_end_median_s": round(
                    median([r["submitted"] + r["elapsed"] - r["first_step"] for r in tw_runs]), 3),
                "plain_train_and_save_median_s": round(median([r["train_and_save"] for r in plain_runs]), 3),
                # training speed between the first and the last train log: the same work on both sides
                "tunewire_steps_per_s_median": round(median([r["steps_per_s"] for r in tw_runs]), 1),
                "plain_steps_per_s_median": round(median([r["steps_per_s"] for r in plain_runs]), 1),
                "tunewire_median_s": round(median(tw), 3),
                "plain_median_s": round(median(plain), 3),
                "plain_after_imports_median_s": round(median([r["after_imports"] for r in plain_runs]), 3),
                # to the process's exit (interpreter teardown included), which the ratio does not count
                "plain_exit_median_s": round(median([r["exit_elapsed"] for r in plain_runs]), 3),
                "ratio": round(median(tw) / median(plain), 3),
            })

    headers = ["job", "steps", "runs", "tunewire median s", "plain script median s", "plain after imports s",
               "steps/s tunewire", "steps/s plain", "ratio", "goal", "met"]
    rows = []
    summary = []
    for r in results:
        met = r["ratio"] <= r["goal"]
        name = f"{r['task']} {r['length']}"
        rows.append([name, r["steps"], r["runs"], r["tunewire_median_s"], r["plain_median_s"],
                     r["plain_after_imports_median_s"], r["tunewire_steps_per_s_median"], r["plain_steps_per_s_median"],
                     f"{r['ratio']:.3f}", f"<= {r['goal']}", met])
        summary.append({"figure": f"overhead ratio, {name} ({r['plain_median_s']:.0f} s plain)",
                        "value": f"{r['ratio']:.3f}", "goal": f"<= {r['goal']}", "met": met})
    print("## Overhead: tunewire (submit -> SUCCEEDED, warm server) vs a plain script (process start -> "
          "model saved)\n")
    print(markdown_table(headers, rows))
    print()
    path = save_results(args.results_name, {"quick": args.quick, "threads": args.threads,
                                            "server_args": args.server_arg, "cases": results, "summary": summary})
    log("results in", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
