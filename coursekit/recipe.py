"""A training recipe: the resolved arguments of one ``fit`` run, from which both the call and the cache key come.

A model cached in the run dir may be reused only when it was trained exactly as asked. Deriving the cache key
from the same object that makes the ``fit`` call means the key cannot miss an argument: every field of
``Recipe`` is in the key, including the autocast dtype as resolved on this machine (bf16 is chosen from the CPU's
flags, or by a timing probe where they say nothing) and ``RECIPE_VERSION``, which is bumped whenever the training code changes meaning.
Used by ``Session`` for Part 1's base and source models (their run-dir cache keys) and by Part 2
(notebooks/07_transformer_transfer.ipynb caches its fine-tuned teacher with it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace

import torch

from .checkpoints import config_key
from .env import autocast_dtype
from .train import fit

__all__ = ["RECIPE_VERSION", "Recipe"]

# Bump when train.fit, the text batches or a model wrapper change what a recipe produces.
RECIPE_VERSION = 1


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the weights a training run produces (with the model and data it is given).

    ``data`` describes the training data (task, split, subset, max length); ``frozen`` lists parameter-name
    prefixes kept frozen; ``amp`` is stored resolved ("bf16", "fp16" or "off") so that a key made on a machine
    where the probe chose bf16 differs from one made where it chose fp32.
    """

    epochs: int
    lr: float
    batch_size: int
    seed: int
    optimizer: str = "adamw"
    schedule: str = "onecycle"
    weight_decay: float = 0.01
    label_smoothing: float = 0.0
    amp: str = "off"
    channels_last: bool = False
    frozen: tuple = ()
    data: dict = field(default_factory=dict)
    version: int = RECIPE_VERSION

    @staticmethod
    def resolve_amp(amp: str, device: torch.device | str) -> str:
        """The autocast choice as it will run here: "auto" becomes "bf16", "fp16" or "off"."""
        dtype = autocast_dtype(device, amp)
        return {None: "off", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]

    def with_(self, **changes) -> Recipe:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def as_dict(self) -> dict:
        """Every field as plain JSON values (tuples become lists): what checkpoints and cache configs store."""
        return json.loads(json.dumps(asdict(self), default=list))

    def key(self) -> str:
        """12 hex digits of the SHA-256 of every field: same recipe, same key; any field changed, another key."""
        return config_key(self.as_dict())

    def fit_kwargs(self) -> dict:
        """The keyword arguments of ``coursekit.train.fit`` that this recipe fixes (the batches, built with
        ``batch_size`` and ``seed``, are the caller's)."""
        return {"epochs": self.epochs, "lr": self.lr, "optimizer": self.optimizer, "schedule": self.schedule,
                "weight_decay": self.weight_decay, "label_smoothing": self.label_smoothing, "amp": self.amp,
                "channels_last": self.channels_last}

    def fit(self, model, train_batches, *, device=None, progress: bool = False, loss_fn=None, val_batches=None,
            params=None, on_step=None) -> dict:
        """Freeze ``frozen``, seed the global generator with ``seed`` (dropout masks) and run
        ``coursekit.train.fit`` with exactly this recipe's arguments.

        ``loss_fn``, ``params`` and ``on_step`` change what is trained: a caller that passes them must describe
        them in ``data`` (or another field) when the result is cached.
        """

        for name, p in model.named_parameters():
            if any(name.startswith(prefix) for prefix in self.frozen):
                p.requires_grad_(False)
        torch.manual_seed(self.seed)
        return fit(model, train_batches, val_batches=val_batches, loss_fn=loss_fn, params=params, device=device,
                   progress=progress, on_step=on_step, **self.fit_kwargs())
