"""bccl as a torch.distributed backend.

Importing this module registers the backend name "bccl" (once, however often it is imported),
so that `dist.init_process_group(backend="bccl")` and `dist.new_group(backend="bccl")` build a
process group on bccl. The work is done by the compiled `_C` extension; this file exists only to
load torch first (its libraries must be in the process before `_C`) and to register the creator.
"""

import atexit

import torch  # noqa: F401  (loads libtorch, which _C links against)
import torch.distributed as dist

from . import _C

__all__ = ["create_process_group", "version"]


def create_process_group(store, rank, world_size, timeout):
    """torch.distributed's backend creator: (prefix store, group rank, group size, timedelta)."""
    return _C.create_process_group(store, rank, world_size, timeout)


def version():
    """bccl's version code, e.g. 100 for 0.1.0."""
    return _C.version()


def _register():
    # register_backend asserts on a second registration (e.g. a module reloaded under another name).
    if hasattr(dist.Backend, "BCCL") or "BCCL" in getattr(dist.Backend, "_plugins", {}):
        return
    dist.Backend.register_backend("bccl", create_process_group)


_register()
# Work still in flight at exit completes (or is aborted after a grace period) while Python can
# still run its callbacks and free its tensors; during interpreter teardown it could not.
atexit.register(_C.drain_at_exit)
