"""tunewire server: the gRPC control plane and its training and inference workers."""

import os

# Before anything imports grpc: the control plane starts its workers with fork + exec (uvloop's libuv spawn)
# while gRPC's threads are busy, and gRPC core's fork handlers then ran in those children: some died with
# SIGSEGV before they could exec (a warm worker, a merge worker). Workers never use the parent's gRPC, so the
# handlers have nothing to protect. An operator's own setting wins.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
