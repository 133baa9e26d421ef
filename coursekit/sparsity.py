"""One-shot sparsity for a language model: magnitude and Wanda scores, unstructured and N:M masks.

Wanda (Sun, Liu, Bair, Kolter 2023, *A Simple and Effective Pruning Approach for Large Language Models*) scores
weight W_ij of a linear layer y = x W^T by |W_ij| * ||X_j||_2, the norm of input feature j over the calibration
tokens, and compares weights within each output row (row i keeps its own top fraction). Magnitude pruning is the
same with every ||X_j|| equal. No retraining, no weight update: the masks are applied once through
``torch.nn.utils.prune`` and made permanent. The paper's reference code prunes **layer by layer**: each decoder
layer's input norms are taken on the calibration text as it arrives through the layers already pruned
(``apply_sparsity_layerwise``); ``input_norms`` + ``apply_sparsity`` take every norm on the dense model, in one pass.

N:M sparsity keeps N of every M consecutive weights along the input dimension (2:4 is what NVIDIA's sparse tensor
cores run, on Ampere and newer GPUs). On a CPU a zero is multiplied like any other number: no speedup here.

Introduced in notebooks/10_llm_compression.ipynb.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .llm import change_layers_in_order
from .validate import fraction

__all__ = ["SPARSITY_METHODS", "validate_sparsity_args", "parse_pattern", "wanda_scores", "magnitude_scores", "unstructured_mask",
           "nm_mask", "sparsity_mask", "input_norms", "prunable_linears", "apply_sparsity", "apply_sparsity_layerwise"]



def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """"unstructured" -> None; "N:M" (0 < N < M) -> (N, M). Anything else raises ValueError."""
    if pattern == "unstructured":
        return None
    m = re.fullmatch(r"(\d+):(\d+)", str(pattern))
    if not m or not 0 < int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"pattern: {pattern!r} is not allowed; use 'unstructured' or 'N:M' with 0 < N < M "
                         f"(for example '2:4')")
    return int(m.group(1)), int(m.group(2))


def validate_sparsity_args(sparsity, pattern: str, method: str) -> None:
    """Refuse a sparsity outside [0, 1), an unknown pattern or method, before any work."""
    fraction("sparsity", sparsity)
    parse_pattern(pattern)
    if not callable(method) and method not in SPARSITY_METHODS:
        raise ValueError(f"method: {method!r} is not allowed; use {', '.join(SPARSITY_METHODS)} or a function")


def wanda_scores(weight: torch.Tensor, norms: torch.Tensor | None) -> torch.Tensor:
    """|W| * ||X_j|| broadcast over rows: weight (out, in), norms (in,) -> (out, in). ``norms=None``: magnitude |W|."""
    s = weight.detach().float().abs()
    return s if norms is None else s * norms.float().to(s.device).unsqueeze(0)


def magnitude_scores(weight: torch.Tensor, norms: torch.Tensor | None = None) -> torch.Tensor:
    """|W| (the norms are not used): weight (out, in) -> (out, in)."""
    return wanda_scores(weight, None)


# A sparsity method: fn(weight (out, in), norms (in,) or None) -> scores (out, in), higher = keep; ``norms`` are the
# calibration inputs' ||X_j|| (``input_norms``) when apply_sparsity is given them. Add your own here, or pass the
# function itself as ``method``.
SPARSITY_METHODS = {"magnitude": magnitude_scores, "wanda": wanda_scores}


def unstructured_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep the highest-scoring (1 - sparsity) of each output row (Wanda's per-row comparison group): bool (out, in)."""
    out, inp = scores.shape
    drop = int(round(sparsity * inp))
    mask = torch.ones_like(scores, dtype=torch.bool)
    if drop:
        idx = torch.topk(scores, drop, dim=1, largest=False).indices
        mask.scatter_(1, idx, False)
    return mask


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep the ``n`` highest scores in every group of ``m`` consecutive inputs of each row: bool (out, in)."""
    out, inp = scores.shape
    if inp % m:
        raise ValueError(f"nm_mask: {inp} inputs do not split into groups of {m}")
    groups = scores.reshape(out, inp // m, m)
    keep = torch.topk(groups, n, dim=-1).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, keep, True)
    return mask.reshape(out, inp)


def sparsity_mask(weight: torch.Tensor, norms: torch.Tensor | None, sparsity: float, pattern: str,
                  method=wanda_scores) -> torch.Tensor:
    """The mask of ``weight`` for a pattern: "unstructured" at ``sparsity`` per row, or "N:M" (sparsity is then
    1 - N/M and the argument is not used), from the scores of ``method`` (a SPARSITY_METHODS function; the default
    is Wanda's, which is magnitude when ``norms`` is None)."""
    nm = parse_pattern(pattern)
    scores = method(weight, norms)
    if tuple(scores.shape) != tuple(weight.shape):
        raise ValueError(f"method: returned scores of shape {tuple(scores.shape)} for a weight of shape "
                         f"{tuple(weight.shape)}; a sparsity method returns one score per weight")
    return unstructured_mask(scores, sparsity) if nm is None else nm_mask(scores, *nm)


def prunable_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """The linear layers inside the decoder layers (attention q, k, v, o; MLP gate, up, down): what LLM pruning
    papers sparsify. Embeddings and the output head are left dense."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".layers." in f".{n}"}


def _squared_input_sums(modules: dict[str, nn.Module]) -> tuple[dict, list]:
    """Forward pre-hooks on ``modules`` that add up, over every token they see, the square of each input feature:
    sum_t x_tj^2 (float32). Returns ({name: (in_features,) tensor, None until the module first runs}, the hooks'
    handles: remove them when done). Wanda's norms are the square roots (``input_norms``,
    ``apply_sparsity_layerwise``)."""
    sums = dict.fromkeys(modules)

    def hook(name):
        def add(_module, args):  # returns None: the input is passed on unchanged
            s = args[0].detach().float().reshape(-1, args[0].shape[-1]).pow(2).sum(0)
            sums[name] = s if sums[name] is None else sums[name] + s
        return add

    return sums, [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]


@torch.no_grad()
def input_norms(model: nn.Module, ids: torch.Tensor, *, seq_len: int = 256, names=None) -> dict[str, torch.Tensor]:
    """||X_j||_2 of every input feature j of each linear in ``names`` (default ``prunable_linears``) over the
    calibration tokens ``ids`` (T,), run in windows of ``seq_len`` (float32, no autocast: the norms are exact).
    Returns {name: (in_features,) float32 on the CPU}."""
    names = list(prunable_linears(model)) if names is None else list(names)
    sq, hooks = _squared_input_sums({n: model.get_submodule(n) for n in names})
    model.eval()
    device = next(model.parameters()).device
    try:
        for b in range(0, len(ids) - 1, seq_len):
            model(input_ids=ids[b:b + seq_len].unsqueeze(0).to(device), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    return {n: v.sqrt().cpu() for n, v in sq.items()}


def apply_sparsity(model: nn.Module, *, method: str, sparsity: float = 0.5, pattern: str = "unstructured",
                   norms: dict[str, torch.Tensor] | None = None) -> dict:
    """Prune every ``prunable_linears`` weight of ``model`` in place, one shot, with ``torch.nn.utils.prune``
    (``custom_from_mask`` then ``remove``: the zeros become ordinary weights). ``method``: a name in SPARSITY_METHODS
    ("magnitude"; "wanda", which needs ``norms`` from ``input_norms``) or a function with their signature (given the
    norms when there are any). Returns {"zeros", "total", "sparsity"} over the pruned weights."""
    validate_sparsity_args(sparsity, pattern, method)
    if method == "wanda" and norms is None:
        raise ValueError("apply_sparsity: method 'wanda' needs norms (coursekit.sparsity.input_norms)")
    score = method if callable(method) else SPARSITY_METHODS[method]
    zeros = total = 0
    for name, lin in prunable_linears(model).items():
        layer_norms = None if score is magnitude_scores or norms is None else norms[name]
        z, t = _prune_linear(lin, layer_norms, sparsity, pattern, score)
        zeros, total = zeros + z, total + t
    return {"zeros": zeros, "total": total, "sparsity": zeros / max(total, 1)}


def _prune_linear(lin: nn.Linear, norms, sparsity: float, pattern: str, score) -> tuple[int, int]:
    """Zero ``lin``'s weights by ``sparsity_mask`` through ``torch.nn.utils.prune`` (made permanent at once).
    Returns (weights zeroed, weights in the layer)."""
    mask = sparsity_mask(lin.weight, norms, sparsity, pattern, score)
    torch_prune.custom_from_mask(lin, "weight", mask.to(lin.weight.device))
    torch_prune.remove(lin, "weight")
    return int((~mask).sum()), mask.numel()


@torch.no_grad()
def apply_sparsity_layerwise(model: nn.Module, ids: torch.Tensor, *, method="wanda", sparsity: float = 0.5,
                             pattern: str = "unstructured", seq_len: int = 256) -> dict:
    """Prune ``model``'s decoder layers in order, as Wanda's reference code does (``llm.change_layers_in_order``):
    each layer's input norms are taken on the calibration tokens ``ids`` (T,), run in windows of ``seq_len``, as they
    arrive from the layers already pruned; the layer is pruned (``sparsity_mask`` of ``method``, as
    ``apply_sparsity``), and its pruned outputs become the next layer's inputs. Float32, no autocast. Returns
    {"zeros", "total", "sparsity"}."""
    validate_sparsity_args(sparsity, pattern, method)
    score = method if callable(method) else SPARSITY_METHODS[method]

    def prune_layer(layer, inputs):
        linears = {n: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
        sq, hooks = _squared_input_sums(linears)
        try:
            for hidden, kwargs in inputs:
                layer(hidden, **kwargs)
        finally:
            for h in hooks:
                h.remove()
        counts = [_prune_linear(lin, None if score is magnitude_scores else sq[n].sqrt(), sparsity, pattern, score)
                  for n, lin in linears.items()]
        return sum(z for z, _ in counts), sum(t for _, t in counts)

    counts = change_layers_in_order(model, ids, prune_layer, seq_len=seq_len)
    zeros, total = sum(z for z, _ in counts), sum(t for _, t in counts)
    return {"zeros": zeros, "total": total, "sparsity": zeros / max(total, 1)}
