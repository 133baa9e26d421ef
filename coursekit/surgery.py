"""Layer surgery for structured pruning: a Conv2d and its BatchNorm cut to some output channels, a depthwise
convolution cut on both sides, a Conv2d or Linear cut to some input channels. Each returns new modules and leaves the
old ones as they were; ``coursekit.prune.prune_channels`` applies them to every layer of a channel group. Introduced in
notebooks/04_pruning_structured.ipynb (the depthwise case in 13).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["prune_conv_bn", "prune_depthwise", "prune_in_channels"]


@torch.no_grad()
def prune_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, keep: torch.Tensor):
    """New (conv, bn) keeping only output channels ``keep`` (indices): conv weight (C_out, C_in, k, k) ->
    (len(keep), C_in, k, k), and the BN's gamma, beta, running mean and variance."""
    keep = keep.to(conv.weight.device)
    new_conv = nn.Conv2d(conv.in_channels, len(keep), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                         bias=conv.bias is not None).to(conv.weight.device)
    new_conv.weight.copy_(conv.weight[keep])
    if conv.bias is not None:
        new_conv.bias.copy_(conv.bias[keep])
    return new_conv.train(conv.training), _prune_bn(bn, keep)


@torch.no_grad()
def _prune_bn(bn: nn.BatchNorm2d | None, keep: torch.Tensor) -> nn.BatchNorm2d | None:
    """A BatchNorm2d with only the channels ``keep``: affine parameters and running statistics."""
    if bn is None:
        return None
    new_bn = nn.BatchNorm2d(len(keep), bn.eps, bn.momentum).to(bn.weight.device)
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(new_bn, name).copy_(getattr(bn, name)[keep.to(bn.weight.device)])
    new_bn.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new_bn.train(bn.training)


@torch.no_grad()
def prune_depthwise(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, keep: torch.Tensor):
    """New (depthwise conv, bn) keeping channels ``keep`` on both sides: weight (C, 1, k, k) -> (len(keep), 1, k, k),
    groups = len(keep); the BN's statistics and affine parameters of those channels."""
    if conv.groups != conv.in_channels or conv.in_channels != conv.out_channels:
        raise ValueError(f"prune_depthwise: a conv with {conv.in_channels} inputs, {conv.out_channels} outputs and "
                         f"{conv.groups} groups is not depthwise")
    keep = keep.to(conv.weight.device)
    new_conv = nn.Conv2d(len(keep), len(keep), conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                         groups=len(keep), bias=conv.bias is not None).to(conv.weight.device)
    new_conv.weight.copy_(conv.weight[keep])
    if conv.bias is not None:
        new_conv.bias.copy_(conv.bias[keep])
    return new_conv.train(conv.training), _prune_bn(bn, keep)


@torch.no_grad()
def prune_in_channels(layer: nn.Module, keep: torch.Tensor) -> nn.Module:
    """New Conv2d (weight[:, keep]) or Linear (weight[:, keep]) reading only the input channels ``keep``."""
    keep = keep.to(layer.weight.device)
    if isinstance(layer, nn.Conv2d):
        new = nn.Conv2d(len(keep), layer.out_channels, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                        bias=layer.bias is not None)
    elif isinstance(layer, nn.Linear):
        new = nn.Linear(len(keep), layer.out_features, bias=layer.bias is not None)
    else:
        raise TypeError(f"prune_in_channels: cannot prune the inputs of a {type(layer).__name__}")
    new = new.to(layer.weight.device)
    new.weight.copy_(layer.weight[:, keep])
    if layer.bias is not None:
        new.bias.copy_(layer.bias)
    return new.train(layer.training)
