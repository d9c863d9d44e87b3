"""A long fuzz pass that records every failing example instead of stopping at the first one.

    python -m tests.robust.fuzz_survey [EXAMPLES_PER_CASE] [REPORT.jsonl]

Prints the run time, the example count, the control plane's peak RSS and the failures grouped by request,
field, kind of value and answer. A server that dies (or that the RSS watchdog kills) is started again.
"""

from __future__ import annotations

import collections
import json
import sys
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings

from tests.robust.fuzz_cases import cases, run_example
from tests.robust.fuzz_protos import Mutation, mutations
from tests.robust.fuzz_server import FuzzServer


def main() -> None:
    examples = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    report = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    root = Path(tempfile.mkdtemp(prefix="tunewire-fuzz-"))
    t0 = time.monotonic()
    state = {"server": None, "n": 0, "peak": 0, "restarts": 0}
    failures: collections.Counter = collections.Counter()
    samples: dict = {}
    out = report.open("w") if report else None

    def server() -> FuzzServer:
        if state["server"] is None or not state["server"].alive():
            if state["server"] is not None:
                state["peak"] = max(state["peak"], state["server"].watch.peak)
                state["server"].close()
                state["restarts"] += 1
            state["server"] = FuzzServer(root / f"run{state['restarts']}")
            try:
                state["server"].prepare()
            except BaseException:
                state["server"].close()
                raise
        return state["server"]

    s0 = time.monotonic()
    server()
    setup_s = time.monotonic() - s0
    names = list(cases(server()))
    def survey(name: str) -> None:
        case = cases(server())[name]

        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=True, phases=[Phase.explicit, Phase.generate])
        @given(mutation=mutations(case.base, case.harmless, case.focus))
        def fuzz(mutation: Mutation):
            srv = server()
            case = cases(srv)[name]  # job ids change when the server is started again
            outcome = run_example(srv, case, mutation)
            state["n"] += 1
            value = mutation.describe().split(" <- ", 1)[1]
            for problem in outcome.problems:
                key = (name, mutation.slot.path, mutation.kind, problem.split(" (names")[0][:120])
                failures[key] += 1
                samples.setdefault(key, value[:100])
            if out:
                out.write(json.dumps({"case": name, "mutation": mutation.describe()[:200], "code": outcome.code,
                                      "seconds": round(outcome.seconds, 3), "rss_mib": outcome.rss >> 20,
                                      "rss_now_mib": outcome.rss_now >> 20,
                                      "problems": outcome.problems}) + "\n")
                out.flush()

        fuzz()

    try:
        for name in names:
            survey(name)
    finally:
        peak = max(state["peak"], state["server"].peak_rss())
        state["server"].close()
    print(f"examples: {state['n']} ({examples} per case, {len(names)} cases); run time {time.monotonic() - t0:.0f} s "
          f"(set-up {setup_s:.0f} s); control-plane peak RSS {peak / 2**20:.0f} MiB; server restarts "
          f"{state['restarts']}")
    for (name, path, kind, problem), count in sorted(failures.items()):
        print(f"{count:4d}  {name:24s} {path:45s} {kind:18s} {problem}   e.g. {samples[(name, path, kind, problem)]}")


if __name__ == "__main__":
    main()
