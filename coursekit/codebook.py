"""k-means (codebook) quantization: every weight of a layer replaced by one of 2^bits shared centroids, stored as a
``bits``-bit index plus a small float codebook (Han, Mao and Dally 2016, "Deep compression"; MIT 6.5940 lab 2).
Introduced in notebooks/11_quantization.ipynb.

Centroids start evenly spaced between the weights' minimum and maximum (Han et al.'s linear initialisation, which
keeps the rare large weights representable) and move by Lloyd's iterations: assign each weight to its nearest
centroid, set each centroid to the mean of its weights. Quantization-aware retraining keeps the assignments and
after each optimizer step sets each centroid to the mean of its (updated) weights, then writes the centroids back
(``CodebookQuantizer.update``): the weights move, the codebook follows, and the model stays quantized.
"""

from __future__ import annotations

import torch
from torch import nn

from .quantize import BITS
from .validate import refuse

__all__ = ["kmeans_codebook", "CodebookQuantizer"]


@torch.no_grad()
def kmeans_codebook(weight: torch.Tensor, bits: int, iterations: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on the values of ``weight`` with 2^bits clusters, linear initialisation.
    Returns (centroids (2^bits,) float32, labels (weight's shape) int64 index of each weight's centroid)."""
    if bits not in BITS:
        refuse("bits", bits, ", ".join(map(str, BITS)))
    w = weight.detach().float().reshape(-1)
    k = 2 ** bits
    centroids = torch.linspace(float(w.min()), float(w.max()), k)
    for _ in range(iterations):
        labels = _nearest(w, centroids)
        sums = torch.zeros(k).index_add_(0, labels, w)
        counts = torch.bincount(labels, minlength=k).float()
        moved = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)  # an empty cluster keeps its place
        if torch.equal(moved, centroids):
            break
        centroids = moved
    return centroids, _nearest(w, centroids).reshape(weight.shape)


def _nearest(w: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid of every value of w (N,): argmin_k |w - c_k|, ties to the lower index. In one
    dimension the nearest of the sorted centroids is one of the two around w, found by binary search: O(N log k),
    not the N x k distance table (256 centroids of a few million weights made that table the slowest step)."""
    ordered, inverse = torch.unique(centroids, return_inverse=True)  # sorted distinct values
    k = len(centroids)
    first = torch.full((len(ordered),), k).scatter_reduce(0, inverse, torch.arange(k), "amin")  # lowest index of each
    upper = torch.searchsorted(ordered, w).clamp(max=len(ordered) - 1)
    lower = (upper - 1).clamp(min=0)
    d_low, d_up = (w - ordered[lower]).abs(), (w - ordered[upper]).abs()
    i_low, i_up = first[lower], first[upper]
    take_low = (d_low < d_up) | ((d_low == d_up) & (i_low < i_up))
    return torch.where(take_low, i_low, i_up)


class CodebookQuantizer:
    """k-means quantization of every Conv2d and Linear weight of ``model`` (biases and BatchNorm stay float).

    ``apply()`` clusters each weight and writes the centroids into it; after a training step, ``update()`` recomputes
    each centroid as the mean of its weights (assignments fixed) and writes them back. ``stored_bytes()`` counts the
    quantized weights as stored: ``bits`` per index plus a float32 codebook per layer."""

    def __init__(self, model: nn.Module, bits: int, iterations: int = 20):
        if bits not in BITS:
            refuse("bits", bits, ", ".join(map(str, BITS)))
        self.model, self.bits, self.iterations = model, bits, iterations
        self.layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
        self.codebooks: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def apply(self) -> CodebookQuantizer:
        for name, layer in self.layers.items():
            centroids, labels = kmeans_codebook(layer.weight, self.bits, self.iterations)
            self.codebooks[name] = (centroids, labels.to(layer.weight.device))
            layer.weight.copy_(centroids.to(layer.weight)[self.codebooks[name][1]])
        return self

    @torch.no_grad()
    def update(self) -> None:
        """After an optimizer step: centroid = mean of the weights assigned to it; weights = their centroids."""
        for name, layer in self.layers.items():
            centroids, labels = self.codebooks[name]
            w = layer.weight.detach().float().reshape(-1).cpu()
            flat = labels.reshape(-1).cpu()
            sums = torch.zeros_like(centroids).index_add_(0, flat, w)
            counts = torch.bincount(flat, minlength=len(centroids)).float()
            centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
            self.codebooks[name] = (centroids, labels)
            layer.weight.copy_(centroids.to(layer.weight)[labels])

    def stored_bytes(self) -> int:
        """Quantized layers' weights as stored: ceil(n * bits / 8) bytes of indices + 4 bytes per centroid."""
        return sum((labels.numel() * self.bits + 7) // 8 + 4 * len(c) for c, labels in self.codebooks.values())
