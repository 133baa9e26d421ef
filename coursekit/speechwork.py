"""Part 3's helpers bound to a notebook's session (chapter 13): FSDD log-mel features with the profile's settings,
the folds of an honest speech evaluation (``audio.speech_fold``), the profile's keyword-spotting recipe, adaptation
to a new speaker from k takes per digit, and the ledger records of keyword spotters (task "fsdd"). ``session.speech``
hands one out. Introduced in notebooks/13_speech_capstone.ipynb.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from .audio import FsddData, LogMelSettings, SpeechBatches, SpeechFold, augment_speech, load_fsdd, speech_fold
from .paths import cache_dir
from .recipe import Recipe
from .recorder import PartHelpers
from .train import evaluate, predict_logits
from .validate import one_of

__all__ = ["SpeechWork", "ADAPT_METHODS", "adaptable_parameters", "train_on_clips"]

ADAPT_METHODS = ("all", "head", "bn")  # fine-tune every weight / only the classifier / only the BatchNorm layers


def adaptable_parameters(model: nn.Module, method: str) -> list[nn.Parameter]:
    """The parameters a fine-tuning ``method`` trains: "all" of them, the classifier ("head": the last Linear) or
    the BatchNorm scales and shifts ("bn"; their running statistics also follow the new speaker, because the layers
    run in training mode)."""
    one_of("method", method, ADAPT_METHODS)
    if method == "all":
        return list(model.parameters())
    if method == "head":
        return list([m for m in model.modules() if isinstance(m, nn.Linear)][-1].parameters())
    return [p for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()]


def train_on_clips(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params, *, steps: int, lr: float, seed: int,
                   frozen_statistics: bool = False) -> nn.Module:
    """``steps`` full-batch AdamW steps (no weight decay, constant rate) of ``params`` on the few clips x (N, 1, M, T)
    with labels y, each step on a fresh augmentation (time shift and masks) drawn from ``seed``. With
    ``frozen_statistics`` every BatchNorm keeps its running statistics (eval mode). Returns the model in eval mode."""
    params = list(params)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    model.train()
    if frozen_statistics:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
    for _ in range(steps):
        xb = augment_speech(x, max_shift=4, max_freq_mask=5, max_time_mask=5, generator=g)
        loss = F.cross_entropy(model(xb), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()


class SpeechWork(PartHelpers):
    """The speech helpers of one session (``recorder``, ``data_dir``, and through them ``profile``, ``device``,
    ``seed``)."""

    @property
    def settings(self) -> LogMelSettings:
        """The profile's log-mel settings (25 ms windows, ``speech_hop_ms``, ``speech_mels`` bands)."""
        return LogMelSettings(hop_ms=self.profile.speech_hop_ms, n_mels=self.profile.speech_mels)

    def load(self) -> FsddData:
        """Every FSDD clip as log-mel features, cached under the cache folder's ``speech/``."""
        return load_fsdd(self.data_dir, cache_dir() / "speech", self.settings)

    def fold(self, data: FsddData, held_out: str | None = None) -> SpeechFold:
        """The official split (``held_out=None``) or the fold that never hears ``held_out``."""
        return speech_fold(data, held_out)

    def batches(self, data: FsddData, fold: SpeechFold, indices: torch.Tensor, *, train: bool = False,
                seed: int | None = None, augment: bool = True) -> SpeechBatches:
        """Batches of ``indices`` normalised with the fold's statistics, on the session's device; shuffled and
        augmented (when ``augment``) for training."""
        return SpeechBatches(data, indices, mean=fold.mean, std=fold.std, device=self.device, shuffle=train,
                             augment=train and augment, seed=self.seed if seed is None else seed,
                             batch_size=self.profile.speech_batch_size if train else 512)

    def recipe(self, *, epochs: int, seed: int | None = None, data: dict | None = None) -> Recipe:
        """The profile's keyword-spotting recipe: AdamW (``speech_lr``, ``speech_weight_decay``), one-cycle,
        channels_last, the profile's autocast resolved here."""
        P = self.profile
        return Recipe(epochs=epochs, lr=P.speech_lr, batch_size=P.speech_batch_size,
                      seed=self.seed if seed is None else seed, optimizer="adamw", weight_decay=P.speech_weight_decay,
                      amp=Recipe.resolve_amp(P.amp, self.device), channels_last=True, data=dict(data or {}))

    def train(self, model: nn.Module, data: FsddData, fold: SpeechFold, *, epochs: int, seed: int | None = None,
              augment: bool = True, loss_fn=None) -> float:
        """Train ``model`` in place on the fold's training clips with ``recipe``; returns the seconds it took."""
        recipe = self.recipe(epochs=epochs, seed=seed, data={"fold": fold.name, "augment": augment})
        torch.manual_seed(recipe.seed)
        start = time.perf_counter()
        recipe.fit(model, self.batches(data, fold, fold.train, train=True, seed=recipe.seed, augment=augment),
                   device=self.device, loss_fn=loss_fn, progress=False)
        model.eval()
        return time.perf_counter() - start

    def predictions(self, model: nn.Module, data: FsddData, fold: SpeechFold, indices: torch.Tensor) -> torch.Tensor:
        """Per clip of ``indices``: 1.0 where ``model`` names the digit, else 0.0 (what paired tests compare)."""
        logits, y = predict_logits(model.eval(), self.batches(data, fold, indices), amp="off")
        return (logits.argmax(1) == y).float().cpu()

    def accuracy(self, model: nn.Module, data: FsddData, fold: SpeechFold, indices: torch.Tensor) -> float:
        """Accuracy of ``model`` on the clips ``indices``, in fp32."""
        return evaluate(model.eval(), self.batches(data, fold, indices), amp="off")["accuracy"]

    def clips(self, data: FsddData, fold: SpeechFold, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x (N, 1, M, T) normalised with the fold's statistics, digits (N,)) of ``indices``, on the device."""
        batches = self.batches(data, fold, indices)
        return batches.x, batches.y

    def adapt(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, method: str, seed: int) -> nn.Module:
        """A copy of ``model`` fine-tuned on a new speaker's few clips by ``method`` (``ADAPT_METHODS``) for
        ``speech_adapt_steps`` steps at ``speech_adapt_lr`` ("head": ``speech_head_lr``, BatchNorm statistics
        frozen: only the classifier changes)."""
        P = self.profile
        new = copy.deepcopy(model)
        return train_on_clips(new, x, y, adaptable_parameters(new, method), steps=P.speech_adapt_steps,
                              lr=P.speech_head_lr if method == "head" else P.speech_adapt_lr, seed=seed,
                              frozen_statistics=method == "head")

    def from_scratch(self, build, x: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
        """A fresh ``build()`` trained on the few clips alone: ``speech_scratch_steps`` steps at ``speech_lr``."""
        torch.manual_seed(seed)
        model = build().to(self.device)
        return train_on_clips(model, x, y, model.parameters(), steps=self.profile.speech_scratch_steps,
                              lr=self.profile.speech_lr, seed=seed)

    def record(self, entries: list[dict], *, latency: dict, sizes: dict | None = None,
               extra: dict | None = None) -> dict[str, dict]:
        """Ledger records (task "fsdd") of keyword spotters: ``entries`` as ``Recorder.record_models`` takes them,
        ``latency`` {name: {"cpu_b1": ms}} measured by the caller, ``sizes`` {name: {"raw": bytes,
        "gzip": bytes}} when the stored form is not the model's state dict (an ONNX file)."""
        settings = self.settings
        return self.recorder.record_models(entries, latency=latency, representative={e["name"]: e["name"] for e in entries},
                                           sizes=sizes, input_size=(1, settings.n_mels, settings.frames()), extra=extra,
                                           fields={"task": "fsdd"}, dataset="fsdd")
