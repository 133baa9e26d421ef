"""A training recipe: the resolved arguments of one ``fit`` run, from which both the call and the cache key come.

A model cached in the run dir may be reused only when it was trained exactly as asked. Deriving the cache key
from the same object that makes the ``fit`` call means the key cannot miss an argument: every field of
``Recipe`` is in the key, including the autocast dtype as resolved on this machine (bf16 is chosen from the CPU's
flags, or by a timing probe where they say nothing) and ``RECIPE_VERSION``, which is bumped whenever the training code changes meaning.
Every training call of the package and the notebooks is built from one: Part 1's base, source and fine-tuned models
(``coursekit.imagework``) and Part 2's text models (``coursekit.textwork``); its defaults are ``fit``'s.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import asdict, dataclass, field, replace

import torch

from .env import autocast_dtype
from .modelcache import config_key
from .train import fit

__all__ = ["RECIPE_VERSION", "Recipe"]

# Bump when train.fit, the text batches or a model wrapper change what a recipe produces.
RECIPE_VERSION = 1
# The defaults of a recipe are fit's: its signature is the one place that states them.
_FIT_DEFAULTS = {name: p.default for name, p in inspect.signature(fit).parameters.items()
                 if p.default is not inspect.Parameter.empty}


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the weights a training run produces (with the model and data it is given).

    ``data`` describes the training data (task, split, subset, max length); ``frozen`` lists parameter-name
    prefixes kept frozen; ``amp`` is stored resolved (``resolve_amp``: "bf16", "fp16" or "off") so that a key made
    on a machine where the probe chose bf16 differs from one made where it chose fp32. Defaults are
    ``coursekit.train.fit``'s (one-cycle SGD, weight decay 5e-4, autocast "auto", channels_last).
    """

    epochs: int
    lr: float
    batch_size: int
    seed: int
    optimizer: str = _FIT_DEFAULTS["optimizer"]
    schedule: str = _FIT_DEFAULTS["schedule"]
    weight_decay: float = _FIT_DEFAULTS["weight_decay"]
    label_smoothing: float = _FIT_DEFAULTS["label_smoothing"]
    amp: str = _FIT_DEFAULTS["amp"]
    channels_last: bool = _FIT_DEFAULTS["channels_last"]
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
            params=None, on_step=None, log_dir=None, seed_global: bool = True) -> dict:
        """Freeze ``frozen``, seed the global generator with ``seed`` (dropout masks; ``seed_global=False`` leaves
        it as it is, for a caller that seeded before building the model) and run ``coursekit.train.fit`` with
        exactly this recipe's arguments (``log_dir``: TensorBoard event files).

        ``loss_fn``, ``params`` and ``on_step`` change what is trained: a caller that passes them must describe
        them in ``data`` (or another field) when the result is cached.
        """

        for name, p in model.named_parameters():
            if any(name.startswith(prefix) for prefix in self.frozen):
                p.requires_grad_(False)
        if seed_global:
            torch.manual_seed(self.seed)
        return fit(model, train_batches, val_batches=val_batches, loss_fn=loss_fn, params=params, device=device,
                   progress=progress, on_step=on_step, log_dir=log_dir, **self.fit_kwargs())
