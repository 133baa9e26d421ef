"""Structured pruning of a BERT encoder: attention heads and FFN neurons removed from the real matrices.

A BERT layer computes, for hidden states x (N, L, H) with h heads of size d (h * d = H for MiniLM: 12 x 32):

    attention:  q, k, v = x W_Q, x W_K, x W_V            W_Q, W_K, W_V: (H, h*d), rows grouped by head
                ctx_j = softmax(q_j k_j^T / sqrt(d)) v_j   one (L, d) context per head j
                out = concat_j(ctx_j) W_O                  W_O: (h*d, H): head j owns columns j*d:(j+1)*d of
                                                            ``attention.output.dense.weight``
    FFN:        gelu(x W_1) W_2                            W_1: (H, F), W_2: (F, H), F = 1536 neurons

Removing head j deletes its d rows from W_Q, W_K, W_V (``nn.Linear`` stores (out, in)) and its d columns from W_O;
removing FFN neuron i deletes row i of W_1 and column i of W_2. The matrices really shrink, so the MACs and the
latency fall, unlike a mask of zeros (chapter 03). Layers may end up with different numbers of heads and
neurons, which a stock config cannot say: ``layer_shapes`` reads them, ``reshape_layers`` rebuilds them before a
checkpoint's ``load_state_dict`` (``coursekit.textmodels.load_text_model`` does both).

Head importance (Michel, Levy, Neubig 2019, *Are Sixteen Heads Really Better than One?*): put a gate xi_j = 1
on each head's context and take I_j = E_x |dL/dxi_j| over held-out text, normalised per layer by its L2 norm.
The magnitude score (the norm of the head's weights) needs no data and is the baseline it is compared with.

Introduced in notebooks/09_transformer_pruning.ipynb.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers.pytorch_utils import prune_linear_layer

from .validate import integer, number

__all__ = ["HEAD_CRITERIA", "FFN_CRITERIA", "encoder_layers", "layer_shapes", "validate_keep_fraction",
           "head_importance", "gradient_head_importance", "magnitude_head_importance", "heads_to_remove",
           "prune_heads", "zero_heads", "ffn_importance", "activation_ffn_importance", "weight_ffn_importance",
           "ffn_to_remove", "prune_ffn", "zero_ffn", "reshape_layers"]


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a TextClassifier (``model.encoder.encoder.layer``) or of a bare BertModel."""
    enc = model.encoder if hasattr(model, "head") else model
    return enc.encoder.layer


def layer_shapes(model: nn.Module) -> list[dict[str, int]]:
    """[{"heads": h, "ffn": F}, ...] per layer: what a pruned model needs beyond its config to be rebuilt."""
    return [{"heads": lay.attention.self.query.out_features // lay.attention.self.attention_head_size,
             "ffn": lay.intermediate.dense.out_features} for lay in encoder_layers(model)]


def validate_keep_fraction(name: str, value, total: int, minimum: int, unit: str) -> int:
    """``value`` (a fraction in (0, 1]) of ``total`` units, rounded, validated: at least ``minimum`` must stay.
    Returns the number kept. Raises ValueError naming the parameter and what is allowed."""
    number(name, value, lo=0, hi=1, lo_open=True, allowed=f"a fraction in (0, 1] of the {total} {unit}")
    kept = round(value * total)
    if kept < minimum:
        raise ValueError(f"{name}: {value!r} keeps {kept} of {total} {unit}, but at least {minimum} must stay "
                         f"(at least one per layer); use a fraction >= {minimum / total:.3f}")
    return kept


# ----------------------------------------------------------------------------- heads

def _head_gate_hooks(model: nn.Module, gates: torch.Tensor) -> list:
    """Multiply each head's context (the input of ``attention.output.dense``, (N, L, h*d)) by ``gates[layer, head]``."""
    hooks = []
    for i, lay in enumerate(encoder_layers(model)):
        d = lay.attention.self.attention_head_size

        def pre(module, args, i=i, d=d):
            ctx = args[0]
            h = ctx.shape[-1] // d
            gated = (ctx.unflatten(-1, (h, d)) * gates[i, :h, None].to(ctx.dtype)).flatten(-2)
            return (gated, *args[1:])

        hooks.append(lay.attention.output.dense.register_forward_pre_hook(pre))
    return hooks


def magnitude_head_importance(model: nn.Module, batches=None, *, max_batches: int | None = None) -> torch.Tensor:
    """Head importance without data: the L2 norm of each head's rows of W_Q, W_K, W_V and its columns of W_O.
    (layers, max heads) float32, -inf for heads a layer no longer has."""
    layers, shapes = encoder_layers(model), layer_shapes(model)
    scores = torch.full((len(layers), max(s["heads"] for s in shapes)), -math.inf)
    for i, lay in enumerate(layers):
        a = lay.attention
        d = a.self.attention_head_size
        h = shapes[i]["heads"]
        sq = sum(lin.weight.detach().float().unflatten(0, (h, d)).pow(2).sum((1, 2))
                 for lin in (a.self.query, a.self.key, a.self.value))
        sq = sq + a.output.dense.weight.detach().float().unflatten(1, (h, d)).pow(2).sum((0, 2))
        scores[i, :h] = sq.sqrt().cpu()
    return scores


def gradient_head_importance(model: nn.Module, batches=None, *, max_batches: int | None = None,
                             normalize: bool = True) -> torch.Tensor:
    """Head importance of Michel et al. 2019: the sum over ``batches`` ((ids, labels), eval mode, no dropout) of
    |dL/dxi| for a gate xi = 1 on each head's context, L the cross-entropy with the labels; then each layer's scores
    divided by their L2 norm (the paper's normalisation; ``normalize=False`` keeps the raw sums).
    (layers, max heads) float32, -inf for heads a layer no longer has."""
    if batches is None:
        raise ValueError("head_importance: the gradient criterion needs batches of (token ids, labels)")
    layers, shapes = encoder_layers(model), layer_shapes(model)
    hmax = max(s["heads"] for s in shapes)
    scores = torch.full((len(layers), hmax), -math.inf)
    device = next(model.parameters()).device
    gates = torch.ones(len(layers), hmax, device=device, requires_grad=True)
    hooks = _head_gate_hooks(model, gates)
    was = model.training
    model.eval()
    total = torch.zeros(len(layers), hmax, device=device)
    try:
        for b, (x, y) in enumerate(batches):
            if max_batches is not None and b >= max_batches:
                break
            loss = nn.functional.cross_entropy(model(x).float(), y)
            (grad,) = torch.autograd.grad(loss, gates)
            total += grad.abs()
    finally:
        for hk in hooks:
            hk.remove()
        model.train(was)
    for i, s in enumerate(shapes):
        row = total[i, : s["heads"]]
        scores[i, : s["heads"]] = (row / row.norm().clamp(min=1e-12) if normalize else row).cpu()
    return scores


# A head criterion: fn(model, batches, *, max_batches) -> (layers, max heads) float32 scores, higher = keep,
# -inf where a layer has no such head. Add your own here, or pass the function itself as ``criterion``.
HEAD_CRITERIA = {"gradient": gradient_head_importance, "magnitude": magnitude_head_importance}


def _criterion(criterion, registry: dict, what: str):
    """The function ``criterion`` names in ``registry``, or ``criterion`` itself when it is callable."""
    if callable(criterion):
        return criterion
    if criterion not in registry:
        raise ValueError(f"criterion: unknown {what} {criterion!r}; allowed: {', '.join(registry)} or a function")
    return registry[criterion]


def head_importance(model: nn.Module, batches=None, criterion="gradient", *, max_batches: int | None = None,
                    normalize: bool = True) -> torch.Tensor:
    """Importance of every head, (layers, max heads) float32; heads a layer no longer has are -inf.

    ``criterion``: a name in HEAD_CRITERIA ("gradient", Michel et al. 2019; "magnitude", no data) or a function with
    their signature. ``normalize`` goes to the gradient criterion (its per-layer L2 normalisation).
    """
    fn = _criterion(criterion, HEAD_CRITERIA, "head importance")
    extra = {"normalize": normalize} if fn is gradient_head_importance else {}
    scores = fn(model, batches, max_batches=max_batches, **extra)
    want = (len(encoder_layers(model)), max(s["heads"] for s in layer_shapes(model)))
    if tuple(scores.shape) != want:
        raise ValueError(f"criterion: returned scores of shape {tuple(scores.shape)}; a head criterion returns "
                         f"(layers, max heads) = {want}")
    return scores


def heads_to_remove(scores: torch.Tensor, keep: int) -> dict[int, list[int]]:
    """The least important heads, ranked globally across layers, so that ``keep`` heads stay and every layer keeps
    at least one (its best). scores: (layers, heads) with -inf for heads already gone. Returns {layer: [heads]}."""
    n_layers = scores.shape[0]
    alive = torch.isfinite(scores)
    total = int(alive.sum())
    if not n_layers <= keep <= total:
        raise ValueError(f"keep: {keep} heads is not allowed; use {n_layers} (one per layer) to {total}")
    protected = {(i, int(scores[i].argmax())) for i in range(n_layers)}
    order = sorted((float(scores[i, j]), i, j) for i in range(n_layers) for j in range(scores.shape[1])
                    if alive[i, j] and (i, j) not in protected)
    out: dict[int, list[int]] = {}
    for _, i, j in order[: total - keep]:
        out.setdefault(i, []).append(j)
    return {i: sorted(v) for i, v in sorted(out.items())}


