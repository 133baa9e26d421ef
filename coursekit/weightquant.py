"""Weight-only quantization of a model's Linear layers, stored as packed codes: round-to-nearest (RTN), and AWQ's
activation-aware scaling (Lin et al. 2024, "AWQ: activation-aware weight quantization for LLM compression and
acceleration", as MIT 6.5940 lab 4 builds it). Introduced in notebooks/11_quantization.ipynb.

``QuantizedLinear`` keeps a weight (out, in) as integer codes (int8; 4-, 3- and 2-bit codes packed two to a byte)
with a float16 scale (and, asymmetric, a zero point) per group, and dequantizes it in ``forward``: the stored bytes
are real, the arithmetic is float (a fast low-bit kernel is a runtime's job: chapter 12). Its state dict is plain
tensors, so it saves and reloads with ``torch.load(weights_only=True)`` into a model prepared with the same plan.

AWQ: a few input channels of each layer carry much larger activations; errors on their weights matter most.
Scaling those weight columns up by s (and the input down by s) before rounding protects them at no float cost:
(W diag(s)) (diag(s)^-1 x) = W x. AWQ takes s = s_x^alpha (s_x: mean |x| per input channel on calibration text) and
picks alpha per layer on a grid to minimise the layer's output error on that text; the error of a weight change
dW over inputs X is ||dW X^T||^2 = tr(dW G dW^T) with G = X^T X, so only G is kept per layer. In a deployed model 1/s
is folded into the operation before the layer (an RMSNorm's weight, or the previous linear's rows); here
``QuantizedLinear`` keeps it as an ``input_scale`` buffer, one float per input feature. AWQ's second step, in its
reference code, clips: each group's range max|w| is shrunk by the ratio (1.0 down to 0.55) that minimises that
group's share of the output error, trading a few clipped outliers for a finer grid for all the other weights.
"""

from __future__ import annotations

import torch
from torch import nn

from .quantize import QTensor, dequantize, pack_int4, quantize, unpack_int4, validate_quant_args

__all__ = ["QuantizedLinear", "Int8KernelLinear", "use_int8_kernel", "quantizable_linears", "validate_layers",
           "quantize_linears", "linear_inputs_stats", "record_linear_inputs", "mean_abs_of", "output_error",
           "awq_search", "awq_clip_search", "clip_groups", "keep_channels_float", "AWQ_ALPHAS", "AWQ_CLIP_RATIOS",
           "AWQ_NO_CLIP"]

AWQ_ALPHAS = tuple(i / 10 for i in range(11))  # the grid of alpha in s = s_x^alpha (0: RTN)
AWQ_CLIP_RATIOS = tuple(1 - i / 20 for i in range(10))  # AWQ's reference code: n_grid 20, max_shrink 0.5
AWQ_NO_CLIP = ("q_proj", "k_proj")  # AWQ's reference code leaves queries and keys unclipped (q k^T multiplies errors)


