"""Quantizing a convolutional network: BatchNorm folded into its convolution, static int8 simulated from scratch
(weights per output channel, activations per tensor with ranges calibrated on held-out images), quantization-aware
training through fake-quantized weights, and the library path with real int8 kernels (PyTorch's FX graph mode
quantization on the x86 backend). Introduced in notebooks/11_quantization.ipynb.

BatchNorm folding: a BatchNorm in eval mode is an affine map per channel, y = gamma (z - mu) / sqrt(var + eps) + beta,
and z = W * x + b is linear, so the pair is one convolution with W' = W gamma / sqrt(var + eps) (per output channel)
and b' = (b - mu) gamma / sqrt(var + eps) + beta (Jacob et al. 2018, section 3.2). Quantizing after folding means
quantizing the weights the integer kernel really multiplies by.
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import torch
from torch import nn
from torch.nn.utils import parametrize

from .inference import require_eval_mode
from .quantize import fake_quantize, fake_quantize_ste, validate_quant_args

__all__ = ["fold_conv_bn", "fold_batchnorms", "calibrate_input_ranges", "simulate_static_int8", "FakeQuantWeight",
           "add_weight_fake_quant", "remove_weight_fake_quant", "int8_fx_model", "ao_quantization_quiet"]


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new Conv2d computing bn(conv(x)) in eval mode: W' = W g / sqrt(v + eps), b' = (b - mu) g / sqrt(v + eps) + beta.
    Refuses a BatchNorm in training mode (it normalises with each batch's statistics, not the running ones)."""
    require_eval_mode(bn, "fold_conv_bn")
    factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (out,)
    fused = copy.deepcopy(conv)
    fused.weight.copy_(conv.weight * factor.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias = nn.Parameter((bias - bn.running_mean) * factor + bn.bias)
    return fused


@torch.no_grad()
def fold_batchnorms(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` (eval mode) with every BatchNorm2d that directly follows a Conv2d as attributes of one
    module (torchvision's and the course's ResNets: conv1/bn1, conv2/bn2, and ``nn.Sequential`` pairs such as a
    shortcut's conv and bn) folded into that convolution and replaced by nn.Identity. Returns (copy, pairs folded).
    Refuses a model in training mode: call ``model.eval()`` first."""
    require_eval_mode(model, "fold_batchnorms")
    model = copy.deepcopy(model)
    folded = 0
    for module in model.modules():
        children = list(module.named_children())
        for (name_a, a), (name_b, b) in zip(children, children[1:], strict=False):  # consecutive pairs
            if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
                setattr(module, name_a, fold_conv_bn(a, b))
                setattr(module, name_b, nn.Identity())
                folded += 1
    return model.eval(), folded  # the Identity modules that replaced the BatchNorms are new: eval mode too


@torch.no_grad()
def calibrate_input_ranges(model: nn.Module, batches, max_batches: int | None = None) -> dict[str, tuple[float, float]]:
    """The (min, max) of every Conv2d and Linear input over ``batches`` (an iterable of (x, y)): the static
    activation ranges. Refuses zero batches (no range can come from no data)."""
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    ranges: dict[str, list[float]] = {}

    def hook(name):
        def record(_m, args):
            x = args[0]
            lo, hi = float(x.min()), float(x.max())
            old = ranges.setdefault(name, [lo, hi])
            old[0], old[1] = min(old[0], lo), max(old[1], hi)
        return record

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    seen = 0
    try:
        model.eval()
        for x, _ in batches:
            if max_batches is not None and seen >= max_batches:
                break
            model(x)
            seen += 1
    finally:
        for h in handles:
            h.remove()
    if seen == 0:
        raise ValueError("calibration: 0 batches given; give at least one batch of held-out training images")
    return {n: (lo, hi) for n, (lo, hi) in ranges.items()}


def _fake_quant_range(x: torch.Tensor, lo: float, hi: float, bits: int = 8) -> torch.Tensor:
    """Asymmetric per-tensor fake quantization of x with a fixed range [lo, hi] (0 included), values outside clamp."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-12) / (2 ** bits - 1)
    zero = round(-lo / scale)
    q = torch.clamp(torch.round(x / scale) + zero, 0, 2 ** bits - 1)
    return (q - zero) * scale


@torch.no_grad()
def simulate_static_int8(model: nn.Module, ranges: dict[str, tuple[float, float]], bits: int = 8) -> nn.Module:
    """A copy of ``model`` computing what a static int8 model computes: every Conv2d and Linear weight fake-quantized
    symmetric per output channel, every such layer's input fake-quantized asymmetric per tensor to its calibrated
    range (forward pre-hooks). Biases stay float (an integer kernel keeps them in int32 at scale S_x S_w)."""
    validate_quant_args(bits, "channel")
    model = copy.deepcopy(model).eval()
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.weight.copy_(fake_quantize(m.weight, bits, granularity="channel"))
            lo, hi = ranges[name]
            m.register_forward_pre_hook(lambda _m, args, lo=lo, hi=hi: (_fake_quant_range(args[0], lo, hi, bits),))
    return model


class FakeQuantWeight(nn.Module):
    """A parametrization (``torch.nn.utils.parametrize``): the layer computes with its weight fake-quantized to
    ``bits`` per output channel (symmetric), and the gradient reaches the float weight straight through (STE)."""

    def __init__(self, bits: int):
        super().__init__()
        validate_quant_args(bits, "channel")
        self.bits = bits

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return fake_quantize_ste(weight, self.bits, granularity="channel")


def add_weight_fake_quant(model: nn.Module, bits: int) -> nn.Module:
    """Register ``FakeQuantWeight(bits)`` on every Conv2d and Linear weight of ``model``, in place: training then is
    quantization-aware (Jacob et al. 2018; Krishnamoorthi 2018). Returns the model."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            parametrize.register_parametrization(m, "weight", FakeQuantWeight(bits))
    return model


def remove_weight_fake_quant(model: nn.Module) -> nn.Module:
    """Bake the fake-quantized weights in (their quantized values become the plain weights), in place."""
    for m in model.modules():
        if parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return model


@contextlib.contextmanager
def ao_quantization_quiet():
    """Silence exactly the deprecation warnings of ``torch.ao.quantization`` (torch 2.14 still ships it and every
    call warns that it moves to torchao), and nothing else."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao\.quantization")
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*deprecated.*")
        warnings.filterwarnings("ignore", message=r".*TypedStorage is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*deprecated.*")
        warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")
        yield


@torch.no_grad()
def int8_fx_model(model: nn.Module, batches, *, max_batches: int, example: torch.Tensor) -> nn.Module:
    """The library path with real int8 kernels: PyTorch's FX graph mode post-training static quantization with the
    x86 backend's default configuration (BatchNorm folded, weights int8 per channel, activations uint8 per tensor
    with histogram-calibrated ranges) on ``max_batches`` of ``batches``; the result runs quantized convolutions
    (oneDNN / FBGEMM) on the CPU. Refuses zero calibration batches."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if max_batches < 1:
        raise ValueError(f"calibration: max_batches={max_batches}; give at least one batch")
    with ao_quantization_quiet():
        torch.backends.quantized.engine = "x86"
        prepared = prepare_fx(copy.deepcopy(model).cpu().eval(), get_default_qconfig_mapping("x86"), (example.cpu(),))
        for i, (x, _) in enumerate(batches):
            if i >= max_batches:
                break
            prepared(x.cpu().float().contiguous())
        return convert_fx(prepared)
