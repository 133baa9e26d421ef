"""Which transformer layers can go: Block Influence and angular distance of each layer on held-out text.

A layer maps hidden states x_in (N, L, H) to x_out; when x_out points where x_in pointed, the layer changed
little and removing it (the residual stream then carries x_in on) should cost little.

* Block Influence (Men et al. 2024, *ShortGPT*): BI = 1 - mean over tokens of cos(x_in, x_out), in [0, 2].
* Angular distance of one layer: arccos(cos(x_in, x_out)) / pi averaged over tokens, in [0, 1]. Per token it is a
  monotone function of the same cosine as BI, so the two nearly agree; averaged over tokens they can rank layers
  differently (the mean of arccos is not arccos of the mean cosine).
* Gromov et al. 2024 (*The Unreasonable Ineffectiveness of the Deeper Layers*) score a **block** of n consecutive
  layers l..l+n-1 by the angular distance between the block's input x^(l) and its output x^(l+n) at the **last
  token** of each sequence, and remove, for each n, the block with the smallest distance ("angular_block").

Both are computed from forward hooks on the layer modules themselves (the input is the layer's first argument,
its output the first element of what it returns), so they serve a BERT encoder (09) and a Llama decoder (10)
alike, padding excluded through the mask the caller returns. Part 1's ``coursekit.trim`` has the CNN version.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn

from .validate import integer

__all__ = ["LAYER_CRITERIA", "layer_similarity", "layers_by_criterion", "validate_layers_removed", "block_angular",
           "lowest_scores", "last_layers", "last_before_final", "best_block", "first_output"]



def first_output(x):
    """A layer's output tensor: ``x``, or its first element when the layer returns a tuple (hidden states first, as
    transformers' decoder and encoder layers do)."""
    return x[0] if isinstance(x, (tuple, list)) else x


def _token_cosines(x_in: torch.Tensor, x_out: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """cos(x_in, x_out) of every real token, clamped to [-1, 1]: (N, L, H) x2 and mask (N, L) or None -> (tokens,)."""
    a, b = x_in.float(), x_out.float()
    if mask is not None:
        a, b = a[mask.bool()], b[mask.bool()]
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-8).clamp(-1, 1)


