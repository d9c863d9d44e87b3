"""Entry point of a training worker: one job per process.

Heavy libraries are imported before the job is read from stdin, so a worker started ahead of time
(warm) has paid the import cost when the job arrives. Messages go up the --message-fd pipe.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import traceback

from tunewire_server.worker.protocol import MessageWriter, parse_args


class Cancelled(BaseException):
    """Raised by the stop signal before training has started: nothing is written yet."""


def main() -> int:
    args = parse_args()
    out = MessageWriter(args.message_fd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from tunewire_server.worker.callback import Control

    control = Control()

    def on_stop(signum, frame):
        control.stop = True
        if not control.training:
            raise Cancelled()

    def on_checkpoint(signum, frame):
        control.checkpoint_and_stop = True
        if not control.training:
            raise Cancelled()

    from tunewire_server.workers import CHECKPOINT_SIGNAL, STOP_SIGNAL

    signal.signal(STOP_SIGNAL, on_stop)
    signal.signal(CHECKPOINT_SIGNAL, on_checkpoint)
    try:
        return _run(out, control)
    except Cancelled:
        return 0


def _run(out: MessageWriter, control) -> int:
    import torch  # noqa: F401  (the import cost is paid here, before a job arrives)
    from google.protobuf import json_format

    from tunewire.v1 import job_pb2
    from tunewire_server.worker import classification
    from tunewire_server.worker.runtime import UserError, configure_torch

    runners = {"classification": classification.run}
    try:
        from tunewire_server.worker import sft

        runners["sft"] = sft.run
    except ImportError:
        pass
    line = sys.stdin.readline()
    if not line:
        return 0  # the control plane closed us without a job
    request = json.loads(line)
    configure_torch()
    from pathlib import Path

    spec = json_format.ParseDict(request["spec"], job_pb2.JobSpec())
    plan = request["plan"]
    job_dir = Path(request["job_dir"])
    logging.getLogger("tunewire.worker").info("job %s: %s on %s", request["job_id"], plan["task"], plan["base_model"])
    try:
        metrics = runners[plan["task"]](spec, plan, job_dir, out, control, request.get("resume_from"))
    except UserError as exc:
        out.send("error", code=exc.code, message=exc.message, field=exc.field, kind="USER")
        return 1
    except torch.OutOfMemoryError as exc:
        out.send("error", code="OUT_OF_MEMORY", message=str(exc).splitlines()[0][:500], field="", kind="SYSTEM")
        return 1
    except Exception as exc:
        traceback.print_exc()
        out.send("error", code="TRAINING_FAILED", message=f"{type(exc).__name__}: {exc}"[:2000], field="",
                 kind="SYSTEM")
        return 1
    if control.stop or control.checkpoint_and_stop:
        return 0
    out.send("result", metrics=metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
