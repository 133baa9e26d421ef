"""Plots shared by the chapters: training curves, a grid of dataset images, and the Pareto plots of a run
(accuracy against cost for every model in the ledger).

Introduced in notebooks/00_baseline.ipynb; the Pareto plots in notebooks/06_pipeline.ipynb and ``coursekit report``.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from .ledger import latency_keys

__all__ = ["PARETO_COSTS", "plot_history", "show_images", "pareto_front", "pareto_plots", "task_key", "group_by_task"]


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


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points (cost, accuracy) that no other point beats on both: lower or equal cost and
    higher or equal accuracy, better on one. Sorted by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def task_key(record: dict) -> str:
    """What a record's accuracy is measured on, so that only comparable records share a Pareto front: Part 2's
    ``task`` ("sst2", ...), else the dataset with its class subset when a chapter chose one (06's target classes)."""
    if record.get("task"):
        return str(record["task"])
    classes = (record.get("extra") or {}).get("target_classes")
    return f"{record['dataset']}[{','.join(classes)}]" if classes else str(record["dataset"])


def group_by_task(records: list[dict]) -> dict[str, list[dict]]:
    """{task_key: records with an accuracy}, in order of first appearance (records without accuracy, such as a
    language model's perplexity records, have no accuracy front and are left out)."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        if r.get("accuracy") is not None:
            groups.setdefault(task_key(r), []).append(r)
    return groups


PARETO_COSTS = ("params", "macs", "latency", "size")


def pareto_plots(records: list[dict], front_of: list[dict] | None = None, label_front: bool = True,
                 per: str = "image", costs=("macs", "latency", "size")):
    """Test accuracy against costs, one panel per cost in ``costs`` (of PARETO_COSTS: parameters, MACs, CPU latency at
    the largest ``cpu_b*`` batch, gzip size), one point per ledger record with an accuracy, coloured by notebook, the
    Pareto front drawn as a step line.
    ``front_of``: the records (some of ``records``) the front is computed over, default all; records of different
    tasks should not share one front. ``label_front``: write the model name beside each point of the front.
    Returns the figure (log-scale costs)."""
    unknown = [c for c in costs if c not in PARETO_COSTS]
    if unknown or not costs:
        raise ValueError(f"costs: {list(costs)!r} is not allowed; choose from {', '.join(PARETO_COSTS)}")
    recs = [r for r in records if r.get("accuracy") is not None]
    front_ids = {id(r) for r in (recs if front_of is None else front_of)}
    lat = next((k for k in reversed(latency_keys(recs)) if k.startswith("cpu_b")), None)  # the largest CPU batch
    panels = {"params": ("parameters", lambda r: r["params"]), "macs": (f"MACs per {per}", lambda r: r["macs"]),
              "size": ("size, gzip (bytes)", lambda r: r["size_gzip_bytes"])}
    if lat:
        panels["latency"] = (f"CPU latency {lat.replace('cpu_', '')} (ms)", lambda r: r["latency_ms"].get(lat))
    costs = [panels[c] for c in costs if c in panels]
    fig, axes = plt.subplots(1, len(costs), figsize=(5.2 * len(costs), 4), squeeze=False)
    books = sorted({r["notebook"] for r in recs})
    for ax, (label, cost) in zip(axes[0], costs, strict=True):
        pts = [(cost(r), r["accuracy"], r) for r in recs if cost(r)]
        for k, book in enumerate(books):
            mine = [(c, a) for c, a, r in pts if r["notebook"] == book]
            ax.scatter([c for c, _ in mine], [a for _, a in mine], s=18, color=f"C{k}", label=book, alpha=0.8)
        candidates = [p for p in pts if id(p[2]) in front_ids]
        front = [candidates[i] for i in pareto_front([(c, a) for c, a, _ in candidates])]
        ax.step([c for c, _, _ in front], [a for _, a, _ in front], where="post", color="k", lw=0.8, label="Pareto front")
        for c, a, r in front if label_front else ():
            ax.annotate(r["model"], (c, a), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set(xscale="log", xlabel=label, ylabel="test accuracy")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig
