"""Pruning: zero weights (unstructured, with masks) or remove whole channels (structured).

Unstructured (notebooks/03_pruning_unstructured.ipynb): masks are torch.nn.utils.prune's
(``weight = weight_orig * weight_mask`` recomputed by a forward pre-hook), chosen by weight
magnitude (Han et al. 2015) per layer or globally, raised gradually during training with
the AGP schedule (Zhu & Gupta 2017), and made permanent with ``make_permanent``.

Structured (notebooks/04_pruning_structured.ipynb): ``channel_groups`` finds the channels of a
ResNet that can be removed together, importance functions score them (L1 norm of filters,
Li et al. 2017; BatchNorm scale, Liu et al. 2017; random as the control), and
``prune_channels`` returns a new, ordinary, smaller network without masks. Such a model is
saved and loaded with ``coursekit.checkpoints.save_checkpoint`` / ``load_checkpoint``, which
rebuild it from the tensor shapes.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import prune

from .models import projection_shortcut, stem_conv_bn
from .surgery import prune_conv_bn, prune_depthwise, prune_in_channels
from .validate import fraction

__all__ = [
    "magnitude_mask", "global_threshold", "macs_if_zeros_skipped", "prunable_layers", "prune_by_magnitude",
    "update_masks", "detach_masked_weights",
    "make_permanent", "sparsity_report", "sparse_state_dict_bytes", "agp_sparsity", "AGPSchedule", "sensitivity_scan",
    "l1_filter_importance", "bn_scale_importance", "random_importance", "IMPORTANCE",
    "ChannelGroup", "channel_groups", "prune_conv_bn", "prune_in_channels", "prune_channels",
    "channels_to_keep", "ratios_from_sensitivity", "validate_fraction",
]


def validate_fraction(name: str, value) -> float:
    """``value`` as a float when it is a number in [0, 1), else ValueError naming ``name`` (a sparsity or ratio)."""
    return fraction(name, value)


# ----------------------------------------------------------------------------- unstructured

def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Mask of ``weight``'s shape: 0 for the ``round(sparsity * numel)`` smallest |w|, 1 elsewhere.

    Same rule (and same choice among ties) as ``torch.nn.utils.prune.l1_unstructured``.
    """
    sparsity = validate_fraction("sparsity", sparsity)
    k = round(sparsity * weight.numel())
    mask = torch.ones(weight.numel(), dtype=weight.dtype, device=weight.device)
    if k:
        mask[torch.topk(weight.detach().abs().flatten(), k, largest=False).indices] = 0
    return mask.view(weight.shape)


def global_threshold(weights, sparsity: float) -> float:
    """The magnitude below which ``sparsity`` of all the weights in ``weights`` (tensors) fall."""
    sparsity = validate_fraction("sparsity", sparsity)
    flat = torch.cat([w.detach().abs().flatten() for w in weights])
    k = round(sparsity * flat.numel())
    return float(torch.kthvalue(flat, k).values) if k else 0.0


def prunable_layers(model: nn.Module, *, keep_first_and_last: bool = True) -> dict[str, nn.Module]:
    """The Conv2d and Linear layers whose weights may be pruned, by name.

    With ``keep_first_and_last`` the first convolution (it sees the 3 colour channels: few weights,
    everything downstream depends on it) and the last Linear (each weight feeds a logit directly)
    stay dense, the usual choice (Han et al. 2015; Zhu & Gupta 2017).
    """
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    if keep_first_and_last and layers:
        names = list(layers)
        first_conv = next((n for n in names if isinstance(layers[n], nn.Conv2d)), None)
        last_linear = [n for n in names if isinstance(layers[n], nn.Linear)][-1:]
        for n in [first_conv, *last_linear]:
            layers.pop(n, None)
    return layers


def _resolve_layers(model: nn.Module, layers) -> dict[str, nn.Module]:
    if layers is None:
        return prunable_layers(model)
    modules = dict(model.named_modules())
    unknown = [n for n in layers if n not in modules]
    if unknown:
        prunable = ", ".join(prunable_layers(model, keep_first_and_last=False))
        raise ValueError(f"layers: the model has no layer(s) {unknown}; prunable: {prunable}")
    return {n: modules[n] for n in layers}


