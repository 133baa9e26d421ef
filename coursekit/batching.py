"""The order of one epoch's examples, the same for every loader of the course: a generator seeded from (seed, epoch)
alone, so two loaders with the same seed yield the same batches, and a permutation drawn from it (or 0..n-1 without
shuffling). The generator goes on to draw the epoch's augmentation. Used by ``coursekit.data.Batches`` (images) and
``coursekit.audio.SpeechBatches`` (log-mel features)."""

from __future__ import annotations

import torch

__all__ = ["epoch_order"]


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool, device) -> tuple[torch.Generator, torch.Tensor]:
    """(the epoch's CPU generator, the order of the ``n`` examples on ``device`` as an (n,) index tensor)."""
    gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=gen).to(device) if shuffle else torch.arange(n, device=device)
    return gen, order
