"""Auto-checks of notebooks/11_quantization.ipynb's exercises: each runs the student's function on a small hand-made
case against the tested ``coursekit`` version and raises AssertionError with a hint (``hints.fail``); the
numeric-target exercise judges a bit-width plan for a CNN's weights under a byte budget on the validation split.
``coursekit.checks`` re-exports them."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .hints import fail, judge_targets, judged_note
from .quantize import BITS, fake_quantize

__all__ = ["check_quantize_symmetric", "check_fold_batchnorm", "check_centroid_update", "check_bit_plan",
           "plan_weight_bytes"]


def check_quantize_symmetric(fn) -> None:
    """``fn(x, bits) -> (q, scale)``: symmetric per-tensor quantization, q integers in [-(2^(b-1)-1), 2^(b-1)-1],
    scale = max|x| / (2^(b-1)-1), q = round(x / scale)."""
    x = torch.tensor([0.0, 0.5, -1.27, 0.9, -0.31, 1.0])
    for bits in (8, 4, 2):
        q, scale = fn(x.clone(), bits)
        qmax = 2 ** (bits - 1) - 1
        expected_scale = float(x.abs().max()) / qmax
        if abs(float(scale) - expected_scale) > 1e-6 * expected_scale:
            fail(f"bits={bits}: scale {float(scale):.6g}, expected {expected_scale:.6g}.",
                 "The largest |x| must land on the largest code, 2^(bits-1) - 1.")
        q = torch.as_tensor(q)
        if q.min() < -qmax or q.max() > qmax:
            fail(f"bits={bits}: codes outside [-{qmax}, {qmax}].", "Clamp the rounded values to the symmetric range.")
        err = (q.float() * float(scale) - x).abs().max()
        if err > expected_scale / 2 + 1e-6:
            fail(f"bits={bits}: error {float(err):.4g} > half a step ({expected_scale / 2:.4g}).",
                 "Round to the nearest integer (torch.round), do not truncate.")
    print("check passed: symmetric quantization, every value within half a step")


def check_fold_batchnorm(fn) -> None:
    """``fn(weight, bias, gamma, beta, mean, var, eps) -> (weight', bias')`` folds an eval-mode BatchNorm into the
    convolution before it; checked on a random conv + BN against the pair's output."""
    from .convquant import fold_conv_bn

    torch.manual_seed(0)
    conv, bn = nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4).eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    w, b = fn(conv.weight.detach().clone(), conv.bias.detach().clone(), bn.weight.detach().clone(),
              bn.bias.detach().clone(), bn.running_mean.clone(), bn.running_var.clone(), bn.eps)
    ref = fold_conv_bn(conv, bn)
    if tuple(w.shape) != tuple(conv.weight.shape) or tuple(b.shape) != (4,):
        fail(f"shapes {tuple(w.shape)}, {tuple(b.shape)}; expected {tuple(conv.weight.shape)} and (4,).",
             "The folded weight keeps the convolution's shape; the bias has one value per output channel.")
    if not torch.allclose(w, ref.weight, atol=1e-5):
        fail("the folded weight is wrong.", "Scale each output channel's filter by gamma / sqrt(var + eps).",
             "W' = W * (gamma / sqrt(var + eps)).reshape(-1, 1, 1, 1)")
    if not torch.allclose(b, ref.bias, atol=1e-5):
        fail("the folded bias is wrong.", "The bias goes through the same affine map as the output: subtract the "
             "mean, scale, add beta.", "b' = (b - mean) * gamma / sqrt(var + eps) + beta")
    x = torch.randn(2, 3, 8, 8)
    out = nn.functional.conv2d(x, w, b)
    if not torch.allclose(out, bn(conv(x)), atol=1e-4):
        fail("the folded convolution does not compute bn(conv(x)).", "Check both the weight and the bias.")
    print("check passed: conv + BatchNorm folded into one convolution, same outputs")