def prune_by_magnitude(model: nn.Module, sparsity: float, *, scope: str = "layer", layers=None) -> nn.Module:
    """Attach magnitude masks to ``model`` in place with torch.nn.utils.prune and return it.

    scope: "layer" prunes ``sparsity`` of every layer (l1_unstructured); "global" prunes
    ``sparsity`` of all the layers' weights together (global_unstructured), so layers with
    many small weights lose more. layers: names (default ``prunable_layers``).
    """
    sparsity = validate_fraction("sparsity", sparsity)
    if scope not in ("layer", "global"):
        raise ValueError(f"scope: {scope!r} is not allowed; use layer, global")
    chosen = _resolve_layers(model, layers)
    # torch's pruning methods view the weight as 1-D, which fails for channels_last weights
    model.to(memory_format=torch.contiguous_format)
    if scope == "layer":
        for m in chosen.values():
            prune.l1_unstructured(m, "weight", amount=sparsity)
    else:
        prune.global_unstructured([(m, "weight") for m in chosen.values()], prune.L1Unstructured, amount=sparsity)
    return detach_masked_weights(model)


@torch.no_grad()
def detach_masked_weights(model: nn.Module) -> nn.Module:
    """Recompute every masked ``weight`` (``weight_orig * weight_mask``) outside autograd, in place.

    torch's pruning leaves ``weight`` as the result of a multiplication with a gradient history
    (after ``prune.*`` or a training step), and such a module cannot be ``copy.deepcopy``-ed; the
    next forward pass recomputes it anyway. Returns ``model``.
    """
    for m in model.modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                name = hook._tensor_name
                setattr(m, name, getattr(m, name + "_orig") * getattr(m, name + "_mask"))
    return model


@torch.no_grad()
def update_masks(model: nn.Module, sparsity: float, *, scope: str = "layer", layers=None) -> None:
    """Set the masks of already-masked layers to ``sparsity`` (of the current masked weights), in place.

    The parameters stay the same objects, so this can run inside training (AGP). Pruned
    weights are zero in the masked weight, so they stay pruned as the sparsity rises.
    Layers without a mask get one (identity first).
    """
    sparsity = validate_fraction("sparsity", sparsity)
    chosen = _resolve_layers(model, layers)
    for m in chosen.values():
        if not prune.is_pruned(m) or not hasattr(m, "weight_mask"):
            prune.identity(m, "weight")
    effective = {n: m.weight_orig * m.weight_mask for n, m in chosen.items()}
    if scope == "global":
        n_prune = round(sparsity * sum(w.numel() for w in effective.values()))
        # ties at the threshold: keep the count exact, as global_unstructured does
        flat = torch.cat([w.abs().flatten() for w in effective.values()])
        keep = torch.ones_like(flat)
        if n_prune:
            keep[torch.topk(flat, n_prune, largest=False).indices] = 0
        offset = 0
        for n, m in chosen.items():
            size = effective[n].numel()
            m.weight_mask.copy_(keep[offset:offset + size].view(m.weight_mask.shape))
            offset += size
    elif scope == "layer":
        for n, m in chosen.items():
            m.weight_mask.copy_(magnitude_mask(effective[n], sparsity))
    else:
        raise ValueError(f"scope: {scope!r} is not allowed; use layer, global")
    detach_masked_weights(model)  # what the pre-hook would compute at the next forward


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every mask into its weight (torch.nn.utils.prune.remove): the zeros stay, the hooks go."""
    for m in model.modules():
        for hook in list(m._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(m, hook._tensor_name)
    return model


def sparse_state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save`` of the state dict with every weight that has zeros stored in CSR form
    (rows = output channels; float32 values, int16 column indices, int32 row pointers) and the
    rest dense. Call after ``make_permanent``. Compare with ``coursekit.metrics.state_dict_bytes``."""
    import io

    packed = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if v.ndim >= 2 and (v == 0).any() and v[0].numel() < 2**15:
            with warnings.catch_warnings():  # "sparse CSR support is in beta": we only read its three arrays
                warnings.simplefilter("ignore", UserWarning)
                csr = v.reshape(v.shape[0], -1).to_sparse_csr()
            packed[k] = {"shape": torch.tensor(v.shape), "values": csr.values().clone(),
                         "cols": csr.col_indices().to(torch.int16), "rows": csr.crow_indices().to(torch.int32)}
        else:
            packed[k] = v.contiguous()
    buf = io.BytesIO()
    torch.save(packed, buf)
    return len(buf.getvalue())


