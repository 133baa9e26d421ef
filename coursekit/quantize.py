"""Linear (uniform) quantization from scratch: r = S (q - Z), its granularities, its error, packing and integer-only
arithmetic. Introduced in notebooks/11_quantization.ipynb.

A real number r is stored as an integer q of ``bits`` bits with a scale S and a zero point Z: q = clamp(round(r / S) + Z,
q_min, q_max) and r ~ S (q - Z) (Jacob et al. 2018, "Quantization and training of neural networks for efficient
integer-arithmetic-only inference"; Nagel et al. 2021, "A white paper on neural network quantization").

- symmetric: Z = 0, q in [-(2^(b-1) - 1), 2^(b-1) - 1], S = max|r| / q_max (0 is exact, one code unused);
- asymmetric: q in [0, 2^b - 1], S = (max r - min r) / (2^b - 1), Z = round(-min r / S) (the range fits the data);
- granularity: one (S, Z) per tensor, per output channel (row of a weight, dim 0) or per group of ``group_size``
  consecutive input features within a row (the scheme of GPTQ, AWQ and GGUF's blocks).

Rounding to the nearest code makes |r - S (q - Z)| <= S / 2 for every value inside the range.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .validate import integer, refuse

__all__ = ["BITS", "GRANULARITIES", "QTensor", "validate_quant_args", "quantize", "dequantize", "fake_quantize",
           "fake_quantize_ste", "quantization_error", "pack_int4", "unpack_int4", "integer_linear"]

BITS = (2, 3, 4, 8)
GRANULARITIES = ("tensor", "channel", "group")


@dataclass
class QTensor:
    """A quantized tensor: integer codes ``q`` (int8 for symmetric, uint8 for asymmetric codes, in the original
    shape), ``scale`` and ``zero`` broadcastable to the grouped view (rows, groups, group_size), and how it was made."""

    q: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor
    bits: int
    symmetric: bool
    granularity: str
    group_size: int | None
    shape: tuple


def validate_quant_args(bits: int, granularity: str, group_size: int | None = None,
                        in_features: int | None = None) -> None:
    """Refuse, before any work, bits outside BITS, an unknown granularity, a group size missing for "group" (or given
    for another granularity), and a group size that does not divide the input features (a silent skip of such a
    layer, as some libraries do, would leave it in float while the size table counts it as quantized)."""
    if bits not in BITS:
        refuse("bits", bits, ", ".join(map(str, BITS)))
    if granularity not in GRANULARITIES:
        refuse("granularity", granularity, ", ".join(GRANULARITIES))
    if granularity == "group":
        integer("group_size", group_size, lo=2, allowed="an integer >= 2 with granularity 'group'")
        if in_features is not None and in_features % group_size:
            raise ValueError(f"group_size: {group_size} does not divide the {in_features} input features; use a "
                             f"divisor of {in_features} (for example {_divisors(in_features)})")
    elif group_size is not None:
        refuse("group_size", group_size, "None unless granularity is 'group'")


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in (16, 32, 48, 64, 96, 128) if n % d == 0) or "a smaller power of two"


def _grouped(x: torch.Tensor, granularity: str, group_size: int | None) -> torch.Tensor:
    """x viewed as (rows, groups, group_size): one (S, Z) per [row, group]."""
    if granularity == "tensor":
        return x.reshape(1, 1, -1)
    rows = x.reshape(x.shape[0], -1)
    if granularity == "channel":
        return rows.unsqueeze(1)
    return rows.reshape(rows.shape[0], -1, group_size)


def quantize(x: torch.Tensor, bits: int = 8, *, symmetric: bool = True, granularity: str = "channel",
             group_size: int | None = None, integer_zero: bool = True) -> QTensor:
    """Round-to-nearest linear quantization of ``x`` (a weight (out, in, ...) or any tensor for "tensor").
    Asymmetric ranges hold 0 and use an integer zero point (``integer_zero``: 0 is exact, as integer kernels need
    for padding and ReLU); ``integer_zero=False`` is GGUF's Q4_1 form instead, r = d q + m with the group's minimum m
    and d = (max - min) / (2^b - 1), stored here as S = d, Z = -m / d (a float).
    Returns a QTensor whose ``dequantize`` gives S (q - Z) in x's shape and dtype float32."""
    in_features = x.reshape(x.shape[0], -1).shape[1] if x.dim() > 1 else x.numel()
    validate_quant_args(bits, granularity, group_size, in_features if granularity == "group" else None)
    g = _grouped(x.detach().float(), granularity, group_size)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = g.abs().amax(-1, keepdim=True).clamp_min(1e-12) / qmax
        zero = torch.zeros_like(scale)
        q = torch.clamp(torch.round(g / scale), -qmax, qmax).to(torch.int8)
    else:
        qmax = 2 ** bits - 1
        lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
        if integer_zero:
            lo, hi = lo.clamp_max(0), hi.clamp_min(0)
        scale = (hi - lo).clamp_min(1e-12) / qmax
        if integer_zero:
            zero = torch.round(-lo / scale)
            q = torch.clamp(torch.round(g / scale) + zero, 0, qmax).to(torch.uint8)
        else:
            zero = -lo / scale
            q = torch.clamp(torch.round((g - lo) / scale), 0, qmax).to(torch.uint8)
    return QTensor(q.reshape(x.shape), scale, zero, bits, symmetric, granularity, group_size, tuple(x.shape))