def check_centroid_update(fn) -> None:
    """``fn(weights, labels, k) -> centroids (k,)``: each centroid the mean of the weights assigned to it (an
    empty cluster keeps 0 here); the step quantization-aware k-means training repeats."""
    w = torch.tensor([0.1, 0.3, -1.0, -0.8, 2.0, 0.2])
    labels = torch.tensor([1, 1, 0, 0, 3, 1])
    got = torch.as_tensor(fn(w, labels, 4)).float()
    expected = torch.tensor([-0.9, 0.2, 0.0, 2.0])
    if got.shape != (4,):
        fail(f"got shape {tuple(got.shape)}; expected (4,), one centroid per cluster.", "Return k values.")
    if not torch.allclose(got, expected, atol=1e-6):
        fail(f"got {got.tolist()}; expected {expected.tolist()}.", "Average the weights of each label; "
             "torch.zeros(k).index_add_(0, labels, w) sums them, torch.bincount counts them.")
    print("check passed: centroids are the cluster means")


def plan_weight_bytes(model: nn.Module, plan: dict[str, int]) -> tuple[int, int]:
    """(bytes of the quantized Conv2d / Linear weights as stored under ``plan`` {layer name: bits}, with one float16
    scale per output channel; the same weights in float32). A layer the plan leaves out stays float32."""
    stored = floats = 0
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            n, rows = m.weight.numel(), m.weight.shape[0]
            floats += 4 * n
            bits = plan.get(name)
            stored += 4 * n if bits is None else (n * bits + 7) // 8 + 2 * rows
    return stored, floats


def check_bit_plan(model: nn.Module, plan: dict[str, int], *, accuracy_of, reference_accuracy: float,
                   max_bytes_ratio: float, max_drop: float, judge: str = "all") -> dict:
    """The numeric-target exercise: ``plan`` maps Conv2d / Linear names of ``model`` to bits (per-output-channel
    symmetric round-to-nearest, no retraining). The quantized weights must take at most ``max_bytes_ratio`` of their
    float32 bytes and lose at most ``max_drop`` points of ``accuracy_of`` (validation split) against
    ``reference_accuracy``. ``judge``: "all", "size" or "none" (the profile's ``exercise_judge``). Unknown layer
    names and unsupported bits are refused first. Returns {"bytes_ratio", "accuracy", "drop_points"}."""
    judged = judged_note(judge)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    unknown = sorted(set(plan) - set(layers))
    if unknown:
        raise ValueError(f"plan: {unknown} are not Conv2d or Linear layers of the model; use names of {list(layers)}")
    bad = {n: b for n, b in plan.items() if b not in BITS}
    if bad:
        raise ValueError(f"plan: bits {bad} are not allowed; use {', '.join(map(str, BITS))}")
    quantized = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, m in quantized.named_modules():
            if name in plan:
                m.weight.copy_(fake_quantize(m.weight, plan[name], granularity="channel"))
    stored, floats = plan_weight_bytes(model, plan)
    ratio, accuracy = stored / floats, float(accuracy_of(quantized))
    drop = 100 * (reference_accuracy - accuracy)
    print(f"weights {stored:,} bytes, {ratio:.1%} of float32 (target <= {max_bytes_ratio:.1%}) | validation accuracy "
          f"{accuracy:.2%} against {reference_accuracy:.2%}: {-drop:+.2f} points (target >= {-max_drop:+.2f}) | {judged}")
    judge_targets(
        judge, ratio=ratio, max_ratio=max_bytes_ratio, drop=drop, max_drop=max_drop,
        size_failure=(f"the plan keeps {ratio:.1%} of the float32 bytes; the target is at most {max_bytes_ratio:.1%}.",
                      "Fewer bits where the layer is large: most of the bytes are in a few layers."),
        accuracy_failure=(f"validation accuracy fell {drop:.2f} points; at most {max_drop:.2f} allowed.",
                          "Some layers are far more sensitive than others: quantize one layer at a time and see which "
                          "hurt.",
                          "The first convolution (few weights, raw pixels in) and the classifier are the usual "
                          "sensitive ones; give them more bits, the large middle convolutions fewer."))
    return {"bytes_ratio": ratio, "accuracy": accuracy, "drop_points": drop}
