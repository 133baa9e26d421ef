"""A keyword-spotting network: the depthwise-separable CNN of Zhang et al. 2017 ("Hello Edge: Keyword Spotting on
Microcontrollers"; MLPerf Tiny's keyword-spotting reference is one): a strided first convolution over the log-mel
image, then blocks of a 3x3 depthwise convolution and a 1x1 pointwise one (each with BatchNorm and ReLU), global
average pooling and a linear classifier. Introduced in notebooks/13_speech_capstone.ipynb.

Input (batch, n_mels, frames) or (batch, 1, n_mels, frames); output (batch, classes) logits.
"""

from __future__ import annotations

import torch
from torch import nn

from .validate import integer

__all__ = ["ds_block", "DSCNN", "activation_arena_bytes"]


def ds_block(channels: int) -> nn.Sequential:
    """One depthwise-separable block: depthwise 3x3 (groups = channels) -> BN -> ReLU -> pointwise 1x1 -> BN -> ReLU.
    Input and output (batch, channels, H, W): a block can be removed (replaced by the identity) without reshaping."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
        nn.Conv2d(channels, channels, 1, bias=False), nn.BatchNorm2d(channels), nn.ReLU())


class DSCNN(nn.Module):
    """DS-CNN: stem conv (kernel (10, 4) over (mel, time), stride ``stride``) -> ``blocks`` depthwise-separable
    blocks of ``width`` channels -> average pool -> dropout -> linear to ``classes``."""

    def __init__(self, width: int = 64, blocks: int = 4, classes: int = 10, stride: tuple[int, int] = (2, 2),
                 dropout: float = 0.1):
        super().__init__()
        integer("width", width, lo=1)
        integer("blocks", blocks, lo=0)
        self.stem = nn.Sequential(nn.Conv2d(1, width, (10, 4), stride=stride, padding=(5, 1), bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.Sequential(*[ds_block(width) for _ in range(blocks)])
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(width, classes))

    def trimmable_blocks(self) -> list[str]:
        """The blocks ``coursekit.trim`` may remove (each keeps its input's shape), skipping removed ones."""
        return [f"blocks.{i}" for i, b in enumerate(self.blocks) if not isinstance(b, nn.Identity)]

    def channel_groups_spec(self) -> list[dict]:
        """The channels that must be pruned together (``coursekit.prune.channel_groups`` reads this): the stem's output,
        then each block's pointwise output; each is read by the next block's depthwise conv (channel i to channel i:
        a pass-through) and its pointwise conv, or by the classifier. Removed blocks (nn.Identity) are skipped."""
        groups, producer, name = [], (self.stem[0], self.stem[1]), "stem"
        for i, block in enumerate(self.blocks):
            if isinstance(block, nn.Identity):
                continue
            groups.append({"name": name, "kind": "inner", "producers": [producer], "passthrough": [(block[0], block[1])],
                           "consumers": [block[3]]})
            producer, name = (block[3], block[4]), f"blocks.{i}"
        groups.append({"name": name, "kind": "inner", "producers": [producer], "passthrough": [],
                       "consumers": [self.head[-1]]})
        return groups

    def forward(self, x):
        x = x.reshape(-1, 1, x.shape[-2], x.shape[-1])  # (batch, n_mels, frames) gets its one channel; no branch, so
        # that FX (int8) and torch.export (ONNX) trace one graph
        return self.head(self.blocks(self.stem(x)))


@torch.no_grad()
def activation_arena_bytes(model: nn.Module, input_size, bytes_per_value: int = 1) -> int:
    """The least working memory (RAM) one inference at batch 1 needs when layers run one after another and each
    holds its input and its output at once, as a microcontroller runtime's tensor arena does (TensorFlow Lite
    Micro's, for one): the largest (input values + output values) of any leaf layer, times ``bytes_per_value``
    (1 for int8). ``input_size``: one example's shape, e.g. (1, 40, 51). Weights are not counted (they stay in
    flash). The model's train/eval mode is left as it was."""
    sizes = []
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda mod, inp, out: sizes.append(inp[0].numel() + out.numel())) for m in leaves]
    was = model.training
    try:
        model.eval()(torch.zeros(1, *input_size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return max(sizes) * bytes_per_value