def _last_tokens(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The hidden state of each sequence's last real token: (N, L, H) and mask (N, L) or None -> (N, H). Padding is
    on the right (every position after a sequence's last real token)."""
    if mask is None:
        return x[:, -1]
    last = mask.long().sum(1) - 1
    return x[torch.arange(x.shape[0], device=x.device), last]


@torch.no_grad()
def layer_similarity(layers: Sequence[nn.Module], run: Callable, inputs: Iterable) -> dict:
    """Every layer's Block Influence and angular distance (averaged over real tokens) and Gromov et al.'s block
    distances, from one pass over ``inputs``.

    run(batch) runs the whole model on one item of ``inputs`` and returns the (N, L) mask of real tokens (or None
    when every position is real). Returns {"block_influence": [...], "angular": [...], "tokens": n,
    "block_angular": {n: [d(l, n) for l in 0..L-n]} (angular distance between the input of layer l and the output of
    layer l+n-1 at each sequence's last real token, averaged over sequences), "sequences": count}.
    """
    n = len(layers)
    sums = {"block_influence": [0.0] * n, "angular": [0.0] * n}
    blocks = {w: [0.0] * (n - w + 1) for w in range(1, n)}
    state: dict = {"ins": [None] * n, "outs": [None] * n}
    hooks = []
    for i, layer in enumerate(layers):
        def hook(module, args, kwargs, output, i=i):
            x_in = args[0] if args else kwargs["hidden_states"]
            state["ins"][i], state["outs"][i] = x_in.detach(), first_output(output).detach()
        hooks.append(layer.register_forward_hook(hook, with_kwargs=True))
    tokens = sequences = 0
    try:
        for batch in inputs:
            mask = run(batch)
            for i in range(n):
                cos = _token_cosines(state["ins"][i], state["outs"][i], mask)
                sums["block_influence"][i] += float((1 - cos).sum())
                sums["angular"][i] += float(torch.arccos(cos).sum() / math.pi)
            tokens += len(cos)
            # x^(0..n): the input of every layer, then the last layer's output; at each sequence's last real token
            bounds = [_last_tokens(state["ins"][i], mask) for i in range(n)] + [_last_tokens(state["outs"][-1], mask)]
            for w, row in blocks.items():
                for start in range(n - w + 1):
                    cos = _token_cosines(bounds[start], bounds[start + w], None)
                    row[start] += float(torch.arccos(cos).sum() / math.pi)
            sequences += len(bounds[0])
    finally:
        for h in hooks:
            h.remove()
    if tokens == 0:
        raise ValueError("layer_similarity: no tokens were seen (empty inputs or an all-padding mask)")
    out = {k: [v / tokens for v in vals] for k, vals in sums.items()}
    out["block_angular"] = {w: [v / sequences for v in row] for w, row in blocks.items()}
    return out | {"tokens": tokens, "sequences": sequences}


def block_angular(hidden_in: torch.Tensor, hidden_out: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Angular distance between the input of a block of layers and its output (Gromov et al. 2024):
    hidden_in, hidden_out (N, L, H); mask (N, L) of real tokens or None."""
    return float(torch.arccos(_token_cosines(hidden_in, hidden_out, mask)).mean() / math.pi)


def validate_layers_removed(k, num_layers: int, name: str = "layers_removed") -> int:
    """``k`` layers to remove from ``num_layers``: an integer from 0 to num_layers - 1 (a model keeps one layer).
    ``name``: the parameter named in the error."""
    return integer(name, k, lo=0, hi=num_layers - 1, allowed=f"an integer from 0 to {num_layers - 1} (the model has "
                   f"{num_layers} layers and must keep at least one)")


def _check_scores(criterion: str, scores) -> dict:
    if scores is None:
        raise ValueError(f"layers_by_criterion: {criterion!r} needs the scores from layer_similarity")
    return scores


def lowest_scores(name: str):
    """The layer criterion "remove the k layers with the lowest ``scores[name]``" (layer 0 kept with keep_first)."""
    def criterion(k: int, num_layers: int, scores: dict | None, *, keep_first: bool = False) -> list[int]:
        vals = _check_scores(name, scores)[name]
        candidates = sorted(range(1 if keep_first else 0, num_layers), key=lambda i: vals[i])
        return sorted(candidates[:k])
    criterion.__name__ = f"lowest_{name}"
    return criterion


def last_layers(k: int, num_layers: int, scores: dict | None = None, *, keep_first: bool = False) -> list[int]:
    """The final ``k`` layers, the final one included (needs no scores). Not the papers' baseline: see
    ``last_before_final``."""
    return list(range(num_layers - k, num_layers))


def last_before_final(k: int, num_layers: int, scores: dict | None = None, *, keep_first: bool = False) -> list[int]:
    """The ``k`` layers just before the final one (needs no scores): the baseline of ShortGPT and of Gromov et al.,
    who keep the final layer (it turns the residual stream into predictions)."""
    first = 1 if keep_first else 0
    if k > num_layers - 1 - first:
        raise ValueError(f"layers_removed: {k} layers do not fit between layer {first - 1} and the final layer")
    return list(range(num_layers - 1 - k, num_layers - 1))


def best_block(k: int, num_layers: int, scores: dict | None, *, keep_first: bool = False) -> list[int]:
    """Gromov et al. 2024: the ``k`` consecutive layers l..l+k-1 whose input x^(l) and output x^(l+k) are closest in
    angle at the last token (``scores["block_angular"][k]`` from ``layer_similarity``)."""
    dist = _check_scores("angular_block", scores)["block_angular"][k]
    first = 1 if keep_first else 0
    if k > num_layers - first:
        raise ValueError(f"layers_removed: {k} consecutive layers do not fit after layer {first - 1}")
    start = min(range(first, num_layers - k + 1), key=lambda s: dist[s])
    return list(range(start, start + k))


# A layer criterion: fn(k, num_layers, scores, *, keep_first) -> the k layer indices to remove; ``scores`` is
# layer_similarity's dict (or None for a criterion that needs none). Add your own here, or pass the function itself.
LAYER_CRITERIA = {"block_influence": lowest_scores("block_influence"), "angular": lowest_scores("angular"),
                  "angular_block": best_block, "last_before_final": last_before_final, "last": last_layers}


def layers_by_criterion(criterion, k: int, num_layers: int, scores: dict[str, list[float]] | None = None,
                        *, keep_first: bool = False) -> list[int]:
    """Which ``k`` layers to remove, sorted. ``criterion``: a name in LAYER_CRITERIA ("block_influence" / "angular":
    the k lowest per-layer scores from ``layer_similarity`` (ShortGPT); "angular_block": Gromov et al.'s best block of
    k; "last_before_final": the k before the final layer (the papers' baseline); "last": the final k) or a function
    with their signature.
    keep_first: never remove layer 0 (ShortGPT and Gromov both find the first layer indispensable)."""
    if callable(criterion):
        fn = criterion
    elif criterion in LAYER_CRITERIA:
        fn = LAYER_CRITERIA[criterion]
    else:
        raise ValueError(f"criterion: unknown layer criterion {criterion!r}; allowed: {', '.join(LAYER_CRITERIA)} "
                         "or a function")
    validate_layers_removed(k, num_layers)
    if k == 0:
        return []
    chosen = sorted(int(i) for i in fn(k, num_layers, scores, keep_first=keep_first))
    if len(set(chosen)) != k or not all(0 <= i < num_layers for i in chosen):
        raise ValueError(f"criterion: returned {chosen}; a layer criterion returns {k} distinct indices in "
                         f"0..{num_layers - 1}")
    return chosen
