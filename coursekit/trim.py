"""Layer trimming: remove whole residual blocks from a ResNet and measure what each one was worth.

A residual block computes ``x + f(x)``; deleting it leaves ``x``, which the next block already
knows how to read, so a ResNet degrades gracefully (Veit et al. 2016: residual networks behave
like ensembles of shallower paths). Blocks that change the shape (stride 2 or a new channel
count) cannot simply go: ``remove_blocks`` refuses them unless asked to keep their shortcut
projection in their place. A model without shortcuts can declare its shape-keeping blocks itself
(``trimmable_blocks()``, as ``coursekit.kws.DSCNN`` does): removing one of those removes its whole path, so it
costs more than a residual block and needs recovery (notebooks/13_speech_capstone.ipynb).

Block importance, one signature ``fn(model, batches, names) -> {name: score}`` (larger = more
important): ``ablation_importance`` (accuracy drop when the block becomes the identity),
``angular_importance`` (angular distance between the block's input and output, Gromov et al.
2024) and ``influence_importance`` (Block Influence, 1 - cosine similarity, Men et al. 2024, ShortGPT).

A trimmed model is saved and loaded with ``coursekit.checkpoints.save_checkpoint`` / ``load_checkpoint``:
the removed blocks are recorded with the weights. Introduced in notebooks/05_layer_trimming.ipynb.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .models import block_changes_shape, is_residual_block, projection_shortcut, set_module
from .train import evaluate
from .validate import integer

__all__ = [
    "residual_blocks", "trimmable_blocks", "removable_blocks", "remove_blocks", "validate_blocks_to_remove", "blocks_to_drop",
    "angular_distance", "block_influence", "block_io", "ablation_importance", "angular_importance",
    "influence_importance", "BLOCK_IMPORTANCE",
]


def residual_blocks(model: nn.Module) -> list[str]:
    """Names of every residual block (coursekit BasicBlock or torchvision BasicBlock), in forward order."""
    return [n for n, m in model.named_modules() if is_residual_block(m)]


def trimmable_blocks(model: nn.Module) -> list[str]:
    """The blocks trimming may consider, in forward order: the ones a model declares itself (a
    ``trimmable_blocks()`` method, e.g. ``coursekit.kws.DSCNN``'s shape-keeping depthwise-separable blocks, which
    have no shortcut: removing one removes its whole path), else every residual block."""
    if hasattr(model, "trimmable_blocks"):
        return list(model.trimmable_blocks())
    return residual_blocks(model)


def _changes_shape(model: nn.Module, name: str) -> bool:
    block = model.get_submodule(name)
    return is_residual_block(block) and block_changes_shape(block)  # a declared non-residual block keeps its shape


def removable_blocks(model: nn.Module) -> list[str]:
    """The blocks whose output has their input's shape: replacing them by ``nn.Identity`` keeps the network valid."""
    return [n for n in trimmable_blocks(model) if not _changes_shape(model, n)]


def remove_blocks(model: nn.Module, names, *, downsampling: str = "error") -> nn.Module:
    """A copy of ``model`` with the blocks ``names`` removed (each replaced by ``nn.Identity``).

    downsampling: what to do with a named block that changes the shape: "error" (default) raises;
    "projection" keeps only its shortcut projection (1x1 conv + BN, which does the stride and the
    channel change), so the network stays valid with most of the block's cost gone.
    ``model`` itself is not changed. Unknown or repeated names raise ValueError before any change.
    """
    names = list(names)
    blocks = trimmable_blocks(model)
    unknown = [n for n in names if n not in blocks]
    if unknown:
        raise ValueError(f"blocks: the model has no block(s) {unknown}; blocks: {', '.join(blocks)}")
    if len(set(names)) != len(names):
        raise ValueError(f"blocks: {names} names a block twice")
    if downsampling not in ("error", "projection"):
        raise ValueError(f"downsampling: {downsampling!r} is not allowed; use error, projection")
    shaped = [n for n in names if _changes_shape(model, n)]
    if shaped and downsampling == "error":
        raise ValueError(f"blocks: {shaped} change the tensor's shape (stride or channels) and cannot be replaced by the "
                         f"identity; removable blocks: {', '.join(removable_blocks(model))} "
                         "(or pass downsampling='projection' to keep only their shortcut projection)")
    new = copy.deepcopy(model)
    for n in names:
        block = new.get_submodule(n)
        if n in shaped:
            proj = projection_shortcut(block)
            if proj is None:
                raise ValueError(f"blocks: {n} changes the shape but has no projection to keep")
            set_module(new, n, proj)
        else:
            set_module(new, n, nn.Identity())
    return new