@torch.no_grad()
def macs_if_zeros_skipped(model: nn.Module, input_size=(3, 32, 32)) -> int:
    """Multiply-accumulates of one input if every zero weight were skipped: each Conv2d costs (output positions) x
    (its non-zero weights), each Linear its non-zero weights. The ceiling of what a sparse kernel could gain; for a
    dense model it equals ``metrics.count_macs``. Global pruning puts zeros where the weights are, not where the
    MACs are (a 3x3 conv at 32x32 does 16x more MACs per weight than one at 8x8), so this ratio differs from the
    ratio of non-zero weights."""
    total = [0]

    def hook(module, args, output):
        w = module.weight
        nnz = int(torch.count_nonzero(w.detach()))
        total[0] += nnz * (output.shape[-1] * output.shape[-2] if isinstance(module, nn.Conv2d) else 1)

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return total[0]


def sparsity_report(model: nn.Module, layers=None) -> list[dict]:
    """One row per Conv2d/Linear: {"layer", "shape", "params", "zeros", "sparsity"}, seen through masks,
    plus a final "total" row over the listed layers."""
    chosen = _resolve_layers(model, layers) if layers is not None else {
        n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    rows = []
    for n, m in chosen.items():
        w = (m.weight_orig * m.weight_mask if hasattr(m, "weight_mask") else m.weight).detach()
        zeros = int((w == 0).sum())
        rows.append({"layer": n, "shape": tuple(w.shape), "params": w.numel(), "zeros": zeros, "sparsity": zeros / w.numel()})
    total, zeros = sum(r["params"] for r in rows), sum(r["zeros"] for r in rows)
    rows.append({"layer": "total", "shape": (), "params": total, "zeros": zeros, "sparsity": zeros / max(total, 1)})
    return rows


def agp_sparsity(step: int, final_sparsity: float, begin_step: int, end_step: int, initial_sparsity: float = 0.0) -> float:
    """Zhu & Gupta 2017 gradual pruning: s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0))^3 on [t0, t1].

    Fast at first, when many redundant weights remain, and slow near the end. Before t0 it is
    ``initial_sparsity``, after t1 ``final_sparsity``.
    """
    if end_step <= begin_step:
        return final_sparsity if step >= end_step else initial_sparsity
    progress = min(max((step - begin_step) / (end_step - begin_step), 0.0), 1.0)
    return final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** 3


@dataclass
class AGPSchedule:
    """``fit(on_step=...)`` callback that raises the masks' sparsity along ``agp_sparsity``.

    Pruning happens every ``every`` steps between ``begin`` and ``end`` (fractions of the
    training steps); the rest of training recovers at the final sparsity.
    """

    final_sparsity: float
    begin: float = 0.0
    end: float = 0.7
    every: int = 10
    scope: str = "layer"
    layers: list | None = None
    history: list = field(default_factory=list)

    def __post_init__(self):
        validate_fraction("final_sparsity", self.final_sparsity)
        if not 0 <= self.begin < self.end <= 1:
            raise ValueError(f"begin, end: {self.begin!r}, {self.end!r} are not allowed; need 0 <= begin < end <= 1")

    def __call__(self, step: int, total_steps: int, model: nn.Module) -> None:
        t0, t1 = round(self.begin * total_steps), max(round(self.end * total_steps), 1)
        if step % self.every and step != t1 or not t0 <= step <= t1:
            return
        s = agp_sparsity(step, self.final_sparsity, t0, t1)
        update_masks(model, s, scope=self.scope, layers=self.layers)
        self.history.append((step, s))


def sensitivity_scan(model: nn.Module, names, amounts, prune_fn, score_fn) -> dict[str, list[float]]:
    """Prune one layer (or channel group) at a time and score the result.

    For each name in ``names`` and each amount: ``prune_fn(copy_of_model, name, amount)`` returns the
    pruned copy (or prunes it in place and returns None); ``score_fn(model) -> float`` (e.g.
    validation accuracy). Returns {name: [score per amount]}. ``model`` itself is never changed.
    """
    result = {}
    for name in names:
        scores = []
        for a in amounts:
            m = copy.deepcopy(model)
            out = prune_fn(m, name, a)
            scores.append(float(score_fn(out if out is not None else m)))
        result[name] = scores
    return result


# ----------------------------------------------------------------------------- channel importance
# One signature: importance(conv, bn) -> tensor (C_out,), larger = more important.

def l1_filter_importance(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> torch.Tensor:
    """L1 norm of each output filter of ``conv`` (Li et al. 2017, "Pruning Filters for Efficient ConvNets")."""
    return conv.weight.detach().abs().flatten(1).sum(1).float()


def bn_scale_importance(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> torch.Tensor:
    """|gamma| of the BatchNorm after ``conv`` (Liu et al. 2017, Network Slimming): a channel the BN
    scales to nearly zero contributes nearly nothing."""
    if bn is None:
        raise ValueError("bn_scale_importance needs a BatchNorm after the convolution")
    return bn.weight.detach().abs().float()


def random_importance(seed: int = 0):
    """A control criterion: random scores (the same for the same seed and shape)."""
    def importance(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed + conv.out_channels)
        return torch.rand(conv.out_channels, generator=g)

    importance.__name__ = f"random_importance(seed={seed})"
    return importance


IMPORTANCE = {"l1": l1_filter_importance, "bn_scale": bn_scale_importance, "random": random_importance(0)}


# ----------------------------------------------------------------------------- channel groups

@dataclass
class ChannelGroup:
    """Channels that must be removed together.

    producers: (conv, bn) pairs that write these channels (output dim of the conv);
    consumers: Conv2d / Linear layers that read them (input dim). kind: "inner" (a block's
    hidden channels) or "stream" (the residual stream of a stage, shared by every block's
    output, the identity shortcuts and the next stage's input). passthrough: (depthwise conv, bn) pairs
    between producers and consumers, whose channel i reads channel i only (groups = channels): they lose the
    same channels on both sides.
    """

    name: str
    kind: str
    producers: list
    consumers: list
    passthrough: list = field(default_factory=list)

    @property
    def channels(self) -> int:
        return self.producers[0][0].out_channels

    def importance(self, fn) -> torch.Tensor:
        """Sum over producers of ``fn(conv, bn)``: one score per channel, shape (channels,)."""
        return sum(fn(conv, bn).to(conv.weight.device) for conv, bn in self.producers)


def _projection(block: nn.Module):
    """(conv, bn) of a block's 1x1 projection shortcut, or None for an identity shortcut."""
    proj = projection_shortcut(block)
    return None if proj is None else (proj[0], proj[1])


def channel_groups(model: nn.Module, scope: str = "inner") -> dict[str, ChannelGroup]:
    """The channel groups of a ResNet with BasicBlocks (coursekit's ResNetCifar, torchvision's resnet18/34), or of any
    model that describes its own: a ``channel_groups_spec()`` method returning dicts with name, kind, producers,
    passthrough and consumers (``coursekit.kws.DSCNN`` does; the ResNet rules below are then not used).

    scope: "inner" -> one group per block, named "<stage>.<i>" (conv1's outputs, bn1, conv2's inputs);
    "stream" -> one group per residual stream, named "<stage>.stream": the stem or a projection
    shortcut starts a stream, every later block adds its conv2/bn2 output into it and reads it with
    conv1, and the next projection (or the classifier) reads it last; "all" -> both.
    Removed (trimmed) blocks, ``nn.Identity``, are skipped; a block replaced by its projection
    (an ``nn.Sequential`` of conv and BN) starts a new stream.
    """
    if scope not in ("inner", "stream", "all"):
        raise ValueError(f"scope: {scope!r} is not allowed; use inner, stream, all")
    if hasattr(model, "channel_groups_spec"):
        described = [ChannelGroup(**spec) for spec in model.channel_groups_spec()]
        return {g.name: g for g in described if scope == "all" or g.kind == scope}
    stages = [(n, getattr(model, n)) for n in ("layer1", "layer2", "layer3", "layer4") if hasattr(model, n)]
    if not stages or not hasattr(model, "fc"):
        raise ValueError("channel_groups: expected a ResNet with layer1..layerN stages of residual blocks and an fc")
    inner, streams = {}, []
    stream = ChannelGroup("stem.stream", "stream", [stem_conv_bn(model)], [])
    for sname, stage in stages:
        for i, block in enumerate(stage.children()):
            if isinstance(block, nn.Identity):
                continue
            proj = (block[0], block[1]) if isinstance(block, nn.Sequential) else _projection(block)
            if proj is not None:  # the old stream ends here, a new one starts
                stream.consumers.append(proj[0])
                if not isinstance(block, nn.Sequential):
                    stream.consumers.append(block.conv1)
                streams.append(stream)
                stream = ChannelGroup(f"{sname}.stream", "stream", [proj], [])
            else:
                stream.consumers.append(block.conv1)
                if stream.name == "stem.stream":
                    stream.name = f"{sname}.stream"
            if not isinstance(block, nn.Sequential):
                stream.producers.append((block.conv2, block.bn2))
                inner[f"{sname}.{i}"] = ChannelGroup(f"{sname}.{i}", "inner", [(block.conv1, block.bn1)], [block.conv2])
    stream.consumers.append(model.fc)
    streams.append(stream)
    stream_groups = {g.name: g for g in streams}
    groups = {**inner, **stream_groups} if scope == "all" else inner if scope == "inner" else stream_groups
    return groups


def channels_to_keep(n: int, ratio: float, round_to: int = 8, group: str = "layer") -> int:
    """How many of ``n`` channels remain after removing ``ratio`` of them, rounded to a multiple of
    ``round_to`` (fast kernels like multiples of 8), never more than ``n``.

    Raises ValueError when the ratio would leave no channel at all.
    """
    ratio = validate_fraction(f"ratio of {group}", ratio)
    exact = n * (1 - ratio)
    if round(exact) < 1:
        raise ValueError(f"ratio of {group}: {ratio} would leave {exact:.2f} of its {n} channels, i.e. none; "
                         f"use a ratio below {1 - 0.5 / n:.3f}")
    keep = int(math.floor(exact / round_to + 0.5)) * round_to
    return min(n, max(keep, min(round_to, n)))


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for m in model.modules():
        for child_name, child in m.named_children():
            if child is old:
                setattr(m, child_name, new)
                return
    raise RuntimeError("module to replace not found")


def prune_channels(model: nn.Module, ratios, *, importance=l1_filter_importance, scope: str = "inner",
                   round_to: int = 8) -> nn.Module:
    """Remove channels for real and return a new, smaller model (``model`` is not changed).

    ratios: one float in [0, 1) for every group of ``scope``, or a plan {group name: ratio}
        (names from ``channel_groups(model, "all")``, e.g. "layer2.0" or "layer1.stream").
    importance: ``fn(conv, bn) -> (C_out,)`` scores; the lowest-scoring channels go.
    round_to: channel counts kept are multiples of this (1 = exact).
    The result has no masks: smaller convolutions, BatchNorms and classifier input.
    """
    groups = channel_groups(model, "all")
    if isinstance(ratios, dict):
        unknown = [n for n in ratios if n not in groups]
        if unknown:
            raise ValueError(f"plan: the model has no channel group(s) {unknown}; groups: {', '.join(groups)}")
        plan = dict(ratios)
    else:
        if scope not in ("inner", "stream", "all"):
            raise ValueError(f"scope: {scope!r} is not allowed; use inner, stream, all")
        plan = {n: ratios for n, g in groups.items() if scope == "all" or g.kind == scope}
    counts = {n: channels_to_keep(groups[n].channels, r, round_to, n) for n, r in plan.items()}  # all checked first
    new = copy.deepcopy(model)
    new_groups = channel_groups(new, "all")
    for name, keep_n in counts.items():
        g = new_groups[name]
        if keep_n == g.channels:
            continue
        scores = g.importance(importance)
        keep = torch.sort(torch.topk(scores, keep_n).indices).values  # original order kept
        for cut, pairs in ((prune_conv_bn, g.producers), (prune_depthwise, g.passthrough)):  # outputs; both sides
            for conv, bn in pairs:
                c2, b2 = cut(conv, bn, keep)
                _replace(new, conv, c2)
                if bn is not None:
                    _replace(new, bn, b2)
        for layer in g.consumers:
            _replace(new, layer, prune_in_channels(layer, keep))
        new_groups = channel_groups(new, "all")  # modules were replaced: refresh the references
    return new


def ratios_from_sensitivity(scan: dict[str, list[float]], amounts, baseline: float, max_drop: float) -> dict[str, float]:
    """Per group, the largest amount whose score stayed within ``max_drop`` of ``baseline`` (0 if none):
    sensitive groups are pruned less (Li et al. 2017, section 3.4)."""
    plan = {}
    for name, scores in scan.items():
        ok = [a for a, s in zip(amounts, scores, strict=True) if baseline - s <= max_drop + 1e-9]
        plan[name] = max(ok, default=0.0)
    return plan
