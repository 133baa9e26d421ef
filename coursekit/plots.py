"""Plots shared by the chapters: training curves and a grid of dataset images.

Introduced in notebooks/00_baseline.ipynb.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

__all__ = ["plot_history", "show_images"]


def plot_history(history: dict, title: str = "", ax=None):
    """Training loss and train/validation accuracy against epoch; returns the figure."""
    if ax is None:
        fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    else:
        fig = ax[0].figure
    ep = history["epoch"]
    ax[0].plot(ep, history["train_loss"], marker="o")
    ax[0].set(xlabel="epoch", ylabel="training loss", title=f"{title} loss".strip())
    ax[1].plot(ep, history["train_acc"], marker="o", label="train (augmented)")
    if any(v is not None for v in history["val_acc"]):
        ax[1].plot(ep, history["val_acc"], marker="s", label="validation")
    ax[1].set(xlabel="epoch", ylabel="accuracy", title=f"{title} accuracy".strip())
    ax[1].legend()
    fig.tight_layout()
    return fig


def show_images(x: torch.Tensor, y: torch.Tensor, classes: list[str], n: int = 16, ncols: int = 8):
    """A grid of the first ``n`` uint8 images x: (N, 3, H, W) with their class names; returns the figure."""
    n = min(n, len(x))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.5 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(x[i].permute(1, 2, 0).cpu().numpy())
            ax.set_title(classes[int(y[i])], fontsize=8)
    fig.tight_layout()
    return fig
