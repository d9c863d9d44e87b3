"""Replicas (issue 15): three `tunewire-server` processes on 127.0.0.1 sharing one PostgreSQL (started here,
tests/support/postgres.py) and one data folder (tests/support/replicas.py), tiny-bert jobs.

(a) Queued -> RUNNING across replicas, with a free replica waiting: a long "gate" job keeps one replica
    busy and every measured job (1 step) is submitted through that busy replica, so another one must claim
    it (woken by PostgreSQL's NOTIFY, the 1 s poll being the safety net). Two figures per job: the QUEUED
    event's time (the submitting replica's clock) to the RUNNING event's time (the claiming replica's), and
    SubmitJob's return to the RUNNING event seen by the submitter's client, streaming through the busy
    replica (so the cross-replica fan-out is in it). The next job is submitted once the one before it
    ended: a replica is always free. Goal: p99 < 250 ms.
(b) Training callback -> client, through the replica running the job ("same") and through another one
    ("other"), with 1 and 50 subscribers (bench/subscribers.py processes): the worker's event time (its
    TrainerCallback) to the subscriber's receive time; one machine, one clock. Only events sent after every
    stream was open count. Two jobs: 1 subscriber through each, then 50 through each (100 streams at once,
    so that both sides see the same load). A log every --every steps (tiny-bert: ~10-20 events/s). Goal
    (other replica): p99 < 150 ms.
(c) Takeover after kill -9 of the replica running a job, for each --leases value L (heartbeat L/3, as the
    defaults 30/10): a fresh cluster of two replicas with that lease, a job that has saved a checkpoint, SIGKILL to its
    replica; the time to the job's next RUNNING event (another replica claimed it) and to its first train
    log there (resumed from the checkpoint; the taker may first have to start a worker). Expected: between
    L - heartbeat and L + heartbeat.

Each replica keeps one warm worker, and a replica claims a job before its worker is ready: after a job it
imports torch for its next warm worker, which on a loaded 2-core machine takes tens of seconds. That, not
the queue, paces (a), so (a) stops submitting after --a-seconds and reports how many jobs it measured.

    python bench/replicas.py            # 30 jobs (or 180 s), leases 2 and 5 s (~6-8 min on 2 cores)
    python bench/replicas.py --quick    # 10 jobs, lease 2 s: a smoke check
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from environment import BENCH, MODELS, PYTHON, bench_env, install_signal_exit, log, scratch_dir  # noqa: E402
from results import machine_info, markdown_table, save_results  # noqa: E402
from runs import event_epoch  # noqa: E402
from stats import median, percentile  # noqa: E402
from streaming import merge  # noqa: E402

import tunewire  # noqa: E402
from tests.support.postgres import PostgresServer, find_bin_dir  # noqa: E402
from tests.support.replicas import Cluster  # noqa: E402
from tests.support.specs import classification_spec  # noqa: E402
from tests.support.waiting import wait_for  # noqa: E402
from tunewire import CheckpointSaved, JobState, StateChange, TrainLog  # noqa: E402

GOAL_QUEUED_P99_MS = 250.0
GOAL_CALLBACK_P99_MS = 150.0
TERMINAL = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


def ensure_tiny_bert(threads: int) -> Path:
    """bench/.cache/models/tiny-bert, built once in a child process (this driver never imports torch)."""
    if not (MODELS / "tiny-bert" / "config.json").is_file():
        log("building tiny-bert into", MODELS)
        subprocess.run([PYTHON, "-c", f"from tests import tiny; tiny.build_tiny_bert({str(MODELS / 'tiny-bert')!r})"],
                       check=True, env=bench_env(threads), timeout=600, cwd=BENCH.parent)
    return MODELS


def write_dataset(data: Path) -> None:
    from tests import tiny

    tiny.write_jsonl(data / "datasets" / "sentiment.jsonl", tiny.sentiment_rows(256))


def long_job(logging_steps: int = 1000, save_steps: int | None = None) -> dict:
    spec = classification_spec(1_000_000, logging_steps=logging_steps)
    if save_steps:
        spec["hyperparameters"].update(save_strategy="steps", save_steps=save_steps, save_total_limit=2)
    return spec


def summary_ms(values_s: list[float]) -> dict:
    ms = [1000 * v for v in values_s]
    return {"n": len(ms), "p50": round(median(ms), 1), "p90": round(percentile(ms, 90), 1),
            "p99": round(percentile(ms, 99), 1), "max": round(max(ms), 1)}


def cancel_and_wait(client: tunewire.Client, job_id: str, timeout: float = 120) -> None:
    client.cancel(job_id)
    wait_for(lambda: client.get(job_id).state in TERMINAL, timeout=timeout, interval=0.1)


# --- (a) queued -> RUNNING ------------------------------------------------------------------------------

def queued_to_running(cluster: Cluster, n: int, budget_s: float) -> dict:
    first = cluster.replicas[0]
    with first.client(120) as c:
        gate = c.submit(long_job()).id
    busy = cluster.by_name(wait_for(lambda: cluster.owner(gate), timeout=120))
    log(f"(a) gate job on {busy.name}; submitting {n} one-step jobs through it")
    server_side, client_side, claimers = [], [], []
    with busy.client(120) as c:
        previous, began = None, time.monotonic()
        for _ in range(n):
            if time.monotonic() - began > budget_s:
                log(f"(a) time budget ({budget_s:.0f} s) spent after {len(claimers)} jobs")
                break
            if previous is not None:  # the replica that ran it is free again: two free replicas wait
                wait_for(lambda p=previous: c.get(p).state in TERMINAL, timeout=300, interval=0.02)
            job = c.submit(classification_spec(1, logging_steps=1))
            returned = time.time()
            seen, changes = None, []
            for event in c.stream_metrics(job.id):
                if isinstance(event.data, StateChange):
                    changes.append(event)
                    if event.data.state == JobState.RUNNING:
                        seen = time.time()
                        break
            queued, running = changes[0], changes[-1]
            server_side.append(event_epoch(running) - event_epoch(queued))
            client_side.append(seen - returned)
            previous = job.id
            claimers.append(job.id)
        wait_for(lambda: c.get(previous).state in TERMINAL, timeout=300, interval=0.05)
        cancel_and_wait(c, gate)
    ran_on = [next(iter(cluster.worker_starts(j)), "?") for j in claimers]
    result = {"jobs": len(claimers), "seconds": round(time.monotonic() - began, 1), "gate_replica": busy.name, "submitted_through": busy.name,
              "claimed_by": {name: ran_on.count(name) for name in sorted(set(ran_on))},
              "queued_event_to_running_event_ms": summary_ms(server_side),
              "submit_return_to_running_seen_ms": summary_ms(client_side),
              "samples_ms": {"server": [round(1000 * v, 2) for v in server_side],
                             "client": [round(1000 * v, 2) for v in client_side]}}
    log(f"(a) queued -> RUNNING: {result['queued_event_to_running_event_ms']}, seen at the client: "
        f"{result['submit_return_to_running_seen_ms']}; claimed by {result['claimed_by']}")
    return result


# --- (b) callback -> client -------------------------------------------------------------------------

def callback_latency(cluster: Cluster, plan: list[tuple[str, int]], steps: int, every: int, work: Path,
                     env: dict, timeout: float) -> list[dict]:
    """One job per entry of `plan` ((where, subscribers) pairs run together on that job)."""
    results = []
    with cluster.replicas[0].client(120) as c:
        for level in plan:
            job = c.submit(classification_spec(steps, logging_steps=every)).id
            owner = cluster.by_name(wait_for(lambda j=job: cluster.owner(j), timeout=120, interval=0.01))
            other = cluster.others(owner.name)[0]
            procs = []
            for where, n in level:
                target = owner if where == "same" else other
                for k, share in enumerate(_shares(n, min(n, 2))):
                    out = work / f"subs-{job}-{where}-{n}-{k}.json"
                    procs.append((where, n, target.name, out, subprocess.Popen(
                        [PYTHON, str(BENCH / "subscribers.py"), "--address", target.address, "--job", job,
                         "--n", str(share), "--out", str(out), "--timeout", str(timeout), "--raw"],
                        stdout=subprocess.PIPE, text=True, env=env)))
            try:
                for *_, proc in procs:
                    proc.wait(timeout + 60)
            finally:
                for *_, proc in procs:
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
            final = c.get(job)
            by_level: dict[tuple, list] = {}
            for where, n, name, out, _proc in procs:
                by_level.setdefault((where, n, name), []).append(json.loads(out.read_text()))
            for (where, n, name), parts in by_level.items():
                r = merge(parts)
                r.update(where=where, replica=name, job_replica=owner.name, logging_steps=every,
                         job_state=final.state.value, job_last_seq=final.last_seq,
                         all_seqs_delivered=r["lost_or_repeated"] == 0 and r["last_seq"] == final.last_seq)
                log(f"(b) {n} subscriber(s) through the {where} replica ({name}; job on {owner.name}): "
                    f"{r['latency_ms']}, {r['latency_samples']} samples, complete {r['complete_subscribers']}/{n}")
                results.append(r)
    return results


def _shares(n: int, procs: int) -> list[int]:
    return [n // procs + (1 if i < n % procs else 0) for i in range(procs)]


# --- (c) takeover after kill -9 -----------------------------------------------------------------------

def takeover(cluster: Cluster, kills: int) -> list[dict]:
    results = []
    for k in range(kills):
        with cluster.replicas[0].client(120) as c:
            job = c.submit(long_job(logging_steps=5, save_steps=20)).id
        owner = cluster.by_name(wait_for(lambda j=job: cluster.owner(j), timeout=120))
        watcher = cluster.others(owner.name)[0]
        streamed: list = []

        def follow(address=watcher.address, job=job, streamed=streamed):
            with tunewire.Client(address, timeout=120) as wc, contextlib.suppress(tunewire.TunewireError):
                for event in wc.stream_metrics(job):  # until the cluster stops
                    streamed.append((time.time(), event))
        threading.Thread(target=follow, daemon=True).start()
        wait_for(lambda s=streamed: any(isinstance(e.data, CheckpointSaved) for _, e in s), timeout=180)
        owner.process.signal(signal.SIGKILL)
        killed_at = time.time()
        owner.process.wait()
        resumed = wait_for(lambda s=streamed: _resumed(s, 2), timeout=cluster.lease_s + 120, interval=0.05)
        requeued, running, first_log = resumed
        taker = cluster.owner(job)
        r = {"lease_s": cluster.lease_s, "heartbeat_s": round(cluster.heartbeat_s, 3), "killed": owner.name,
             "taken_by": taker, "kill_to_requeued_s": round(event_epoch(requeued) - killed_at, 3),
             "kill_to_running_s": round(event_epoch(running) - killed_at, 3),
             "kill_to_first_step_s": round(event_epoch(first_log) - killed_at, 3)}
        log(f"(c) lease {cluster.lease_s} s, kill {k + 1}/{kills}: RUNNING again on {taker} after "
            f"{r['kill_to_running_s']} s, training after {r['kill_to_first_step_s']} s")
        results.append(r)
        if k < kills - 1:  # the next kill: this job out of the way, the killed replica back
            with watcher.client(120) as c:
                cancel_and_wait(c, job)
            owner.start()
    return results


def _resumed(streamed: list, attempt: int):
    """(the QUEUED state change of the takeover, the next RUNNING, the first train log after it) once seen."""
    events = [e for _, e in list(streamed)]
    changes = [(i, e) for i, e in enumerate(events) if isinstance(e.data, StateChange)]
    runs = [(i, e) for i, e in changes if e.data.state == JobState.RUNNING]
    if len(runs) < attempt:
        return None
    i_run, running = runs[attempt - 1]
    requeued = [e for i, e in changes if i < i_run and e.data.state == JobState.QUEUED][-1]
    logs = [e for e in events[i_run:] if isinstance(e.data, TrainLog)]
    return (requeued, running, logs[0]) if logs else None


# --- main ----------------------------------------------------------------------------------------------

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="10 jobs, 200 steps, lease 2 s with one kill: a smoke check")
    p.add_argument("--jobs", type=int, default=30, help="(a) measured jobs")
    p.add_argument("--steps", type=int, default=400, help="(b) steps of each measured job")
    p.add_argument("--every", type=int, default=4, help="(b) a train log every N steps")
    p.add_argument("--a-seconds", type=float, default=180, help="(a) time budget: stop submitting after it")
    p.add_argument("--leases", default="2,5", help="(c) lease settings, seconds")
    p.add_argument("--kills", type=int, default=1, help="(c) kills per lease setting")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--niceness", type=int, default=None,
                   help="the replicas' --training-niceness (default: the server's, 10)")
    p.add_argument("--parts", default="a,b,c", help="which figures: a, b, c (a subset writes replicas-<parts>.json)")
    p.add_argument("--timeout", type=float, default=120, help="(b) seconds one level may take")
    args = p.parse_args()
    if args.quick:
        args.jobs, args.leases, args.kills, args.steps = min(args.jobs, 10), "2", 1, min(args.steps, 200)
    leases = [float(x) for x in args.leases.split(",") if x.strip()]
    parts = {x.strip() for x in args.parts.split(",") if x.strip()}
    server_args = ("--training-niceness", str(args.niceness)) if args.niceness is not None else ()
    install_signal_exit()
    bin_dir = find_bin_dir()
    if bin_dir is None:
        sys.exit("no PostgreSQL server binaries (initdb, pg_ctl): `make install` installs Debian's postgresql")

    machine = machine_info()
    started = time.monotonic()
    models = ensure_tiny_bert(args.threads)
    work = scratch_dir("replicas")
    env = bench_env(args.threads)
    pg = PostgresServer(bin_dir).start()
    load = {"start": [round(x, 2) for x in os.getloadavg()]}
    try:
        queued, callback, takeovers = None, [], []
        if parts & {"a", "b"}:
            data = work / "cluster"
            write_dataset(data)
            with Cluster(pg.new_database(), data, models, env=env, threads=args.threads, args=server_args) as cluster:
                log("three replicas on", [r.address for r in cluster.replicas], "lease", cluster.lease_s)
                if "a" in parts:
                    queued = queued_to_running(cluster, args.jobs, args.a_seconds)
                    load["after_a"] = [round(x, 2) for x in os.getloadavg()]
                if "b" in parts:
                    plan = [[("same", 1), ("other", 1)], [("same", 50), ("other", 50)]]
                    callback = callback_latency(cluster, plan, args.steps, args.every, work, env, args.timeout)
                    load["after_b"] = [round(x, 2) for x in os.getloadavg()]
        for lease in leases if "c" in parts else ():
            data = work / f"lease-{lease:g}"
            write_dataset(data)
            with Cluster(pg.new_database(), data, models, n=2, lease_s=lease, heartbeat_s=lease / 3, env=env,
                         threads=args.threads, args=server_args) as cluster:
                takeovers += takeover(cluster, args.kills)
        load["end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        pg.stop()

    summary = report(queued, callback, takeovers, leases)
    print(f"\nload average: {load}; {machine.get('nproc')} CPUs ({machine.get('cpu')})")
    name = "replicas" if parts == {"a", "b", "c"} else "replicas-" + "".join(sorted(parts))
    path = save_results(name, {"quick": args.quick, "threads": args.threads, "niceness": args.niceness,
                               "machine": machine, "loadavg": load, "seconds": round(time.monotonic() - started, 1),
                               "postgres_start_s": round(pg.start_seconds, 2), "queued_to_running": queued,
                               "callback_to_client": callback, "takeover": takeovers, "summary": summary})
    log("results in", path, f"({time.monotonic() - started:.0f} s)")
    return 0


def report(queued: dict | None, callback: list[dict], takeovers: list[dict], leases: list[float]) -> list[dict]:
    """Print the tables; return the summary rows (figure, value, goal, met)."""
    summary = []
    if queued is not None:
        qa = queued["queued_event_to_running_event_ms"]
        qc = queued["submit_return_to_running_seen_ms"]
        print("## Replicas: queued -> RUNNING through another replica, with a free replica waiting\n")
        print(markdown_table(["jobs", "claimed by", "QUEUED->RUNNING events p50 ms", "p99 ms", "max ms",
                              "SubmitJob->RUNNING seen p50 ms", "p99 ms", "max ms", "goal p99", "met"],
                             [[queued["jobs"], json.dumps(queued["claimed_by"]), qa["p50"], qa["p99"], qa["max"],
                               qc["p50"], qc["p99"], qc["max"], f"< {GOAL_QUEUED_P99_MS:.0f} ms",
                               max(qa["p99"], qc["p99"]) < GOAL_QUEUED_P99_MS]]))
        summary += [{"figure": "queued -> RUNNING through another replica, p99 (ms)", "value": f"{qa['p99']}",
                     "goal": f"< {GOAL_QUEUED_P99_MS:.0f}", "met": qa["p99"] < GOAL_QUEUED_P99_MS},
                    {"figure": "SubmitJob -> RUNNING seen through another replica, p99 (ms)",
                     "value": f"{qc['p99']}", "goal": f"< {GOAL_QUEUED_P99_MS:.0f}", "met": qc["p99"] < GOAL_QUEUED_P99_MS}]
    if callback:
        print("\n## Replicas: training callback -> client\n")
        rows = []
        for r in callback:
            lat = r["latency_ms"]
            goal = r["where"] == "other"
            met = lat.get("p99", float("inf")) < GOAL_CALLBACK_P99_MS
            rows.append([r["subscribers"], f"{r['where']} ({r['replica']}, job on {r['job_replica']})",
                         r["worker_events_per_s"], r["latency_samples"], lat.get("p50"), lat.get("p90"), lat.get("p99"),
                         lat.get("max"), r["all_seqs_delivered"], f"< {GOAL_CALLBACK_P99_MS:.0f} ms" if goal else "",
                         met if goal else ""])
            if goal:
                summary.append({"figure": f"callback -> client through another replica, {r['subscribers']} "
                                          "subscribers, p99 (ms)", "value": f"{lat.get('p99')}",
                                "goal": f"< {GOAL_CALLBACK_P99_MS:.0f}", "met": met})
        print(markdown_table(["subscribers", "through", "events/s", "samples", "p50 ms", "p90 ms", "p99 ms",
                              "max ms", "every seq once", "goal p99", "met"], rows))
    if takeovers:
        print("\n## Replicas: takeover after kill -9 of the running replica\n")
        print(markdown_table(["lease s", "heartbeat s", "killed", "taken by", "kill->re-queued s", "kill->RUNNING s",
                              "kill->first step s", "within lease + heartbeat"],
                             [[t["lease_s"], t["heartbeat_s"], t["killed"], t["taken_by"], t["kill_to_requeued_s"],
                               t["kill_to_running_s"], t["kill_to_first_step_s"],
                               t["kill_to_running_s"] <= t["lease_s"] + t["heartbeat_s"] + 0.5] for t in takeovers]))
        for lease in leases:
            ts = [t["kill_to_running_s"] for t in takeovers if t["lease_s"] == lease]
            if ts:
                summary.append({"figure": f"takeover after kill -9, lease {lease:g} s (s, worst)",
                                "value": f"{max(ts):.2f}", "goal": f"<= lease + heartbeat ({lease + lease / 3:.2f})",
                                "met": max(ts) <= lease + lease / 3 + 0.5})
    return summary


if __name__ == "__main__":
    sys.exit(main())
