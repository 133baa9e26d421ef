"""Training on several processes (GPUs or machines) with torchrun and DistributedDataParallel.

``coursekit.train.fit`` checks ``world()``: under ``torchrun`` (after ``init_distributed()``) it wraps the model in
DDP, each process trains on its own slice of every global batch (the course's batches are already on the device
and identical on every process, because every process draws them with the same seed), and DDP all-reduces the
gradients, so N processes take the same steps as one process on the whole batch. Only the main process (rank 0)
writes: checkpoints, the run ledger, TensorBoard logs, progress bars.

    torchrun --nproc_per_node=4 my_training_script.py            # 4 GPUs on one machine
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d \\
             --rdzv_endpoint=HOST:29500 my_training_script.py    # 2 machines

BatchNorm computes its statistics per process: with a per-process batch large enough this barely matters; for
exact equivalence convert the model with ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` (CUDA only).
"""

from __future__ import annotations

import atexit
import os

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["world", "is_main", "init_distributed", "finish_distributed", "shard_of_batch", "wrap_for_training", "barrier"]


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True in the process that writes files (rank 0, or the only process)."""
    return world()[0] == 0


def init_distributed(backend: str | None = None) -> tuple[int, int]:
    """Initialise the process group from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...): "nccl" on
    CUDA (each process on GPU LOCAL_RANK), "gloo" on the CPU. Outside torchrun nothing happens. Returns world().

    End the script with ``finish_distributed()``. As a fallback the process group is also destroyed at exit (without
    the barrier: a rank that leaves on an exception must not wait for the others)."""
    if "RANK" not in os.environ or (dist.is_available() and dist.is_initialized()):
        return world()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    atexit.register(_destroy_process_group)
    return world()


def finish_distributed() -> None:
    """Call once at the end of a torchrun script: wait for every process (barrier), then destroy the process group
    (PyTorch's documented shutdown). No-op outside torchrun; safe to call twice.

    It does not remove a PyTorch shutdown race on the CPU backend: a gloo worker thread can release a finished
    collective's tensors while the interpreter is finalising, and the process then aborts with "terminate called
    without an active exception" after all its work is done (seen on a loaded 2-core machine in about 1 run in 25
    with or without this call; the core dump shows ProcessGroupGloo::AsyncWork's destructor in take_gil during
    Py_FinalizeEx; PyTorch pull request #179291 describes it). Write every result before the script ends: the
    abort comes after them."""
    barrier()
    _destroy_process_group()


def _destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_of_batch(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's contiguous slice of a global batch (N, ...): rows [r*N/W, (r+1)*N/W). Raises ValueError when
    N does not divide by the world size (the slices must be equal for the averaged gradients to equal one
    process's gradient on the whole batch)."""
    rank, size = world()
    if size == 1:
        return x, y
    n = len(y)
    if n % size:
        raise ValueError(f"batch_size: a batch of {n} does not split into {size} equal shards; use a multiple of {size}")
    k = n // size
    return x[rank * k:(rank + 1) * k], y[rank * k:(rank + 1) * k]


def wrap_for_training(model: nn.Module) -> nn.Module:
    """``model`` wrapped in DistributedDataParallel when several processes train, else ``model`` itself."""
    if world()[1] == 1:
        return model
    device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def barrier() -> None:
    """Wait for every process (no-op in a single process): e.g. after rank 0 wrote a checkpoint the others read."""
    if world()[1] > 1:
        dist.barrier()