def dequantize(t: QTensor) -> torch.Tensor:
    """S (q - Z) in the original shape (float32)."""
    g = _grouped(t.q.float(), t.granularity, t.group_size)
    return (t.scale * (g - t.zero)).reshape(t.shape)


def fake_quantize(x: torch.Tensor, bits: int = 8, **kwargs) -> torch.Tensor:
    """quantize then dequantize: the float tensor a quantized model computes with, in x's dtype."""
    return dequantize(quantize(x, bits, **kwargs)).to(x.dtype)


def fake_quantize_ste(x: torch.Tensor, bits: int = 8, **kwargs) -> torch.Tensor:
    """``fake_quantize`` in the forward pass, the identity in the backward pass (the straight-through estimator,
    Bengio et al. 2013): what quantization-aware training trains through."""
    return x + (fake_quantize(x, bits, **kwargs) - x).detach()


def quantization_error(x: torch.Tensor, bits: int, **kwargs) -> float:
    """Relative error ||x - fake_quantize(x)|| / ||x|| (Frobenius)."""
    x = x.detach().float()
    return float((x - fake_quantize(x, bits, **kwargs)).norm() / x.norm().clamp_min(1e-12))


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes (uint8 values 0..15, an even number of them) to a byte: low nibble first. (n,) -> (n / 2,)."""
    flat = codes.reshape(-1).to(torch.uint8)
    if flat.numel() % 2:
        raise ValueError(f"pack_int4: {flat.numel()} codes; an even number is needed")
    if int(flat.max()) > 15:
        raise ValueError("pack_int4: codes must be 0..15 (shift symmetric codes by +8 first)")
    return flat[0::2] | (flat[1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of ``pack_int4``: (n / 2,) bytes -> (n,) codes 0..15."""
    return torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(-1)


def integer_linear(x_q: torch.Tensor, x_scale: float, x_zero: int, w_q: torch.Tensor, w_scale: torch.Tensor,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """A quantized linear layer the way an integer kernel computes it (Jacob et al. 2018, section 2.2).

    x_q (N, in) uint8 activations with one scale and zero point; w_q (out, in) int8 symmetric weights with one
    scale per output channel ``w_scale`` (out,). The products accumulate in int32: acc = (x_q - Z_x) @ w_q^T, the
    bias is added as int32 with scale S_x S_w (bias_q = round(b / (S_x S_w))), and one float rescale per output
    channel gives y = S_x S_w acc (N, out). Equals the float product of the dequantized tensors up to the bias's
    rounding."""
    acc = (x_q.to(torch.int32) - int(x_zero)) @ w_q.to(torch.int32).t()  # int32 accumulate
    out_scale = float(x_scale) * w_scale.reshape(-1).double()
    if bias is not None:
        acc = acc + torch.round(bias.double() / out_scale).to(torch.int32)
    return (acc.double() * out_scale).float()
