"""Width pruning of a decoder LM, Minitron's width axis (Muralidharan et al. 2024, "Compact Language Models via
Pruning and Knowledge Distillation"): score every MLP neuron and every query head from activations on calibration
text, keep the best in every layer (the same count in each, so the pruned model is again one architecture), heal.

Written for the Llama layout of SmolLM2 (``model.model.layers``; SwiGLU MLP ``down(act(gate(x)) * up(x))``;
grouped-query attention whose query heads ``g * r .. g * r + r - 1`` share key-value head ``g``). Grouped-query
attention does not forbid removing query heads: keeping the same number in every group keeps the sharing
pattern, and the key-value projections are untouched. Introduced in notebooks/10_llm_compression.ipynb.

Importance (the paper's activation-based scores; the aggregation it reports best, L2 over the batch of the mean over
the sequence): a neuron's activation is the value that enters ``down_proj`` (for SwiGLU, the gate times the up
projection), taken as a magnitude; a head's is the L2 norm of its attention output (before ``o_proj``) per token.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .validate import is_int

__all__ = ["width_importance", "prune_width", "neurons_for_equal_params", "attention_heads_per_group"]


def attention_heads_per_group(model: nn.Module) -> tuple[int, int, int]:
    """(key-value heads, query heads per key-value head, head dim) of the model's first attention."""
    att = model.model.layers[0].self_attn
    kv = att.k_proj.out_features // att.head_dim
    return kv, att.q_proj.out_features // att.head_dim // kv, att.head_dim


@torch.no_grad()  # not inference_mode: the scores stay ordinary tensors a caller may edit
def width_importance(model: nn.Module, windows) -> dict:
    """Activation importance of every neuron and query head, layer by layer, from ``windows`` (each (1, L) token
    ids, one calibration sequence each). Returns {"neurons": [(intermediate,) per layer], "heads": [(query heads,)
    per layer]}: sqrt(sum over sequences of (mean over the sequence's tokens of the activation)^2)."""
    if not len(windows):
        raise ValueError("width_importance: windows is empty; give at least one calibration window")
    layers = model.model.layers
    kv, group, hd = attention_heads_per_group(model)
    sums = {"neurons": [0.0] * len(layers), "heads": [0.0] * len(layers)}

    def add(kind, i):
        def hook(_module, args):
            a = args[0].float()  # (B, L, features)
            if kind == "heads":
                a = a.unflatten(-1, (kv * group, hd)).norm(dim=-1)  # (B, L, heads)
            per_sequence = a.abs().mean(dim=1)  # (B, features)
            sums[kind][i] = sums[kind][i] + (per_sequence ** 2).sum(dim=0)
        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(layer.mlp.down_proj.register_forward_pre_hook(add("neurons", i)))
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(add("heads", i)))
    try:
        model.eval()
        for x in windows:
            model(input_ids=x, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return {k: [torch.as_tensor(s).sqrt() for s in v] for k, v in sums.items()}


def neurons_for_equal_params(model: nn.Module, params_to_remove: int, heads_per_group: int) -> int:
    """The MLP width (neurons per layer, same in every layer) that, with ``heads_per_group`` query heads left in
    each key-value group, removes as close to ``params_to_remove`` parameters as whole neurons allow."""
    layers = model.model.layers
    kv, group, hd = attention_heads_per_group(model)
    hidden = layers[0].mlp.down_proj.out_features
    inter = layers[0].mlp.down_proj.in_features
    heads_gone = (group - heads_per_group) * kv * hd * hidden * 2 * len(layers)  # q_proj rows and o_proj columns
    per_neuron = 3 * hidden * len(layers)  # gate and up rows, down column, in every layer
    keep = inter - round((params_to_remove - heads_gone) / per_neuron)
    if not 1 <= keep <= inter:
        raise ValueError(f"params_to_remove: {params_to_remove:,} cannot be met with {heads_per_group} heads per group "
                         f"and 1 to {inter} neurons per layer")
    return keep


def _kept(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(torch.topk(scores, k).indices).values  # the k best, in their original order


def prune_width(model: nn.Module, importance: dict, *, neurons: int, heads_per_group: int) -> nn.Module:
    """A copy of ``model`` with ``neurons`` MLP neurons and ``heads_per_group`` query heads per key-value group left
    in every layer, the ones with the highest ``importance`` (``width_importance``) in each layer and group.
    ``config.intermediate_size`` and ``config.num_attention_heads`` follow (``config.head_dim`` is pinned first, so a
    reload builds the same shapes)."""
    kv, group, hd = attention_heads_per_group(model)
    inter = model.model.layers[0].mlp.down_proj.in_features
    if not is_int(neurons) or not 1 <= neurons <= inter:
        raise ValueError(f"neurons: {neurons!r} is not allowed; use an integer from 1 to {inter}")
    if not is_int(heads_per_group) or not 1 <= heads_per_group <= group:
        raise ValueError(f"heads_per_group: {heads_per_group!r} is not allowed; use an integer from 1 to {group}")
    new = copy.deepcopy(model)
    for i, layer in enumerate(new.model.layers):
        mlp, att = layer.mlp, layer.self_attn
        keep = _kept(importance["neurons"][i], neurons)
        for proj in (mlp.gate_proj, mlp.up_proj):
            _slice_linear(proj, rows=keep)
        _slice_linear(mlp.down_proj, cols=keep)
        mlp.intermediate_size = neurons
        head_scores = importance["heads"][i].reshape(kv, group)
        heads = torch.cat([g * group + _kept(head_scores[g], heads_per_group) for g in range(kv)])
        dims = (heads[:, None] * hd + torch.arange(hd)).flatten()
        _slice_linear(att.q_proj, rows=dims)
        _slice_linear(att.o_proj, cols=dims)
        att.num_key_value_groups = heads_per_group
    new.config.head_dim = hd
    new.config.intermediate_size = neurons
    new.config.num_attention_heads = kv * heads_per_group
    return new


def _slice_linear(linear: nn.Linear, rows=None, cols=None) -> None:
    """Keep ``rows`` (output features) or ``cols`` (input features) of ``linear``, in place."""
    w = linear.weight.data
    if rows is not None:
        linear.weight = nn.Parameter(w[rows].clone())
        if linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias.data[rows].clone())
        linear.out_features = len(rows)
    if cols is not None:
        linear.weight = nn.Parameter(linear.weight.data[:, cols].clone())
        linear.in_features = len(cols)