class QuantizedLinear(nn.Module):
    """A Linear whose weight is stored quantized (``quantize.quantize``): ``codes`` (int8 codes, or for <= 4 bits
    unsigned codes packed two per byte), ``scale`` and ``zero`` (float16, one per group), optional ``input_scale``
    (in,) by which the input is divided (AWQ), and the float ``bias``. forward: y = x / input_scale @ W_hat^T + b."""

    def __init__(self, in_features: int, out_features: int, *, bits: int, symmetric: bool, granularity: str,
                 group_size: int | None, bias: bool, input_scale: bool = False):
        super().__init__()
        validate_quant_args(bits, granularity, group_size, in_features)
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.symmetric, self.granularity, self.group_size = bits, symmetric, granularity, group_size
        groups = {"tensor": (1, 1, 1), "channel": (out_features, 1, 1),
                  "group": (out_features, in_features // (group_size or 1), 1)}[granularity]
        n = in_features * out_features
        self.register_buffer("codes", torch.zeros(n if bits == 8 else n // 2,
                                                  dtype=torch.int8 if bits == 8 and symmetric else torch.uint8))
        self.register_buffer("scale", torch.zeros(groups, dtype=torch.float16))
        self.register_buffer("zero", None if symmetric else torch.zeros(groups, dtype=torch.float16))
        self.register_buffer("input_scale", torch.ones(in_features) if input_scale else None)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, bits: int, symmetric: bool = True, granularity: str = "channel",
                    group_size: int | None = None, input_scale: torch.Tensor | None = None,
                    clip_max: torch.Tensor | None = None) -> QuantizedLinear:
        """Quantize ``linear``'s weight (times ``input_scale`` per input column, when given; then clipped to
        +-``clip_max`` (out, groups) per group, when given: ``clip_groups``) to a new layer."""
        w = linear.weight.detach().float()
        if input_scale is not None:
            w = w * input_scale.to(w)
        if clip_max is not None:
            w = clip_groups(w, clip_max, group_size)
        qt = quantize(w, bits, symmetric=symmetric, granularity=granularity, group_size=group_size)
        return cls.from_codes(linear, qt, input_scale=input_scale)

    @classmethod
    def from_codes(cls, linear: nn.Linear, qt: QTensor, *, input_scale: torch.Tensor | None = None) -> QuantizedLinear:
        """A new layer holding the codes ``qt`` (of ``linear``'s weight, made by any method: round-to-nearest,
        GPTQ) with ``linear``'s bias."""
        layer = cls(linear.in_features, linear.out_features, bits=qt.bits, symmetric=qt.symmetric,
                    granularity=qt.granularity, group_size=qt.group_size, bias=linear.bias is not None,
                    input_scale=input_scale is not None)
        layer.load_codes(qt)
        if linear.bias is not None:
            layer.bias.data.copy_(linear.bias.detach())
        if input_scale is not None:
            layer.input_scale.copy_(input_scale)
        return layer.to(linear.weight.device)

    def load_codes(self, qt: QTensor) -> None:
        # float16 scales are what is stored: the codes stay those of the float32 scale (at most a 2^-11 relative shift)
        self.scale.copy_(qt.scale.reshape(self.scale.shape))
        if self.zero is not None:
            self.zero.copy_(qt.zero.reshape(self.zero.shape))
        if self.bits == 8:
            self.codes.copy_(qt.q.reshape(-1))
        else:  # symmetric codes shifted to unsigned (0 .. 2^bits - 2) so that they pack as nibbles
            offset = 2 ** (self.bits - 1) if self.symmetric else 0
            self.codes.copy_(pack_int4((qt.q.to(torch.int16) + offset).to(torch.uint8)))

    def weight_codes(self) -> torch.Tensor:
        """The integer codes, (out, in) int16 (signed for symmetric schemes)."""
        if self.bits == 8:
            q = self.codes.to(torch.int16)
        else:
            q = unpack_int4(self.codes).to(torch.int16) - (2 ** (self.bits - 1) if self.symmetric else 0)
        return q.reshape(self.out_features, self.in_features)

    def dequantized_weight(self) -> torch.Tensor:
        """W_hat (out, in) float32, without the input scale folded back: the weight the layer computes with."""
        qt = QTensor(self.weight_codes(), self.scale.float(),
                     torch.zeros(()) if self.zero is None else self.zero.float(), self.bits, self.symmetric,
                     self.granularity, self.group_size, (self.out_features, self.in_features))
        return dequantize(qt)

    @property
    def weight_numel(self) -> int:
        """How many weights the layer has (what ``metrics.count_params`` counts for it)."""
        return self.in_features * self.out_features

    @property
    def stored_bytes(self) -> int:
        """Bytes of codes, scales, zero points and input scale as stored (the bias not counted)."""
        return sum(b.numel() * b.element_size() for b in (self.codes, self.scale, self.zero, self.input_scale)
                   if b is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_scale is not None:
            x = x / self.input_scale.to(x.dtype)
        return nn.functional.linear(x, self.dequantized_weight().to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        g = f"group{self.group_size}" if self.granularity == "group" else self.granularity
        return (f"in={self.in_features}, out={self.out_features}, int{self.bits} "
                f"{'symmetric' if self.symmetric else 'asymmetric'} per {g}")


class Int8KernelLinear(nn.Module):
    """An int8 weight-only Linear computed by PyTorch's CPU kernel for it (``torch._weight_int8pack_mm``, the
    kernel torchao's int8 weight-only layout calls on a CPU): int8 codes (out, in), one bfloat16 scale per output
    channel, bfloat16 activations. The kernel reads a quarter of float32's weight bytes, which is what a
    memory-bound matrix-vector product (one token of decoding) pays for; it has no fast path for float32
    activations, so the input is cast to bfloat16 and the output back."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.register_buffer("codes", codes.to(torch.int8).contiguous())
        self.register_buffer("scale", scale.reshape(-1).to(torch.bfloat16))
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.in_features, self.out_features = codes.shape[1], codes.shape[0]

    @property
    def weight_numel(self) -> int:
        return self.codes.numel()

    def dequantized_weight(self) -> torch.Tensor:
        return self.codes.float() * self.scale.float()[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = torch._weight_int8pack_mm(flat, self.codes, self.scale).to(x.dtype)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


@torch.no_grad()
def use_int8_kernel(model: nn.Module) -> int:
    """Swap every 8-bit symmetric per-channel QuantizedLinear of ``model`` (no input scale) for an
    Int8KernelLinear with the same codes and scales, in place. Returns how many were swapped."""
    swapped = 0
    for name, m in list(model.named_modules()):
        if (isinstance(m, QuantizedLinear) and m.bits == 8 and m.symmetric and m.granularity == "channel"
                and m.input_scale is None):
            model.set_submodule(name, Int8KernelLinear(m.weight_codes(), m.scale.float(), m.bias))
            swapped += 1
    return swapped


def quantizable_linears(model: nn.Module, skip=("lm_head",)) -> dict[str, nn.Linear]:
    """{name: nn.Linear} of ``model``, names containing an entry of ``skip`` left out."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and not any(s in n for s in skip)}


def validate_layers(layers: dict[str, nn.Linear], bits: int, granularity: str, group_size: int | None) -> None:
    """``quantize.validate_quant_args`` for every layer before any is changed, naming the layer that is refused."""
    for name, lin in layers.items():
        try:
            validate_quant_args(bits, granularity, group_size, lin.in_features)
        except ValueError as e:
            raise ValueError(f"{e} (layer {name}: {lin.in_features} input features)") from None


@torch.no_grad()
def quantize_linears(model: nn.Module, *, bits: int, symmetric: bool = True, granularity: str = "channel",
                     group_size: int | None = None, skip=("lm_head",), input_scales: dict | None = None,
                     clip_max: dict | None = None) -> dict:
    """Replace every nn.Linear of ``model`` (names containing an entry of ``skip`` excluded: SmolLM2's lm_head is
    its token-embedding table, tied, and stays float) by a QuantizedLinear, in place. Every layer is checked before
    any is changed (a group size that does not divide a layer's input features is refused, never skipped).
    ``input_scales`` {name: (in,)} applies AWQ's scaling, ``clip_max`` {name: (out, groups)} its clipping
    (``awq_clip_search``; layers missing from it are not clipped). Returns {"layers": count, "weights": quantized weights,
    "stored_bytes": bytes of codes + scales + zeros as stored, "float_bytes": the same weights in float32}."""
    layers = quantizable_linears(model, skip)
    validate_layers(layers, bits, granularity, group_size)
    stored = weights = 0
    for name, lin in layers.items():
        q = QuantizedLinear.from_linear(lin, bits=bits, symmetric=symmetric, granularity=granularity,
                                        group_size=group_size, input_scale=(input_scales or {}).get(name),
                                        clip_max=(clip_max or {}).get(name))
        model.set_submodule(name, q)
        weights += q.weight_numel
        stored += q.stored_bytes
    return {"layers": len(layers), "weights": weights, "stored_bytes": stored, "float_bytes": 4 * weights}


@torch.no_grad()
def linear_inputs_stats(model: nn.Module, windows, *, skip=("lm_head",), within: str = "") -> dict[str, dict]:
    """Run ``model`` on ``windows`` (a list of (1, T) token-id tensors) and collect, for every nn.Linear not
    skipped whose name starts with ``within`` (default: all), its input's mean |x| per channel ("mean_abs", (in,))
    and Gram matrix ("gram", G = X^T X (in, in), float32) over all tokens; "tokens" counts them. One forward pass
    per window, hooks removed afterwards (``record_linear_inputs``)."""
    layers = {n: m for n, m in quantizable_linears(model, skip).items() if n.startswith(within)}
    if not layers:
        raise ValueError(f"within: no linear layer's name starts with {within!r}")
    stats, handles = record_linear_inputs(layers)
    try:
        model.eval()
        for ids in windows:
            model(input_ids=ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return mean_abs_of(stats)


def record_linear_inputs(layers: dict[str, nn.Linear]) -> tuple[dict, list]:
    """Forward pre-hooks on ``layers`` that add up, over every token they see, |x| per input channel ("abs_sum",
    (in,)) and the Gram matrix ("gram", X^T X (in, in)), float32 on the CPU; "tokens" counts them. Layers that read
    the same input tensor one after another (queries, keys and values; gate and up) share one computation of its
    sums. Returns (stats, the hooks' handles: remove them when done)."""
    stats = {n: {"abs_sum": torch.zeros(m.in_features), "gram": torch.zeros(m.in_features, m.in_features),
                 "tokens": 0} for n, m in layers.items()}
    last = {}  # the latest input and its sums

    def hook(name):
        def record(_module, args):  # returns None: the input is passed on unchanged
            if last.get("x") is not args[0]:
                x = args[0].detach().float().reshape(-1, args[0].shape[-1]).cpu()
                last.update(x=args[0], abs=x.abs().sum(0), gram=x.t() @ x, tokens=x.shape[0])
            s = stats[name]
            s["abs_sum"] += last["abs"]
            s["gram"] += last["gram"]
            s["tokens"] += last["tokens"]
        return record

    return stats, [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]


def mean_abs_of(stats: dict) -> dict:
    """``record_linear_inputs``'s sums with "mean_abs" (the mean |x| per input channel, s_x of AWQ) added."""
    for s in stats.values():
        s["mean_abs"] = s["abs_sum"] / max(s["tokens"], 1)
    return stats


def output_error(w: torch.Tensor, w_hat: torch.Tensor, gram: torch.Tensor) -> float:
    """||W X^T - W_hat X^T||^2 = tr(dW G dW^T) with G = X^T X: a weight change's error on the calibration inputs
    (what AWQ's searches and GPTQ minimise)."""
    d = w_hat - w
    return float(((d @ gram) * d).sum())


@torch.no_grad()
def awq_search(model: nn.Module, stats: dict, *, bits: int, group_size: int | None, symmetric: bool = False,
               alphas=AWQ_ALPHAS, skip=("lm_head",)) -> dict:
    """AWQ's scale search, layer by layer: for each alpha, s = s_x^alpha normalised so that sqrt(max s * min s) = 1
    (as AWQ's reference code does), W_hat = Q(W diag(s)) diag(s)^-1, error tr(dW G dW^T); keep the best alpha.
    Returns {"scales": {name: s (in,)}, "alpha": {name: best alpha}, "error": {name: (RTN error, AWQ error)}}.
    The model is not changed: pass "scales" to ``quantize_linears(input_scales=...)``."""
    granularity = "group" if group_size else "channel"
    out = {"scales": {}, "alpha": {}, "error": {}}
    for name, lin in quantizable_linears(model, skip).items():
        w, st = lin.weight.detach().float(), stats[name]
        sx = st["mean_abs"].clamp_min(1e-8)
        best, errors = None, {}
        for a in dict.fromkeys((0.0, *alphas)):  # alpha 0 (s = 1) is round-to-nearest: always measured
            s = sx ** a
            s = s / (s.max() * s.min()).sqrt()
            w_hat = dequantize(quantize(w * s, bits, symmetric=symmetric, granularity=granularity,
                                        group_size=group_size)) / s
            errors[a] = output_error(w, w_hat, st["gram"])
            if a in alphas and (best is None or errors[a] < best[0]):
                best = (errors[a], a, s)
        rtn = errors[0.0]
        out["scales"][name], out["alpha"][name] = best[2], best[1]
        out["error"][name] = (rtn, best[0])
    return out


def clip_groups(w: torch.Tensor, max_abs: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """``w`` (out, in) clamped to [-m, m] group by group, m = ``max_abs`` (out, in // group_size); ``group_size``
    None: one group per row, ``max_abs`` (out, 1)."""
    out, cols = w.shape
    g = w.reshape(out, -1, group_size or cols)
    m = max_abs.to(w).reshape(out, g.shape[1], 1)
    return torch.maximum(torch.minimum(g, m), -m).reshape(out, cols)


@torch.no_grad()
def awq_clip_search(model: nn.Module, stats: dict, *, bits: int, group_size: int | None, scales: dict | None = None,
                    symmetric: bool = False, ratios=AWQ_CLIP_RATIOS, skip=("lm_head",), no_clip=AWQ_NO_CLIP) -> dict:
    """AWQ's clipping search (its reference code's ``auto_clip``), after the scale search: for every group of every
    layer's weight W diag(s) (s from ``scales``, else 1), the range m = r max|w| with r in ``ratios`` that minimises
    the group's share of the output error, d_g^T G'_gg d_g, where d_g is the group's rounding-and-clipping error and
    G'_gg the group's diagonal block of the Gram matrix of the scaled input x / s (cross-group terms ignored, as the
    reference does). Layers named in ``no_clip`` are left out. Returns {"clip_max": {name: m (out, groups)},
    "error": {name: (error unclipped, error clipped)}} with errors tr(dW G dW^T) of the whole layer."""
    if not ratios or not all(0 < float(r) <= 1 for r in ratios):
        raise ValueError(f"awq_clip_search: ratios must be a non-empty set of numbers in (0, 1], got {ratios!r}")
    granularity = "group" if group_size else "channel"
    out = {"clip_max": {}, "error": {}}
    for name, lin in quantizable_linears(model, skip).items():
        if any(n in name for n in no_clip):
            continue
        s = (scales or {}).get(name)
        s = torch.ones(lin.in_features) if s is None else s.float()
        w = lin.weight.detach().float() * s
        gram = stats[name]["gram"] / (s[:, None] * s[None, :])
        rows, cols = w.shape
        gs = group_size or cols
        ng = cols // gs
        blocks = gram.reshape(ng, gs, ng, gs).diagonal(dim1=0, dim2=2).permute(2, 0, 1)  # (ng, gs, gs)
        full = w.reshape(rows, ng, gs).abs().amax(-1)
        best_err = best_max = None
        for r in ratios:
            m = full * r
            d = (dequantize(quantize(clip_groups(w, m, group_size), bits, symmetric=symmetric,
                                     granularity=granularity, group_size=group_size)) - w).reshape(rows, ng, gs)
            err = torch.einsum("ogi,gij,ogj->og", d, blocks, d)
            if best_err is None:
                best_err, best_max = err, m
                continue
            better = err < best_err
            best_err, best_max = torch.where(better, err, best_err), torch.where(better, m, best_max)

        out["clip_max"][name] = best_max
        out["error"][name] = tuple(
            output_error(w, dequantize(quantize(clip_groups(w, m, group_size), bits, symmetric=symmetric,
                                                 granularity=granularity, group_size=group_size)), gram)
            for m in (full, best_max))
    return out


@torch.no_grad()
def keep_channels_float(model: nn.Module, stats: dict, *, bits: int, group_size: int | None, fraction: float = 0.01,
                        salient: bool = True, seed: int = 0, symmetric: bool = False, skip=("lm_head",)) -> dict:
    """MIT lab 4's first experiment, in place on float ``model``: every Linear's weight fake-quantized except a
    ``fraction`` of its input channels kept in float, the most salient ones (largest mean |x| on calibration text)
    or, ``salient=False``, as many chosen at random (seeded). Returns {name: kept channel indices}."""
    granularity = "group" if group_size else "channel"
    gen = torch.Generator().manual_seed(seed)
    kept = {}
    for name, lin in quantizable_linears(model, skip).items():
        n = max(1, round(fraction * lin.in_features))
        idx = (stats[name]["mean_abs"].topk(n).indices if salient
               else torch.randperm(lin.in_features, generator=gen)[:n])
        w = lin.weight.detach().float()
        w_hat = dequantize(quantize(w, bits, symmetric=symmetric, granularity=granularity, group_size=group_size))
        w_hat[:, idx] = w[:, idx]
        lin.weight.copy_(w_hat.to(lin.weight.dtype))
        kept[name] = idx
    return kept
