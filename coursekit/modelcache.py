"""The run-dir cache of trained models, one for every model kind.

A model trained once is saved at ``<run_dir>/checkpoints/<name>-<key>.pt``, where ``key`` hashes everything that
decided its weights (``config_key``: the recipe, the model spec, the data), and reused by any later chapter that
asks for the same name and key. How a model is saved and rebuilt is its kind's business: Part 1's ResNets
(``coursekit.checkpoints``) and Part 2's text classifiers (``coursekit.textmodels``) pass their own ``save`` and
``load``. Introduced in notebooks/00_baseline.ipynb.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["config_key", "cached_path", "train_or_load_cached"]


def config_key(config: dict) -> str:
    """12 hex digits of the SHA-256 of a JSON-able config (keys sorted): same config, same key."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def cached_path(run_dir: str | os.PathLike, name: str, key: str) -> Path:
    """Where the model ``name`` trained under ``key`` lives: ``<run_dir>/checkpoints/<name>-<key>.pt``."""
    return Path(run_dir) / "checkpoints" / f"{name}-{key}.pt"


def train_or_load_cached(run_dir: str | os.PathLike, name: str, key: str, *, train: Callable[[], tuple],
                         save: Callable[[Path, object, dict], object], load: Callable[[Path], tuple]):
    """Reuse the model cached under ``name`` and ``key``, or train and save it.

    ``train()`` returns (model, info) and runs only on a miss; ``save(path, model, info)`` writes the checkpoint;
    ``load(path)`` returns (model, info). Returns (model, info, reused flag).
    """
    path = cached_path(run_dir, name, key)
    if path.exists():
        model, info = load(path)
        return model, info, True
    model, info = train()
    save(path, model, info)
    return model, info, False
