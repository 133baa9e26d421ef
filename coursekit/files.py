"""Files the course writes: atomically (a reader never sees half a checkpoint) and only in the main process (under
torchrun every process holds the same model; rank 0 alone writes it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["save_torch_atomic", "append_line", "refuse_existing"]


def _main_process() -> bool:
    """``distributed.is_main()``, without importing torch where nothing has (a process that never imported
    torch.distributed has no process group): appending a ledger line stays a light import (``coursekit run``'s
    notebooks, ``coursekit report``)."""
    if "torch.distributed" not in sys.modules:
        return True
    from .distributed import is_main

    return is_main()


def save_torch_atomic(payload, path: str | os.PathLike) -> Path:
    """``torch.save(payload)`` to a temporary file beside ``path``, then renamed over it; skipped (path returned)
    in processes other than the main one."""
    import torch

    path = Path(path)
    if not _main_process():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def append_line(path: str | os.PathLike, line: str) -> Path:
    """Append one line of text to ``path`` (created with its folder when absent); main process only."""
    path = Path(path)
    if not _main_process():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
    return path


def refuse_existing(path: str | os.PathLike, who: str) -> Path:
    """``path`` as a Path, or a FileExistsError naming it when something is already there: the course never writes
    over a file it did not make in this call (delete it, or choose another name)."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{who}: {path} already exists; nothing was written. Delete it or choose another path")
    return path