def _validate_units(model: nn.Module, units: dict[int, list[int]], part: str, what: str, name: str) -> list[dict]:
    """Refuse indices that do not exist, repeat, or would empty a layer: ``part`` is the layer_shapes key ("heads" or
    "ffn"), ``what`` the units in words, ``name`` the argument named in the error. Returns layer_shapes(model)."""
    shapes = layer_shapes(model)
    for i, idx in units.items():
        if not 0 <= i < len(shapes):
            raise ValueError(f"{name}: layer {i} does not exist; the model has layers 0 to {len(shapes) - 1}")
        n = shapes[i][part]
        if len(set(idx)) != len(idx) or any(not 0 <= j < n for j in idx):
            raise ValueError(f"{name}: layer {i}: {idx!r} are not distinct {what} indices from 0 to {n - 1}")
        if len(idx) >= n:
            raise ValueError(f"{name}: layer {i} would lose all of its {n} {what}; remove at most {n - 1} "
                             f"(remove the whole layer instead)")
    return shapes


def prune_heads(model: nn.Module, heads: dict[int, list[int]]) -> nn.Module:
    """Remove heads in place: {layer: [head indices in the layer's current numbering]}. Q, K, V lose the heads'
    rows, the output projection their columns; the layer's ``num_attention_heads`` and ``all_head_size`` follow.
    Refuses to empty a layer. Returns ``model``."""
    shapes = _validate_units(model, heads, "heads", "heads", "heads")
    for i, hs in heads.items():
        if not hs:
            continue
        att = encoder_layers(model)[i].attention
        d, h = att.self.attention_head_size, shapes[i]["heads"]
        kept_heads = [j for j in range(h) if j not in set(hs)]
        index = torch.tensor([j * d + t for j in kept_heads for t in range(d)], dtype=torch.long)
        for name in ("query", "key", "value"):
            setattr(att.self, name, prune_linear_layer(getattr(att.self, name), index, dim=0))
        att.output.dense = prune_linear_layer(att.output.dense, index, dim=1)
        att.self.num_attention_heads = len(kept_heads)
        att.self.all_head_size = len(kept_heads) * d
    return model


@torch.no_grad()
def zero_heads(model: nn.Module, heads: dict[int, list[int]]) -> nn.Module:
    """Zero the heads' columns of the output projection in place (the heads still run, but add nothing): what
    ``prune_heads`` must reproduce exactly. Returns ``model``."""
    _validate_units(model, heads, "heads", "heads", "heads")
    for i, hs in heads.items():
        dense = encoder_layers(model)[i].attention.output.dense
        d = encoder_layers(model)[i].attention.self.attention_head_size
        for j in hs:
            dense.weight[:, j * d:(j + 1) * d] = 0
    return model


# ----------------------------------------------------------------------------- FFN neurons

def weight_ffn_importance(model: nn.Module, batches=None, *, pad_id: int = 0,
                          max_batches: int | None = None) -> list[torch.Tensor]:
    """FFN-neuron importance without data: ||W_1[i, :]|| x ||W_2[:, i]||, one (F_layer,) float32 tensor per layer."""
    layers = encoder_layers(model)
    return [lay.intermediate.dense.weight.detach().float().norm(dim=1).cpu()
            * lay.output.dense.weight.detach().float().norm(dim=0).cpu() for lay in layers]