def validate_blocks_to_remove(k, model: nn.Module) -> int:
    """``k`` when it is an integer from 0 to the number of removable blocks, else ValueError naming the parameter."""
    n = len(removable_blocks(model))
    return integer("blocks_to_remove", k, lo=0, hi=n,
                   allowed=f"an integer from 0 to {n} (the removable blocks: {', '.join(removable_blocks(model))})")


def blocks_to_drop(scores: dict[str, float], k: int, allowed) -> list[str]:
    """The ``k`` least important names among ``allowed`` (lowest score first)."""
    allowed = [n for n in allowed if n in scores]
    if not 0 <= k <= len(allowed):
        raise ValueError(f"blocks_to_remove: {k} is not allowed; use 0 to {len(allowed)}")
    return sorted(allowed, key=lambda n: scores[n])[:k]


# ----------------------------------------------------------------------------- similarity scores

def _cosine_per_position(x_in: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the channel vectors at every position: (N, C, H, W) x2 -> (N*H*W,)."""
    if x_in.shape != x_out.shape:
        raise ValueError(f"input and output shapes differ: {tuple(x_in.shape)} vs {tuple(x_out.shape)}")
    a = x_in.float().flatten(2).transpose(1, 2).reshape(-1, x_in.shape[1])
    b = x_out.float().flatten(2).transpose(1, 2).reshape(-1, x_out.shape[1])
    return nn.functional.cosine_similarity(a, b, dim=1, eps=1e-8)


def angular_distance(x_in: torch.Tensor, x_out: torch.Tensor) -> float:
    """arccos(cos(x_in, x_out)) / pi averaged over images and positions, in [0, 1] (Gromov et al. 2024).

    x_in, x_out: (N, C, H, W) input and output of a block; each position's C-vector is compared, as a
    transformer compares the hidden state of each token. 0 = the block changes nothing's direction.
    """
    cos = _cosine_per_position(x_in, x_out).clamp(-1.0, 1.0)
    return float(torch.arccos(cos).mean() / math.pi)


def block_influence(x_in: torch.Tensor, x_out: torch.Tensor) -> float:
    """Block Influence, 1 - mean cosine similarity of input and output (Men et al. 2024, ShortGPT), in [0, 2]."""
    return float(1.0 - _cosine_per_position(x_in, x_out).mean())


@torch.no_grad()
def block_io(model: nn.Module, batches, names, max_batches: int | None = None) -> dict[str, list]:
    """Run ``model`` (eval mode) over ``batches`` and collect (input, output) of each block in ``names``:
    {name: [(x_in, x_out), ...]} with one pair per batch, on the model's device. Forward hooks, removed after."""
    store = {n: [] for n in names}
    hooks = [model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: store[n].append((i[0].detach(), o.detach())))
             for n in names]
    was = model.training
    model.eval()
    try:
        for b, (x, _) in enumerate(batches):
            if max_batches is not None and b >= max_batches:
                break
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return store


def _similarity_importance(score):
    def importance(model, batches, names=None, max_batches: int | None = 4):
        names = removable_blocks(model) if names is None else list(names)
        io = block_io(model, batches, names, max_batches)
        return {n: sum(score(a, b) * len(a) for a, b in io[n]) / sum(len(a) for a, _ in io[n]) for n in names}

    return importance


angular_importance = _similarity_importance(angular_distance)
angular_importance.__doc__ = "Angular distance between each block's input and output on ``batches`` (larger = more important)."
influence_importance = _similarity_importance(block_influence)
influence_importance.__doc__ = "Block Influence of each block on ``batches`` (larger = more important)."


def ablation_importance(model, batches, names=None, metric=None):
    """Accuracy lost on ``batches`` when each block alone becomes the identity: {name: drop} (larger = more important).

    metric: ``fn(model, batches) -> float`` (default: accuracy without TTA). One full evaluation per block.
    """

    names = removable_blocks(model) if names is None else list(names)
    metric = metric or (lambda m, b: evaluate(m, b)["accuracy"])
    base = metric(model, batches)
    return {n: base - metric(remove_blocks(model, [n]), batches) for n in names}


BLOCK_IMPORTANCE = {"ablation": ablation_importance, "angular": angular_importance, "influence": influence_importance}
