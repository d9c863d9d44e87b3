"""Entry point of a merge worker: one merge per process (models/merge.py starts it).

Reads one JSON request line on stdin (worker/merge/merging.MergeRequest's fields), writes the merged model
into its output_dir, and sends {"kind": "result", "files": [...]} or {"kind": "error", "error": {code,
message}} up the --message-fd pipe. It writes no marker: the control plane marks the folder complete and
renames it into place, so a merge that dies half-way leaves nothing that looks whole.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import traceback

from tunewire_server.worker.protocol import MessageWriter, die_with_parent, parse_args


def _error(exc: BaseException) -> dict:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return {"code": "DISK_FULL", "message": "no space left on the disk while writing the merged model"}
    return {"code": "INTERNAL", "message": f"the merge failed ({type(exc).__name__}); the job's merge.log has "
                                           "the details"}


def main() -> int:
    args = parse_args()
    die_with_parent()
    out = MessageWriter(args.message_fd)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    line = sys.stdin.readline()
    if not line:
        return 0
    from tunewire_server.worker.merge.merging import MergeRequest, merge
    from tunewire_server.worker.runtime import configure_torch

    configure_torch()
    try:
        request = MergeRequest.from_dict(json.loads(line))
        if request.base_model.startswith("/") and not os.path.isfile(os.path.join(request.base_model, "config.json")):
            out.send("error", error={"code": "MODEL_UNAVAILABLE",
                                     "message": "the base model of this adapter is gone from the model root"})
            return 1
        files = merge(request)
    except Exception as exc:
        traceback.print_exc()
        out.send("error", error=_error(exc))
        return 1
    out.send("result", files=files)
    return 0


if __name__ == "__main__":
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # skip torch's slow interpreter teardown: everything is written and reported