def activation_ffn_importance(model: nn.Module, batches=None, *, pad_id: int = 0,
                              max_batches: int | None = None) -> list[torch.Tensor]:
    """FFN-neuron importance on data: mean |gelu(x W_1)_i| over the real tokens of ``batches`` times ||W_2[:, i]||
    (how much the neuron, as it fires on real text, can move the output); one (F_layer,) tensor per layer."""
    layers = encoder_layers(model)
    out_norm = [lay.output.dense.weight.detach().float().norm(dim=0).cpu() for lay in layers]
    if batches is None:
        raise ValueError("ffn_importance: the activation criterion needs batches of token ids")
    sums = [torch.zeros(lay.intermediate.dense.out_features) for lay in layers]
    count = [0]
    mask_box: list[torch.Tensor] = []
    hooks = []
    for i, lay in enumerate(layers):
        def hook(module, args, output, i=i):
            m = mask_box[0].unsqueeze(-1).to(output.dtype)
            sums[i] += (output.abs() * m).sum((0, 1)).float().cpu()
        hooks.append(lay.intermediate.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for b, (x, _) in enumerate(batches):
                if max_batches is not None and b >= max_batches:
                    break
                mask_box[:] = [x.ne(pad_id)]
                count[0] += int(mask_box[0].sum())
                model(x)
    finally:
        for hk in hooks:
            hk.remove()
        model.train(was)
    return [s / max(count[0], 1) * o for s, o in zip(sums, out_norm, strict=True)]


# An FFN criterion: fn(model, batches, *, pad_id, max_batches) -> one (F_layer,) float32 tensor per layer, higher =
# keep. Add your own here, or pass the function itself as ``criterion``.
FFN_CRITERIA = {"activation": activation_ffn_importance, "weight": weight_ffn_importance}


def ffn_importance(model: nn.Module, batches=None, criterion="activation", *, pad_id: int = 0,
                   max_batches: int | None = None) -> list[torch.Tensor]:
    """Importance of every FFN neuron, one (F_layer,) float32 tensor per layer. ``criterion``: a name in
    FFN_CRITERIA ("activation", "weight") or a function with their signature."""
    fn = _criterion(criterion, FFN_CRITERIA, "FFN importance")
    scores = list(fn(model, batches, pad_id=pad_id, max_batches=max_batches))
    want = [lay.intermediate.dense.out_features for lay in encoder_layers(model)]
    if [tuple(t.shape) for t in scores] != [(f,) for f in want]:
        raise ValueError(f"criterion: returned {[tuple(t.shape) for t in scores]}; an FFN criterion returns one "
                         f"(F_layer,) tensor per layer, here {want}")
    return scores


def ffn_to_remove(scores: list[torch.Tensor], keep: int) -> dict[int, list[int]]:
    """The ``F - keep`` least important neurons of every layer (the same width everywhere, so each layer's matrices
    stay the same size and the latency stays predictable). Returns {layer: [neuron indices]}."""
    smallest = min(len(s) for s in scores)
    integer("keep", keep, lo=1, hi=smallest, allowed=f"1 to {smallest} FFN neurons per layer")
    return {i: sorted(torch.argsort(s)[: len(s) - keep].tolist()) for i, s in enumerate(scores)}


def prune_ffn(model: nn.Module, neurons: dict[int, list[int]]) -> nn.Module:
    """Remove FFN neurons in place: {layer: [neuron indices]} leave W_1's rows (and bias) and W_2's columns.
    Refuses to remove every neuron of a layer. Returns ``model``."""
    _validate_units(model, neurons, "ffn", "FFN neurons", "neurons")
    for i, ns in neurons.items():
        if not ns:
            continue
        lay = encoder_layers(model)[i]
        gone = set(ns)
        index = torch.tensor([j for j in range(lay.intermediate.dense.out_features) if j not in gone], dtype=torch.long)
        lay.intermediate.dense = prune_linear_layer(lay.intermediate.dense, index, dim=0)
        lay.output.dense = prune_linear_layer(lay.output.dense, index, dim=1)
    return model


@torch.no_grad()
def zero_ffn(model: nn.Module, neurons: dict[int, list[int]]) -> nn.Module:
    """Zero the neurons' columns of W_2 in place (they still fire, but add nothing). Returns ``model``."""
    _validate_units(model, neurons, "ffn", "FFN neurons", "neurons")
    for i, ns in neurons.items():
        encoder_layers(model)[i].output.dense.weight[:, ns] = 0
    return model


def reshape_layers(model: nn.Module, shapes: list[dict[str, int]]) -> nn.Module:
    """Give each layer of a freshly built model the head count and FFN width in ``shapes`` (from ``layer_shapes``),
    with new, uninitialised matrices of those sizes, so that a pruned checkpoint's ``load_state_dict`` fits.
    Returns ``model``."""
    layers = encoder_layers(model)
    if len(shapes) != len(layers):
        raise ValueError(f"shapes: {len(shapes)} layer shapes for a model with {len(layers)} layers")
    for lay, s in zip(layers, shapes, strict=True):
        att = lay.attention
        d = att.self.attention_head_size
        width = s["heads"] * d
        for name in ("query", "key", "value"):
            old = getattr(att.self, name)
            setattr(att.self, name, nn.Linear(old.in_features, width, device=old.weight.device))
        att.output.dense = nn.Linear(width, att.output.dense.out_features, device=att.output.dense.weight.device)
        att.self.num_attention_heads, att.self.all_head_size = s["heads"], width
        hidden = lay.intermediate.dense.in_features
        lay.intermediate.dense = nn.Linear(hidden, s["ffn"], device=lay.intermediate.dense.weight.device)
        lay.output.dense = nn.Linear(s["ffn"], hidden, device=lay.output.dense.weight.device)
    return model
